"""Pointings read from headers and fields grouped by pointing."""

import pytest
from astropy.io import fits

from astrid_assets.science.frames.pointing import (
    MIN_GROUP_RADIUS,
    Pointing,
    field_pointing,
    group_pointings,
    header_pointing,
    parse_angle,
    pixel_scale,
    pointing_field_name,
)


@pytest.mark.parametrize(("value", "hours", "expected"), [
    ("12 34 56.78", True, 15 * (12 + 34 / 60 + 56.78 / 3600)),  # MaxIm DL OBJCTRA
    ("+45 12 34.5", False, 45 + 12 / 60 + 34.5 / 3600),  # MaxIm DL OBJCTDEC
    ("-00 30 00", False, -0.5),
    ("05:35:17.3", True, 15 * (5 + 35 / 60 + 17.3 / 3600)),
    ("05h35m17.3s", True, 15 * (5 + 35 / 60 + 17.3 / 3600)),
    ("-05d23'28\"", False, -(5 + 23 / 60 + 28 / 3600)),
    (83.82, True, 83.82),  # a number is degrees, even for right ascension
    ("83.82", True, 83.82),
])
def test_angles_parse(value, hours, expected):
    assert parse_angle(value, hours=hours) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("value", ["", "N/A", "12 75 00", True, None])
def test_non_angles_are_none(value):
    assert parse_angle(value) is None


def test_maxim_dl_cards_give_the_pointing_and_the_scale():
    header = fits.Header({"NAXIS": 2, "NAXIS1": 3000, "NAXIS2": 2000, "OBJCTRA": "05 35 17.30",
                          "OBJCTDEC": "-05 23 28.0", "XPIXSZ": 9.0, "FOCALLEN": 1000.0})
    pointing = header_pointing(header)
    assert pointing.source == "header OBJCTRA/OBJCTDEC"
    assert pointing.ra == pytest.approx(83.8221, abs=1e-4) and pointing.dec == pytest.approx(-5.3911, abs=1e-4)
    assert pixel_scale(header) == pytest.approx(206.265 * 9 / 1000)
    assert pointing.radius == pytest.approx(0.25 * 2000 * 206.265 * 9 / 1000 / 3600)


def test_wcs_centre_is_preferred_to_the_cards():
    header = fits.Header({"NAXIS": 2, "NAXIS1": 101, "NAXIS2": 101, "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN",
                          "CRVAL1": 150.0, "CRVAL2": 2.0, "CRPIX1": 51.0, "CRPIX2": 51.0,
                          "CDELT1": -1 / 3600, "CDELT2": 1 / 3600, "RA": 10.0, "DEC": 10.0})
    pointing = header_pointing(header)
    assert pointing.source == "WCS centre"
    assert (pointing.ra, pointing.dec) == pytest.approx((150.0, 2.0))
    assert pointing.radius == MIN_GROUP_RADIUS  # 101" wide: the bound applies


def test_no_pointing_is_none():
    assert header_pointing(fits.Header({"NAXIS": 2, "NAXIS1": 10, "NAXIS2": 10, "OBJCTRA": "??"})) is None


def test_field_names_encode_the_pointing():
    name = pointing_field_name(359.999, -0.754)
    assert name == "P000.00-00.75" and field_pointing(name) == (0.0, -0.75)
    assert field_pointing("M31") is None and field_pointing("P123.46+45.61-2") == (123.46, 45.61)


def test_dithers_share_a_field_and_known_fields_keep_their_names():
    radius = 0.05
    first, dither, far = (Pointing(10.0, 20.0, radius, "t"), Pointing(10.001, 20.001, radius, "t"),
                          Pointing(11.0, 20.0, radius, "t"))
    names = [name for name, _ in group_pointings([first, dither, far])]
    assert names[0] == names[1] == "P010.00+20.00" and names[2] == "P011.00+20.00"
    later = group_pointings([Pointing(10.03, 20.02, radius, "t")], known=["M31", "P010.00+20.00"])
    assert later[0][0] == "P010.00+20.00" and "known field" in later[0][1]
