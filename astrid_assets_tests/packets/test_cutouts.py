"""Packet cut-outs: gzipped FITS that astropy opens, with the image's WCS moved to the stamp, variance and mask."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from astrid_assets.packets.cutouts import STAMP_SIZE, cutout_fits, read_cutout, round_mantissa
from astrid_assets.science import masks
from astrid_assets.science.astrometry.align import PLACEHOLDER_CARD


def tan_header(shape=(200, 300)) -> fits.Header:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crpix = [shape[1] / 2, shape[0] / 2]
    wcs.wcs.crval = [150.1, 2.2]
    wcs.wcs.cd = [[-2.8e-4, 1.0e-5], [1.2e-5, 2.8e-4]]
    return wcs.to_header()


def test_cutout_keeps_the_sky_position_variance_and_mask():
    rng = np.random.default_rng(3)
    image = rng.normal(100, 10, (200, 300)).astype(np.float32)
    variance = np.linspace(90, 110, 200 * 300, dtype=np.float32).reshape(200, 300)
    mask = np.zeros((200, 300), np.uint16)
    mask[120, 80] = masks.COSMIC_RAY
    header = tan_header()
    x, y = 81.3, 118.6
    hdus = read_cutout(cutout_fits(image, x, y, header, variance=variance, mask=mask, psf=np.ones((5, 5)) / 25,
                                   cards={"NIGHT": "2024-01-02"}))
    stamp = hdus[0]
    assert stamp.data.shape == (STAMP_SIZE, STAMP_SIZE)
    sky = WCS(stamp.header).pixel_to_world(stamp.header["XPOS"], stamp.header["YPOS"])
    assert sky.separation(WCS(header).pixel_to_world(x, y)).arcsec < 1e-6
    # the stamp's centre pixel is the image's pixel nearest the position
    assert stamp.data[31, 31] == image[119, 81]
    assert hdus["MASK"].data[31 + 1, 31 - 1] == masks.COSMIC_RAY
    assert np.allclose(hdus["VARIANCE"].data, variance[119 - 31:119 + 32, 81 - 31:81 + 32], rtol=2.0 ** -12)
    assert hdus["PSF"].data.shape == (5, 5)
    assert stamp.header["NIGHT"] == "2024-01-02"


def test_cutout_at_the_edge_is_padded_and_says_so():
    image = np.ones((100, 100), np.float32)
    hdus = read_cutout(cutout_fits(image, 2.0, 97.0, tan_header((100, 100)), mask=np.zeros((100, 100), np.uint16)))
    data, mask = hdus[0].data, hdus["MASK"].data
    assert np.isnan(data[:, :29]).all() and np.isfinite(data[:34, 29:]).all()
    assert (mask[:, :29] == masks.NO_DATA).all() and (mask[:34, 29:] == 0).all()
    assert hdus[0].header["LTV1"] == -(2 - 31) and hdus[0].header["LTV2"] == -(97 - 31)


def test_a_grid_without_sky_has_no_celestial_wcs_but_its_pixel_offset():
    header = fits.Header({PLACEHOLDER_CARD: True, **tan_header((80, 80))})
    stamp = read_cutout(cutout_fits(np.zeros((80, 80), np.float32), 40, 40, header))[0]
    assert not WCS(stamp.header).has_celestial
    assert stamp.header["LTV1"] == -9.0


def test_off_the_image_is_an_error():
    with pytest.raises(ValueError, match="off the"):
        cutout_fits(np.zeros((50, 50), np.float32), 500.0, 10.0)


def test_round_mantissa_bounds_the_relative_error():
    values = np.random.default_rng(0).lognormal(3, 2, 10000).astype(np.float32)
    rounded = round_mantissa(values, 12)
    assert np.max(np.abs(rounded / values - 1)) <= 2.0 ** -13
    assert np.all(np.isnan(round_mantissa(np.array([np.nan]), 12)))
