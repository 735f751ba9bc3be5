"""Registration residuals: the offsets of bright stars between a registered frame and its reference,
whose median corrects the WCS and whose scatter enters ZOGY's astrometric-noise term.

Positions in px on the reference grid, 0-based, ``(x, y)`` with pixel ``[j, i]`` centred at ``(i, j)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sep
from astropy.stats import mad_std
from scipy.spatial import cKDTree

from astrid_assets.science.astrometry.register import RegistrationError
from astrid_assets.science.psf.profiles import GAUSSIAN_FWHM_PER_SIGMA
from astrid_assets.science.sources import Sources

__all__ = [
    "RegistrationResiduals",
    "bright_star_centroids",
    "match_positions",
    "near_any",
    "measure_registration_residuals",
    "residuals_between",
    "RESIDUAL_STAR_SNR",
    "star_residuals",
]


@dataclass(frozen=True)
class RegistrationResiduals:
    """Star-matching check of a registration (positions on the reference grid).

    Attributes
    ----------
    dx, dy : float
        Median offset registered − reference, px; passing ``pixel_offset=(dx, dy)`` to
        :func:`register_to_reference` removes it.
    rms_x, rms_y : float
        Robust scatter (1.4826 × MAD) of the per-star offsets about the median, px;
        with bright stars this is the registration noise σ_x, σ_y of ZOGY eqs. 30–33.
    n_stars : int
        Number of matched stars.
    """

    dx: float
    dy: float
    rms_x: float
    rms_y: float
    n_stars: int


def bright_star_centroids(sources: Sources, min_snr: float) -> np.ndarray:
    """Windowed centroids ``(x, y)``, px, of unflagged detections with S/N ≥ ``min_snr`` in a 3 px circle.

    Parameters
    ----------
    sources : Sources
        An image's detections and pixels (:class:`~astrid_assets.science.sources.Sources`).
    min_snr : float
        Aperture S/N cut.

    Returns
    -------
    numpy.ndarray
        ``(n, 2)`` centroids on the image's grid (``sep.winpos`` with σ from each star's half-light radius).
    """
    key = ("bright_star_centroids", float(min_snr))
    if key not in sources.measured:
        sources.measured[key] = _bright_star_centroids(sources, min_snr)
    return sources.measured[key]


def _bright_star_centroids(sources: Sources, min_snr: float) -> np.ndarray:
    objects, frame, rms, bad = sources.objects, sources.frame, sources.rms, sources.bad
    if objects.size == 0:
        return np.empty((0, 2))
    x, y = objects["x"].astype(np.float64), objects["y"].astype(np.float64)
    flux, flux_err, _ = sep.sum_circle(frame, x, y, 3.0, err=rms, mask=bad)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = flux / flux_err
    good = (objects["flag"] == 0) & (snr >= min_snr)
    if not good.any():
        return np.empty((0, 2))
    r_half, _ = sep.flux_radius(frame, x[good], y[good], np.full(int(good.sum()), 15.0), 0.5, mask=bad)
    sigma = np.clip(2.0 * np.nan_to_num(r_half, nan=1.0) / GAUSSIAN_FWHM_PER_SIGMA, 0.5, 10.0)
    xw, yw, flag = sep.winpos(frame, x[good], y[good], sigma, mask=bad)
    ok = flag == 0
    return np.column_stack([xw[ok], yw[ok]])


def match_positions(xy_a: np.ndarray, xy_b: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Mutual nearest-neighbour pairs within ``radius`` px: indices into ``xy_a`` and ``xy_b``.

    Parameters
    ----------
    xy_a, xy_b : numpy.ndarray
        ``(n, 2)`` and ``(m, 2)`` positions ``(x, y)``, px, on one grid.
    radius : float
        Largest pair separation, px.

    Returns
    -------
    index_a, index_b : numpy.ndarray
        Integer indices of the paired rows, ``xy_a[index_a[k]]`` ↔ ``xy_b[index_b[k]]``.
    """
    if len(xy_a) == 0 or len(xy_b) == 0:
        return np.empty(0, int), np.empty(0, int)
    dist_ab, nearest_b = cKDTree(xy_b).query(xy_a, distance_upper_bound=radius)
    _, nearest_a = cKDTree(xy_a).query(xy_b, distance_upper_bound=radius)
    index_a = np.flatnonzero(np.isfinite(dist_ab))
    index_b = nearest_b[index_a]
    mutual = nearest_a[index_b] == index_a
    return index_a[mutual], index_b[mutual]


def near_any(xy: np.ndarray, others: np.ndarray, radius: float) -> np.ndarray:
    """Whether each of the ``(n, 2)`` positions ``xy`` lies within ``radius`` px of any of ``others``."""
    xy, others = np.asarray(xy, np.float64).reshape(-1, 2), np.asarray(others, np.float64).reshape(-1, 2)
    if len(xy) == 0 or len(others) == 0:
        return np.zeros(len(xy), bool)
    distance, _ = cKDTree(others).query(xy, distance_upper_bound=radius * (1 + 1e-12))
    return distance <= radius


