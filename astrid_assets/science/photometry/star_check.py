"""The reference's point sources measured in both images of a pair: the flux ratio, and which did not change.

:func:`check_stars` measures the reference's unflagged, unresolved detections by PSF photometry in the new image
and in the reference (each with its own PSF; :func:`~astrid_assets.science.photometry.forced.psf_photometry`). The
ratio ``F_n / F_r`` comes from those that agree, and the stars whose ratio agrees with it are the constant ones: the
subtraction calibrates its PSF-model error ε at them
(:func:`~astrid_assets.science.psf.field.calibrate_psf_error`), never at a variable, a transient or a galaxy.

Conventions: images background-subtracted, e-, ``[y, x]`` 0-based; variances e-²; positions ``(x, y)`` px on the
reference grid; ``F_n / F_r`` the counts a source gives in the new image per count in the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from astrid_assets.science.photometry.flux_ratio import (
    clipped_ratio_mean,
    ratio_agreement,
    ratio_sigma,
    star_flux_ratios,
)
from astrid_assets.science.photometry.forced import psf_photometry
from astrid_assets.science.products import Reference
from astrid_assets.science.psf.stars import extended_sources

__all__ = ["CHECK_STAR_SNR", "CHECK_STAR_CLIP", "StarCheck", "check_stars"]

#: Lowest PSF-photometry S/N, in both images, of a star that fits the flux ratio or is checked for constancy.
CHECK_STAR_SNR = 20.0
#: Clipping of the star ratios, in units of each star's σ (its error and ``CONSENSUS_TOLERANCE`` in quadrature).
CHECK_STAR_CLIP = 3.0


@dataclass(frozen=True)
class StarCheck:
    """The reference's point sources measured in both images of a pair (:func:`check_stars`)."""

    #: ``F_n / F_r`` from the point sources, or None (fewer than two that agree: the subtraction fits its own)
    ratio: float | None
    #: ``(m, 2)`` positions of the point sources measured at S/N ≥ :data:`CHECK_STAR_SNR` in both images whose
    #: ratio agrees with ``ratio``: the stars known not to have changed
    constant_xy: np.ndarray
    #: 1σ error of ``ratio`` (None where the ratio was given, or not fitted)
    ratio_err: float | None = None


def check_stars(new_image: np.ndarray, new_variance: np.ndarray, new_psf, reference: Reference, ref_psf,
                mask: np.ndarray | None, ratio: float | None = None) -> StarCheck:
    """The flux ratio ``F_n / F_r`` from the reference's point sources, and which of them did not change.

    The reference's unflagged detections (:attr:`Reference.sources`) less the extended ones
    (:func:`~astrid_assets.science.psf.stars.extended_sources`: a galaxy's PSF-fit flux depends on the seeing, so
    two images of different seeing give it a ratio of its own, and a transient on a galaxy moves it further) are
    measured by PSF photometry in both images (each with its own PSF). Of those at S/N ≥ :data:`CHECK_STAR_SNR`
    in both, the largest set whose ratios agree with one of them (:func:`_agreeing_stars`) decides: three or more,
    and the ratio is the consensus clipped mean
    (:func:`~astrid_assets.science.photometry.flux_ratio.clipped_ratio_mean`, as the subtraction's fit); two, and
    it is their weighted mean — a sparse cut-out of two or three stars whose reference holds the transients of
    an earlier night, where no three sources agree and the subtraction's fit falls back to the median of all
    (measured: 1.24 against the stars' 1.095). ``ratio`` given (the injection check's, reused) is kept and only
    the constant stars are found.

    The constant stars are those whose ratio lies within :data:`CHECK_STAR_CLIP` σ of the ratio: the PSF-model
    error ε is calibrated at them. A transient that a reference of earlier nights holds, a variable, a galaxy (with
    or without a transient on it) or a source too faint to tell is no place to measure how well the PSF models
    cancel a static star. (Measured on a generated sparse cut-out, four stars and two galaxies in 256² and a
    reference holding the night before's transients: ε 0.08–0.13 calibrated at a galaxy hosting a transient and a
    faint transient, which buried a transient of S/N 38 on that galaxy at S_corr 0.6.)
    """
    xy = reference.sources.unflagged_xy()
    empty, ratio_err = StarCheck(ratio, np.empty((0, 2))), None
    if len(xy) == 0:
        return empty
    ref_fwhm = float(getattr(getattr(ref_psf, "constant", ref_psf), "fwhm", np.nan))
    radius = max(3.0, 2.0 * ref_fwhm) if np.isfinite(ref_fwhm) else 6.0
    xy = xy[~extended_sources(reference.sources.frame, xy[:, 0], xy[:, 1], reference.sources.bad, radius)]
    if len(xy) == 0:
        return empty
    flux_new, err_new = psf_photometry(new_image, new_variance, getattr(new_psf, "constant", new_psf),
                                       xy[:, 0], xy[:, 1], mask)
    flux_ref, err_ref = psf_photometry(reference.image, reference.variance, getattr(ref_psf, "constant", ref_psf),
                                       xy[:, 0], xy[:, 1], mask)
    star_ratio, star_err, good = star_flux_ratios(flux_new, err_new, flux_ref, err_ref, CHECK_STAR_SNR)
    if ratio is None:
        agreeing = _agreeing_stars(star_ratio, star_err, good, np.fmin(flux_new / err_new, flux_ref / err_ref))
        if agreeing.sum() >= 3:
            ratio, ratio_err, _ = clipped_ratio_mean(star_ratio, star_err, good, CHECK_STAR_CLIP)
        elif agreeing.sum() == 2:
            sigma = ratio_sigma(star_ratio[agreeing], star_err[agreeing])
            ratio = float(np.average(star_ratio[agreeing], weights=1.0 / sigma**2))
            ratio_err = float(np.sqrt(1.0 / np.sum(1.0 / sigma**2)))
        else:
            return empty
    sigma = ratio_sigma(ratio, star_err)
    with np.errstate(invalid="ignore"):
        constant = good & (np.abs(star_ratio - ratio) <= CHECK_STAR_CLIP * sigma)
    return StarCheck(float(ratio), xy[constant], ratio_err)


def _agreeing_stars(ratio: np.ndarray, error: np.ndarray, good: np.ndarray, snr: np.ndarray) -> np.ndarray:
    """The largest set of ``good`` stars whose ratios agree with one of them within :data:`CHECK_STAR_CLIP` × (error
    and :data:`~astrid_assets.science.photometry.flux_ratio.CONSENSUS_TOLERANCE` in quadrature), as
    :func:`~astrid_assets.science.photometry.flux_ratio.consensus_stars` finds it; a tie goes to the set of the
    larger summed S/N (``snr``: the lower of each star's two), since a static star is more often the brightest
    source of a sparse field than a transient is."""
    index = np.flatnonzero(good)
    if index.size == 0:
        return np.zeros_like(good)
    weight = np.nan_to_num(snr[index])
    _, agree = ratio_agreement(ratio[index], error[index], CHECK_STAR_CLIP)
    best = np.lexsort((-(agree * weight[None, :]).sum(axis=1), -agree.sum(axis=1)))[0]
    keep = np.zeros_like(good)
    keep[index[agree[best]]] = True
    return keep
