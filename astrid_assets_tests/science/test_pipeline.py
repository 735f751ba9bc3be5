"""The differencing chain as the Dagster assets run it: register a rotated, shifted frame onto
the reference grid, estimate both PSFs, measure the registration residuals, ZOGY, extract."""

import numpy as np
import pytest

from astrid_assets.science import masks
from astrid_assets.science.astrometry.register import register_to_reference
from astrid_assets.science.astrometry.residuals import measure_registration_residuals
from astrid_assets.science.detection import FLAG_EDGE, detect_candidates
from astrid_assets.science.psf.empirical import estimate_psf
from astrid_assets.science.psf.profiles import render_psf
from astrid_assets.science.subtraction.inputs import SubtractionImage, ZogyOptions
from astrid_assets.science.subtraction.zogy import zogy
from astrid_assets_tests.science import scenes

SHAPE = (512, 512)


def test_registered_frame_to_candidates() -> None:
    rng = np.random.default_rng(42)
    ref_wcs = scenes.tan_wcs(SHAPE)
    frame_wcs = scenes.tan_wcs(SHAPE, rotation_deg=5.0, crpix_shift=(9.3, -6.1), scale_arcsec=1.01)
    x, y = scenes.star_positions(SHAPE, 90, rng, margin=0)
    flux = np.exp(rng.uniform(np.log(3e3), np.log(3e5), x.size))
    world = ref_wcs.pixel_to_world_values(x, y)
    grid = [(gx, gy) for gx in np.arange(150.2, 360, 9.0) for gy in np.arange(150.7, 360, 9.0)]
    transient_xy = next(p for p in grid if np.min(np.hypot(x - p[0], y - p[1])) > 20)
    transient_world = ref_wcs.pixel_to_world_values(*transient_xy)

    reference = scenes.observe(scenes.render_stars(SHAPE, x, y, flux, 4.0), 40.0, 2.0, rng, 4.0)
    fx, fy = frame_wcs.world_to_pixel_values(*world)
    tx, ty = frame_wcs.world_to_pixel_values(*transient_world)
    transient_flux = 6000.0  # e-, S/N ~ 20 in the new frame
    frame_model = scenes.render_stars(SHAPE, np.append(fx, tx), np.append(fy, ty), np.append(flux, transient_flux), 2.5)
    frame = scenes.observe(frame_model, 400.0, 5.0, rng, 2.5)

    registered = register_to_reference(
        frame.image - frame.background, frame.variance, frame.mask, frame_wcs, ref_wcs, SHAPE
    )
    ref_image = reference.image - reference.background
    residuals = measure_registration_residuals(
        registered.image, np.sqrt(registered.variance), ref_image, np.sqrt(reference.variance), registered.mask
    )
    assert abs(residuals.dx) < 0.05 and abs(residuals.dy) < 0.05
    new_psf = estimate_psf(registered.image, 0.0, np.sqrt(registered.variance), registered.mask)
    ref_psf = estimate_psf(reference.image, reference.background, reference.background_rms)
    result = zogy(
        SubtractionImage(registered.image, new_psf, frame.background_rms, registered.variance, registered.mask),
        SubtractionImage(ref_image, ref_psf, reference.background_rms, reference.variance, reference.mask),
        ZogyOptions(astrometric_sigma=(residuals.rms_x, residuals.rms_y), backend="numpy"),
    )
    usable = (result.mask & masks.UNUSABLE) == 0
    # resampling correlates the noise, yet S_corr stays normalised (variance resampled linearly)
    assert result.s_corr_std == pytest.approx(1.0, abs=0.05)
    assert result.flux_ratio == pytest.approx(1.0, abs=0.02)
    assert usable.mean() > 0.8

    candidates = detect_candidates(
        result.S_corr,
        result.difference,
        result.difference_var,
        result.mask,
        ref_wcs,
        result.psf_fwhm,
        difference_psf=result.P_D,
    )
    clean = candidates[(candidates["flags"] & FLAG_EDGE) == 0]
    assert len(clean) == 1, clean[["x", "y", "s_corr_peak", "flags"]]
    found = clean.iloc[0]
    assert np.hypot(found["x"] - transient_xy[0], found["y"] - transient_xy[1]) < 0.5
    assert found["sign"] == 1 and found["flags"] == 0 and found["rule_score"] > 0.9
    assert found["flux"] == pytest.approx(transient_flux, rel=0.15)
    assert found["ra"] == pytest.approx(transient_world[0], abs=0.5 / 3600)
    assert found["dec"] == pytest.approx(transient_world[1], abs=0.5 / 3600)


def test_resampled_noise_keeps_s_corr_normalised() -> None:
    """Cubic-spline resampling lowers the per-pixel noise by up to ~25 % (half-pixel shift), but
    S_corr, a PSF-scale statistic, stays within 5 % of unit variance."""
    rng = np.random.default_rng(1)
    ref_wcs = scenes.tan_wcs(SHAPE)
    for frame_wcs in (
        scenes.tan_wcs(SHAPE, crpix_shift=(0.5, 0.5)),
        scenes.tan_wcs(SHAPE, rotation_deg=7.0, crpix_shift=(12.3, -7.6)),
    ):
        noise = rng.normal(0.0, 20.6, SHAPE).astype(np.float32)
        registered = register_to_reference(noise, np.full(SHAPE, 20.6**2, np.float32), None, frame_wcs, ref_wcs, SHAPE)
        covered = np.isfinite(registered.image)
        assert np.std(registered.image[covered]) < 0.9 * 20.6
        result = zogy(
            SubtractionImage(registered.image, render_psf(2.5, 25, "moffat"), 20.6, registered.variance,
                             registered.mask),
            SubtractionImage(rng.normal(0.0, 6.6, SHAPE).astype(np.float32), render_psf(4.0, 25, "moffat"), 6.6,
                             np.full(SHAPE, 6.6**2, np.float32)),
            ZogyOptions(flux_ratio=1.0, backend="numpy"),
        )
        assert result.s_corr_std == pytest.approx(1.0, abs=0.05)


def test_a_difference_keeps_its_scalars_through_fits() -> None:
    """Difference.to_hdus / from_extensions round trip (the new frame's FWHM was not written and came back as
    the difference PSF's)."""
    from astropy.io import fits

    from astrid_assets.science.frames.files import read_extensions, to_fits_bytes
    from astrid_assets.science.products import Difference

    image = np.zeros((8, 8), np.float32)
    difference = Difference(new=image, reference=image, difference=image, variance=image + 1, s_corr=image,
                            mask=np.zeros((8, 8), np.uint16), psf=render_psf(3.0, 7, "gaussian"), psf_fwhm=3.4,
                            new_fwhm=2.6, flux_ratio=0.97, s_corr_std=1.01, registration_rms=0.05, method="zogy",
                            registration="star-pattern")
    back = Difference.from_extensions(read_extensions(to_fits_bytes(difference.to_hdus(fits.Header()))), image)
    assert (back.psf_fwhm, back.new_fwhm, back.flux_ratio, back.s_corr_std, back.registration) == (
        3.4, 2.6, 0.97, 1.01, "star-pattern")
