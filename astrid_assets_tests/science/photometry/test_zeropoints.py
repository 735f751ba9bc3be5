"""Relative zero points from stars in common (science/zeropoints.py), and the reference ranking built on them.

Frames of one field made here (scenes.py, not the simulator): the frames differ in exposure time,
transparency (cloud), seeing, PSF family, pointing and rotation; none has a WCS or a zero point.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from astrid_assets.science.calibration.quality import measure_quality
from astrid_assets.science.photometry import zeropoints
from astrid_assets.science.products import CalibratedFrame
from astrid_assets.science.reference.coadd import select_best_frames
from astrid_assets.science.reference.selection import relative_depth
from astrid_assets_tests.science import scenes

SHAPE = (300, 360)
#: exposure (s), transparency, sky e-/s (before the cloud), FWHM px, profile, shift (px), rotation (deg)
FRAMES = [(60.0, 1.00, 8.0, 2.6, "gaussian", (0.0, 0.0), 0.0),
          (60.0, 0.45, 8.0, 2.6, "gaussian", (7.3, -4.1), 0.4),  # thin cloud: dimmer stars *and* lower sky
          (120.0, 0.95, 8.0, 3.4, "gaussian", (-5.2, 6.6), -0.3),
          (30.0, 1.00, 8.0, 2.2, "gaussian", (3.9, 2.2), 0.2)]


def field_frames(seed: int = 3):
    rng = np.random.default_rng(seed)
    u, v = scenes.star_positions(SHAPE, 70, rng, margin=25, min_separation=20)
    rate = np.exp(rng.uniform(np.log(30.0), np.log(3000.0), u.size))  # e-/s at transparency 1
    out = []
    for exptime, transparency, sky_rate, fwhm, profile, shift, rotation in FRAMES:
        theta, centre = np.radians(rotation), (np.array(SHAPE[::-1]) - 1) / 2
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        x, y = (rot @ (np.column_stack([u, v]) - centre).T).T.T + centre[:, None] + np.array(shift)[:, None]
        model = scenes.render_stars(SHAPE, x, y, rate * exptime * transparency, fwhm, profile)
        frame = scenes.observe(model, sky_rate * exptime * transparency, 6.0, rng, fwhm, profile)
        out.append((frame, exptime, transparency))
    return out


def catalogue_of(frame, fwhm):
    return zeropoints.zero_point_stars(frame.image, np.full(SHAPE, frame.background, np.float32),
                                       np.full(SHAPE, frame.background_rms, np.float32), frame.mask, fwhm)


def test_relative_zero_points_recover_exposure_and_transparency_without_a_wcs():
    frames = field_frames()
    catalogues = [catalogue_of(frame, frame.fwhm) for frame, _, _ in frames]
    assert all(len(stars) >= 20 for stars in catalogues)
    exptime = np.array([t for _, t, _ in frames])
    zero_points, matched = zeropoints.relative_zero_points(catalogues, exptime)
    assert matched.all()
    truth = 2.5 * np.log10(exptime * np.array([q for _, _, q in frames]))
    # zero points agree with exposure x transparency up to one common offset, within 0.02 mag
    assert zero_points - zero_points[0] == pytest.approx(truth - truth[0], abs=0.02)


def test_a_frame_that_matches_nothing_falls_back_to_its_exposure_time():
    frames = field_frames()
    catalogues = [catalogue_of(frame, frame.fwhm) for frame, _, _ in frames] + [np.empty((0, 3))]
    zero_points, matched = zeropoints.relative_zero_points(catalogues, np.array([60, 60, 120, 30, 90.0]))
    assert matched.tolist() == [True, True, True, True, False]
    assert zero_points[-1] == pytest.approx(2.5 * np.log10(90.0))
    assert zeropoints.decode(zeropoints.encode(catalogues[0])) == pytest.approx(catalogues[0], rel=1e-3)


def test_the_cloudy_frame_ranks_shallower_although_its_sky_noise_is_lower():
    """Depth from the limiting flux over the exposure time alone ranks the cloudy frame deepest (its sky,
    so its noise, is lowest); on the scale of the stars in common it ranks last of the 60 s frames."""
    frames = field_frames()
    rows = []
    for index, (frame, exptime, _) in enumerate(frames):
        calibrated = CalibratedFrame(frame.image, frame.mask, frame.variance,
                                     np.full(SHAPE, frame.background, np.float32),
                                     np.full(SHAPE, frame.background_rms, np.float32))
        quality = measure_quality(calibrated, fits.Header())
        stars = zeropoints.zero_point_stars(calibrated.science, calibrated.background, calibrated.background_rms,
                                            calibrated.mask, quality["fwhm_px"])
        rows.append({"frame_id": f"f{index}", "fwhm_px": quality["fwhm_px"], "limiting_flux": quality["limiting_flux"],
                     "exptime": exptime, "zero_point": np.nan, "stars": zeropoints.encode(stars)})
    table = pd.DataFrame(rows)
    naive = -2.5 * np.log10(table.limiting_flux / table.exptime)
    assert naive[1] > naive[0]  # the trap
    depth = relative_depth(table)
    assert depth[0] - depth[1] > 0.4  # 0.45 transparency vs 1: ~0.45 mag shallower after its lower sky noise
    two_best = {"naive": select_best_frames(table.fwhm_px, naive, max_frames=2, max_fwhm_ratio=2.0).tolist(),
                "stars in common": select_best_frames(table.fwhm_px, depth, max_frames=2, max_fwhm_ratio=2.0).tolist()}
    assert two_best == {"naive": [1, 2], "stars in common": [2, 0]}
