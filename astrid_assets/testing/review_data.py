"""A night of candidates for the scanning page's tests and benchmark, written straight to the tables.

Rows of ``candidate_detections`` (and ``scored_detections`` when probabilities are given) and one
``(N, 3, 63, 63)`` stamp stack per frame in the object store, as ``candidate_detections`` writes them —
without running the chain: a point source (Gaussian, FWHM 3 px) on sky noise in the science stamp,
the reference without it, the difference with it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from astrid_assets.defs.detection import stamps_to_bytes
from astrid_assets.io.object_store import LocalObjectStore
from astrid_assets.io.schema import candidate_detections, metadata, scored_detections
from astrid_assets.io.tables import engine_for
from astrid_assets.science.products import STAMP_SIZE

__all__ = ["write_candidates"]


def _stamps(n: int, rng: np.random.Generator) -> np.ndarray:
    axis = np.arange(STAMP_SIZE) - STAMP_SIZE // 2
    sigma = 3.0 / 2.3548
    source = np.exp(-(axis[None, :] ** 2 + axis[:, None] ** 2) / (2 * sigma**2))
    sky = 200.0
    stamps = np.empty((n, 3, STAMP_SIZE, STAMP_SIZE), np.float32)
    for i in range(n):
        flux = rng.uniform(50, 2000)
        reference = sky + rng.normal(0, 10, (STAMP_SIZE, STAMP_SIZE))
        science = sky + flux * source + rng.normal(0, 12, (STAMP_SIZE, STAMP_SIZE))
        stamps[i, 0], stamps[i, 1], stamps[i, 2] = science, reference, science - reference
    return stamps


def write_candidates(url: str, store_root: str, night: str, n: int, *, frames: int = 2, field: str = "F01",
                     probabilities: list[float] | None = None, model_version: str = "1", seed: int = 0,
                     ) -> pd.DataFrame:
    """Write ``n`` candidates of ``night`` (over ``frames`` frames) to ``url`` and their stamps to ``store_root``.

    Candidate ids are ``<field>-<night>-f<k>-c<i>``; ``rule_score`` falls with ``i``; every 5th candidate
    is flagged (edge). With ``probabilities`` (one per candidate), ``scored_detections`` gets them with
    ``model_version``. Returns the candidate rows.
    """
    rng = np.random.default_rng(seed)
    store = LocalObjectStore(store_root)
    metadata.create_all(engine_for(url), tables=[candidate_detections, scored_detections])
    rows = []
    per_frame = np.array_split(np.arange(n), frames)
    for k, indices in enumerate(per_frame):
        frame_id = f"{field}-{night}-f{k}"
        path = store.put(f"candidate_detections/{night}/{frame_id}.stamps.npy", stamps_to_bytes(_stamps(len(indices),
                                                                                                         rng)))
        for j, i in enumerate(indices):
            rows.append({
                "night": night, "candidate_id": f"{frame_id}-c{i:04d}", "frame_id": frame_id, "field": field,
                "x": float(rng.uniform(40, 470)), "y": float(rng.uniform(40, 470)),
                "ra": 150.0 + i / 3600, "dec": 2.0, "sign": 1, "flux": float(rng.uniform(50, 2000)),
                "flux_err": 40.0, "snr": float(rng.uniform(5, 40)), "s_corr_peak": 6.0, "fwhm": 3.0,
                "elongation": 1.1, "sharpness": 0.5, "rule_score": round(1 - i / max(n, 1), 4),
                "flags": 2 if i % 5 == 4 else 0, "stamp_path": path, "stamp_index": j,
            })
    table = pd.DataFrame(rows)
    with engine_for(url).begin() as connection:
        connection.execute(candidate_detections.delete().where(candidate_detections.c.night == night))
        connection.execute(candidate_detections.insert(), rows)
        if probabilities is not None:
            connection.execute(scored_detections.delete().where(scored_detections.c.night == night))
            connection.execute(scored_detections.insert(), [
                {"night": night, "candidate_id": row["candidate_id"], "frame_id": row["frame_id"],
                 "real_probability": float(p), "model_version": model_version, "real": bool(p >= 0.5)}
                for row, p in zip(rows, probabilities, strict=True)])
    return table
