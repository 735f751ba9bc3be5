"""raw_observations and calibrated_frames as a user runs them: real materializations, embedded default."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from dagster import materialize

from astrid_assets.definitions import default_resources, nightly_assets
from astrid_assets.io.tables import read_nights
from astrid_assets.testing.simulate import SurveyConfig, simulate_night

NIGHT = "2024-01-02"
SMALL_SURVEY = {"fields": ["F01"], "frames_per_night": 2, "size": 256}


def materialize_night(night: str, run_config: dict | None = None, survey: dict | None = None):
    from astrid_assets.resources import SimulatedSurveyResource

    resources = {**default_resources(), "simulated_survey": SimulatedSurveyResource(**(survey or SMALL_SURVEY))}
    return materialize(nightly_assets, partition_key=night, resources=resources, run_config=run_config or {},
                       raise_on_error=False)


def write_drop_folder(root: Path, night: str) -> dict[str, str]:
    """The simulated night as a FITS drop folder, plus one file for each kind of bad input."""
    folder = root / night
    folder.mkdir(parents=True)
    frames = simulate_night(night, SurveyConfig(fields=("F01",), frames_per_night=2, shape=(256, 256)))
    for frame in frames:
        frame.to_hdulist().writeto(folder / f"{frame.frame_id}.fits")
    science = next(f for f in frames if f.header["IMAGETYP"] == "object")
    good = (folder / f"{science.frame_id}.fits").read_bytes()
    (folder / "truncated.fits").write_bytes(good[: len(good) // 2])
    no_wcs = fits.Header({k: v for k, v in science.header.items() if k[:2] not in {"CR", "CD", "CT", "PC", "CU"}})
    fits.PrimaryHDU(science.data, no_wcs).writeto(folder / "nowcs.fits")
    fits.PrimaryHDU(np.full_like(science.data, np.nan), science.header).writeto(folder / "allnan.fits")
    fits.PrimaryHDU(np.stack([science.data] * 2), science.header).writeto(folder / "cube.fits")
    return {
        "20240102-truncated": "unreadable or truncated FITS",
        "20240102-allnan": "every pixel is NaN or infinite",
        "20240102-cube": "image has 3 dimension(s)",
    }


@pytest.mark.slow  # a simulated night through the nightly chain
def test_simulated_night_is_ingested_and_calibrated(astrid_home):
    result = materialize_night(NIGHT)
    assert result.success
    raw = read_nights("raw_observations", [NIGHT])
    assert (raw.status == "ok").all()
    assert (raw.imagetyp == "object").sum() == 2 and set(raw.imagetyp) == {"object", "bias", "dark", "flat"}
    calibrated = read_nights("calibrated_frames", [NIGHT])
    assert len(calibrated) == 2 and (calibrated.status == "ok").all()
    assert calibrated.usable.all() and calibrated.calibration.eq("night-masters").all()
    truth_seeing = [fits.getheader(Path(os.environ["ASTRID_HOME"]) / "objects" / p)["SEEING"] for p in calibrated.path]
    assert np.allclose(calibrated.fwhm_arcsec, truth_seeing, rtol=0.10)
    with fits.open(Path(os.environ["ASTRID_HOME"]) / "objects" / calibrated.path.iloc[0]) as hdus:
        assert [h.name for h in hdus] == ["SCI", "MASK", "VARIANCE", "BKG", "BKGRMS", "STARS", "PSF", "PSFSTARS"]
        assert len(hdus["STARS"].data) > 10 and hdus["PSF"].header["FWHM"] > 1  # measured once, stored with it
        assert hdus["SCI"].header["PARTITN"] == NIGHT and hdus["SCI"].header["CTYPE1"].startswith("RA")
        assert hdus["MASK"].data.dtype == np.uint16 and hdus["SCI"].data.dtype.str[1:] == "f4"
    metadata = result.asset_materializations_for_node("calibrated_frames")[0].metadata
    assert metadata["frames_calibrated"].value == 2


@pytest.mark.slow  # a simulated night through the nightly chain
def test_bad_frames_are_quarantined_and_the_night_goes_on(astrid_home, tmp_path):
    expected = write_drop_folder(tmp_path / "drop", NIGHT)
    config = {"ops": {"raw_observations": {"config": {"fits_drop": str(tmp_path / "drop")}}}}
    result = materialize_night(NIGHT, run_config=config)
    assert result.success
    raw = read_nights("raw_observations", [NIGHT]).set_index("frame_id")
    quarantined = raw[raw.status == "quarantined"]
    assert set(quarantined.index) == set(expected)
    for frame_id, problem in expected.items():
        assert problem in quarantined.loc[frame_id, "problem"]
    assert set(raw.source) == {"fits_drop"}
    # a science frame without a WCS is accepted (registered by star patterns later), not quarantined
    assert raw.loc["20240102-nowcs", "status"] == "ok" and not raw.loc["20240102-nowcs", "has_wcs"]
    calibrated = read_nights("calibrated_frames", [NIGHT])
    assert len(calibrated) == 3 and (calibrated.status == "ok").all()
    metadata = result.asset_materializations_for_node("raw_observations")[0].metadata
    assert metadata["quarantined"].value == 3
    assert "20240102-truncated" in metadata["quarantine"].value


def test_a_night_without_frames_is_an_empty_partition(astrid_home, tmp_path):
    (tmp_path / "drop").mkdir()
    config = {"ops": {"raw_observations": {"config": {"fits_drop": str(tmp_path / "drop")}}}}
    result = materialize_night("2024-01-09", run_config=config)
    assert result.success
    assert read_nights("raw_observations", ["2024-01-09"]).empty
    assert read_nights("calibrated_frames", ["2024-01-09"]).empty


@pytest.mark.slow  # a simulated night through the nightly chain
def test_fits_drop_is_chosen_by_environment_variable(astrid_home, tmp_path, monkeypatch):
    write_drop_folder(tmp_path / "drop", NIGHT)
    monkeypatch.setenv("ASTRID_FITS_DROP", str(tmp_path / "drop"))
    assert materialize_night(NIGHT).success
    assert set(read_nights("raw_observations", [NIGHT]).source) == {"fits_drop"}


@pytest.mark.slow  # a simulated night through the nightly chain
def test_the_cli_materialises_a_night_from_an_empty_home_and_a_rerun_keeps_the_counts(astrid_home):
    command = [
        str(Path(sys.executable).with_name("dagster")), "asset", "materialize", "-m", "astrid_assets.definitions",
        "--select", "raw_observations,calibrated_frames", "--partition", NIGHT,
    ]
    counts, keys = [], []
    for _ in range(2):
        subprocess.run(command, check=True, capture_output=True, timeout=300)
        raw, calibrated = read_nights("raw_observations", [NIGHT]), read_nights("calibrated_frames", [NIGHT])
        counts.append((len(raw), len(calibrated)))
        keys.append(sorted(raw.path) + sorted(calibrated.path) + sorted(set(calibrated.masters_path.dropna())))
    assert counts[0] == counts[1] and counts[0][1] >= 2
    assert keys[0] == keys[1]
    stored = sorted(str(p.relative_to(astrid_home / "objects")) for p in (astrid_home / "objects").rglob("*.fits"))
    assert stored == sorted(keys[0])
