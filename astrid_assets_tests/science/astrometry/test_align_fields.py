"""Registration of frames without a WCS in crowded and sparse fields: the transform found against the truth.

The crowded and sparse frames come from the independent generator's named kinds
(:data:`astrid_assets.testing.kinds.KINDS`); the truth is its own geometry (frame px → sky grid → reference
frame px). Small scenes of Gaussian stars test the sparse and shift-only steps exactly.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from astrid_assets.science.astrometry.align import AlignmentError, align_frame
from astrid_assets.science.astrometry.match import MatchError, apply_matrix, match_star_lists
from astrid_assets.science.astrometry.xcorr import phase_correlation
from astrid_assets.science.sources import Sources, background_maps
from astrid_assets.testing import skygen, skymodel
from astrid_assets.testing.kinds import KINDS


def _exposure(cell: skygen.Cell, night: int, index: int) -> Sources:
    """A flat-fielded exposure (e-) of the generator's frame, with a saturation mask, as SEP finds its stars."""
    model = skymodel.model_frame(cell, night, index)
    pixels = skygen._expose(cell, skymodel._rng(cell, 3, night, index), model, 0.0, True, raw=False)
    saturated = pixels >= 0.97 * skymodel._plan(cell)["full_well"]
    background, rms = background_maps(pixels, saturated)
    return Sources.extract(pixels, background, rms, saturated.astype(np.uint16))


def _true_positions(cell: skygen.Cell, frame: tuple[int, int], reference: tuple[int, int], xy: np.ndarray):
    """Where frame pixels ``xy`` fall on the reference frame, from the generator's geometry."""
    conditions = skymodel._conditions(cell, *frame)
    cx, cy = skymodel._plan(cell)["c"]
    cos, sin = np.cos(conditions["theta"]), np.sin(conditions["theta"])
    dx, dy = xy[:, 0] - cx, xy[:, 1] - cy
    u = cos * dx - sin * dy + cx + conditions["shift"][0]
    v = sin * dx + cos * dy + cy + conditions["shift"][1]
    return np.column_stack(skymodel._to_frame(cell, skymodel._conditions(cell, *reference), u, v))


def _corners(shape: tuple[int, int], margin: float = 30.0) -> np.ndarray:
    ny, nx = shape
    return np.array([[margin, margin], [nx - margin, margin], [margin, ny - margin], [nx - margin, ny - margin],
                     [nx / 2, ny / 2]])


@pytest.mark.parametrize("kind, method", [("crowded", "star-pattern"), ("sparse", "sparse-stars")])
def test_a_frame_without_wcs_is_registered_to_a_tenth_of_a_pixel(kind, method):
    cell = KINDS[kind]
    if kind == "crowded":  # a quarter of the frame at the kind's density: as crowded, four times faster
        cell = replace(cell, shape=(256, 256), n_stars=cell.n_stars // 4, n_saturated=3)
    reference = _exposure(cell, 0, 0)
    frame = _exposure(cell, 0, 1)  # the first night's frames: rendered without transients, fast
    alignment = align_frame(frame, reference)
    points = _corners(cell.shape, margin=0.15 * cell.shape[0])
    error = np.hypot(*(apply_matrix(alignment.matrix, points) - _true_positions(cell, (0, 1), (0, 0), points)).T)
    true_rotation = np.degrees(skymodel._conditions(cell, 0, 1)["theta"] - skymodel._conditions(cell, 0, 0)["theta"])
    rotation = np.degrees(np.arctan2(alignment.matrix[1, 0], alignment.matrix[0, 0]))
    assert alignment.method == method, alignment.detail
    assert error[-1] < 0.1, (error, alignment.detail)  # the shift at the frame's centre
    assert abs(rotation - true_rotation) < 0.03, (rotation, true_rotation)  # 0.07 px at 128 px from the centre
    assert error.max() < 0.15, (error, alignment.detail)
    if kind == "crowded":  # thousands of stars: the detections blend, yet dozens of control stars match
        assert len(frame.objects) > 50 and alignment.n_matched >= 15


def _scene(xy, flux, shape=(200, 200), fwhm=2.5, seed=0, sky_sigma=5.0):
    """Gaussian stars (flux e-) at ``xy`` on white noise: background-subtracted Sources."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    sigma = fwhm / 2.3548
    image = np.random.default_rng(seed).normal(0.0, sky_sigma, shape)
    for (x, y), f in zip(xy, flux, strict=True):
        image += f / (2 * np.pi * sigma**2) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return Sources.extract(image.astype(np.float32), 0.0, sky_sigma, None)


def _similarity(xy, angle_deg, shift):
    angle = np.radians(angle_deg)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return np.asarray(xy, float) @ rotation.T + shift


def test_three_stars_in_common_give_the_transform_and_unrelated_stars_give_none():
    rng = np.random.default_rng(4)
    common = rng.uniform(20, 230, (3, 2))
    frame = np.vstack([common, [[40.0, 200.0]]])  # a fourth star that left the reference's field
    reference = np.vstack([_similarity(common, 1.5, (7.3, -4.6)), [[150.0, 20.0]]])  # and one that entered it
    flux = np.array([9e4, 5e4, 3e4, 2e4])
    match = match_star_lists(frame, reference, frame_flux=flux, reference_flux=flux * 0.8)
    truth = _similarity(_corners((256, 256)), 1.5, (7.3, -4.6))
    assert match.n_matched == 3
    assert np.hypot(*(apply_matrix(match.matrix, _corners((256, 256))) - truth).T).max() < 0.01
    with pytest.raises(MatchError):  # four other stars: no transform is trusted
        match_star_lists(frame, rng.uniform(20, 230, (4, 2)), frame_flux=flux, reference_flux=flux)


def test_two_stars_and_a_shift_are_registered_by_correlation():
    xy = np.array([[60.3, 70.8], [140.6, 130.2]])
    shift = np.array([6.37, -3.81])
    frame = _scene(xy, [4e4, 2.5e4], seed=1)
    reference = _scene(xy + shift, [4e4, 2.5e4], seed=2)
    measured = phase_correlation(frame.frame, reference.frame, fwhm=2.5)
    assert np.hypot(measured.dx - shift[0], measured.dy - shift[1]) < 0.1
    alignment = align_frame(frame, reference)  # two stars: no pattern, the correlation's shift refined by them
    assert alignment.method == "correlation", alignment.detail
    assert np.allclose(alignment.matrix[:2, 2], shift, atol=0.05) and np.allclose(alignment.matrix[:2, :2], np.eye(2))


def test_frames_of_different_fields_are_refused():
    rng = np.random.default_rng(8)
    frame = _scene(rng.uniform(20, 180, (12, 2)), rng.uniform(5e3, 5e4, 12), seed=3)
    reference = _scene(rng.uniform(20, 180, (12, 2)), rng.uniform(5e3, 5e4, 12), seed=4)
    with pytest.raises(AlignmentError):
        align_frame(frame, reference)
