"""Relative photometric zero points of a field's frames, from the stars they share.

A frame's depth in its own units (the 5σ limiting flux ``F_lim`` in e-) says nothing about how
many e- a given star delivers in it: thin cloud lowers the sky noise, and so ``F_lim``, while it
dims every star. Frames of one field are put on one photometric scale without any catalogue or
header zero point by matching their bright stars: the relative zero point of frame ``i`` is

``Δzp_i = 2.5 log10( median_k F_ik / F_ak )``  (mag; F in e- of the exposure)

over the stars ``k`` matched with the anchor frame ``a`` (the one with most stars), so that a star
of magnitude ``m`` on that scale delivers ``10^(-0.4 (m − Δzp_i))`` e- in frame ``i``. Fluxes are
sums in circles of :data:`APERTURE_FWHM` × the frame's own FWHM: for one PSF family the enclosed
fraction does not depend on the seeing, so the ratios are not biased by it. Stars are matched
through the similarity transform between the frames' star patterns (astroalign, as for frames
without a WCS; :mod:`~astrid_assets.science.astrometry.align`), so no WCS is needed. The depth on the common scale is
then
``Δzp_i − 2.5 log10 F_lim,i`` (larger is deeper).

The scale's zero is set so that the matched frames' median ``Δzp_i − 2.5 log10 t_i`` is 0 (``t``
the exposure time): frames whose stars match nothing fall back to ``2.5 log10 t_i`` (a frame that
integrates longer collects proportionally more) on the same scale.

Catalogues are stored per calibrated frame as compact text (:func:`encode`, :func:`decode`).
"""

from __future__ import annotations

import json

import numpy as np
from scipy.spatial import cKDTree

from astrid_assets.science.astrometry.align import AlignmentError, pixel_transform
from astrid_assets.science.sources import star_catalogue

__all__ = [
    "APERTURE_FWHM",
    "MAX_STARS",
    "MIN_MATCHED",
    "MATCH_RADIUS",
    "zero_point_stars",
    "encode",
    "decode",
    "flux_ratio",
    "relative_zero_points",
]

#: Aperture radius in units of the frame's FWHM for the zero-point stars (Gaussian: all the light;
#: Moffat β = 2.5: 95 %, the same fraction in every frame of that β).
APERTURE_FWHM = 2.5
#: Stars kept per frame (brightest unsaturated, unflagged).
MAX_STARS = 40
#: Matched stars a relative zero point needs.
MIN_MATCHED = 3
#: Match radius (px) after the pattern transform.
MATCH_RADIUS = 2.0


def zero_point_stars(science, background, background_rms, mask, fwhm_px: float, sources=None) -> np.ndarray:
    """``(x, y, flux)`` of a frame's :data:`MAX_STARS` brightest clean stars, flux (e-) in an aperture
    of :data:`APERTURE_FWHM` × ``fwhm_px``; empty where the FWHM is unknown.

    Parameters
    ----------
    science : numpy.ndarray
        Calibrated frame with sky, e-, indexed ``[y, x]``.
    background, background_rms : numpy.ndarray or float
        Sky level and its per-pixel noise, e- (maps or scalars).
    mask : numpy.ndarray or None
        ``uint16`` mask (``UNUSABLE`` pixels excluded), or None.
    fwhm_px : float
        The frame's PSF FWHM, px; None, NaN or non-positive gives an empty catalogue.
    sources : Sources or None, default None
        The frame's stored detections (:class:`~astrid_assets.science.sources.Sources`); None extracts them.

    Returns
    -------
    numpy.ndarray
        ``(m, 3)`` rows ``(x, y, flux)``: 0-based px and background-subtracted aperture flux in
        e- of the exposure, brightest first (:func:`~astrid_assets.science.sources.star_catalogue`); ``(0, 3)`` if none.
    """
    if not (fwhm_px and np.isfinite(fwhm_px) and fwhm_px > 0):
        return np.empty((0, 3))
    return star_catalogue(science, background, background_rms, mask, MAX_STARS, APERTURE_FWHM * fwhm_px,
                          sources=sources)


def encode(stars: np.ndarray) -> str | None:
    """Compact text of a star catalogue (x, y to 0.01 px, flux to 4 significant digits); None if empty.

    Parameters
    ----------
    stars : numpy.ndarray
        ``(m, 3)`` rows ``(x, y, flux)``: px and e- (:func:`zero_point_stars`).

    Returns
    -------
    str or None
        JSON list of ``[x, y, flux]`` rows, or None when ``stars`` is empty.
    """
    if len(stars) == 0:
        return None
    return json.dumps([[round(float(x), 2), round(float(y), 2), float(f"{flux:.4g}")] for x, y, flux in stars],
                      separators=(",", ":"))


