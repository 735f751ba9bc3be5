"""Noise through resampling between pixel scales: S_corr stays N(0, 1) and blank sky gives no candidates.

A new frame with 0.8″ or 1.25″ pixels is registered onto a 1.0″ reference grid
(:func:`~astrid_assets.science.astrometry.register.register_to_reference`), differenced with ZOGY and searched at
|S_corr| ≥ 5. Flux-conserving resampling multiplies the image by the pixel-area ratio ``a`` (input pixels
per reference pixel: 1.5625 for 0.8″, 0.64 for 1.25″); the noise power per unit area that ZOGY's S
integrates then scales by ``a``, not ``a²`` (the per-pixel variance of the resampled, correlated pixels is
a different number). See the Noise section of :mod:`astrid_assets.science.astrometry.register`.

Measured (robust std of S_corr on blank sky; false = candidates farther than 2 px from every injected
transient; three transients of 8000 e- injected, S/N ≈ 15–25):

==================================  ===============================  ===============================
scene                               variance × a² (before the fix)   variance × a (after)
==================================  ===============================  ===============================
stars, 0.8″ pixels (seed 7)         std 0.817, 0 false, 3/3 found    std 0.998, 0 false, 3/3 found
stars, 1.25″ pixels (seed 7)        std 1.148, 2 false, 3/3 found    std 0.978, 0 false, 3/3 found
pure noise, 0.8″ pixels             std 0.820                        std 1.003
pure noise, 1.25″ pixels            std 1.182                        std 1.006
==================================  ===============================  ===============================

Over seeds 1–8 after the fix: std 0.981–1.000 (0.8″) and 0.978–0.995 (1.25″), 1 false candidate in 16
images (|S_corr| = 5.0 on blank sky, seed 2), as expected of Gaussian noise: the expected number of 5σ
excursions of S_corr in a 512² image is ≈ 0.1
(:func:`~astrid_assets.science.detection.candidates.false_detection_expectation`).
"""

from __future__ import annotations

import numpy as np
import pytest

from astrid_assets.science import masks
from astrid_assets.science.astrometry.register import register_to_reference
from astrid_assets.science.astrometry.residuals import measure_registration_residuals
from astrid_assets.science.detection.candidates import detect_candidates
from astrid_assets.science.psf.empirical import estimate_psf
from astrid_assets.science.psf.profiles import render_psf
from astrid_assets.science.subtraction.inputs import SubtractionImage, ZogyOptions
from astrid_assets.science.subtraction.zogy import robust_std, zogy
from astrid_assets_tests.science import scenes

SHAPE = (512, 512)  #: reference grid, 1.0″ pixels
NEW_FWHM = 3.0  #: seeing of the new frame, arcsec (= reference px)
REF_FWHM = 4.0  #: seeing of the reference, arcsec
NEW_SKY, NEW_READ_NOISE = 400.0, 5.0  #: e- per new-frame pixel
REF_SKY, REF_READ_NOISE = 40.0, 2.0  #: e- per reference pixel (a deep reference scaled to one exposure)
TRANSIENT_FLUX = 8000.0  #: e-, S/N ≈ 15–25 in the new frame at either pixel scale
TRANSIENT_XY = np.array([(128.3, 384.6), (256.7, 255.2), (390.4, 140.9)])  #: reference px
BLANK_RADIUS = 15.0  #: blank sky: farther than this from every star and transient, reference px
SCALES = [0.8, 1.25]  #: new-frame pixels, arcsec


def _frame_wcs(pixel_scale: float):
    """A new frame's shape and WCS covering the whole reference field (2° rotation, sub-pixel shift)."""
    side = int(np.ceil(1.1 * SHAPE[0] / pixel_scale))
    shape = (side, side)
    return shape, scenes.tan_wcs(shape, scale_arcsec=pixel_scale, rotation_deg=2.0, crpix_shift=(0.37, -0.21))


