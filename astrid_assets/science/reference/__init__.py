"""Reference images: co-adds of a field's best frames (clipped mean, proper co-addition)."""

from astrid_assets.science.reference.coadd import CHANGED_GROWTH, COADD_METHODS, Coadd, Frame, coadd, select_best_frames
from astrid_assets.science.reference.proper_coadd import (
    MIN_COVERAGE,
    SOURCE_GROWTH,
    SOURCE_SIGMA,
    ProperStack,
    proper_combine,
    proper_psf,
    reject_outliers,
)

__all__ = [
    "CHANGED_GROWTH",
    "COADD_METHODS",
    "Coadd",
    "Frame",
    "select_best_frames",
    "coadd",
    "MIN_COVERAGE",
    "SOURCE_SIGMA",
    "SOURCE_GROWTH",
    "ProperStack",
    "proper_psf",
    "reject_outliers",
    "proper_combine",
]
