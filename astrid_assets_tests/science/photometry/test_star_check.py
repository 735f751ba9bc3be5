"""The flux ratio and the constant stars of a sparse pair (:func:`check_stars`): two stars, two galaxies and
point transients that the reference holds from an earlier night, as a cut-out of a few stars gives."""

import numpy as np
import pytest
from astropy.io import fits
from scipy.signal import fftconvolve

from astrid_assets.science.photometry.star_check import check_stars
from astrid_assets.science.products import Reference
from astrid_assets.science.psf.profiles import render_psf

SHAPE, FWHM, SKY_RMS = (192, 192), 2.5, 10.0
STARS = [(40.3, 50.6, 3.0e5), (150.2, 140.7, 1.2e5)]
GALAXIES = [(60.4, 140.2, 2.0e5), (140.6, 50.3, 1.5e5)]
#: (x, y, flux in the reference, flux in the new image): transients of an earlier night, faded or brightened
TRANSIENTS = [(96.2, 96.7, 3.0e4, 1.0e4), (100.1, 40.4, 2.0e4, 4.0e4), (40.7, 100.3, 2.5e4, 1.2e4)]


def _image(ratio, fwhm, transient_column, seed):
    rng = np.random.default_rng(seed)
    image = np.zeros(SHAPE)
    psf = render_psf(fwhm, 21, "gaussian")
    yy, xx = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
    for x, y, flux in STARS:
        image[int(y) - 10:int(y) + 11, int(x) - 10:int(x) + 11] += ratio * flux * psf
    for x, y, flux in GALAXIES:  # exponential discs of scale length 3.5 px, seen through the seeing
        disc = np.exp(-np.hypot(xx - x, yy - y) / 3.5)
        image += ratio * flux * fftconvolve(disc / disc.sum(), psf, mode="same")
    for row in TRANSIENTS:
        x, y, flux = row[0], row[1], row[transient_column]
        image[int(y) - 10:int(y) + 11, int(x) - 10:int(x) + 11] += ratio * flux * psf
    return (image + rng.normal(0.0, SKY_RMS, SHAPE)).astype(np.float32), psf


def test_a_sparse_pair_gets_its_ratio_from_its_two_stars() -> None:
    """No three sources agree (the galaxies' PSF-fit fluxes follow the seeing, the transients changed), so the
    ratio is that of the two stars that do agree, and only they are constant (the PSF error is calibrated at
    none: fewer than three)."""
    ref_image, ref_psf = _image(1.0, FWHM, 2, seed=1)
    new_image, new_psf = _image(1.3, 1.25 * FWHM, 3, seed=2)
    variance = np.full(SHAPE, SKY_RMS**2, np.float32)
    mask = np.zeros(SHAPE, np.uint16)
    reference = Reference(ref_image, variance, mask, ref_psf, fits.Header())
    check = check_stars(new_image, variance, new_psf, reference, ref_psf, mask)
    assert check.ratio == pytest.approx(1.3, rel=0.01)
    assert len(check.constant_xy) == 2
    assert np.hypot(*(check.constant_xy[:, None, :] - np.array(STARS)[None, :, :2]).transpose(2, 0, 1)).min(
        axis=1).max() < 1.0
    given = check_stars(new_image, variance, new_psf, reference, ref_psf, mask, ratio=1.3)
    assert given.ratio == 1.3 and len(given.constant_xy) == 2
