"""The real ESO 085-030 pair (MaxIm DL headers, no WCS, no GAIN, uint16 + BZERO) through the chain, nothing configured.

Frame 004 goes on the night of 2015-12-26 and frame 005 on 2015-12-27 (its DATE-OBS and JD moved by one
day in the copy), as ``../shared/tools/real-pair-smoke`` does.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from astropy.io import fits
from dagster import DagsterInstance

from astrid_assets.io.object_store import open_object_store
from astrid_assets.science.frames.files import read_extensions
from astrid_assets.science.masks import UNUSABLE
from astrid_assets.testing.chain import run_chain

pytestmark = pytest.mark.slow  # two nights of real frames through the nightly chain


@pytest.fixture
def real_pair_drop(tmp_path, real_data):
    for night, name in [("2015-12-26", "004"), ("2015-12-27", "005")]:
        (tmp_path / "drop" / night).mkdir(parents=True)
        shutil.copy(real_data / "eso085-030" / f"aligned_eso085-030-{name}.fit",
                    tmp_path / "drop" / night / f"eso085-030-{name}.fits")
    with fits.open(tmp_path / "drop/2015-12-27/eso085-030-005.fits", mode="update") as hdus:
        hdus[0].header["DATE-OBS"] = "2015-12-28T06:27:38"
        hdus[0].header["JD"] = 2457384.7691898
    return tmp_path / "drop"


def test_real_pair_is_ingested_differenced_and_recovers_fakes(astrid_home, real_pair_drop):
    run = run_chain(real_pair_drop, "2015-12-26", "2015-12-27", DagsterInstance.get())
    raw, differences = run.tables["raw_observations"], run.tables["difference_images"]
    assert (raw.status == "ok").sum() == 2, raw[["frame_id", "status", "problem"]]
    done = differences[differences.status == "ok"]
    assert len(done) == 1 and done.night.iloc[0] == "2015-12-27", differences[["frame_id", "status", "problem"]]
    first_night = differences[differences.night == "2015-12-26"]
    assert first_night.reason.tolist() == ["no_reference"]  # named, not silent

    # std(S_corr) on blank sky: pixels far from any source of the new frame or the reference
    store = open_object_store(str(astrid_home / "objects"))
    extensions = read_extensions(store.get(done.path.iloc[0]))
    s_corr, mask = extensions["SCORR"][0], extensions["MASK"][0]
    new = extensions["NEW"][0]
    blank = ((mask & UNUSABLE) == 0) & np.isfinite(s_corr) & np.isfinite(new)
    noise = np.nanstd(new[blank])
    blank &= np.abs(new) < 2 * noise
    assert abs(float(np.std(s_corr[blank])) - 1.0) <= 0.10
    assert abs(done.s_corr_std.iloc[0] - 1.0) <= 0.10

    completeness = run.completeness("2015-12-27")
    assert completeness is not None and completeness >= 0.90
