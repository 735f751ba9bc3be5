"""Evaluate a run of the chain on a :mod:`skygen` cell against the generator's truth.

Figures per cell: the share of science frames differenced (of those on nights after the field's
first, which have no earlier frame to build a reference from), and the completeness at S/N ≥ 10
counting all candidates (flagged or not) of the transient's change since the reference (see
:func:`evaluate`): it is recovered when a candidate of the right sign in its frame lies within
``max(1.5, 0.5 FWHM)`` px of its true position on the reference grid. The grid is
the reference's anchor frame (the first of its input frames): its true pixels come from the
generator, so frames without a WCS are evaluated exactly like the others.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from astrid_assets.testing import skygen, skymodel
from astrid_assets.testing.chain import ChainRun


@dataclass
class CellEvaluation:
    cell: str
    frames_after_first_night: int
    differenced: int
    transients_snr_ge_10: int
    recovered: int
    not_differenced: dict
    #: candidates matching no transient and carrying no flag, per differenced frame, scaled to a 1024² frame
    unflagged_false_per_1024: float = float("nan")
    #: median over the differenced frames of the robust std of S_corr (1 on blank sky)
    median_s_corr_std: float = float("nan")

    @property
    def differenced_fraction(self) -> float:
        return self.differenced / max(self.frames_after_first_night, 1)

    @property
    def completeness(self) -> float:
        return self.recovered / self.transients_snr_ge_10 if self.transients_snr_ge_10 else float("nan")


def _frame_of(cell: skygen.Cell, frame_id: str) -> dict:
    """The generator's conditions of the science frame AstrID calls ``frame_id`` (``YYYYMMDD-<file stem>``)."""
    table = skymodel.frame_table(cell)
    stem = frame_id.split("-", 1)[1]
    row = table[table.file.str.replace(".fits", "", regex=False) == stem].iloc[0]
    night_index = sorted(table.night.unique()).index(row.night)
    return skymodel._conditions(cell, night_index, int(row.frame_index))


def true_pixels(cell: skygen.Cell, frame_id: str, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """``(x, y)`` on the frame ``frame_id`` of sky positions, from the generator's own geometry."""
    plan = skymodel._plan(cell)
    u, v = plan["wcs"].wcs_world2pix(ra, dec, 0)
    x, y = skymodel._to_frame(cell, _frame_of(cell, frame_id), u, v)
    return np.column_stack([x, y])


def _reference_flux(cell: skygen.Cell, truth: pd.DataFrame, stems: pd.Series, inputs: list[str], frame_id: str,
                    transients: pd.Series) -> np.ndarray:
    """Flux (e- of the new frame ``frame_id``) of each transient in the reference made of ``inputs``.

    The reference is the co-add documented in :mod:`astrid_assets.science.reference.coadd`: frames scaled to a
    common flux scale and averaged with weights ``1 / σ²_sky`` of the scaled frame. With the generator's
    truth, frame ``i`` of transparency ``t_i`` and sky ``b_i`` (e-/px) has weight ``t_i² / (b_i + rn²)``,
    and a transient of flux ``F_i`` (at transparency 1) on its night contributes ``t_new Σ w_i F_i / Σ w_i``
    to the reference scaled to the new frame (0 where it did not shine).
    """
    read_noise2 = skymodel._plan(cell)["rn"] ** 2
    weights, fluxes = [], []
    for frame in inputs:
        conditions = _frame_of(cell, frame)
        weights.append(conditions["transparency"] ** 2 / (conditions["sky"] + read_noise2))
        rows = truth[stems == frame.split("-", 1)[1]].set_index("transient_id")
        fluxes.append((rows.flux / conditions["transparency"]).reindex(transients).fillna(0.0).to_numpy())
    mean = np.average(np.array(fluxes), axis=0, weights=weights)
    return _frame_of(cell, frame_id)["transparency"] * mean


def transient_changes(cell: skygen.Cell, truth: pd.DataFrame, run: ChainRun) -> pd.DataFrame:
    """Every transient's change in every differenced frame after the first night, on the reference grid.

    A transient's signal in a difference is its flux in the new frame minus its flux in the reference
    (:func:`_reference_flux`: a reference built from frames of nights on which the transient already
    shone holds part of it, and that part is not new). Its expected S/N in the difference is the new frame's
    PSF-optimal S/N scaled by ``|f_new − f_ref| / f_new``.

    Returns
    -------
    pandas.DataFrame
        ``frame_id``, ``transient_id``, ``x``, ``y`` (reference px), ``sign`` (of the change) and
        ``difference_snr``.
    """
    differences, references = run.tables["difference_images"], run.tables["reference_images"]
    first_night = min(differences.night) if len(differences) else None
    done = differences[(differences.night != first_night) & (differences.status == "ok")]
    stems = truth.file.str.replace(".fits", "", regex=False)
    rows = []
    for row in done.itertuples():
        mine = truth[stems == row.frame_id.split("-", 1)[1]]
        if mine.empty:
            continue
        reference = references[(references.night == row.night) & (references.field == row.field)].iloc[0]
        inputs = reference.input_frames.split(",")
        change = mine.flux.to_numpy() - _reference_flux(cell, truth, stems, inputs, row.frame_id, mine.transient_id)
        xy = true_pixels(cell, inputs[0], mine.ra.to_numpy(), mine.dec.to_numpy())
        rows.append(pd.DataFrame({"frame_id": row.frame_id, "transient_id": mine.transient_id.to_numpy(),
                                  "x": xy[:, 0], "y": xy[:, 1], "sign": np.sign(change),
                                  "difference_snr": mine.snr.to_numpy() * np.abs(change) / mine.flux.to_numpy()}))
    columns = ["frame_id", "transient_id", "x", "y", "sign", "difference_snr"]
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=columns)


