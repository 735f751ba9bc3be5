"""Co-adding frames into a reference: registration, flux scaling, clipping, PSF."""

import numpy as np
import pytest

from astrid_assets.science import masks
from astrid_assets.science.photometry.forced import psf_photometry
from astrid_assets.science.reference.coadd import coadd, select_best_frames
from astrid_assets_tests.science import scenes

SHAPE = (256, 256)


def make_frames(rng, n=4):
    ref_wcs = scenes.tan_wcs(SHAPE)
    x, y = scenes.star_positions(SHAPE, 45, rng, margin=25)
    flux = np.exp(rng.uniform(np.log(2e4), np.log(3e5), x.size))
    world = ref_wcs.pixel_to_world_values(x, y)
    frames, scales = [], []
    for k in range(n):
        frame_wcs = scenes.tan_wcs(SHAPE, rotation_deg=2.0 * k, crpix_shift=(1.7 * k, -1.3 * k))
        fx, fy = frame_wcs.world_to_pixel_values(*world)
        scale = [1.0, 0.8, 1.25, 0.9, 1.1][k]  # transparency / exposure differences
        fwhm = [3.0, 3.2, 2.8, 3.1, 3.0][k]
        model = scenes.render_stars(SHAPE, fx, fy, scale * flux, fwhm, "moffat")
        frame = scenes.observe(model, 300.0, 5.0, rng, fwhm)
        frames.append((frame.image, frame.variance, frame.mask, frame_wcs, np.full(SHAPE, frame.background)))
        scales.append(scale)
    return frames, ref_wcs, x, y, flux, np.array(scales)


def test_coadd_scales_frames_to_the_anchor_and_lowers_the_noise() -> None:
    rng = np.random.default_rng(4)
    frames, ref_wcs, x, y, flux, scales = make_frames(rng)
    image, variance, mask, wcs, background = frames[1]
    image = image.copy()
    grid = [(gx, gy) for gx in range(60, 200, 7) for gy in range(60, 200, 7)]
    blank_x, blank_y = next(p for p in grid if np.min(np.hypot(x - p[0], y - p[1])) > 15)
    ix, iy = wcs.world_to_pixel_values(*ref_wcs.pixel_to_world_values(blank_x, blank_y))
    image[int(round(float(iy))), int(round(float(ix)))] += 5e4  # an unflagged cosmic ray in frame 1
    frames[1] = (image, variance, mask, wcs, background)

    result = coadd(frames, ref_wcs, SHAPE)
    assert result.flux_scales == pytest.approx(scales, rel=0.01)
    assert result.psf is not None and result.psf.fwhm == pytest.approx(3.1, rel=0.1)
    inside = (x > 30) & (x < 225) & (y > 30) & (y < 225)
    measured, _ = psf_photometry(result.image, result.variance, result.psf, x[inside], y[inside], result.mask)
    # PSF fluxes inside a 25-px stamp of stars rendered in 31-px stamps: ~1 % below the total
    assert np.median(measured / flux[inside]) == pytest.approx(0.99, abs=0.015)
    # sky noise of the co-add: about half a single frame's (4 frames, scaled to the anchor)
    single_sky = np.sqrt(305.0)
    assert np.sqrt(np.nanmedian(result.variance)) < 0.6 * single_sky
    around = np.s_[blank_y - 2 : blank_y + 3, blank_x - 2 : blank_x + 3]
    assert np.all(np.abs(result.image[around]) < 5 * np.sqrt(result.variance[around]))  # ray clipped
    assert 0 < result.clipped_fraction < 0.01
    assert result.n_frames.max() == 4
    assert np.all((result.mask[result.n_frames == 0] & masks.NO_DATA) != 0)


def test_coadd_with_zero_points() -> None:
    rng = np.random.default_rng(5)
    frames, ref_wcs, *_ = make_frames(rng, n=2)
    zero_points = [25.0, 25.0 + 2.5 * np.log10(0.8)]
    result = coadd(frames, ref_wcs, SHAPE, zero_points=zero_points)
    assert result.flux_scales == pytest.approx([1.0, 0.8])
    assert result.zero_point == 25.0


