"""Filling unusable pixels from their usable neighbours, before resampling or Fourier filtering.

A masked pixel set to zero (or to the frame's median) inside a bright source is a hole: a spline or
an FFT filter turns its step into rings and lobes several pixels out. Filled from its neighbours by
normalised convolution (Knutsson & Westin 1993, Proc. CVPR, 515), the hole nearly vanishes and only
the pixels that really carried no data stay flagged. Images in any unit, ``[y, x]``, 0-based.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["FILL_SIGMAS", "fill_from_neighbours"]

#: Gaussian widths (px) tried in turn: the nearest neighbours first, then wider for large holes
#: (saturated cores, bleed trails).
FILL_SIGMAS = (0.5, 4.0)


def fill_from_neighbours(values: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """A copy of ``values`` with its ``bad`` (and non-finite) pixels filled from usable neighbours.

    ``G * (v·w) / G * w`` with ``w`` the usable pixels and ``G`` a Gaussian of σ = 0.5 px (the nearest
    neighbours), then σ = 4 px for what is still empty; the median of the usable pixels where even
    that reaches nothing.

    Parameters
    ----------
    values : numpy.ndarray
        2-d image (any unit).
    bad : numpy.ndarray of bool
        Pixels to fill, same shape.

    Returns
    -------
    numpy.ndarray
        ``float32`` copy; usable pixels unchanged.
    """
    filled = np.array(values, dtype=np.float32, copy=True)
    bad = bad | ~np.isfinite(filled)
    if not bad.any():
        return filled
    good = (~bad).astype(np.float32)
    data = np.where(bad, np.float32(0.0), filled)
    todo = bad.copy()
    for sigma in FILL_SIGMAS:
        weight = ndimage.gaussian_filter(good, sigma, mode="mirror")
        smooth = ndimage.gaussian_filter(data, sigma, mode="mirror")
        reached = todo & (weight > 1e-3)
        filled[reached] = smooth[reached] / weight[reached]
        todo &= ~reached
        if not todo.any():
            return filled
    filled[todo] = np.median(filled[~bad]) if (~bad).any() else 0.0
    return filled
