"""The one cut-out window (cutouts.py): astropy's overlap_slices on the pixel nearest a position, half to even."""

from __future__ import annotations

import numpy as np
import pytest

from astrid_assets.science.cutouts import cutout_window


def hand_window(shape, x, y, half):
    """The clipped window as it was written by hand before (reference for the helper)."""
    ny, nx = shape
    ic, jc = int(np.rint(x)), int(np.rint(y))
    x0, x1 = max(ic - half, 0), min(ic + half + 1, nx)
    y0, y1 = max(jc - half, 0), min(jc + half + 1, ny)
    if x0 >= x1 or y0 >= y1:
        return None
    sx, sy = x0 - (ic - half), y0 - (jc - half)
    return ic, jc, (slice(y0, y1), slice(x0, x1)), (slice(sy, sy + y1 - y0), slice(sx, sx + x1 - x0))


def test_the_window_is_the_hand_written_one_everywhere():
    rng = np.random.default_rng(0)
    shape = (23, 31)
    positions = np.r_[rng.uniform(-12, 43, (400, 2)), np.arange(-6.5, 38, 0.5).repeat(2).reshape(-1, 2)]
    for half in (0, 1, 3, 10):
        for x, y in positions:
            window = cutout_window(shape, x, y, half)
            expected = hand_window(shape, x, y, half)
            assert (window is None) == (expected is None)
            if window is not None:
                assert tuple(window) == expected


@pytest.mark.parametrize(("x", "centre"), [(1.5, 2), (2.5, 2), (-0.5, 0), (2.49, 2), (2.51, 3)])
def test_half_integer_positions_round_to_the_even_pixel(x, centre):
    assert cutout_window((9, 9), x, 4.0, 1).x == centre


def test_beyond_the_edge_and_non_finite_positions():
    image = np.arange(25.0).reshape(5, 5)
    window = cutout_window(image.shape, 4.2, 0.0, 2)
    stamp = np.full((5, 5), np.nan)
    stamp[window.stamp] = image[window.image]
    assert np.array_equal(stamp[2:, :3], image[:3, 2:]) and np.isnan(stamp[:2]).all() and np.isnan(stamp[:, 3:]).all()
    assert cutout_window(image.shape, np.nan, 1.0, 2) is None
    assert cutout_window(image.shape, -3.0, 1.0, 2) is None and cutout_window(image.shape, 7.0, 1.0, 2) is None
