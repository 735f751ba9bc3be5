"""Nights reach archival data, and references need no dates (regressions of findings 1, 2 and 4)."""

from __future__ import annotations

import importlib

import numpy as np
import pandas as pd
import pytest

from astrid_assets import partitions, settings
from astrid_assets.defs.differencing import ReferenceConfig, earlier_nights, reference_for_field
from astrid_assets.io.object_store import LocalObjectStore
from astrid_assets.science.reference.coadd import select_best_frames
from astrid_assets.science.reference.selection import predicted_sensitivity, relative_depth


def test_default_first_night_reaches_archival_data(monkeypatch):
    monkeypatch.delenv("ASTRID_FIRST_NIGHT", raising=False)
    assert settings.first_night() == "2000-01-01"
    keys = importlib.reload(partitions).nightly_partitions.get_partition_keys()
    assert keys[0] == "2000-01-01" and "2003-11-20" in keys and "2015-12-26" in keys


def test_first_night_setting_moves_the_partitions(monkeypatch):
    monkeypatch.setenv("ASTRID_FIRST_NIGHT", "1995-06-01")
    try:
        keys = importlib.reload(partitions).nightly_partitions.get_partition_keys()
        assert keys[0] == "1995-06-01"
        monkeypatch.setenv("ASTRID_FIRST_NIGHT", "June 1995")
        with pytest.raises(ValueError, match="ASTRID_FIRST_NIGHT"):
            settings.first_night()
    finally:
        monkeypatch.delenv("ASTRID_FIRST_NIGHT")
        importlib.reload(partitions)


def test_reference_frames_come_from_any_earlier_night_not_a_demo_window():
    config = ReferenceConfig()
    first, last = earlier_nights(config, "2024-03-15")
    assert last == "2024-03-14" and first < "2015-01-01"  # a field observed in March finds its February frames
    pinned = ReferenceConfig(window_start="2018-02-01", window_end="2018-02-28")
    assert earlier_nights(pinned, "2018-02-10") == ("2018-02-01", "2018-02-09")


def frames_table(n: int, limiting_flux: float = 100.0, zero_point=None) -> pd.DataFrame:
    return pd.DataFrame({
        "frame_id": [f"f{i}" for i in range(n)], "path": [f"calibrated/f{i}.fits" for i in range(n)],
        "fwhm_px": np.full(n, 2.0), "limiting_flux": np.full(n, limiting_flux), "exptime": np.full(n, 60.0),
        "zero_point": np.full(n, np.nan if zero_point is None else zero_point),
    })


def test_depth_without_a_zero_point_ranks_frames():
    """Finding 4: no MAGZP gave NaN depth, no frame was selected and the reference build crashed."""
    frames = frames_table(3)
    frames.loc[1, "limiting_flux"] = 50.0  # twice as deep
    depth = relative_depth(frames)
    assert np.isfinite(depth).all()
    assert select_best_frames(frames.fwhm_px, depth, max_frames=2).tolist()[0] == 1
    assert depth[1] - depth[0] == pytest.approx(2.5 * np.log10(2.0))


def test_a_field_with_one_earlier_frame_needs_a_reference_and_none_without(tmp_path):
    store = LocalObjectStore(str(tmp_path))
    row = reference_for_field("F", frames_table(0), store, ReferenceConfig(), "2015-03-11", None, "auto")
    assert row["status"] == "missing" and "first usable night" in row["problem"]


def test_a_stable_reference_is_kept_until_clearly_better_frames_arrive(tmp_path):
    store = LocalObjectStore(str(tmp_path))
    store.put("reference_images/F/v1.fits", b"stored")
    three = frames_table(3)
    current = {"path": "reference_images/F/v1.fits", "version": "v1", "n_frames": 3, "fwhm_px": 2.0,
               "input_frames": "f0,f1,f2", "shallow": False,
               "sensitivity": predicted_sensitivity(relative_depth(three))}
    kept = reference_for_field("F", frames_table(4), store, ReferenceConfig(), "2015-03-12", current, "auto")
    assert kept["status"] == "ok" and kept["version"] == "v1" and kept["decision"].startswith("kept")
    # ten frames (max_frames) are sqrt(10/3): 0.65 mag deeper — a new version is due; it would load the
    # frames, which this store lacks, so the decision shows as the failure to read them
    with pytest.raises(Exception, match="f0|calibrated"):
        reference_for_field("F", frames_table(10), store, ReferenceConfig(), "2015-03-13", current, "auto")

