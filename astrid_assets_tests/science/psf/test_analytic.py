"""The PSF ladder: empirical where enough stars exist, a fitted Moffat/Gaussian from one to a few stars
(flagged pixels outside the core weighted 0), and a clear refusal when the frame has no star."""

import numpy as np
import pytest

from astrid_assets.science import masks
from astrid_assets.science.photometry.forced import psf_photometry
from astrid_assets.science.psf.analytic import estimate_frame_psf
from astrid_assets.science.psf.empirical import estimate_psf
from astrid_assets.science.psf.model import PSFError
from astrid_assets.science.psf.profiles import render_psf

FWHM, BETA, SKY, SKY_RMS = 3.0, 3.0, 200.0, 10.0


def _frame(positions, fluxes, shape=(256, 256), seed=1, fwhm=FWHM, beta=BETA):
    """A sky of ``SKY`` e- with Gaussian noise ``SKY_RMS`` e- and Moffat stars (FWHM px, fluxes e-) + Poisson."""
    rng = np.random.default_rng(seed)
    truth = np.full(shape, SKY)
    size = 41
    half = size // 2
    for (x, y), flux in zip(positions, fluxes, strict=True):
        i, j = int(round(x)), int(round(y))
        stamp = render_psf(fwhm, size, "moffat", beta=beta, offset=(x - i, y - j), oversample=9).astype(np.float64)
        truth[j - half: j + half + 1, i - half: i + half + 1] += flux * stamp
    image = rng.poisson(truth - SKY + 1e-9).astype(np.float64) + SKY + rng.normal(0, SKY_RMS, shape)
    return image.astype(np.float32)


def _truth_stamp(size=25):
    return render_psf(FWHM, size, "moffat", beta=BETA, oversample=9)


def _fwhm_of(psf):
    """FWHM of the model's stamp against the true stamp's, both after pixelisation (measure_fwhm)."""
    from astrid_assets.science.psf.model import measure_fwhm
    return psf.fwhm / measure_fwhm(_truth_stamp(psf.size))


FOUR = [(60.3, 70.6), (190.8, 60.2), (70.1, 185.4), (180.5, 190.9)]


def test_four_stars_give_a_moffat_psf_that_recovers_a_fake() -> None:
    image = _frame(FOUR, [2.0e5, 1.5e5, 1.0e5, 8.0e4])
    with pytest.raises(PSFError):  # the empirical rung alone refuses (needs 5)
        estimate_psf(image, SKY, SKY_RMS)
    psf = estimate_frame_psf(image, SKY, SKY_RMS)
    assert psf.psf_source == "moffat"
    assert psf.n_stars == 4 and psf.star_xy.shape == (4, 2)
    assert _fwhm_of(psf) == pytest.approx(1.0, abs=0.05)
    assert psf.image.sum() == pytest.approx(1.0, abs=1e-5)
    # inject a fake of known flux with the true PSF; PSF photometry with the fitted PSF recovers it
    x, y, flux = 128.4, 127.7, 2.0e4
    stamp = render_psf(FWHM, 41, "moffat", beta=BETA, offset=(0.4, -0.3), oversample=9)
    faked = image.astype(np.float64) - SKY
    faked[108:149, 108:149] += flux * stamp
    variance = SKY_RMS**2 + np.clip(faked, 0, None)
    measured, error = psf_photometry(faked, variance, psf, np.array([x]), np.array([y]))
    truth_in_stamp = flux * render_psf(FWHM, 41, "moffat", beta=BETA, oversample=9)[8:33, 8:33].sum()
    assert abs(measured[0] - truth_in_stamp) < 3.0 * error[0]


def test_one_star_still_gives_a_psf() -> None:
    image = _frame([(128.2, 127.6)], [1.5e5], seed=2)
    psf = estimate_frame_psf(image, SKY, SKY_RMS)
    assert psf.psf_source in ("moffat", "gaussian")
    assert psf.n_stars == 1
    assert _fwhm_of(psf) == pytest.approx(1.0, abs=0.08)


def test_flagged_pixels_outside_the_core_get_zero_weight() -> None:
    positions = [(80.4, 90.3), (170.7, 160.2)]
    image = _frame(positions, [1.5e5, 1.0e5], seed=3)
    mask = np.zeros(image.shape, dtype=np.uint16)
    for (x, y), (di, dj) in zip(positions, [(3, 0), (0, -3)], strict=True):
        i, j = int(round(x)) + di, int(round(y)) + dj
        image[j, i] = 6.0e4  # a hot pixel / cosmic ray that must not be fitted
        mask[j, i] = masks.COSMIC_RAY
    psf = estimate_frame_psf(image, SKY, SKY_RMS, mask)
    assert psf.psf_source == "moffat"
    assert psf.n_stars == 2
    assert _fwhm_of(psf) == pytest.approx(1.0, abs=0.05)


def test_a_flagged_core_is_not_a_star() -> None:
    image = _frame([(128.0, 128.0)], [1.5e5], seed=4)
    mask = np.zeros(image.shape, dtype=np.uint16)
    mask[128, 128] = masks.SATURATED
    with pytest.raises(PSFError, match="^no star: .*flagged pixel in the core"):
        estimate_frame_psf(image, SKY, SKY_RMS, mask)


