"""Astrometry: star-pattern alignment of frames without a WCS, resampling onto a grid, registration residuals."""

from astrid_assets.science.astrometry.align import (
    PLACEHOLDER_CARD,
    AlignmentError,
    align_to_reference,
    is_placeholder,
    pixel_transform,
    placeholder_wcs,
    wcs_through,
)
from astrid_assets.science.astrometry.register import (
    MASK_SUPPORT,
    PixelMap,
    Registered,
    RegistrationError,
    check_overlap,
    register_to_reference,
)
from astrid_assets.science.astrometry.residuals import (
    RegistrationResiduals,
    bright_star_centroids,
    match_positions,
    measure_registration_residuals,
    residuals_between,
)

__all__ = [
    "PLACEHOLDER_CARD",
    "AlignmentError",
    "placeholder_wcs",
    "is_placeholder",
    "pixel_transform",
    "wcs_through",
    "align_to_reference",
    "MASK_SUPPORT",
    "RegistrationError",
    "Registered",
    "PixelMap",
    "check_overlap",
    "register_to_reference",
    "RegistrationResiduals",
    "bright_star_centroids",
    "match_positions",
    "measure_registration_residuals",
    "residuals_between",
]