def candidate_truth(cell: skygen.Cell, truth: pd.DataFrame, run: ChainRun) -> pd.DataFrame:
    """Each candidate of the run with the generator's verdict: ``real`` when a transient's change of the
    candidate's sign lies within ``max(1.5, 0.5 FWHM)`` px (reference grid) in its frame, with that change's
    ``difference_snr`` (NaN for the others)."""
    candidates = run.tables["candidate_detections"].copy()
    changes = transient_changes(cell, truth, run)
    radius = max(1.5, 0.5 * cell.fwhm)
    real = np.zeros(len(candidates), bool)
    snr = np.full(len(candidates), np.nan)
    for k, candidate in enumerate(candidates.itertuples()):
        mine = changes[(changes.frame_id == candidate.frame_id) & (changes.sign == candidate.sign)]
        if len(mine):
            distance = np.hypot(mine.x.to_numpy(float) - candidate.x, mine.y.to_numpy(float) - candidate.y)
            if distance.min() <= radius:
                real[k], snr[k] = True, mine.difference_snr.to_numpy()[np.argmin(distance)]
    return candidates.assign(real=real, difference_snr=snr)


def evaluate(cell: skygen.Cell, truth: pd.DataFrame, run: ChainRun) -> CellEvaluation:
    """Evaluate a run against the truth: differenced share and completeness of the *differences* at S/N ≥ 10
    (:func:`transient_changes`): a transient counts at difference S/N ≥ 10, and is recovered by a
    candidate of the right sign within ``max(1.5, 0.5 FWHM)`` px."""
    differences, candidates = run.tables["difference_images"], run.tables["candidate_detections"]
    first_night = min(differences.night) if len(differences) else None
    later = differences[differences.night != first_night]
    bright = transient_changes(cell, truth, run).query("difference_snr >= 10")
    radius = max(1.5, 0.5 * cell.fwhm)
    recovered = 0
    for change in bright.itertuples():
        found = candidates[(candidates.frame_id == change.frame_id) & (candidates.sign == change.sign)]
        distance = np.hypot(found.x.to_numpy(float) - change.x, found.y.to_numpy(float) - change.y)
        recovered += int(len(found) > 0 and distance.min() <= radius)
    reasons = later[later.status != "ok"].reason.fillna("other").value_counts().to_dict()
    done = later[later.status == "ok"]
    verdicts = candidate_truth(cell, truth, run)
    false = verdicts[~verdicts.real & (verdicts["flags"] == 0) & verdicts.frame_id.isin(done.frame_id)]
    per_1024 = len(false) / max(len(done), 1) * (1024 * 1024) / (cell.shape[0] * cell.shape[1])
    return CellEvaluation(cell.name, len(later), len(done), len(bright), recovered, reasons,
                          per_1024 if len(done) else float("nan"),
                          float(done.s_corr_std.median()) if len(done) else float("nan"))


def run_cell(cell: skygen.Cell, root) -> tuple[CellEvaluation, ChainRun]:
    """Write ``cell`` as a drop folder under ``root``, run the chain over its nights and evaluate it.

    The caller provides ``ASTRID_HOME`` / ``DAGSTER_HOME`` (and ``ASTRID_FIRST_NIGHT`` for old nights).
    """
    from pathlib import Path

    from dagster import DagsterInstance

    from astrid_assets.testing.chain import run_chain

    truth = skygen.write_drop(Path(root) / "drop", cell)
    last = (pd.Timestamp(cell.first_night) + pd.Timedelta(days=cell.n_nights - 1)).date().isoformat()
    run = run_chain(Path(root) / "drop", cell.first_night, last, DagsterInstance.get())
    return evaluate(cell, truth, run), run


def main(argv: list[str] | None = None) -> int:
    """``python -m astrid_assets.testing.matrix CELL_NAME ROOT``: one cell's evaluation as a JSON line (a cell of
    the covering set, or a hard kind of :mod:`~astrid_assets.testing.kinds` by its kind or cell name)."""
    import json
    import sys
    from dataclasses import asdict

    name, root = (argv if argv is not None else sys.argv[1:])[:2]
    from astrid_assets.testing.kinds import KINDS

    cells = {cell.name: cell for cell in (*skygen.COVERING_CELLS, skygen.ARCHIVAL_CELL)}
    cells.update({**{cell.name: cell for cell in KINDS.values()}, **KINDS})
    result, run = run_cell(cells[name], root)
    print(json.dumps({**asdict(result), "success": run.success, "differenced_fraction": result.differenced_fraction,
                      "completeness": result.completeness}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