def test_a_frame_without_stars_is_refused_saying_so() -> None:
    image = _frame([], [], seed=5)
    with pytest.raises(PSFError, match="^no star: no source above the detection threshold"):
        estimate_frame_psf(image, SKY, SKY_RMS)


def test_many_stars_keep_the_empirical_rung() -> None:
    rng = np.random.default_rng(6)
    positions = [(x, y) for x, y in rng.uniform(25, 231, size=(40, 2))]
    image = _frame(positions, rng.uniform(3e4, 2e5, 40), seed=6)
    empirical = estimate_psf(image, SKY, SKY_RMS)
    psf = estimate_frame_psf(image, SKY, SKY_RMS)
    assert psf.psf_source == "empirical"
    assert psf.n_stars == empirical.n_stars
    np.testing.assert_array_equal(psf.image, empirical.image)


def test_the_rung_is_stored_with_the_psf() -> None:
    from astrid_assets.science.measurements import psf_model_from, psf_model_hdus

    psf = estimate_frame_psf(_frame(FOUR, [2.0e5, 1.5e5, 1.0e5, 8.0e4]), SKY, SKY_RMS)
    hdus = psf_model_hdus(psf, "NEWPSF")
    assert hdus[0].header["PSFSRC"] == "moffat"
    back = psf_model_from({hdu.name: (hdu.data, hdu.header) for hdu in hdus}, "NEWPSF")
    assert back.psf_source == "moffat" and back.n_stars == 4
    np.testing.assert_allclose(back.star_xy, psf.star_xy)
    del hdus[0].header["PSFSRC"]  # stored before the ladder: empirical
    assert psf_model_from({hdu.name: (hdu.data, hdu.header) for hdu in hdus}, "NEWPSF").psf_source == "empirical"


def test_frames_and_fields_get_the_ladder() -> None:
    from astrid_assets.science.measurements import measure_frame
    from astrid_assets.science.products import CalibratedFrame
    from astrid_assets.science.psf.field import estimate_psf_field
    from astrid_assets.science.psf.stars import PSF_STAR_LIMITS

    def calibrated(image):
        shape = image.shape
        return CalibratedFrame(image, np.zeros(shape, np.uint16), np.full(shape, SKY_RMS**2, np.float32),
                               np.full(shape, SKY, np.float32), np.full(shape, SKY_RMS, np.float32))

    two = _frame([(80.4, 90.3), (170.7, 160.2)], [1.5e5, 1.0e5], seed=7)
    measured = measure_frame(calibrated(two))
    assert measured.psf is not None and measured.psf.psf_source == "moffat" and measured.psf.n_stars == 2
    assert _fwhm_of(measured.psf) == pytest.approx(1.0, abs=0.05)
    field = estimate_psf_field(two, SKY, SKY_RMS, **PSF_STAR_LIMITS)
    assert field.constant.psf_source == "moffat" and not field.varies
    assert measure_frame(calibrated(_frame([], [], seed=8))).psf is None


def test_stars_with_fainter_neighbours_are_fitted_around_them() -> None:
    stars = [(60.3, 70.6), (190.8, 60.2), (70.1, 185.4)]
    neighbours = [(x + 7.0, y + 2.0) for x, y in stars]
    image = _frame(stars + neighbours, [2.0e5, 1.5e5, 1.0e5, 4.0e4, 3.0e4, 2.0e4], seed=9)
    psf = estimate_frame_psf(image, SKY, SKY_RMS)
    assert psf.psf_source == "moffat"
    assert _fwhm_of(psf) == pytest.approx(1.0, abs=0.05)


def test_a_wider_source_is_dropped_by_its_fit_residual() -> None:
    image = _frame(FOUR, [2.0e5, 1.5e5, 1.0e5, 8.0e4], seed=11)
    image = image + (_frame([(128.3, 128.6)], [2.5e5], seed=12, fwhm=5.0, beta=2.5) - SKY)  # a compact galaxy
    psf = estimate_frame_psf(image, SKY, SKY_RMS)
    assert psf.psf_source == "moffat" and psf.n_stars == 4
    assert np.hypot(*(psf.star_xy - 128.0).T).min() > 50  # not the galaxy
    assert _fwhm_of(psf) == pytest.approx(1.0, abs=0.05)


def _disc(shape, x, y, flux, scale):
    """An exponential disc of ``flux`` e- and scale length ``scale`` px (a galaxy seen sharp), no noise."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    disc = np.exp(-np.hypot(xx - x, yy - y) / scale)
    return flux * disc / disc.sum()


def test_galaxies_brighter_than_the_stars_are_not_fitted() -> None:
    """A sparse cut-out: three stars and two brighter galaxies. The galaxies' half-light radii are far above the
    stars' median (extended), so the joint profile is the stars' alone."""
    image = _frame(FOUR[:3], [6.0e4, 5.0e4, 4.0e4], seed=13).astype(np.float64)
    for (x, y), flux in (((128.3, 128.6), 4.0e5), ((200.2, 120.4), 3.0e5)):
        image += _disc(image.shape, x, y, flux, 3.5)
    psf = estimate_frame_psf(image.astype(np.float32), SKY, SKY_RMS)
    assert psf.n_stars == 3
    for galaxy in ((128.3, 128.6), (200.2, 120.4)):
        assert np.hypot(*(psf.star_xy - galaxy).T).min() > 20
    assert _fwhm_of(psf) == pytest.approx(1.0, abs=0.06)
