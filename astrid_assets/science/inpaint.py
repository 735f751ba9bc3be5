"""Filling unusable pixels from their usable neighbours, before resampling or Fourier filtering.

A masked pixel set to zero (or to the frame's median) inside a bright source is a hole: a spline or
an FFT filter turns its step into rings and lobes several pixels out. Filled from its neighbours by
normalised convolution (Knutsson & Westin 1993, Proc. CVPR, 515), the hole nearly vanishes and only
the pixels that really carried no data stay flagged. Images in any unit, ``[y, x]``, 0-based.

Cost: the nearest-neighbour pass filters the whole frame once per set of bad pixels (the weights are
shared by every image filled with the same ``bad``); the wide pass runs only in windows around the
holes it still has to fill (a window reaches ``4σ`` beyond its hole, the Gaussian's truncation, so
the result is the same as a whole-frame filter's).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["FILL_SIGMAS", "fill_from_neighbours", "fill_images_from_neighbours"]

#: Gaussian widths (px) tried in turn: the nearest neighbours first, then wider for large holes
#: (saturated cores, bleed trails).
FILL_SIGMAS = (0.5, 4.0)
#: Gaussian truncation, in σ (scipy.ndimage's default): a filtered pixel depends on pixels this far away.
TRUNCATE = 4.0
#: Side of the blocks a pass works in, px: only blocks holding pixels still to fill are filtered, each
#: with a margin of the Gaussian's reach; when they would cover more than half the frame, the whole frame is.
BLOCK = 64


def fill_from_neighbours(values: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """A copy of ``values`` with its ``bad`` (and non-finite) pixels filled from usable neighbours.

    ``G * (v·w) / G * w`` with ``w`` the usable pixels and ``G`` a Gaussian of σ = 0.5 px (the nearest
    neighbours), then σ = 4 px for what is still empty; the median of the usable pixels where even
    that reaches nothing. Image edges are mirrored (``scipy.ndimage`` ``mode="mirror"``).

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
    return fill_images_from_neighbours([values], bad)[0]


def fill_images_from_neighbours(images: Sequence[np.ndarray], bad: np.ndarray) -> list[np.ndarray]:
    """:func:`fill_from_neighbours` for several images of one grid (image and variance, new and reference).

    Images whose non-finite pixels all lie in ``bad`` share the filtered weights.

    Parameters
    ----------
    images : sequence of numpy.ndarray
        2-d images (any unit), each of ``bad``'s shape.
    bad : numpy.ndarray of bool
        Pixels to fill.

    Returns
    -------
    list of numpy.ndarray
        ``float32`` copies in the order given; usable pixels unchanged.
    """
    bad = np.asarray(bad, dtype=bool)
    filled = [np.array(image, dtype=np.float32, copy=True) for image in images]
    own_bad = [bad | ~np.isfinite(image) for image in filled]
    shared = [i for i, mask in enumerate(own_bad) if np.array_equal(mask, bad)]
    groups = ([shared] if shared else []) + [[i] for i in range(len(filled)) if i not in shared]
    for group in groups:
        _fill(group_images := [filled[i] for i in group], own_bad[group[0]])
        for i, image in zip(group, group_images, strict=True):
            filled[i] = image
    return filled


def _fill(images: list[np.ndarray], bad: np.ndarray) -> None:
    """Fill ``bad`` in each of ``images`` (float32, changed in place) by the passes of :data:`FILL_SIGMAS`."""
    if not bad.any():
        return
    good = (~bad).astype(np.float32)
    data = [np.where(bad, np.float32(0.0), image) for image in images]
    todo = bad.copy()
    for sigma in FILL_SIGMAS:
        radius = int(TRUNCATE * sigma + 0.5)
        kernel = _gaussian_kernel(sigma, radius)
        if _gather_is_cheaper(todo, radius):
            ys, xs = np.nonzero(todo)
            (weight,) = _smooth_at([good], kernel, ys, xs)
            reached = weight > 1e-3
            ys, xs = ys[reached], xs[reached]
            for image, smooth in zip(images, _smooth_at(data, kernel, ys, xs), strict=True):
                image[ys, xs] = smooth / weight[reached]
            todo[ys, xs] = False
        else:
            for window, inner in _windows(todo, radius):
                weight = _smooth(good[window], kernel)
                reached = todo[window] & (weight > 1e-3) & inner
                for image, values in zip(images, data, strict=True):
                    smooth = _smooth(values[window], kernel)
                    image[window][reached] = smooth[reached] / weight[reached]
                todo[window] &= ~reached
        if not todo.any():
            return
    for image in images:
        image[todo] = np.median(image[~bad]) if (~bad).any() else 0.0


