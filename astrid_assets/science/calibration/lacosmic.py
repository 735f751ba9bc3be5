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
    m5 = sepmedfilt7(var)
    m5[m5 < 0.00001] = 0.00001
    noise = np.sqrt(m5)
    del m5
    s /= 2.0 * noise
    sp = s - sepmedfilt7(s)
    del s
    cosmics = np.logical_and(sp > sigclip, good)
    if cosmics.size <= _FINE_STRUCTURE_WHOLE:
        f = _fine_structure(clean, noise)
        cosmics = np.logical_and(cosmics, (sp / f) > objlim)
    else:  # the fine structure only matters at the candidates: computed on cut-outs around them
        grown = ndimage.maximum_filter(cosmics, size=2 * _FINE_STRUCTURE_RADIUS + 1, mode="constant")
        labels, _ = ndimage.label(grown, structure=np.ones((3, 3), bool))
        ny, nx = clean.shape
        r = _FINE_STRUCTURE_RADIUS
        for by, bx in (box for box in ndimage.find_objects(labels) if box is not None):
            cy = slice(max(by.start - r, 0), min(by.stop + r, ny))
            cx = slice(max(bx.start - r, 0), min(bx.stop + r, nx))
            f = _fine_structure(np.ascontiguousarray(clean[cy, cx]), noise[cy, cx])
            inner = (slice(by.start - cy.start, by.stop - cy.start), slice(bx.start - cx.start, bx.stop - cx.start))
            cosmics[by, bx] &= (sp[by, bx] / f[inner]) > objlim
    del noise
    cosmics = np.logical_and(sp > sigclip, np.logical_and(dilate3(cosmics), good))
    return np.logical_and(sp > sigcliplow, np.logical_and(dilate3(cosmics), good))


def _fine_structure(clean: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """L.A.Cosmic's fine-structure image over the noise, as astroscrappy (``sepmed``, ``fsmode='median'``) makes it;
    each pixel from the inputs within :data:`_FINE_STRUCTURE_RADIUS` of it."""
    f = sepmedfilt5(clean)
    f = (f - sepmedfilt9(f)) / noise
    f[f < 0.01] = 0.01
    return f


#: Chebyshev radius of the fine-structure image: the 5- and 9-pixel separable medians.
_FINE_STRUCTURE_RADIUS = 6
#: Arrays up to this many pixels get the fine structure everywhere; larger ones only around the candidates.
_FINE_STRUCTURE_WHOLE = 256 * 256


#: Chebyshev radius (pixels) of the inputs one L.A.Cosmic pass reads for one output pixel: the Laplacian of the 2×
#: subsampled image (1), the noise and ``S'`` medians (3 + 3), the fine-structure medians (2 + 4) and the two
#: neighbour growths (1 + 1): 8.
_LACOSMIC_RADIUS = 8


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
    (pixels at ``satlevel`` whose 7-pixel separable median is above a tenth of it, grown by 2 × 2 px); the median is
    computed only around the saturated pixels, where it is read."""
    saturated = data >= satlevel
    if saturated.any():
        ny, nx = data.shape
        labels, _ = ndimage.label(saturated, structure=np.ones((3, 3), bool))
        for by, bx in (box for box in ndimage.find_objects(labels) if box is not None):
            cy = slice(max(by.start - 3, 0), min(by.stop + 3, ny))
            cx = slice(max(bx.start - 3, 0), min(bx.stop + 3, nx))
            median7 = sepmedfilt7(np.ascontiguousarray(data[cy, cx]))
            inner = (slice(by.start - cy.start, by.stop - cy.start), slice(bx.start - cx.start, bx.stop - cx.start))
            saturated[by, bx] &= median7[inner] > satlevel / 10.0
    grown = dilate3(mask)
    mask[:, :] = np.logical_or(dilate5(saturated, 2), grown)[:, :]


def lacosmic(indat: np.ndarray, inmask: np.ndarray, invar: np.ndarray | None, sigclip: float, sigfrac: float,
              objlim: float, readnoise: float, satlevel: float, niter: int) -> np.ndarray:
    """``astroscrappy.detect_cosmics(indat, inmask, invar=invar, …, gain=1, niter=niter)[0]`` (1.3.0, its defaults
    ``sepmed=True``, ``cleantype='meanmask'``, ``fsmode='median'``), the same mask to the pixel, in less time.

    astroscrappy runs every iteration over the whole frame. An iteration's input is the frame with the cosmic rays
    found so far replaced by the mean of their unflagged 5×5 neighbours, a function of that mask alone; so after the
    first pass only the pixels within :data:`_LACOSMIC_RADIUS` of a pixel whose cleaned value changed can change, and
    those are recomputed on cut-outs around them (:func:`_laplacian_cosmics`, exact away from the cut-out's edges), and
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
            if sum((cy.stop - cy.start) * (cx.stop - cx.start) for cy, cx in crops) > 0.5 * ny * nx:
                cosmics = _laplacian_cosmics(clean, var, good, sigclip, sigcliplow, objlim)
            else:
                cosmics = cosmics.copy()
                for (by, bx), (cy, cx) in zip(boxes, crops, strict=True):
                    part = _laplacian_cosmics(np.ascontiguousarray(clean[cy, cx]), np.ascontiguousarray(var[cy, cx]),
                                              good[cy, cx], sigclip, sigcliplow, objlim)
                    cosmics[by, bx] = part[by.start - cy.start : by.stop - cy.start,
                                           bx.start - cx.start : bx.stop - cx.start]
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
