"""Stars fit for a PSF: SEP detections that are neither merged nor truncated, bright enough, clean,
isolated and of the common shape, with windowed centroids (shared by the frame PSF,
:mod:`~astrid_assets.science.psf.empirical`, and the PSF field, :mod:`~astrid_assets.science.psf.field`).

Pixel arrays are ``float32`` in e-, indexed ``[y, x]``, 0-based; pixel ``[j, i]`` has its centre at
``(x, y) = (i, j)``. Fluxes in e- (aperture sums of the background-subtracted frame).
"""

from __future__ import annotations

import numpy as np
import sep
from scipy.spatial import cKDTree

from astrid_assets.science.cutouts import cutout_window
from astrid_assets.science.psf.profiles import GAUSSIAN_FWHM_PER_SIGMA

__all__ = [
    "PSF_STAR_LIMITS",
    "SEP_REJECT_FLAGS",
    "stamp_is_clean",
    "isolated_among",
    "cut_centred_stamps",
    "select_psf_stars",
    "shape_cut",
    "moments_shape",
    "EXTENDED_TOLERANCE",
    "extended_sources",
]

#: PSF stars the pipeline asks for: S/N ≥ 15 and at least 3 isolated unsaturated ones. A 512² frame of a
#: sparse field at high latitude holds only a handful of stars above the estimator's stricter defaults.
PSF_STAR_LIMITS = {"min_snr": 15.0, "min_stars": 3}
SEP_REJECT_FLAGS = sep.OBJ_MERGED | sep.OBJ_TRUNC
#: A source whose half-light radius exceeds the median of the sources' by more than this fraction is extended (a
#: galaxy, a blend): point sources of one image share their half-light radius within its noise (about 10 % at
#: S/N 10), while an exponential disc of scale length h has one of about 1.7 h on top of the PSF's.
EXTENDED_TOLERANCE = 0.5