def measure_registration_residuals(
    image: np.ndarray,
    image_rms: np.ndarray | float,
    reference: np.ndarray,
    reference_rms: np.ndarray | float,
    mask: np.ndarray | None = None,
    reference_mask: np.ndarray | None = None,
    *,
    min_snr: float = 50.0,
    match_radius: float = 2.0,
    sources: Sources | None = None,
    reference_sources: Sources | None = None,
) -> RegistrationResiduals:
    """Compare bright-star centroids of a registered frame with the reference's.

    Both images must be background-subtracted and on the same grid. Stars are found with
    SEP (Barbary 2016), centroided with ``sep.winpos`` and paired by mutual nearest
    neighbour within ``match_radius`` px.

    Parameters
    ----------
    image : numpy.ndarray
        Registered frame, background-subtracted, e-, indexed ``[y, x]``.
    image_rms : numpy.ndarray or float
        Its per-pixel noise, e- (map or scalar).
    reference : numpy.ndarray
        Reference image on the same grid, background-subtracted, e-.
    reference_rms : numpy.ndarray or float
        Its per-pixel noise, e- (map or scalar).
    mask, reference_mask : numpy.ndarray or None, default None
        uint16 masks of the two images (``UNUSABLE`` pixels excluded); None: no mask.
    min_snr : float, default 50.0
        Minimum S/N of a star (unflagged SEP detection at 5σ, flux in a circle of radius 3 px).
    match_radius : float, default 2.0
        Largest separation of a pair, px.
    sources, reference_sources : Sources or None, default None
        Each image's extraction when already made (:class:`~astrid_assets.science.sources.Sources`,
        on this grid); None extracts it here.

    Returns
    -------
    RegistrationResiduals
        Median offset and robust scatter, px, and the number of matched stars.

    Raises
    ------
    RegistrationError
        Fewer than 3 stars could be matched.
    """
    stars = bright_star_centroids(sources or Sources.extract(image, 0.0, image_rms, mask), min_snr)
    ref_stars = bright_star_centroids(
        reference_sources or Sources.extract(reference, 0.0, reference_rms, reference_mask), min_snr)
    return residuals_between(stars, ref_stars, min_snr, match_radius)


def residuals_between(
    stars: np.ndarray, ref_stars: np.ndarray, min_snr: float, match_radius: float = 2.0
) -> RegistrationResiduals:
    """Median offset and robust scatter of ``stars − ref_stars`` over mutual nearest pairs.

    Parameters
    ----------
    stars, ref_stars : numpy.ndarray
        ``(n, 2)`` and ``(m, 2)`` star centroids ``(x, y)`` on the reference grid, px.
    min_snr : float
        The S/N cut they were chosen with (named in the error).
    match_radius : float, default 2.0
        Largest separation of a pair, px.

    Returns
    -------
    RegistrationResiduals

    Raises
    ------
    RegistrationError
        Fewer than 3 pairs.
    """
    index, ref_index = match_positions(stars, ref_stars, match_radius)
    if index.size < 3:
        raise RegistrationError(
            f"only {index.size} stars with S/N >= {min_snr:g} matched between the registered "
            "frame and the reference; cannot measure the registration residuals"
        )
    offsets = stars[index] - ref_stars[ref_index]
    median = np.median(offsets, axis=0)
    spread = mad_std(offsets, axis=0)
    return RegistrationResiduals(
        dx=float(median[0]),
        dy=float(median[1]),
        rms_x=float(spread[0]),
        rms_y=float(spread[1]),
        n_stars=int(index.size),
    )


#: Star S/N thresholds tried in turn for the registration check: bright stars first; a sparse or
#: shallow frame falls back to fainter ones rather than failing.
RESIDUAL_STAR_SNR = (50.0, 20.0, 10.0)


def star_residuals(
    sources: Sources, reference_sources: Sources, min_stars: int, to_grid=None,
) -> RegistrationResiduals:
    """Registration residuals from the brightest stars that give at least ``min_stars`` matches.

    Star S/N thresholds :data:`RESIDUAL_STAR_SNR` are tried in turn, on the same detections; where none
    gives ``min_stars``, the threshold that matched most (at least three) is taken: a sparse field.

    Parameters
    ----------
    sources : Sources
        The new frame's detections: on the reference grid, or on its own grid with ``to_grid``.
    reference_sources : Sources
        The reference's detections.
    min_stars : int
        Fewest matched stars accepted.
    to_grid : callable or None, default None
        Maps ``(n, 2)`` positions of ``sources`` onto the reference grid (None: they are on it).

    Returns
    -------
    RegistrationResiduals
        Median offset and scatter, px, of the first threshold that gives enough stars.

    Raises
    ------
    RegistrationError
        When no threshold gives three matched stars.
    """
    problem, most = "", None
    for min_snr in RESIDUAL_STAR_SNR:
        stars = bright_star_centroids(sources, min_snr)
        if to_grid is not None and len(stars):
            stars = to_grid(stars)
        try:
            residuals = residuals_between(stars, bright_star_centroids(reference_sources, min_snr), min_snr)
        except RegistrationError as error:
            problem = str(error)
            continue
        if residuals.n_stars >= min_stars:
            return residuals
        most = residuals if most is None or residuals.n_stars > most.n_stars else most
        problem = f"only {residuals.n_stars} stars with S/N >= {min_snr:g} matched the reference (need {min_stars})"
    if most is not None:  # a sparse field (a cut-out of a few stars): three stars in common suffice
        return most
    raise RegistrationError(problem)
