"""The flux ratio ``F_n / F_r`` of two images of the same field, from the stars they share.

``F_n / F_r`` is the counts a source gives in the new image per count in the reference
(``10**(0.4 (zp_new − zp_ref))`` for photometric zero points ``zp``). It is fitted from forced PSF
photometry (:mod:`~astrid_assets.science.photometry.forced`) of the same stars in both images, each with its own PSF,
robust
against variable stars, transients and saturated cores. Used by the subtractions and by the
reference co-add for its flux scales. Images are background-subtracted e-, ``[y, x]``, 0-based.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from astropy.stats import mad_std

from astrid_assets.science.photometry.forced import psf_photometry
from astrid_assets.science.psf.model import PSFModel
from astrid_assets.science.sources import find_sources, frame_for_sep, noise_for_sep, unusable_pixels

__all__ = [
    "FluxRatioError",
    "FluxRatioFit",
    "fit_flux_ratio",
    "star_flux_ratios",
    "consensus_stars",
    "ratio_sigma",
    "ratio_agreement",
    "CONSENSUS_TOLERANCE",
    "clipped_ratio_mean",
    "psf_star_positions",
]


class FluxRatioError(ValueError):
    """The flux ratio F_n / F_r could not be fitted (too few matched stars)."""


@dataclass(frozen=True)
class FluxRatioFit:
    """``F_n / F_r`` from forced PSF photometry of stars in both images.

    Attributes
    ----------
    ratio : float
        Weighted mean of ``f_new / f_ref`` over the kept stars: counts in the new image per count
        in the reference (dimensionless).
    ratio_err : float
        1σ error of ``ratio``, scaled up by ``sqrt(χ²/(n − 1))`` when that exceeds 1.
    n_stars : int
        Stars kept after clipping.
    varying_xy : numpy.ndarray
        ``(m, 2)`` positions ``(x, y)``, px, of the stars measured at S/N ≥ ``min_snr`` in both images whose
        ratio was clipped: they changed (variables, transients in the reference), so the PSF-model error is not
        calibrated at them (:func:`~astrid_assets.science.subtraction.zogy.zogy`).
    """

    ratio: float
    ratio_err: float
    n_stars: int
    varying_xy: np.ndarray = field(default_factory=lambda: np.empty((0, 2)))


def fit_flux_ratio(
    new: np.ndarray,
    ref: np.ndarray,
    new_psf: PSFModel | np.ndarray,
    ref_psf: PSFModel | np.ndarray,
    new_var: np.ndarray | float,
    ref_var: np.ndarray | float,
    mask: np.ndarray | None = None,
    star_xy: np.ndarray | None = None,
    *,
    min_snr: float = 20.0,
    clip: float = 3.0,
) -> FluxRatioFit:
    """Fit ``F_n / F_r`` from forced PSF photometry of the same stars in both images.

    Stars: ``star_xy`` if given (e.g. the PSF stars), else SEP detections on the reference.
    Each image is measured with its own PSF (:func:`psf_photometry`); stars with S/N ≥
    ``min_snr`` in both enter an iteratively ``clip``-σ clipped weighted mean of
    ``f_new / f_ref``, started from their median. Each star's σ is its photometric error plus,
    in quadrature, the scatter beyond those errors (robust spread of the kept ratios minus
    their median error: blends, PSF-model errors), which also sets its weight. Variable stars,
    transients and cores flattened near saturation are clipped. (Clipping about the
    inverse-variance mean of all stars, as before, let one bright variable star with a
    0.5 % error pull the ratio by 5–15 % and then survive the clipping.)

    Parameters
    ----------
    new, ref : numpy.ndarray
        Background-subtracted new and reference images on one grid, e-, indexed ``[y, x]``.
    new_psf, ref_psf : PSFModel or numpy.ndarray
        PSF of each image (model or stamp, normalised to unit sum for the photometry).
    new_var, ref_var : numpy.ndarray or float
        Variance of each image, e-² (maps or scalars).
    mask : numpy.ndarray or None, default None
        ``uint16`` mask on the common grid, applied to both images; ``UNUSABLE`` pixels are
        excluded from detection and photometry. None: no mask.
    star_xy : numpy.ndarray or None, default None
        ``(n, 2)`` star positions ``(x, y)``, px (0-based); None detects unflagged SEP sources at
        10σ on ``ref`` (noise ``sqrt(ref_var)``).
    min_snr : float, default 20.0
        Minimum PSF-photometry S/N of a star in each image.
    clip : float, default 3.0
        Clipping threshold, in units of each star's σ.

    Returns
    -------
    FluxRatioFit
        The ratio ``F_n / F_r``, its error and the number of stars kept.

    Raises
    ------
    FluxRatioError
        Fewer than 3 stars survive (the S/N cut; the clipping stops before it would leave
        fewer than 3).
    """
    if star_xy is None:
        ref_frame, nonfinite = frame_for_sep(ref, 0.0)
        ref_rms = noise_for_sep(np.sqrt(np.asarray(ref_var, dtype=np.float32)), ref_frame.shape)
        objects = find_sources(ref_frame, ref_rms, unusable_pixels(mask, ref_frame.shape) | nonfinite, 10.0)
        objects = objects[objects["flag"] == 0]
        star_xy = np.column_stack([objects["x"], objects["y"]]) if objects.size else np.empty((0, 2))
    star_xy = np.asarray(star_xy, dtype=np.float64).reshape(-1, 2)
    flux_new, err_new = psf_photometry(new, new_var, new_psf, star_xy[:, 0], star_xy[:, 1], mask)
    flux_ref, err_ref = psf_photometry(ref, ref_var, ref_psf, star_xy[:, 0], star_xy[:, 1], mask)
    ratio, ratio_err, good = star_flux_ratios(flux_new, err_new, flux_ref, err_ref, min_snr)
    if good.sum() < 3:
        raise FluxRatioError(
            f"only {int(good.sum())} stars with S/N >= {min_snr:g} in both images; cannot fit "
            "the flux ratio F_n/F_r (pass flux_ratio explicitly)"
        )
    mean, error, n = clipped_ratio_mean(ratio, ratio_err, good, clip)
    sigma = np.hypot(ratio_err, CONSENSUS_TOLERANCE * abs(mean))
    varying = good & (np.abs(ratio - mean) > clip * sigma)
    return FluxRatioFit(ratio=mean, ratio_err=error, n_stars=n, varying_xy=star_xy[varying])


def star_flux_ratios(
    flux_new: np.ndarray, err_new: np.ndarray, flux_ref: np.ndarray, err_ref: np.ndarray, min_snr: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-star ``f_new / f_ref``, its 1σ error (the two relative errors in quadrature), and which stars
    reach S/N ≥ ``min_snr`` in both images with a finite ratio and error."""
    with np.errstate(divide="ignore", invalid="ignore"):
        good = (flux_new / err_new >= min_snr) & (flux_ref / err_ref >= min_snr)
        ratio = flux_new / flux_ref
        error = np.abs(ratio) * np.hypot(err_new / flux_new, err_ref / flux_ref)
    return ratio, error, good & np.isfinite(ratio) & np.isfinite(error)


