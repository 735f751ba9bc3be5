"""The nightly chain on data AstrID did not make: a covering set of an independent generator's data matrix.

Each cell (``astrid_assets.testing.skygen``, written without the simulator's code or assumptions) is a FITS
drop folder of four nights; the chain runs with nothing configured but ``ASTRID_FITS_DROP`` (and, for the
1995 cell, ``ASTRID_FIRST_NIGHT``). Per cell: ≥ 90 % of the science frames after the field's first night
differenced, completeness ≥ 95 % at S/N ≥ 10 counting all candidates, and every frame not differenced
carries a named reason. The figures are printed (``pytest -s``) for the issue's notes.
"""

from __future__ import annotations

import pytest

from astrid_assets.testing import skygen
from astrid_assets.testing.matrix import run_cell

REASONS = {"no_reference", "unusable", "calibration_failed", "registration", "psf", "subtraction", "s_corr_variance"}


def report(result) -> str:
    return (f"{result['cell']}: differenced {result['differenced']}/{result['frames_after_first_night']} "
            f"({result['differenced_fraction']:.0%}), completeness S/N>=10 {result['recovered']}/"
            f"{result['transients_snr_ge_10']} ({result['completeness']:.1%}), "
            f"not differenced after night 1: {result['not_differenced']}")


#: Cells that still miss the acceptance (issue "Any telescope's frames" stays open for them), measured
#: 2026-12-02: completeness 90.0 % (gauss-2.5-reduced-wcs: transients close to the edge flag / stars),
#: 91.7 % (moffat2-1.3-reduced-nowcs), and gauss-6-raw-wcs-nogain-magzp whose run stops at a blocking
#: candidate check although 96 % are recovered. Strict: a fix that makes one pass fails here until it is moved.
KNOWN_GAPS = {"gauss-2.5-reduced-wcs", "moffat2-1.3-reduced-nowcs", "gauss-6-raw-wcs-nogain-magzp"}
CELLS = [pytest.param(cell, id=cell.name, marks=pytest.mark.xfail(strict=True, reason="known gap, see KNOWN_GAPS"))
         if cell.name in KNOWN_GAPS else pytest.param(cell, id=cell.name) for cell in skygen.COVERING_CELLS]


@pytest.mark.parametrize("cell", CELLS)
def test_cell_of_an_independent_generator(cell, astrid_home, tmp_path):
    result, run = run_cell(cell, tmp_path)
    differences = run.tables["difference_images"]
    figures = {**result.__dict__, "differenced_fraction": result.differenced_fraction,
               "completeness": result.completeness}
    print("\n" + report(figures))
    assert run.success, "the run failed"
    skipped = differences[differences.status != "ok"]
    assert set(skipped.reason) <= REASONS and skipped.problem.notna().all(), skipped[["frame_id", "reason", "problem"]]
    first = differences[differences.night == cell.first_night]
    assert len(first) and set(first.reason) == {"no_reference"}  # the field's first night: said, not silent
    assert result.differenced_fraction >= 0.90, differences[["frame_id", "status", "reason", "problem"]].to_string()
    assert result.transients_snr_ge_10 >= 10
    assert result.completeness >= 0.95

