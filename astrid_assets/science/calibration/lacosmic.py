"""L.A.Cosmic's detection loop, exactly as ``astroscrappy.detect_cosmics`` (1.3.0) runs it, at the cost of its work.

L.A.Cosmic (van Dokkum 2001, PASP 113, 1420) finds cosmic-ray hits by the Laplacian of the 2× subsampled image over
its noise, with a fine-structure test against star cores, and grows them into their neighbours; astroscrappy
(McCully et al., Zenodo 1482019) iterates it, cleaning the hits between passes. :func:`lacosmic` is that loop on
astroscrappy's own filters (``sepmed``, ``fsmode='median'``, ``cleantype='meanmask'``) and gives its mask to the
pixel (tested against ``detect_cosmics``), but it stops at the first pass that finds nothing new, recomputes later
passes only on cut-outs around the pixels the cleaning changed (each output pixel reads the inputs within
:data:`_LACOSMIC_RADIUS` of it), and makes the fine-structure image only around candidates. The choice of its
parameters for a frame is :mod:`~astrid_assets.science.calibration.cosmics`'s.

Conventions: images in e- (sky included), ``[y, x]``, 0-based, float32; variances e-²; masks bool, True flagged.
"""

from __future__ import annotations

import numpy as np
from astroscrappy.utils import (
    dilate3,
    dilate5,
    laplaceconvolve,
    rebin,
    sepmedfilt5,
    sepmedfilt7,
    sepmedfilt9,
    subsample,
)
from astroscrappy.utils import median as scrappy_median
from scipy import ndimage

__all__ = ["lacosmic"]

#: Devillard's ``opt_med5/7/9`` comparator networks (N. Devillard 1998, "Fast median search: an ANSI C
#: implementation", the selection networks astroscrappy's ``PyOptMed`` functions use): ``(i, j)`` puts the smaller of
#: values ``i`` and ``j`` at ``i``; the median ends at index ``width // 2``.
_MEDIAN_NETWORKS = {
    5: ((0, 1), (3, 4), (0, 3), (1, 4), (1, 2), (2, 3), (1, 2)),
    7: ((0, 5), (0, 3), (1, 6), (2, 4), (0, 1), (3, 5), (2, 6), (2, 3), (3, 6), (4, 5), (1, 4), (1, 3), (3, 4)),
    9: ((1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3), (5, 8), (4, 7), (3, 6),
        (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2)),
}
_SCRAPPY_SEPMEDFILT = {5: sepmedfilt5, 7: sepmedfilt7, 9: sepmedfilt9}
#: Arrays below this many pixels go to astroscrappy's loop, whose cost per call is lower.
_NETWORK_MIN_PIXELS = 64 * 64
#: Rows filtered together by the networks: a block's shifted views stay in the cache (5x faster than whole frames).
_NETWORK_ROW_BLOCK = 64