def test_select_best_frames_prefers_sharp_then_deep() -> None:
    fwhm = [3.0, 4.5, 3.2, 3.1, 2.9, np.nan]
    depth = [21.0, 22.5, 21.8, 20.5, 21.2, 23.0]
    chosen = select_best_frames(fwhm, depth, max_frames=3, max_fwhm_ratio=1.2)
    assert chosen.tolist() == [2, 4, 0]


def test_a_source_that_changed_between_frames_is_averaged_not_clipped_away() -> None:
    """A transient bright in half of the frames puts every value far from their median; the clipping rule
    must not reject them all (it once left NO_DATA at the transient's core, and the difference a hole)."""
    rng = np.random.default_rng(6)
    frames, ref_wcs, x, y, *_ = make_frames(rng)
    tx, ty = next((gx, gy) for gx in range(60, 200, 9) for gy in range(60, 200, 9)
                  if np.min(np.hypot(x - gx, y - gy)) > 20)
    world = ref_wcs.pixel_to_world_values(tx, ty)
    for k in (2, 3):  # bright (S/N ~ 150) in the last two of four frames
        image, variance, mask, wcs, background = frames[k]
        fx, fy = wcs.world_to_pixel_values(*world)
        extra = scenes.render_stars(SHAPE, np.atleast_1d(fx), np.atleast_1d(fy), np.array([3e4]), 3.0, "moffat")
        frames[k] = (image + extra, variance + extra, mask, wcs, background)
    result = coadd(frames, ref_wcs, SHAPE, flux_scales=[1.0, 0.8, 1.25, 0.9])
    core = np.s_[ty - 2 : ty + 3, tx - 2 : tx + 3]
    assert not np.any(result.mask[core] & masks.NO_DATA)
    assert result.n_frames[core].min() >= 3
    assert np.isfinite(result.image[core]).all() and result.image[ty, tx] > 10 * np.sqrt(result.variance[ty, tx])


def test_undersampled_frames_coadd_into_a_reference_with_a_psf() -> None:
    """Finding 7 of "Any telescope's frames": three frames of FWHM ~1.6 px with ~450 detections each gave a
    co-add in which 19 sources were found and no PSF could be estimated: L.A.Cosmic took the undersampled
    star cores for hits, and masked cores left the co-add empty there. Calibrated, then co-added, the stars stay."""
    from astropy.io import fits

    from astrid_assets.science.calibration.calibrate import calibrate_frame
    from astrid_assets.science.sources import find_sources
    from astrid_assets_tests.science.frame_scenes import identity_masters

    rng = np.random.default_rng(8)
    shape = (420, 560)
    ref_wcs = scenes.tan_wcs(shape)
    x, y = scenes.star_positions(shape, 450, rng, margin=15, min_separation=12)
    flux = np.exp(rng.uniform(np.log(1.5e3), np.log(2e5), x.size))
    world = ref_wcs.pixel_to_world_values(x, y)
    frames, detections = [], []
    for k, fwhm in enumerate([1.55, 1.65, 1.6]):
        frame_wcs = scenes.tan_wcs(shape, rotation_deg=0.3 * k, crpix_shift=(2.3 * k, -1.6 * k))
        fx, fy = frame_wcs.world_to_pixel_values(*world)
        frame = scenes.observe(scenes.render_stars(shape, fx, fy, flux, fwhm, "gaussian"), 300.0, 5.0, rng, fwhm)
        header = fits.Header({"IMAGETYP": "Light Frame", "GAIN": 1.0, "RDNOISE": 5.0, "EXPTIME": 60.0})
        calibrated = calibrate_frame(frame.image, header, identity_masters(shape))  # cosmic-ray search included
        frames.append((calibrated.science, calibrated.variance, calibrated.mask, frame_wcs, calibrated.background))
        detections.append(len(find_sources(calibrated.science - calibrated.background, calibrated.background_rms,
                                           (calibrated.mask & masks.UNUSABLE) != 0)))
    result = coadd(frames, ref_wcs, shape)
    assert min(detections) > 300
    found = find_sources(np.nan_to_num(result.image).astype(np.float32),
                         np.sqrt(np.nan_to_num(result.variance, nan=1e6)).astype(np.float32),
                         (result.mask & masks.UNUSABLE) != 0)
    assert len(found) >= min(detections)  # deeper than each frame, not 19 sources
    assert result.psf is not None, result.psf_error
    assert result.psf.fwhm == pytest.approx(1.75, abs=0.35)  # the frames' PSF broadened by resampling
