"""Control stars for pattern matching: bright, unsaturated, isolated and spread over the frame.

Pattern matching fails in crowded fields when the brightest detections are saturated, blended (their
isophotal barycentres move with the seeing, by more than a matcher's tolerance) or bunched in one
part of the frame; and in sparse fields when too few stars are offered. The stars chosen here:

* are unflagged SEP detections (no deblending, no truncation) whose 2.5 × FWHM circle holds no
  unusable pixel (``masks.UNUSABLE``: saturated cores, bad pixels) and does not cross the edge;
* are *isolated*: no other detection brighter than a tenth of the star's flux lies within
  :data:`ISOLATION_FWHM` × FWHM (the neighbour's light would shift the centroid, and its deblending
  changes with the seeing);
* are centroided by a Gaussian-windowed centroid (``sep.winpos``), which stays within a few
  hundredths of a pixel in a blend-free circle, rather than the isophotal barycentre;
* are spread: the frame is cut into :data:`GRID` × :data:`GRID` cells and the stars are taken in
  turn from each cell, brightest first within it, so that every part of the frame has some.

Where fewer than ``minimum`` stars pass, the cuts are loosened in turn (isolation, then the flag
and the mask) so that a sparse field still offers every star it has.

Positions are 0-based pixels ``(x, y)`` on the image's grid, pixel ``[j, i]`` centred at ``(i, j)``.
"""

from __future__ import annotations

import numpy as np
import sep
from scipy.spatial import cKDTree

from astrid_assets.science.psf.profiles import GAUSSIAN_FWHM_PER_SIGMA
from astrid_assets.science.sources import Sources

__all__ = ["ISOLATION_FWHM", "GRID", "ControlStars", "choose_control_stars"]

#: Radius, in FWHM, within which no detection brighter than a tenth of the star may lie.
ISOLATION_FWHM = 2.5
#: Cells per axis over which control stars are spread.
GRID = 4


class ControlStars:
    """Chosen control stars of one image.

    Attributes
    ----------
    xy : numpy.ndarray
        ``(n, 2)`` windowed centroids ``(x, y)``, px, in the order chosen (spread, brightest first
        within each round).
    flux : numpy.ndarray
        ``(n,)`` isophotal fluxes, image units.
    fwhm : float
        Median FWHM of the detections used for the cuts, px.
    cuts : str
        Which cuts the stars passed (``"isolated"``, ``"unflagged"`` or ``"any"``).
    """

    def __init__(self, xy: np.ndarray, flux: np.ndarray, fwhm: float, cuts: str) -> None:
        self.xy, self.flux, self.fwhm, self.cuts = xy, flux, fwhm, cuts

    def __len__(self) -> int:
        return len(self.xy)


def _fwhm(objects: np.ndarray) -> np.ndarray:
    """Per-detection FWHM estimate from SEP's second moments (``2.355 sqrt(a b)``), px."""
    return GAUSSIAN_FWHM_PER_SIGMA * np.sqrt(np.clip(objects["a"] * objects["b"], 0.0, None))


def _spread(xy: np.ndarray, flux: np.ndarray, shape: tuple[int, int], n: int) -> np.ndarray:
    """Indices of up to ``n`` stars taken round-robin over a :data:`GRID` × :data:`GRID` grid, brightest first."""
    ny, nx = shape
    cx = np.clip((xy[:, 0] / max(nx, 1) * GRID).astype(int), 0, GRID - 1)
    cy = np.clip((xy[:, 1] / max(ny, 1) * GRID).astype(int), 0, GRID - 1)
    cells = cy * GRID + cx
    queues = [list(np.flatnonzero(cells == c)[np.argsort(-flux[cells == c])]) for c in range(GRID * GRID)]
    chosen: list[int] = []
    while len(chosen) < n and any(queues):
        round_ = [queue.pop(0) for queue in queues if queue]
        chosen.extend(sorted(round_, key=lambda i: -flux[i]))  # each round brightest first
    return np.asarray(chosen[:n], dtype=int)


def choose_control_stars(sources: Sources, n: int = 60, minimum: int = 8) -> ControlStars:
    """Up to ``n`` control stars of an image for pattern matching (module docstring).

    Parameters
    ----------
    sources : Sources
        The image's detections and pixels (its one extraction; stored catalogues work too).
    n : int, default 60
        Most stars returned.
    minimum : int, default 8
        Fewest stars wanted before a cut is loosened.

    Returns
    -------
    ControlStars
        Positions (windowed centroids), fluxes and the cuts they passed.
    """
    objects = sources.objects
    if objects is None or len(objects) == 0:
        return ControlStars(np.empty((0, 2)), np.empty(0), float("nan"), "any")
    frame, bad = sources.frame, sources.bad
    ny, nx = frame.shape
    x, y = objects["x"].astype(np.float64), objects["y"].astype(np.float64)
    flux = objects["flux"].astype(np.float64)
    fwhm_each = _fwhm(objects)
    unflagged = objects["flag"] == 0
    fwhm = float(np.median(fwhm_each[unflagged])) if unflagged.any() else float(np.median(fwhm_each))
    fwhm = fwhm if np.isfinite(fwhm) and fwhm > 0 else 3.0
    radius = 2.5 * fwhm
    inside = (x >= radius) & (y >= radius) & (x <= nx - 1 - radius) & (y <= ny - 1 - radius) & (flux > 0)
    # no unusable pixel (saturated core, bad pixel) within the star's circle
    _, _, aperture_flags = sep.sum_circle(frame, x, y, np.full(len(x), radius), mask=bad)
    clean = (aperture_flags & sep.APER_HASMASKED) == 0
    isolated = np.ones(len(x), bool)
    if len(x) > 1:
        tree = cKDTree(np.column_stack([x, y]))
        for i, neighbours in enumerate(tree.query_ball_point(np.column_stack([x, y]), ISOLATION_FWHM * fwhm)):
            others = [k for k in neighbours if k != i]
            isolated[i] = not others or bool(np.all(flux[others] < 0.1 * flux[i]))
    for cuts, keep in (("isolated", inside & clean & unflagged & isolated), ("unflagged", inside & clean & unflagged),
                       ("any", flux > 0)):
        if keep.sum() >= minimum or cuts == "any":
            break
    index = np.flatnonzero(keep)
    if index.size == 0:
        return ControlStars(np.empty((0, 2)), np.empty(0), fwhm, cuts)
    sigma = np.full(index.size, fwhm / GAUSSIAN_FWHM_PER_SIGMA)
    xw, yw, flag = sep.winpos(frame, x[index], y[index], sigma, mask=bad)
    moved = np.hypot(xw - x[index], yw - y[index])
    good = (flag == 0) & np.isfinite(xw) & np.isfinite(yw) & (moved < fwhm)
    xy = np.where(good[:, None], np.column_stack([xw, yw]), np.column_stack([x[index], y[index]]))
    order = _spread(xy, flux[index], (ny, nx), n)
    return ControlStars(xy[order], flux[index][order], fwhm, cuts)
