"""Filling unusable pixels: the windowed passes give what whole-frame normalised convolution gives."""

import numpy as np
import pytest
from scipy import ndimage

from astrid_assets.science.inpaint import FILL_SIGMAS, fill_from_neighbours, fill_images_from_neighbours


def whole_frame_fill(values: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """Normalised convolution over the whole frame for every pass (the definition)."""
    filled = np.array(values, dtype=np.float32, copy=True)
    bad = bad | ~np.isfinite(filled)
    good = (~bad).astype(np.float32)
    data = np.where(bad, np.float32(0.0), filled)
    todo = bad.copy()
    for sigma in FILL_SIGMAS:
        weight = ndimage.gaussian_filter(good, sigma, mode="mirror")
        smooth = ndimage.gaussian_filter(data, sigma, mode="mirror")
        reached = todo & (weight > 1e-3)
        filled[reached] = smooth[reached] / weight[reached]
        todo &= ~reached
    filled[todo] = np.median(filled[~bad])
    return filled


def holes(shape: tuple[int, int], rng: np.random.Generator, n_small: int, n_large: int) -> np.ndarray:
    bad = rng.random(shape) < n_small / (shape[0] * shape[1])
    for _ in range(n_large):  # saturated cores and a bleed trail, some at the frame edge
        y, x = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        bad[max(y - 6, 0):y + 6, max(x - 5, 0):x + 5] = True
    bad[:40, 3:5] = True
    return bad


@pytest.mark.parametrize(("n_small", "n_large"), [(50, 3), (2000, 5), (0, 80)])
def test_windowed_fill_equals_whole_frame_fill(n_small, n_large):
    rng = np.random.default_rng(n_small + n_large)
    shape = (200, 230)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    image = (100 * np.exp(-((xx - 60) ** 2 + (yy - 90) ** 2) / 30.0) + rng.normal(10, 1, shape)).astype(np.float32)
    bad = holes(shape, rng, n_small, n_large)
    expected = whole_frame_fill(image, bad)
    got = fill_from_neighbours(image, bad)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-5)
    assert np.array_equal(got[~bad], image[~bad])


def test_images_sharing_bad_pixels_fill_like_one_at_a_time():
    rng = np.random.default_rng(3)
    shape = (120, 100)
    bad = holes(shape, rng, 30, 2)
    image, variance = rng.normal(0, 1, shape).astype(np.float32), rng.uniform(1, 2, shape).astype(np.float32)
    variance[5, 7] = np.nan  # a non-finite pixel outside ``bad``: filled on its own
    both = fill_images_from_neighbours([image, variance], bad)
    np.testing.assert_array_equal(both[0], fill_from_neighbours(image, bad))
    np.testing.assert_array_equal(both[1], fill_from_neighbours(variance, bad))
    assert np.isfinite(both[1]).all()
