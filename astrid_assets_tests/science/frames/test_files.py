"""Header conventions of acquisition software and frame validation (frames.py, ingest.frame_row)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io import fits

from astrid_assets.defs.ingest import frame_row
from astrid_assets.science import masks
from astrid_assets.science.calibration.calibrate import calibrate_frame
from astrid_assets.science.frames.files import WCS_PROBLEM_CARD, FrameError, celestial_wcs, normalised_cards, read_frame
from astrid_assets.science.frames.headers import (
    exposure_time,
    header_gain,
    header_read_noise,
    header_saturation,
    image_type,
    observation_date,
    observation_mjd,
)
from astrid_assets.surveys.base import RawFrame
from astrid_assets_tests.science.frame_scenes import identity_masters

NIGHT = "2015-12-27"


def fits_bytes(data: np.ndarray, cards: dict | None = None) -> bytes:
    buffer = io.BytesIO()
    fits.PrimaryHDU(data, fits.Header(cards or {})).writeto(buffer)
    return buffer.getvalue()


def make_header(cards: dict) -> fits.Header:
    """A header; a value ``(value, comment)`` sets the card's comment too."""
    header = fits.Header()
    for key, value in cards.items():
        header[key] = value
    return header


def tan_cards(ra=150.0, dec=2.0, scale_deg=0.5 / 3600) -> dict:
    return {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": ra, "CRVAL2": dec, "CRPIX1": 32.5,
            "CRPIX2": 32.5, "CD1_1": -scale_deg, "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": scale_deg}


# --------------------------------------------------------------------------- (a) frame types


@pytest.mark.parametrize(
    ("imagetyp", "kind"),
    [
        ("Light Frame", "object"), ("LIGHT", "object"), ("object", "object"), ("science", "object"),
        ("Tricolor Image", "object"), (None, "object"), ("NGC 2903", "object"),
        ("Bias Frame", "bias"), ("BIAS", "bias"), ("zero", "bias"), ("Zero Frame", "bias"),
        ("Dark Frame", "dark"), ("DARK", "dark"), ("DARKFLAT", "dark"), ("Flat Dark", "dark"),
        ("Flat Field", "flat"), ("Flat Frame", "flat"), ("FLAT", "flat"), ("skyflat", "flat"),
        ("domeflat", "flat"), ("twiflat", "flat"), ("Sky Flat", "flat"),
        ("focus", "other"), ("test", "other"), ("arc", "other"), ("comp", "other"),
        ("Acquisition", "other"), ("lamp", "other"),
    ],
)
def test_imagetyp_conventions_are_classified_by_their_words(imagetyp, kind):
    header = fits.Header() if imagetyp is None else fits.Header({"IMAGETYP": imagetyp})
    assert image_type(header) == kind


def test_obstype_is_read_when_there_is_no_imagetyp():
    assert image_type(fits.Header({"OBSTYPE": "dome flat"})) == "flat"
    assert image_type(fits.Header({"OBSTYPE": "zero"})) == "bias"


# --------------------------------------------------------------------------- (b) WCS


def test_a_science_frame_without_a_wcs_is_accepted():
    data = np.random.default_rng(0).normal(1000, 10, (64, 64)).astype(np.float32)
    image, header = read_frame(fits_bytes(data, {"IMAGETYP": "Light Frame", "EXPTIME": 60.0}), NIGHT, "f1")
    assert image.shape == (64, 64) and image.dtype == np.float32
    assert celestial_wcs(header, image.shape) == (None, None)
    assert WCS_PROBLEM_CARD not in header
    row = frame_row(RawFrame("f1", NIGHT, "field", "fits_drop", b""), image, header, "key")
    assert row["imagetyp"] == "object" and row["has_wcs"] is False and row["ra"] is None and row["dec"] is None
    assert row["status"] == "ok"


def test_a_malformed_wcs_is_treated_as_absent_with_its_problem_noted():
    data = np.ones((64, 64), np.float32)
    cards = {**tan_cards(), "CD1_1": 0.0, "CD2_2": 0.0, "IMAGETYP": "object"}  # singular CD matrix
    image, header = read_frame(fits_bytes(data, cards), NIGHT, "f2")
    assert header[WCS_PROBLEM_CARD]
    assert "CTYPE1" not in header and "CD1_1" not in header
    row = frame_row(RawFrame("f2", NIGHT, "field", "fits_drop", b""), image, header, "key")
    assert row["has_wcs"] is False and row["ra"] is None and row["wcs_problem"] == header[WCS_PROBLEM_CARD]


def test_a_valid_wcs_gives_the_frame_centre():
    data = np.ones((64, 64), np.float32)
    image, header = read_frame(fits_bytes(data, {**tan_cards(), "IMAGETYP": "LIGHT"}), NIGHT, "f3")
    row = frame_row(RawFrame("f3", NIGHT, "field", "fits_drop", b""), image, header, "key")
    assert row["has_wcs"] is True
    assert row["ra"] == pytest.approx(150.0, abs=1e-6) and row["dec"] == pytest.approx(2.0, abs=1e-6)
    bias_row = frame_row(RawFrame("b", NIGHT, "field", "fits_drop", b""), image,
                         fits.Header({"IMAGETYP": "Bias Frame"}), "key")
    assert bias_row["imagetyp"] == "bias" and bias_row["ra"] is None


