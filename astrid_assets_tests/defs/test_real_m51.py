"""The real M51 raw set (a 10-inch amateur telescope, 2×2 binned, undersampled, bias, 300 s darks for 200 s lights,
flats of another night, a header gain that does not describe the data) through the chain, nothing configured.

Two epochs as its README says (``astrid_assets.testing.realsets.m51_drop``): frames 1–9 on 2012-02-18, frames
10–18 moved to 2012-02-19; the nightly injection check puts fakes into the real pixels of the later night.
"""

from __future__ import annotations

import pytest
from dagster import DagsterInstance

from astrid_assets.testing.chain import run_chain
from astrid_assets.testing.realsets import M51_NIGHTS, m51_drop

pytestmark = pytest.mark.slow  # 18 real raw frames through the nightly chain


@pytest.fixture
def m51_run(astrid_home, tmp_path, real_data, monkeypatch):
    monkeypatch.setenv("ASTRID_FIRST_NIGHT", "2012-01-01")  # read when the definitions load
    return run_chain(m51_drop(real_data, tmp_path / "drop"), *M51_NIGHTS, DagsterInstance.get())


def test_the_real_raw_set_is_calibrated_differenced_and_recovers_fakes(m51_run):
    run = m51_run
    assert run.success and not run.failed_nights, run.failed_nights
    calibrated = run.tables["calibrated_frames"]
    assert (calibrated.status == "ok").all() and len(calibrated) == 18
    assert set(calibrated.calibration) == {"night-masters"}  # bias, exposure-scaled dark and flat of the night
    # the header gain (EGAIN 2.4) does not describe the binned data: the noise model follows the measured sky
    assert calibrated.assumptions.str.contains("effective gain").all()

    differences = run.tables["difference_images"]
    later = differences[differences.night == M51_NIGHTS[1]]
    assert len(later) == 9 and (later.status == "ok").all(), later[["frame_id", "status", "reason", "problem"]]
    assert later.s_corr_std.between(0.9, 1.1).all(), later.s_corr_std.tolist()  # measured 0.99-1.08
    assert (differences[differences.night == M51_NIGHTS[0]].reason == "no_reference").all()

    completeness = run.completeness(M51_NIGHTS[1])
    assert completeness is not None and completeness >= 0.90

    candidates = run.tables["candidate_detections"]
    later_candidates = candidates[candidates.night == M51_NIGHTS[1]]
    unflagged = later_candidates[later_candidates["flags"] == 0].frame_id.value_counts()
    assert (unflagged <= 5).all(), unflagged.to_dict()
