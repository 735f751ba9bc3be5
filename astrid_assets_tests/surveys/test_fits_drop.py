"""Fields of a FITS drop folder: named by FIELD/OBJECT, else by the frames' pointing."""

from pathlib import Path

import numpy as np
from astropy.io import fits

from astrid_assets.surveys.fits_drop import ASSUMED, fetch_fits_drop

SCALE = 1.0 / 3600  # deg/pixel: 64" frames


def write(folder: Path, name: str, ra: float | None = None, dec: float | None = None, **cards) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    header = fits.Header({"IMAGETYP": "Light Frame", "EXPTIME": 60.0, **cards})
    if ra is not None:
        header.update({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": ra, "CRVAL2": dec,
                       "CRPIX1": 32.5, "CRPIX2": 32.5, "CDELT1": -SCALE, "CDELT2": SCALE})
    fits.PrimaryHDU(np.zeros((64, 64), np.float32), header).writeto(folder / f"{name}.fits")


def fields(root: Path, night: str) -> dict[str, tuple[str, str]]:
    return {f.frame_id.split("-", 1)[1]: (f.field, f.field_reason) for f in fetch_fits_drop(root, night)}


def test_object_and_field_cards_are_kept(tmp_path):
    write(tmp_path / "2024-01-02", "a", 10.0, 20.0, OBJECT="NGC 1234")
    write(tmp_path / "2024-01-02", "b", 10.0, 20.0, FIELD="F07", OBJECT="NGC 1234")
    found = fields(tmp_path, "2024-01-02")
    assert found["a"] == ("NGC_1234", "header OBJECT") and found["b"] == ("F07", "header FIELD")


def test_two_pointings_a_degree_apart_are_two_fields_and_dithers_share_one(tmp_path):
    night = tmp_path / "2024-01-02"
    write(night, "a1", 10.0, 20.0)
    write(night, "a2", 10.0 + 3 / 3600, 20.0 - 2 / 3600)  # dithered by a few arcsec
    write(night, "b1", 11.0, 20.0)
    write(night, "b2", 11.0, 20.0 + 4 / 3600)
    found = fields(tmp_path, "2024-01-02")
    assert found["a1"][0] == found["a2"][0] == "P010.00+20.00"
    assert found["b1"][0] == found["b2"][0] == "P011.00+20.00"
    assert "WCS centre" in found["a1"][1] and "earlier frame" in found["a2"][1]


def test_a_later_night_at_the_same_pointing_gets_the_same_field(tmp_path):
    write(tmp_path / "2024-01-02", "a", 10.004, 20.004)  # first seen here: named P010.00+20.00
    write(tmp_path / "2024-01-05", "a", 10.0, 20.0)
    write(tmp_path / "2024-01-05", "c", 10.006, 20.006)  # would round to P010.01+20.01 on its own
    first, later = fields(tmp_path, "2024-01-02"), fields(tmp_path, "2024-01-05")
    assert first["a"][0] == later["a"][0] == later["c"][0] == "P010.00+20.00"
    assert "known field" in later["c"][1]


def test_maxim_dl_pointing_cards_place_frames_without_wcs(tmp_path):
    night = tmp_path / "2024-01-02"
    cards = {"XPIXSZ": 9.0, "FOCALLEN": 1000.0}
    write(night, "m1", OBJCTRA="05 35 17.30", OBJCTDEC="-05 23 28.0", **cards)
    write(night, "m2", OBJCTRA="05 35 17.90", OBJCTDEC="-05 23 20.0", **cards)
    found = fields(tmp_path, "2024-01-02")
    assert found["m1"][0] == found["m2"][0] == "P083.82-05.39"
    assert "OBJCTRA/OBJCTDEC" in found["m1"][1]


def test_frames_without_any_pointing_are_assumed_and_calibrations_are_not_sky_fields(tmp_path):
    night = tmp_path / "2024-01-02"
    write(night, "lost")
    write(night, "bias", IMAGETYP="Bias Frame")
    (night / "broken.fits").write_bytes(b"not a FITS file")
    found = fields(tmp_path, "2024-01-02")
    assert found["lost"][0] == "drop" and found["lost"][1].startswith(ASSUMED)
    assert found["bias"][0] == "drop" and not found["bias"][1].startswith(ASSUMED)
    assert found["broken"][0] == "unknown"
