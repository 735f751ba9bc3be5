"""Photometry: forced PSF photometry, the flux ratio of two images and its constant stars, relative zero points."""

from astrid_assets.science.photometry.flux_ratio import (
    CONSENSUS_TOLERANCE,
    FluxRatioError,
    FluxRatioFit,
    clipped_ratio_mean,
    consensus_stars,
    fit_flux_ratio,
    psf_star_positions,
    star_flux_ratios,
)
from astrid_assets.science.photometry.forced import psf_photometry
from astrid_assets.science.photometry.star_check import CHECK_STAR_CLIP, CHECK_STAR_SNR, StarCheck, check_stars
from astrid_assets.science.photometry.zeropoints import (
    APERTURE_FWHM,
    MATCH_RADIUS,
    MAX_STARS,
    MIN_MATCHED,
    decode,
    encode,
    flux_ratio,
    relative_zero_points,
    zero_point_stars,
)

__all__ = [
    "FluxRatioError",
    "FluxRatioFit",
    "fit_flux_ratio",
    "star_flux_ratios",
    "clipped_ratio_mean",
    "consensus_stars",
    "CONSENSUS_TOLERANCE",
    "psf_star_positions",
    "psf_photometry",
    "StarCheck",
    "check_stars",
    "CHECK_STAR_SNR",
    "CHECK_STAR_CLIP",
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
