"""FITS headers of simulated frames.

The cards shared by every raw frame (exposure time in s, gain in e- / ADU, read noise in e-,
saturation in ADU, pixel scale in arcsec / pixel) and those of science frames (zero point,
true seeing in arcsec, sky in mag / arcsec^2 and e- / pixel, trail in arcsec, WCS).
"""

from __future__ import annotations

import datetime as dt

from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS

from astrid_assets.testing.simulate.config import SurveyConfig, _Conditions
from astrid_assets.testing.simulate.conventions import _mjd


def _base_header(config: SurveyConfig, start: dt.datetime, exptime: float, imagetyp: str, field: str) -> fits.Header:
    header = fits.Header()
    header["IMAGETYP"] = (imagetyp, "object, bias, dark or flat")
    header["FIELD"] = (field, "survey field, CAL for calibration frames")
    header["DATE-OBS"] = (Time(start, scale="utc").isot, "UTC start of exposure")
    header["MJD-OBS"] = (_mjd(start), "MJD (UTC) at start of exposure")
    header["EXPTIME"] = (float(exptime), "[s] exposure time")
    header["FILTER"] = (config.filter_name, "filter")
    header["GAIN"] = (config.gain, "[e-/ADU] detector gain")
    header["RDNOISE"] = (config.read_noise, "[e-] read noise rms")
    header["SATURATE"] = (config.saturate, "[ADU] saturation level of raw data")
    header["PIXSCALE"] = (config.pixel_scale, "[arcsec/pixel] nominal pixel scale")
    header["BUNIT"] = ("adu", "raw counts including bias")
    header["TELESCOP"] = ("AstrID-sim", "simulated survey")
    header["SIMSEED"] = (config.seed, "survey seed")
    return header


def _science_header(
    config: SurveyConfig,
    start: dt.datetime,
    field: str,
    conditions: _Conditions,
    wcs: WCS,
    sky_electrons: float,
    trail_arcsec: float,
) -> fits.Header:
    header = _base_header(config, start, config.exptime, "object", field)
    header["OBJECT"] = (field, "field name")
    header["MAGZP"] = (config.zero_point, "mag of 1 e-/s total at unit flat response")
    header["SEEING"] = (conditions.seeing, "[arcsec] true Moffat PSF FWHM")
    header["PSFBETA"] = (config.moffat_beta, "Moffat beta of the true PSF")
    header["SKYMAG"] = (conditions.sky_mag, "[mag/arcsec2] true sky brightness")
    header["SKYLEV"] = (sky_electrons, "[e-/pixel] true sky in exposure, unit response")
    header["TRAIL"] = (trail_arcsec, "[arcsec] injected tracking trail length")
    header.update(wcs.to_header())
    return header