def _network_median(values: list[np.ndarray], width: int) -> np.ndarray:
    """Elementwise median of ``width`` equally shaped arrays through :data:`_MEDIAN_NETWORKS` (finite values)."""
    values = list(values)
    for i, j in _MEDIAN_NETWORKS[width]:
        values[i], values[j] = np.minimum(values[i], values[j]), np.maximum(values[i], values[j])
    return values[width // 2]


def _sepmedfilt(data: np.ndarray, width: int) -> np.ndarray:
    """astroscrappy's ``sepmedfilt5/7/9`` (1.3.0) to the bit: the median of ``width`` pixels along each row, then along
    each column of that, with a border of ``width // 2`` pixels copied from ``data`` (float32, C-contiguous).

    A median of an odd count is one of the values, so any exact selection gives astroscrappy's; the networks give it
    for finite values. Small arrays, arrays with non-finite values (the networks order NaN otherwise than
    astroscrappy's comparisons) and arrays narrower than the window go to astroscrappy itself."""
    half = width // 2
    ny, nx = data.shape
    if data.size < _NETWORK_MIN_PIXELS or min(ny, nx) <= 2 * half or not np.isfinite(data).all():
        return _SCRAPPY_SEPMEDFILT[width](data)
    rows = np.empty_like(data)
    for y0 in range(0, ny, _NETWORK_ROW_BLOCK):
        block = data[y0 : y0 + _NETWORK_ROW_BLOCK]
        rows[y0 : y0 + len(block), half : nx - half] = _network_median(
            [block[:, i : nx - 2 * half + i] for i in range(width)], width)
    out = data.copy()
    for y0 in range(half, ny - half, _NETWORK_ROW_BLOCK):
        y1 = min(y0 + _NETWORK_ROW_BLOCK, ny - half)
        out[y0:y1, half : nx - half] = _network_median(
            [rows[y0 - half + i : y1 - half + i, half : nx - half] for i in range(width)], width)
    return out


def _laplacian_cosmics(clean: np.ndarray, var: np.ndarray, good: np.ndarray, sigclip: float, sigcliplow: float,
                       objlim: float) -> np.ndarray:
    """One L.A.Cosmic detection pass, exactly as one iteration of ``astroscrappy.detect_cosmics`` (1.3.0, ``sepmed``,
    ``fsmode='median'``, no ``inbkg``) computes it, on ``clean`` (e-) and ``var`` (e-²), float32 C-contiguous.

    Each output pixel depends on the inputs within :data:`_LACOSMIC_RADIUS` pixels of it (the filters' edges copy their
    input), so a cut-out gives the exact values farther than that from its own edges."""
    conved = laplaceconvolve(subsample(clean))
    conved[conved < 0] = 0.0
    s = rebin(conved)
    del conved
    m5 = _sepmedfilt(var, 7)
    m5[m5 < 0.00001] = 0.00001
    noise = np.sqrt(m5)
    del m5
    s /= 2.0 * noise
    sp = s - _sepmedfilt(s, 7)
    del s
    cosmics = np.logical_and(sp > sigclip, good)
    cosmics = np.logical_and(cosmics, (sp / _fine_structure(clean, noise)) > objlim)
    del noise
    cosmics = np.logical_and(sp > sigclip, np.logical_and(dilate3(cosmics), good))
    return np.logical_and(sp > sigcliplow, np.logical_and(dilate3(cosmics), good))


def _fine_structure(clean: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """L.A.Cosmic's fine-structure image over the noise, as astroscrappy (``sepmed``, ``fsmode='median'``) makes it;
    each pixel from the inputs within 6 pixels of it (the 5- and 9-pixel separable medians)."""
    f = _sepmedfilt(clean, 5)
    f = (f - _sepmedfilt(f, 9)) / noise
    f[f < 0.01] = 0.01
    return f


#: Chebyshev radius (pixels) of the inputs one L.A.Cosmic pass reads for one output pixel: the Laplacian of the 2×
#: subsampled image (1), the noise and ``S'`` medians (3 + 3), the fine-structure medians (2 + 4) and the two
#: neighbour growths (1 + 1): 8.
_LACOSMIC_RADIUS = 8
#: A later pass is recomputed on the whole frame when its cut-outs would cover more than this fraction of it.
_CROP_FRACTION = 0.5


def _on_crops(clean: np.ndarray, var: np.ndarray, good: np.ndarray, boxes: list, crops: list, sigclip: float,
              sigcliplow: float, objlim: float) -> list[np.ndarray]:
    """One detection pass (:func:`_laplacian_cosmics`) for each ``box``, from its ``crop`` (the box and
    :data:`_LACOSMIC_RADIUS` pixels around it, cut by the frame's edges).

    Crops with their whole margin are packed side by side on shelves into one mosaic and passed once: each box's pixels
    read only their own crop, so their neighbours in the mosaic do not change them. A crop cut by the frame's edge
    depends on how the filters treat that edge, and is passed alone."""
    radius = _LACOSMIC_RADIUS
    parts: list[np.ndarray | None] = [None] * len(boxes)
    packed = []
    for k, ((by, bx), (cy, cx)) in enumerate(zip(boxes, crops, strict=True)):
        if (cy.start, cy.stop, cx.start, cx.stop) == (by.start - radius, by.stop + radius, bx.start - radius,
                                                      bx.stop + radius):
            packed.append(k)
            continue
        part = _laplacian_cosmics(np.ascontiguousarray(clean[cy, cx]), np.ascontiguousarray(var[cy, cx]), good[cy, cx],
                                  sigclip, sigcliplow, objlim)
        parts[k] = part[by.start - cy.start : by.stop - cy.start, bx.start - cx.start : bx.stop - cx.start]
    if not packed:
        return parts
    width = clean.shape[1]
    places, y, x, shelf = {}, 0, 0, 0
    for k in sorted(packed, key=lambda k: crops[k][0].start - crops[k][0].stop):  # tallest first
        cy, cx = crops[k]
        if x + (cx.stop - cx.start) > width:
            y, x, shelf = y + shelf, 0, 0
        places[k] = (y, x)
        x += cx.stop - cx.start
        shelf = max(shelf, cy.stop - cy.start)
    shape = (y + shelf, width)
    m_clean, m_var, m_good = np.zeros(shape, np.float32), np.ones(shape, np.float32), np.zeros(shape, bool)
    for k, (y, x) in places.items():
        cy, cx = crops[k]
        target = (slice(y, y + cy.stop - cy.start), slice(x, x + cx.stop - cx.start))
        m_clean[target], m_var[target], m_good[target] = clean[cy, cx], var[cy, cx], good[cy, cx]
    mosaic = _laplacian_cosmics(m_clean, m_var, m_good, sigclip, sigcliplow, objlim)
    for k, (y, x) in places.items():
        by, bx = boxes[k]
        parts[k] = mosaic[y + radius : y + radius + by.stop - by.start, x + radius : x + radius + bx.stop - bx.start]
    return parts


def _clean_meanmask(array: np.ndarray, crmask: np.ndarray, mask: np.ndarray, level: float) -> None:
    """astroscrappy's ``clean_meanmask`` (1.3.0), in place and to the bit: each ``crmask`` pixel at least 2 px from the
    border set to the float32 mean of its 5×5 neighbours in neither ``crmask`` nor ``mask`` (summed in row order), or
    to ``level`` where there are none."""
    ny, nx = array.shape
    ys, xs = np.nonzero(crmask[2 : ny - 2, 2 : nx - 2])
    ys, xs = ys + 2, xs + 2
    if len(ys) == 0:
        return
    excluded = crmask | mask
    total = np.zeros(len(ys), np.float32)
    count = np.zeros(len(ys), np.int64)
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            usable = ~excluded[ys + dy, xs + dx]
            total = np.where(usable, total + array[ys + dy, xs + dx], total)
            count += usable
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (total.astype(np.float64) / count).astype(np.float32)
    array[ys, xs] = np.where(count == 0, np.float32(level), mean)


def _update_mask(data: np.ndarray, mask: np.ndarray, satlevel: float) -> None:
    """astroscrappy's ``update_mask`` (1.3.0, ``sepmed``) in place: ``mask`` grown by one pixel, plus saturated stars
    (pixels at ``satlevel`` whose 7-pixel separable median is above a tenth of it, grown by 2 × 2 px); the median and
    the growth are computed only around the saturated pixels, where they are read and reach."""
    ny, nx = data.shape
    saturated = data >= satlevel
    boxes: list = []
    if saturated.any():
        labels, _ = ndimage.label(saturated, structure=np.ones((3, 3), bool))
        boxes = [box for box in ndimage.find_objects(labels) if box is not None]
        for by, bx in boxes:
            cy = slice(max(by.start - 3, 0), min(by.stop + 3, ny))
            cx = slice(max(bx.start - 3, 0), min(bx.stop + 3, nx))
            median7 = _sepmedfilt(np.ascontiguousarray(data[cy, cx]), 7)
            inner = (slice(by.start - cy.start, by.stop - cy.start), slice(bx.start - cx.start, bx.stop - cx.start))
            saturated[by, bx] &= median7[inner] > satlevel / 10.0
    grown = dilate3(mask).astype(bool)
    for by, bx in boxes:  # a growth is the union of its parts' growths; two 5×5 steps reach 4 px
        cy = slice(max(by.start - _GROWTH_MARGIN, 0), min(by.stop + _GROWTH_MARGIN, ny))
        cx = slice(max(bx.start - _GROWTH_MARGIN, 0), min(bx.stop + _GROWTH_MARGIN, nx))
        grown[cy, cx] |= dilate5(np.ascontiguousarray(saturated[cy, cx]), 2).astype(bool)
    mask[:, :] = grown


#: Margin (px) of the cut-outs a saturated star's growth is made on: its reach (4 px) and the filter's border.
_GROWTH_MARGIN = 8


def lacosmic(indat: np.ndarray, inmask: np.ndarray, invar: np.ndarray | None, sigclip: float, sigfrac: float,
              objlim: float, readnoise: float, satlevel: float, niter: int) -> np.ndarray:
    """``astroscrappy.detect_cosmics(indat, inmask, invar=invar, …, gain=1, niter=niter)[0]`` (1.3.0, its defaults
    ``sepmed=True``, ``cleantype='meanmask'``, ``fsmode='median'``), the same mask to the pixel, in less time.

    astroscrappy runs every iteration over the whole frame. An iteration's input is the frame with the cosmic rays
    found so far replaced by the mean of their unflagged 5×5 neighbours, a function of that mask alone; so after the
    first pass only the pixels within :data:`_LACOSMIC_RADIUS` of a pixel whose cleaned value changed can change, and
    those are recomputed on cut-outs around them (:func:`_on_crops`, exact away from the cut-out's edges), and
    once a pass adds no pixel to the mask the next ones would repeat it, so the iterations stop there."""
    data = np.ascontiguousarray(indat, dtype=np.float32)
    ny, nx = data.shape
    clean = np.empty((ny, nx), np.float32)
    clean[:, :] = data * 1.0
    mask = np.empty((ny, nx), np.uint8)
    mask[:, :] = inmask
    if invar is not None:
        var = np.ascontiguousarray(invar, dtype=np.float32) * 1.0
    else:
        var = clean + float(np.float32(readnoise) * np.float32(readnoise))
    var = np.ascontiguousarray(var, dtype=np.float32)
    _update_mask(clean, mask, float(np.float32(satlevel)))
    good = np.logical_not(mask)
    background_level = scrappy_median(np.ascontiguousarray(clean[good]), int(good.sum()))
    background_var_level = scrappy_median(np.ascontiguousarray(var[good]), int(good.sum()))
    masked = mask.astype(bool)
    sigclip, objlim = float(np.float32(sigclip)), float(np.float32(objlim))
    sigcliplow = float(np.float32(sigfrac) * np.float32(sigclip))
    crmask = np.zeros((ny, nx), bool)
    cosmics = _laplacian_cosmics(clean, var, good, sigclip, sigcliplow, objlim)
    radius = _LACOSMIC_RADIUS
    changed = np.zeros((ny, nx), bool)  # inputs changed by the last cleaning
    for iteration in range(niter):
        if iteration > 0:  # recompute where the cleaned inputs changed
            grown = ndimage.maximum_filter(changed, size=2 * radius + 1, mode="constant")
            labels, _ = ndimage.label(grown, structure=np.ones((3, 3), bool))
            boxes = [box for box in ndimage.find_objects(labels) if box is not None]
            crops = [(slice(max(by.start - radius, 0), min(by.stop + radius, ny)),
                      slice(max(bx.start - radius, 0), min(bx.stop + radius, nx))) for by, bx in boxes]
            if sum((cy.stop - cy.start) * (cx.stop - cx.start) for cy, cx in crops) > _CROP_FRACTION * ny * nx:
                cosmics = _laplacian_cosmics(clean, var, good, sigclip, sigcliplow, objlim)
            else:
                cosmics = cosmics.copy()
                parts = _on_crops(clean, var, good, boxes, crops, sigclip, sigcliplow, objlim)
                for (by, bx), part in zip(boxes, parts, strict=True):
                    cosmics[by, bx] = part
        if not cosmics.any():
            break
        grew = bool((cosmics & ~crmask).any())
        crmask |= cosmics
        if iteration > 0 and not grew:
            break  # the mask did not grow: every further pass has the same input and finds the same pixels
        if iteration == niter - 1:
            break
        ys, xs = np.nonzero(crmask)
        before_clean, before_var = clean[ys, xs], var[ys, xs]
        _clean_meanmask(clean, crmask, masked, background_level)
        _clean_meanmask(var, crmask, masked, background_var_level)
        moved = (clean[ys, xs] != before_clean) | (var[ys, xs] != before_var)
        changed = np.zeros((ny, nx), bool)
        changed[ys[moved], xs[moved]] = True
        if not moved.any():
            break  # inputs unchanged: the next pass would find the same pixels
    return crmask