#: Scatter of a constant star's ratio beyond its photometric error that :func:`consensus_stars` allows (fraction):
#: PSF-model and flat-field errors of a few per cent.
CONSENSUS_TOLERANCE = 0.03


def ratio_sigma(ratio: np.ndarray | float, ratio_err: np.ndarray) -> np.ndarray:
    """How far a constant star's ratio may lie from ``ratio``: its error and :data:`CONSENSUS_TOLERANCE` of the
    ratio, in quadrature (1σ)."""
    return np.hypot(ratio_err, CONSENSUS_TOLERANCE * np.abs(ratio))


def ratio_agreement(ratio: np.ndarray, ratio_err: np.ndarray, clip: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """``[trial, star]`` deviations of each star's ratio from each one's taken as the common ``F_n / F_r``, in units
    of :func:`ratio_sigma`, and whether they are within ``clip``."""
    deviation = np.abs(ratio[None, :] - ratio[:, None]) / ratio_sigma(ratio[:, None], ratio_err[None, :])
    return deviation, deviation <= clip


def consensus_stars(ratio: np.ndarray, ratio_err: np.ndarray, good: np.ndarray, clip: float = 3.0) -> np.ndarray:
    """The largest set of ``good`` stars whose ratios agree with one of them (a mode, not a median).

    Each good star's ratio is tried as the common ``F_n / F_r``; the stars within ``clip`` × (their error
    plus :data:`CONSENSUS_TOLERANCE` of the ratio, in quadrature) of it agree with it. The trial with the
    most agreeing stars wins (ties: the smaller summed normalised deviation). Constant stars agree with each
    other, while transients and variables each scatter to their own ratio, so the winner is the constant
    stars even where they are a minority — a sparse cut-out of four stars whose reference holds several
    transients (the median of all ratios would then follow the transients). Where the constant stars are
    the majority this is the median's answer.

    Returns
    -------
    numpy.ndarray of bool
        The agreeing stars (``good`` itself when fewer than 3 agree with any trial).
    """
    index = np.flatnonzero(good)
    if index.size < 3:
        return good.copy()
    deviation, agree = ratio_agreement(ratio[index], ratio_err[index], clip)
    counts = agree.sum(axis=1)
    spread = np.where(agree, deviation, 0.0).sum(axis=1)
    best = np.lexsort((spread, -counts))[0]
    if counts[best] < 3:
        return good.copy()
    keep = np.zeros_like(good)
    keep[index[agree[best]]] = True
    return keep


def clipped_ratio_mean(
    ratio: np.ndarray, ratio_err: np.ndarray, good: np.ndarray, clip: float = 3.0
) -> tuple[float, float, int]:
    """Iteratively ``clip``-σ clipped, inverse-variance weighted mean of per-star flux ratios.

    Started from the median of the largest set of mutually consistent ratios (:func:`consensus_stars`),
    not of all ``good`` ones; each star's σ is its error plus, in quadrature,
    the scatter beyond the errors (robust spread of the kept ratios minus their median error);
    the clipping stops before it would leave fewer than 3 stars.

    Parameters
    ----------
    ratio, ratio_err : numpy.ndarray
        Per-star ratio ``f_new / f_ref`` and its 1σ error.
    good : numpy.ndarray of bool
        Stars that may enter (at least 3).
    clip : float, default 3.0
        Clipping threshold, in units of each star's σ.

    Returns
    -------
    ratio, ratio_err : float
        The mean and its 1σ error (scaled by ``sqrt(χ²/(n−1))`` when above 1).
    n_stars : int
        Stars kept.
    """
    keep = consensus_stars(ratio, ratio_err, good, clip)
    centre, sigma = float(np.median(ratio[keep])), ratio_err
    for _ in range(20):
        extra = max(float(mad_std(ratio[keep])) ** 2 - float(np.median(ratio_err[keep] ** 2)), 0.0)
        sigma = np.sqrt(ratio_err**2 + extra)
        new_keep = good & (np.abs(ratio - centre) <= clip * sigma)
        if new_keep.sum() < 3:
            break
        weights = 1.0 / sigma[new_keep] ** 2
        new_centre = float(np.sum(weights * ratio[new_keep]) / np.sum(weights))
        converged = np.array_equal(new_keep, keep) and abs(new_centre - centre) <= 1e-6 * abs(centre)
        keep, centre = new_keep, new_centre
        if converged:
            break
    weights = 1.0 / sigma[keep] ** 2
    mean = float(np.sum(weights * ratio[keep]) / np.sum(weights))
    n = int(keep.sum())
    chi2 = float(np.sum(weights * (ratio[keep] - mean) ** 2)) / max(n - 1, 1)
    return mean, float(np.sqrt(max(chi2, 1.0) / np.sum(weights))), n


def psf_star_positions(*psfs: PSFModel | np.ndarray) -> np.ndarray | None:
    """Star positions carried by PSF models (reference first), or None.

    Parameters
    ----------
    *psfs : PSFModel or numpy.ndarray
        PSFs in order of preference (pass the reference's first); bare stamps carry no stars.

    Returns
    -------
    numpy.ndarray or None
        ``(n, 2)`` star positions ``(x, y)``, px, of the first :class:`~astrid_assets.science.psf.empirical.PSFModel`
        with at least
        3 stars; None if there is none.
    """
    for psf in psfs:
        if isinstance(psf, PSFModel) and len(psf.star_xy) >= 3:
            return np.asarray(psf.star_xy)
    return None