def _distances(x: np.ndarray, y: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``(len(x), len(points))`` distances, px."""
    return np.hypot(np.asarray(x)[:, None] - points[None, :, 0], np.asarray(y)[:, None] - points[None, :, 1])


def _difference(pixel_scale: float, seed: int = 7):
    """Stars, sky and read noise seen in a ``pixel_scale``″ frame and the 1.0″ reference; register, ZOGY, detect.

    Returns the robust std of S_corr on blank sky, the false candidates (table), which transients were found
    (within 2 px) and the :class:`~astrid_assets.science.subtraction.zogy.ZogyResult`.
    """
    rng = np.random.default_rng(seed)
    ref_wcs = scenes.tan_wcs(SHAPE)
    frame_shape, frame_wcs = _frame_wcs(pixel_scale)
    x, y = scenes.star_positions(SHAPE, 90, rng)
    away = _distances(x, y, TRANSIENT_XY).min(axis=1) > 20
    x, y = x[away], y[away]
    flux = np.exp(rng.uniform(np.log(3e3), np.log(3e5), x.size))  # e-, S/N ≈ 30–1500
    tx, ty = TRANSIENT_XY[:, 0], TRANSIENT_XY[:, 1]

    reference_model = scenes.render_stars(SHAPE, x, y, flux, REF_FWHM)
    reference = scenes.observe(reference_model, REF_SKY, REF_READ_NOISE, rng, REF_FWHM)
    fx, fy = frame_wcs.world_to_pixel_values(*ref_wcs.pixel_to_world_values(np.append(x, tx), np.append(y, ty)))
    frame_flux = np.append(flux, np.full(tx.size, TRANSIENT_FLUX))
    frame_model = scenes.render_stars(frame_shape, fx, fy, frame_flux, NEW_FWHM / pixel_scale)
    frame = scenes.observe(frame_model, NEW_SKY, NEW_READ_NOISE, rng, NEW_FWHM / pixel_scale)

    registered = register_to_reference(
        frame.image - frame.background, frame.variance, frame.mask, frame_wcs, ref_wcs, SHAPE
    )
    ref_image = reference.image - reference.background
    # sky noise of the new frame per reference pixel's area: (sky + read noise²) × (1.0″ / pixel_scale)²
    new_sigma = frame.background_rms / pixel_scale
    residuals = measure_registration_residuals(
        registered.image, np.sqrt(registered.variance), ref_image, np.sqrt(reference.variance), registered.mask
    )
    new_psf = estimate_psf(registered.image, 0.0, new_sigma, registered.mask)
    ref_psf = estimate_psf(reference.image, reference.background, reference.background_rms)
    result = zogy(
        SubtractionImage(registered.image, new_psf, new_sigma, registered.variance, registered.mask),
        SubtractionImage(ref_image, ref_psf, reference.background_rms, reference.variance, reference.mask),
        ZogyOptions(astrometric_sigma=(residuals.rms_x, residuals.rms_y), backend="numpy"),
    )
    candidates = detect_candidates(
        result.S_corr,
        result.difference,
        result.difference_var,
        result.mask,
        ref_wcs,
        result.psf_fwhm,
        threshold=5.0,
        difference_psf=result.P_D,
    )
    gy, gx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    sources = np.column_stack([np.append(x, tx), np.append(y, ty)])
    blank = (result.mask & masks.UNUSABLE) == 0
    for sx, sy in sources:
        blank &= np.hypot(gx - sx, gy - sy) > BLANK_RADIUS
    s_corr_std = robust_std(result.S_corr, blank)
    to_transients = _distances(candidates["x"].to_numpy(), candidates["y"].to_numpy(), TRANSIENT_XY)
    false = candidates[to_transients.min(axis=1, initial=np.inf) > 2.0]
    found = (to_transients <= 2.0).any(axis=0)
    return s_corr_std, false, found, result


@pytest.mark.parametrize("pixel_scale", SCALES)
def test_s_corr_unit_variance_and_no_false_candidates_across_pixel_scales(pixel_scale: float) -> None:
    """Before the fix (variance × a²): std 0.817 / 1.148 and 2 false candidates at 1.25″; after: 0.998 / 0.978, none."""
    s_corr_std, false, found, result = _difference(pixel_scale)
    assert ((result.mask & masks.NO_DATA) == 0).all()  # the frame covers the reference grid
    assert result.flux_ratio == pytest.approx(1.0, abs=0.02)  # the resampling conserves flux
    assert s_corr_std == pytest.approx(1.0, abs=0.03), f"robust std(S_corr) on blank sky {s_corr_std:.3f}"
    assert len(false) == 0, false[["x", "y", "s_corr_peak", "flags"]]
    assert found.all(), f"transients found: {found}"


@pytest.mark.parametrize("pixel_scale", SCALES)
def test_resampled_variance_is_noise_power_per_area_not_per_pixel_variance(pixel_scale: float) -> None:
    """Pure noise: the variance map is σ² · a, the per-pixel variance of the correlated resampled pixels is not.

    Measured per-pixel std / sqrt(variance map): 1.09 (0.8″, a = 1.5625) and 0.70 (1.25″, a = 0.64); S_corr
    std with PSFs rendered at the right FWHM in reference pixels: before the fix 0.820 / 1.182, after
    1.003 / 1.006 (before, the map was a² σ² and the per-pixel ratio 0.87 at both scales).
    """
    rng = np.random.default_rng(3)
    ref_wcs = scenes.tan_wcs(SHAPE)
    frame_shape, frame_wcs = _frame_wcs(pixel_scale)
    sigma, ref_sigma = 20.6, 6.6
    noise = rng.normal(0.0, sigma, frame_shape).astype(np.float32)
    registered = register_to_reference(
        noise, np.full(frame_shape, sigma**2, np.float32), None, frame_wcs, ref_wcs, SHAPE
    )
    area = 1.0 / pixel_scale**2
    assert np.nanmedian(registered.variance) == pytest.approx(sigma**2 * area, rel=1e-4)
    per_pixel = np.nanstd(registered.image) / np.sqrt(np.nanmedian(registered.variance))
    assert per_pixel == pytest.approx(1.09 if pixel_scale < 1 else 0.70, abs=0.02)
    result = zogy(
        SubtractionImage(registered.image, render_psf(NEW_FWHM, 25, "moffat"), sigma * np.sqrt(area),
                         registered.variance, registered.mask),
        SubtractionImage(rng.normal(0.0, ref_sigma, SHAPE).astype(np.float32), render_psf(REF_FWHM, 25, "moffat"),
                         ref_sigma, np.full(SHAPE, ref_sigma**2, np.float32)),
        ZogyOptions(flux_ratio=1.0, backend="numpy"),
    )
    assert result.s_corr_std == pytest.approx(1.0, abs=0.03)