def test_unusable_frames_still_raise_frame_errors_naming_night_frame_and_problem():
    with pytest.raises(FrameError, match=f"night {NIGHT}, frame f4: every pixel is NaN"):
        read_frame(fits_bytes(np.full((8, 8), np.nan, np.float32)), NIGHT, "f4")
    with pytest.raises(FrameError, match="3 dimension"):
        read_frame(fits_bytes(np.zeros((2, 8, 8), np.float32)), NIGHT, "f5")


def test_the_original_pixel_type_is_recorded():
    data = np.full((16, 16), 1200, np.uint16)
    _, header = read_frame(fits_bytes(data), NIGHT, "f6")
    assert header["ORIGTYPE"] == "uint16"


# --------------------------------------------------------------------------- exposure and time


def test_exposure_time_keywords():
    assert exposure_time(fits.Header({"EXPTIME": 60.0, "EXPOSURE": 30.0})) == 60.0
    assert exposure_time(fits.Header({"EXPOSURE": 30.0})) == 30.0
    assert exposure_time(fits.Header({"EXP_TIME": 12.5})) == 12.5
    assert exposure_time(fits.Header({"ITIME": 5.0})) == 5.0
    assert exposure_time(fits.Header({"OBJECT": "x"})) is None


def test_observation_time_from_mjd_date_with_time_obs_jd_and_old_dates():
    mjd = 57383.26833333333  # 2015-12-27T06:26:24
    assert observation_mjd(fits.Header({"MJD-OBS": mjd})) == pytest.approx(mjd, abs=1e-9)
    assert observation_mjd(fits.Header({"MJD": mjd})) == pytest.approx(mjd, abs=1e-9)
    assert observation_mjd(fits.Header({"DATE-OBS": "2015-12-27T06:26:24"})) == pytest.approx(mjd, abs=1e-8)
    split = fits.Header({"DATE-OBS": "2015-12-27", "TIME-OBS": "06:26:24"})
    assert observation_mjd(split) == pytest.approx(mjd, abs=1e-8)
    assert observation_date(split) == "2015-12-27T06:26:24.000"
    assert observation_mjd(fits.Header({"DATE-OBS": "2015-12-27", "UT": "06:26:24"})) == pytest.approx(mjd, abs=1e-8)
    jd = fits.Header({"JD": 2457383.7683333335})  # MaxIm DL
    assert observation_mjd(jd) == pytest.approx(mjd, abs=1e-7)
    assert observation_date(jd).startswith("2015-12-27T06:26:24")
    assert observation_mjd(fits.Header({"DATE-OBS": "27/12/95"})) == pytest.approx(50078.0)
    assert observation_mjd(fits.Header({"OBJECT": "x"})) is None and observation_date(fits.Header()) is None


def test_standard_cards_are_derived_for_later_steps():
    cards = dict((key, value) for key, value, _ in normalised_cards(fits.Header({"EXPOSURE": 30.0, "JD": 2457383.5})))
    assert cards["EXPTIME"] == 30.0
    assert cards["MJD-OBS"] == pytest.approx(57383.0)
    assert cards["DATE-OBS"].startswith("2015-12-27T00:00:00")
    assert normalised_cards(fits.Header({"EXPTIME": 1.0, "MJD-OBS": 57383.0, "DATE-OBS": "2015-12-27T00:00:00"})) == []


# --------------------------------------------------------------------------- (c) gain, read noise, saturation


@pytest.mark.parametrize(
    ("cards", "value", "source"),
    [
        ({"GAIN": 1.6}, 1.6, "header GAIN"),
        ({"EGAIN": 2.2}, 2.2, "header EGAIN"),
        ({"CCDGAIN": 4.0}, 4.0, "header CCDGAIN"),
        ({"GAINA": 1.5, "GAINB": 1.7}, 1.6, "header mean(GAINA,GAINB)"),
        ({"GAINA": 2.0}, 2.0, "header GAINA"),
        ({"GAIN": (1.0, "[e-/ADU] assumed: resampled survey pixels"), "EGAIN": 1.9}, 1.9, "header EGAIN"),
    ],
)
def test_gain_keywords(cards, value, source):
    found = header_gain(make_header(cards))
    assert found.value == pytest.approx(value) and found.source == source


def test_per_amplifier_gains_are_averaged_and_noted():
    found = header_gain(fits.Header({"GAINA": 1.5, "GAINB": 1.7, "GAINC": 1.6, "GAIND": 1.6}))
    assert found.value == pytest.approx(1.6)
    assert "4 amplifiers" in found.note and "mean" in found.note


