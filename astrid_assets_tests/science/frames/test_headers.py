"""The instrument key of a frame (TELESCOP / INSTRUME, else the source) and its slug."""

import numpy as np
import pytest
from astropy.io import fits

from astrid_assets.defs.ingest import frame_row
from astrid_assets.science.frames.headers import INSTRUMENT_KEY_LENGTH, instrument_key, instrument_slug
from astrid_assets.surveys.base import RawFrame


def header(**cards) -> fits.Header:
    h = fits.Header()
    for key, value in cards.items():
        h[key] = value
    return h


@pytest.mark.parametrize("cards, source, key", [
    ({"TELESCOP": "0.5 m f/6.8 reflector", "INSTRUME": "KAF-16803 CCD"}, "fits_drop",
     "0.5 m f/6.8 reflector / KAF-16803 CCD"),
    ({"TELESCOP": "  0.5 m   f/6.8 reflector ", "INSTRUME": "KAF-16803  CCD  "}, "fits_drop",
     "0.5 m f/6.8 reflector / KAF-16803 CCD"),  # whitespace as acquisition software pads it
    ({"TELESCOP": "AstrID-sim"}, "simulated", "AstrID-sim"),
    ({"INSTRUME": "ACS"}, "mast", "ACS"),
    ({"TELESCOP": "", "INSTRUME": "  "}, "skyview", "skyview"),  # empty cards: the source
    ({}, "fits_drop", "fits_drop"),
    ({"TELESCOP": "Scope, North", "INSTRUME": "cam"}, "x", "Scope; North / cam"),  # keys are listed ","-separated
])
def test_instrument_key(cards, source, key):
    assert instrument_key(header(**cards), source) == key


def test_instrument_key_is_bounded_by_its_column():
    assert len(instrument_key(header(TELESCOP="T" * 60, INSTRUME="I" * 60), "x")) <= INSTRUMENT_KEY_LENGTH
    assert len(instrument_key(header(TELESCOP="T" * 68, INSTRUME="I" * 68), "x")) == INSTRUMENT_KEY_LENGTH


@pytest.mark.parametrize("key, slug", [
    ("0.5 m f/6.8 reflector / KAF-16803 CCD", "0-5-m-f-6-8-reflector-kaf-16803-ccd"),
    ("AstrID-sim", "astrid-sim"),
    ("simulated", "simulated"),
    ("Télescope Jules Verne / CCD", "telescope-jules-verne-ccd"),
    ("--HST__ACS--", "hst-acs"),
])
def test_slug(key, slug):
    assert instrument_slug(key) == slug
    assert instrument_slug(slug) == slug  # a slug is its own slug


def test_slug_of_a_key_without_ascii_is_a_stable_digest():
    slug = instrument_slug("望远镜")
    assert slug.startswith("i-") and len(slug) == 14 and slug == instrument_slug("望远镜")
    assert slug != instrument_slug("天文台")
    assert set(slug) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")


def test_raw_observations_row_carries_the_instrument():
    image = np.zeros((8, 8), np.float32)
    row = frame_row(RawFrame("f1", "2024-01-02", "F01", "fits_drop", b""), image,
                    header(TELESCOP="0.5 m f/6.8 reflector", INSTRUME="KAF-16803 CCD", IMAGETYP="Light Frame"), "k")
    assert row["instrument"] == "0.5 m f/6.8 reflector / KAF-16803 CCD"
    assert frame_row(RawFrame("f2", "2024-01-02", "F01", "simulated", b""), image, header(), "k")["instrument"] \
        == "simulated"