def decode(text: str | None) -> np.ndarray:
    """The catalogue :func:`encode` wrote (an empty ``(0, 3)`` array for None or empty text).

    Parameters
    ----------
    text : str or None
        JSON text from :func:`encode`; None, empty or a non-string gives an empty catalogue.

    Returns
    -------
    numpy.ndarray
        ``(m, 3)`` float64 rows ``(x, y, flux)``, px and e-.
    """
    if not text or not isinstance(text, str):
        return np.empty((0, 3))
    return np.asarray(json.loads(text), dtype=np.float64).reshape(-1, 3)


def flux_ratio(stars: np.ndarray, anchor: np.ndarray) -> tuple[float, int]:
    """Median flux ratio (frame / anchor) of the stars matched by pattern, and how many matched.

    The frame's stars are mapped onto the anchor's pixels by the similarity transform of
    :func:`~astrid_assets.science.astrometry.align.pixel_transform` and paired with the nearest anchor star within
    :data:`MATCH_RADIUS` px (one anchor star may pair with several frame stars).

    Parameters
    ----------
    stars : numpy.ndarray
        ``(m, 3)`` rows ``(x, y, flux)`` of the frame (px, e-; :func:`zero_point_stars`).
    anchor : numpy.ndarray
        ``(k, 3)`` rows ``(x, y, flux)`` of the anchor frame, same units.

    Returns
    -------
    ratio : float
        Median of ``flux_frame / flux_anchor`` over the matched stars (dimensionless).
    n_matched : int
        Number of frame stars matched.

    Raises
    ------
    AlignmentError
        The patterns do not match, or fewer than :data:`MIN_MATCHED` stars pair up.
    """
    matrix, _ = pixel_transform(stars[:, :2], anchor[:, :2])
    moved = stars[:, :2] @ matrix[:2, :2].T + matrix[:2, 2]
    distance, nearest = cKDTree(anchor[:, :2]).query(moved, distance_upper_bound=MATCH_RADIUS)
    matched = np.isfinite(distance)
    if matched.sum() < MIN_MATCHED:
        raise AlignmentError(f"only {int(matched.sum())} stars matched (need {MIN_MATCHED})")
    ratios = stars[matched, 2] / anchor[nearest[matched], 2]
    return float(np.median(ratios)), int(matched.sum())


def relative_zero_points(catalogues: list[np.ndarray], exptime: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relative zero points (mag, see the module docstring) of frames of one field, and which were matched.

    The anchor is the frame with most stars; if it has fewer than :data:`MIN_MATCHED`, no frame
    is matched and all take the fallback.

    Parameters
    ----------
    catalogues : list of numpy.ndarray
        Per frame, ``(x, y, flux)`` rows from :func:`zero_point_stars` (px, e-; may be empty).
    exptime : numpy.ndarray
        Exposure time per frame, s (non-positive or NaN taken as 1).

    Returns
    -------
    zero_points : ndarray
        ``Δzp_i``, mag; ``2.5 log10 t_i`` (on the same scale) for frames whose stars matched nothing.
    matched : ndarray of bool
        Frames whose zero point comes from stars in common with the anchor.
    """
    exptime = np.asarray(exptime, dtype=float)
    exptime = np.where(np.isfinite(exptime) & (exptime > 0), exptime, 1.0)
    fallback = 2.5 * np.log10(exptime)
    zero_points, matched = np.full(len(catalogues), np.nan), np.zeros(len(catalogues), bool)
    if not len(catalogues):
        return zero_points, matched
    anchor = int(np.argmax([len(stars) for stars in catalogues]))
    if len(catalogues[anchor]) >= MIN_MATCHED:
        for index, stars in enumerate(catalogues):
            if index == anchor:
                zero_points[index], matched[index] = 0.0, True
                continue
            if len(stars) < MIN_MATCHED:
                continue
            try:
                ratio, _ = flux_ratio(stars, catalogues[anchor])
            except AlignmentError:
                continue
            if ratio > 0:
                zero_points[index], matched[index] = 2.5 * np.log10(ratio), True
    if matched.any():
        zero_points -= np.median(zero_points[matched] - fallback[matched])
    return np.where(matched, zero_points, fallback), matched