def _gaussian_kernel(sigma: float, radius: int) -> np.ndarray:
    """Unit-sum 1-d Gaussian of ``sigma`` px sampled at ``-radius … radius`` (as ``scipy.ndimage.gaussian_filter``)."""
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def _gather_is_cheaper(todo: np.ndarray, radius: int) -> bool:
    """Whether summing the kernel at each pixel to fill costs less than filtering the frame (in kernel taps;
    a gathered tap costs about eight filtered ones)."""
    return 8 * int(todo.sum()) * (2 * radius + 1) ** 2 < todo.size * 2 * (2 * radius + 1)


def _smooth_at(arrays: list[np.ndarray], kernel: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> list[np.ndarray]:
    """Each of ``arrays`` convolved with ``kernel ⊗ kernel`` at the pixels ``(ys, xs)`` only, edges mirrored."""
    radius = len(kernel) // 2
    ny, nx = arrays[0].shape
    offsets = range(-radius, radius + 1)
    cols = [_mirror(xs + d, nx) for d in offsets]
    flats = [np.ravel(array) for array in arrays]
    sums = [np.zeros(len(ys), dtype=np.float64) for _ in arrays]
    for ky, dy in zip(kernel, offsets, strict=True):
        row = _mirror(ys + dy, ny) * nx
        for flat, total in zip(flats, sums, strict=True):
            for kx, col in zip(kernel, cols, strict=True):
                total += (ky * kx) * flat[row + col]
    return [total.astype(np.float32) for total in sums]


def _mirror(index: np.ndarray, n: int) -> np.ndarray:
    """Indices reflected about the first and last pixel centres (``scipy.ndimage`` ``mode="mirror"``)."""
    period = 2 * (n - 1) if n > 1 else 1
    index = np.abs(index) % period
    return np.where(index >= n, period - index, index)


def _smooth(values: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``values`` convolved with ``kernel`` along both axes, edges mirrored (``gaussian_filter``'s steps)."""
    out = ndimage.correlate1d(values, kernel, axis=0, mode="mirror")
    return ndimage.correlate1d(out, kernel, axis=1, mode="mirror", output=out)


def _windows(todo: np.ndarray, radius: int) -> list[tuple[tuple[slice, slice], np.ndarray | bool]]:
    """Windows to filter, each with the pixels whose result it settles (``True``: all of them).

    Each :data:`BLOCK`-square block holding pixels of ``todo`` is grown by ``radius`` (clipped at the
    frame's edges, where the mirror boundary is then the frame's own) and settles only its block's
    pixels, which lie at least ``radius`` from every inner edge of the window: the result is the
    whole-frame filter's. The whole frame is one window when the blocks would cover more than half of it.
    """
    ny, nx = todo.shape
    whole = [((slice(None), slice(None)), True)]
    rows, cols = -(-ny // BLOCK), -(-nx // BLOCK)
    padded = np.zeros((rows * BLOCK, cols * BLOCK), dtype=bool)
    padded[:ny, :nx] = todo
    active = np.argwhere(padded.reshape(rows, BLOCK, cols, BLOCK).any(axis=(1, 3)))
    if len(active) * (BLOCK + 2 * radius) ** 2 > todo.size / 2:
        return whole
    windows = []
    for row, col in active:
        y0, x0 = row * BLOCK, col * BLOCK
        y1, x1 = min(y0 + BLOCK, ny), min(x0 + BLOCK, nx)
        window = (slice(max(y0 - radius, 0), min(y1 + radius, ny)), slice(max(x0 - radius, 0), min(x1 + radius, nx)))
        inner = np.zeros((window[0].stop - window[0].start, window[1].stop - window[1].start), dtype=bool)
        inner[y0 - window[0].start:y1 - window[0].start, x0 - window[1].start:x1 - window[1].start] = True
        windows.append((window, inner))
    return windows