def extended_sources(
    frame: np.ndarray, x: np.ndarray, y: np.ndarray, bad: np.ndarray, radius: float,
    tolerance: float = EXTENDED_TOLERANCE, locus: np.ndarray | None = None,
) -> np.ndarray:
    """Which sources are extended: a half-light radius (SEP, within ``radius`` px) above ``1 + tolerance`` times
    the median of the sources' (of those where ``locus`` is True, when given).

    The median is the point sources' wherever they are at least half the sources: a sparse cut-out's galaxies
    and transients do not move it as long as its stars and transients outnumber its galaxies. A source whose
    radius cannot be measured is not called extended.

    Parameters
    ----------
    frame : numpy.ndarray
        Background-subtracted image, e- (``float32``, ``[y, x]``).
    x, y : numpy.ndarray
        Source positions, px.
    bad : numpy.ndarray
        Unusable pixels (left out of the sums).
    radius : float or numpy.ndarray
        Aperture radius of the half-light measurement, px (per source or one for all).
    tolerance : float, default EXTENDED_TOLERANCE
        Fraction above the median half-light radius.
    locus : numpy.ndarray of bool or None
        Sources that set the median (e.g. those bright enough to measure), None: all.

    Returns
    -------
    numpy.ndarray of bool
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.size == 0:
        return np.zeros(0, dtype=bool)
    radii = np.broadcast_to(np.asarray(radius, np.float64), x.shape).copy()
    r_half, _ = sep.flux_radius(np.ascontiguousarray(frame, dtype=np.float32), x, y, radii, 0.5,
                                mask=np.ascontiguousarray(bad))
    use = np.isfinite(r_half) & (r_half > 0) & (True if locus is None else np.asarray(locus, bool))
    if not use.any():
        return np.zeros(x.size, dtype=bool)
    with np.errstate(invalid="ignore"):
        return np.asarray(r_half > (1.0 + tolerance) * float(np.median(r_half[use])), dtype=bool)


def stamp_is_clean(bad: np.ndarray, ic: int, jc: int, half: int) -> bool:
    ny, nx = bad.shape
    if ic - half < 0 or jc - half < 0 or ic + half >= nx or jc + half >= ny:
        return False
    return not bad[jc - half : jc + half + 1, ic - half : ic + half + 1].any()


def isolated_among(
    objects: np.ndarray, candidates: np.ndarray, radius: float, core_radius: float, flux_fraction: float
) -> np.ndarray:
    """Candidates with no neighbour brighter than ``flux_fraction`` of them within ``radius``
    and no neighbour at all within ``core_radius`` (pixels)."""
    tree = cKDTree(np.column_stack([objects["x"], objects["y"]]))
    keep = np.zeros(candidates.size, dtype=bool)
    for k, index in enumerate(candidates):
        star = objects[index]
        neighbours = [n for n in tree.query_ball_point((star["x"], star["y"]), radius) if n != index]
        if not neighbours:
            keep[k] = True
            continue
        other = objects[neighbours]
        distance = np.hypot(other["x"] - star["x"], other["y"] - star["y"])
        keep[k] = not (np.any(distance < core_radius) or np.any(other["flux"] > flux_fraction * star["flux"]))
    return candidates[keep]


def cut_centred_stamps(frame: np.ndarray, x: np.ndarray, y: np.ndarray, size: int, pad: int = 4) -> np.ndarray:
    """Stamps of ``size`` px whose centre is moved onto ``(x, y)`` by a Fourier sub-pixel shift.

    The boxes (``size + 2 pad`` px) must lie inside ``frame``; they are shifted in one batch.
    """
    if np.size(x) == 0:
        return np.empty((0, size, size))
    half = size // 2 + pad
    side = 2 * half + 1
    ic, jc = np.rint(x).astype(np.intp), np.rint(y).astype(np.intp)
    offsets = np.arange(-half, half + 1)
    rows = (jc[:, None] + offsets[None, :])[:, :, None]
    cols = (ic[:, None] + offsets[None, :])[:, None, :]
    boxes = np.asarray(frame, dtype=np.float64)[rows, cols]
    freq = np.fft.fftfreq(side)
    dx, dy = ic - x, jc - y  # move the star centre onto the box centre
    phase = np.exp(-2j * np.pi * freq[None, :, None] * dy[:, None, None]) * np.exp(
        -2j * np.pi * freq[None, None, :] * dx[:, None, None]
    )
    shifted = np.fft.ifft2(np.fft.fft2(boxes, axes=(1, 2)) * phase, axes=(1, 2)).real
    return shifted[:, pad : pad + size, pad : pad + size].reshape(-1, size, size)


def select_psf_stars(
    frame: np.ndarray,
    rms: np.ndarray | float,
    bad: np.ndarray,
    objects: np.ndarray,
    size: int,
    min_snr: float,
    neighbour_flux_fraction: float,
    max_stars: int,
) -> dict[str, np.ndarray]:
    """Windowed centroids, aperture fluxes and shapes of the stars that may be fit for the PSF.

    Only the ``4 × max_stars`` brightest unflagged detections are measured (all detections
    still count as neighbours in the isolation test). The shape cut is left to
    :func:`_shape_cut` (its tolerance differs between the frame PSF and :mod:`~astrid_assets.science.psf.field`), so
    one measurement serves both: ``r_ratio`` is the half-light radius over the median, minus 1,
    and ``elongation_excess`` is ``a/b`` minus its median.
    """
    half = size // 2
    unflagged = np.flatnonzero((objects["flag"] & SEP_REJECT_FLAGS) == 0)
    brightest = unflagged[np.argsort(-objects["flux"][unflagged])][: 4 * max_stars]
    x0, y0 = objects["x"][brightest].astype(np.float64), objects["y"][brightest].astype(np.float64)
    r_half, _ = sep.flux_radius(frame, x0, y0, np.full(x0.size, float(half)), 0.5, mask=bad)
    fwhm_guess = float(np.clip(2.0 * np.nanmedian(r_half), 1.0, size / 3)) if r_half.size else 2.0
    flux, flux_err, _ = sep.sum_circle(frame, x0, y0, 1.5 * fwhm_guess, err=rms, mask=bad)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = flux / flux_err
    picked = np.flatnonzero((snr >= min_snr) & np.isfinite(r_half))
    picked = np.asarray(
        [k for k in picked if stamp_is_clean(bad, int(np.rint(x0[k])), int(np.rint(y0[k])), half + 4)], dtype=int
    )
    if picked.size:
        isolated = isolated_among(
            objects,
            brightest[picked],
            radius=half * np.sqrt(2.0),
            core_radius=2.0 * fwhm_guess,
            flux_fraction=neighbour_flux_fraction,
        )
        picked = picked[np.isin(brightest[picked], isolated)]
    r_ratio = elongation_excess = np.empty(0)
    if picked.size:
        elongation = objects["a"][brightest[picked]] / np.maximum(objects["b"][brightest[picked]], 1e-3)
        r_ratio = r_half[picked] / np.median(r_half[picked]) - 1.0
        elongation_excess = elongation - np.median(elongation)
        sigma_window = fwhm_guess / GAUSSIAN_FWHM_PER_SIGMA
        xw, yw, wflag = sep.winpos(frame, x0[picked], y0[picked], sigma_window, mask=bad)
        ok = (wflag == 0) & (np.hypot(xw - x0[picked], yw - y0[picked]) < 1.0)
        picked, xw, yw, r_ratio, elongation_excess = picked[ok], xw[ok], yw[ok], r_ratio[ok], elongation_excess[ok]
    else:
        xw = yw = np.empty(0)
    return {"x": xw, "y": yw, "flux": flux[picked], "r_ratio": r_ratio, "elongation_excess": elongation_excess}


def shape_cut(stars: dict[str, np.ndarray], size_tolerance: float) -> dict[str, np.ndarray]:
    """The stars of :func:`_select_psf_stars` whose half-light radius is within ``size_tolerance``
    of the median and whose elongation ``a/b`` is at most 0.3 above the median (galaxies, blends,
    cosmic rays out)."""
    good = (np.abs(stars["r_ratio"]) <= size_tolerance) & (stars["elongation_excess"] <= 0.3)
    return {key: value[good] for key, value in stars.items()}


def moments_shape(difference: np.ndarray, x: float, y: float, sign: int, window_sigma: float) -> tuple[float, float]:
    """FWHM (px) and elongation a/b from Gaussian-weighted second moments on the difference.

    The weight (σ_w = the PSF's σ) is divided out assuming a Gaussian profile:
    ``C = (M⁻¹ − W⁻¹)⁻¹`` for measured moments ``M`` and window ``W = σ_w² I``.
    NaN when the moments are not positive definite (noise-dominated).
    """
    window = cutout_window(difference.shape, x, y, int(np.ceil(3.0 * window_sigma)))
    if window is None:
        return float("nan"), float("nan")
    yy, xx = np.mgrid[window.image]
    dx, dy = xx - x, yy - y
    weight = np.exp(-(dx**2 + dy**2) / (2.0 * window_sigma**2))
    values = sign * difference[window.image].astype(np.float64) * weight
    total = values.sum()
    if not np.isfinite(total) or total <= 0:
        return float("nan"), float("nan")
    moments = (
        np.array(
            [
                [(values * dx * dx).sum(), (values * dx * dy).sum()],
                [(values * dx * dy).sum(), (values * dy * dy).sum()],
            ]
        )
        / total
    )
    try:
        intrinsic = np.linalg.inv(np.linalg.inv(moments) - np.eye(2) / window_sigma**2)
        eigen = np.linalg.eigvalsh(intrinsic)
    except np.linalg.LinAlgError:
        return float("nan"), float("nan")
    if not np.all(np.isfinite(eigen)) or eigen.min() <= 0:
        return float("nan"), float("nan")
    fwhm = GAUSSIAN_FWHM_PER_SIGMA * float(np.sqrt(eigen.mean()))
    return fwhm, float(np.sqrt(eigen.max() / eigen.min()))
