"""PSF estimation: known-answer recovery from a synthetic star field; clear failure without stars."""

import numpy as np
import pytest

from astrid_assets.science import masks
from astrid_assets.science.photometry.forced import psf_photometry
from astrid_assets.science.psf.empirical import estimate_psf
from astrid_assets.science.psf.model import PSFError, measure_fwhm
from astrid_assets.science.psf.profiles import render_psf
from astrid_assets_tests.science import scenes


@pytest.mark.parametrize("fwhm", [2.5, 4.0])
def test_estimated_psf_matches_the_true_psf(fwhm: float) -> None:
    pair = scenes.make_pair(new_fwhm=fwhm, ref_fwhm=fwhm, seed=3)
    frame = pair.new
    model = estimate_psf(frame.image, frame.background, frame.background_rms, frame.mask, size=25)
    truth = render_psf(fwhm, 25, "moffat")
    assert model.image.shape == (25, 25)
    assert model.image.sum() == pytest.approx(1.0, abs=1e-5)
    assert model.n_stars >= 30
    # FWHM of the pixel-integrated profile, and the stamp itself to < 2 % of the peak.
    assert model.fwhm == pytest.approx(measure_fwhm(truth), rel=0.03)
    assert np.abs(model.image - truth).max() < 0.02 * truth.max()
    yy, xx = np.mgrid[-12:13, -12:13]
    core = xx**2 + yy**2 <= (2 * fwhm) ** 2
    centroid = [(model.image * c)[core].sum() / model.image[core].sum() for c in (xx, yy)]
    assert np.abs(centroid).max() < 0.02


def test_saturated_stars_are_not_used() -> None:
    pair = scenes.make_pair(seed=4)
    frame = pair.new
    mask = frame.mask.copy()
    brightest = np.argsort(-pair.star_flux)[:5]
    for k in brightest:
        j, i = int(round(pair.star_y[k])), int(round(pair.star_x[k]))
        mask[j, i] |= masks.SATURATED
    model = estimate_psf(frame.image, frame.background, frame.background_rms, mask)
    used = model.star_xy
    for k in brightest:
        assert np.min(np.hypot(used[:, 0] - pair.star_x[k], used[:, 1] - pair.star_y[k])) > 3


def test_star_less_image_raises_psf_error() -> None:
    rng = np.random.default_rng(0)
    blank = (1000.0 + rng.normal(0.0, 30.0, (256, 256))).astype(np.float32)
    with pytest.raises(PSFError, match="need at least"):
        estimate_psf(blank, 1000.0, 30.0, np.zeros(blank.shape, np.uint16))


def test_render_psf_is_normalised_and_offset() -> None:
    for profile in ("gaussian", "moffat"):
        stamp = render_psf(3.0, 25, profile, offset=(0.3, -0.2))
        assert stamp.sum() == pytest.approx(1.0, abs=1e-6)
        yy, xx = np.mgrid[-12:13, -12:13]
        assert (stamp * xx).sum() == pytest.approx(0.3, abs=0.02)
        assert (stamp * yy).sum() == pytest.approx(-0.2, abs=0.02)
    with pytest.raises(ValueError):
        render_psf(3.0, 24)


def test_psf_photometry_recovers_flux_and_error() -> None:
    rng = np.random.default_rng(5)
    shape = (200, 200)
    x = rng.uniform(30, 170, 40)
    y = rng.uniform(30, 170, 40)
    positions = np.column_stack([x, y])
    keep = [k for k in range(40) if np.all(np.hypot(*(positions[k] - np.delete(positions, k, 0)).T) > 20)]
    x, y = x[keep], y[keep]
    flux = np.full(x.size, 5000.0)
    model = scenes.render_stars(shape, x, y, flux, 3.0, "gaussian")
    sigma = 10.0
    images = [model + rng.normal(0, sigma, shape) for _ in range(20)]
    psf = render_psf(3.0, 31, "gaussian")
    measured = np.array([psf_photometry(im, sigma**2, psf, x, y) for im in images])
    fluxes, errors = measured[:, 0], measured[:, 1]
    assert np.mean(fluxes) == pytest.approx(5000.0, rel=0.005)
    assert np.std(fluxes) == pytest.approx(np.median(errors), rel=0.15)