def test_assumed_and_missing_gains_give_none_and_electron_units_give_one():
    assumed = header_gain(make_header({"GAIN": (1.0, "[e-/ADU] assumed")}))
    assert assumed.value is None and "assumed" in assumed.note
    assert header_gain(fits.Header({"BUNIT": "ELECTRONS"})).value == 1.0
    assert header_gain(fits.Header({"BUNIT": "ELECTRONS/S", "EXPTIME": 500.0})).value == 500.0


@pytest.mark.parametrize(
    ("cards", "value", "source"),
    [
        ({"RDNOISE": 5.0}, 5.0, "header RDNOISE"),
        ({"READNOIS": 7.5}, 7.5, "header READNOIS"),
        ({"RON": 3.0}, 3.0, "header RON"),
        ({"READNOISE": 9.0}, 9.0, "header READNOISE"),  # 9 characters: a HIERARCH card
        ({"RDNOISEA": 4.0, "RDNOISEB": 6.0}, 5.0, "header mean(RDNOISEA,RDNOISEB)"),
        ({"READNSEA": 4.0, "READNSEB": 4.4}, 4.2, "header mean(READNSEA,READNSEB)"),
    ],
)
@pytest.mark.filterwarnings("ignore:Keyword name 'READNOISE'")
def test_read_noise_keywords(cards, value, source):
    found = header_read_noise(fits.Header(cards))
    assert found.value == pytest.approx(value) and found.source == source


def test_an_assumed_zero_read_noise_is_not_a_read_noise():
    assert header_read_noise(make_header({"RDNOISE": (0.0, "[e-] assumed")})).value is None
    assert header_read_noise(fits.Header({"RDNOISE": 0.0})).value == 0.0


@pytest.mark.parametrize(
    ("cards", "value", "source"),
    [
        ({"SATURATE": 60000.0}, 60000.0, "header SATURATE"),
        ({"DATAMAX": 50000.0}, 50000.0, "header DATAMAX"),
        ({"SATLEVEL": 40000.0}, 40000.0, "header SATLEVEL"),
        ({"SATURATA": 61000.0, "SATURATB": 58000.0}, 58000.0, "header min(SATURATA,SATURATB)"),
    ],
)
def test_saturation_keywords(cards, value, source):
    found = header_saturation(fits.Header(cards))
    assert found.value == pytest.approx(value) and found.source == source


def test_calibrate_frame_uses_per_amplifier_cards_and_says_so():
    rng = np.random.default_rng(4)
    raw = rng.normal(400.0, 15.0, (128, 128))
    raw[60:63, 60:63] = 59000.0  # above SATURATB, below SATURATA
    cards = {"IMAGETYP": "Light Frame", "GAINA": 2.0, "GAINB": 2.2, "RDNOISEA": 6.0, "RDNOISEB": 8.0,
             "SATURATA": 61000.0, "SATURATB": 58000.0, "EXPOSURE": 60.0}
    calibrated = calibrate_frame(raw, fits.Header(cards), identity_masters(raw.shape))
    info = calibrated.info
    assert info["gain"] == pytest.approx(2.1) and info["gain_source"] == "header mean(GAINA,GAINB)"
    assert info["read_noise"] == pytest.approx(7.0) and info["read_noise_source"] == "header mean(RDNOISEA,RDNOISEB)"
    assert info["saturation"] == 58000.0 and info["saturation_source"] == "header min(SATURATA,SATURATB)"
    assert any("2 amplifiers" in text for text in info["assumptions"])
    assert (calibrated.mask[60:63, 60:63] & masks.SATURATED).all()
    assert np.median(calibrated.science) == pytest.approx(400.0 * 2.1, rel=0.01)


def test_image_sections_decode_only_the_window_and_agree_with_the_whole_planes():
    """A window of each image extension, scaled and in native byte order, equals the same window of the plane that
    read_extensions decodes whole; table extensions are left out."""
    from astropy.table import Table

    from astrid_assets.science.frames.files import image_sections, read_extensions, to_fits_bytes

    rng = np.random.default_rng(7)
    science = rng.normal(100.0, 5.0, (64, 80)).astype(np.float32)
    mask = rng.integers(0, 65535, (64, 80)).astype(np.uint16)  # stored as int16 with BZERO = 32768
    content = to_fits_bytes([fits.PrimaryHDU(science), fits.ImageHDU(mask, name="MASK"),
                             fits.BinTableHDU(Table({"x": [1.0, 2.0]}), name="STARS")])
    sections, whole = image_sections(content), read_extensions(content)
    assert set(sections) == {"PRIMARY", "MASK"}
    for name in sections:
        section, header = sections[name]
        assert section.shape == whole[name][0].shape
        window = section[10:21, 30:47]
        assert window.dtype.isnative and window.dtype == whole[name][0].dtype.newbyteorder("=")
        np.testing.assert_array_equal(window, whole[name][0][10:21, 30:47])
        assert header["NAXIS1"] == 80
