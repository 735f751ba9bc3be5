"""Reference images: co-adds of a field's best frames (clipped mean, proper co-addition), and which frames make one."""

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
from astrid_assets.science.reference.selection import (
    Selection,
    predicted_sensitivity,
    relative_depth,
    select_reference_frames,
    version_decision,
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
    "relative_depth",
    "predicted_sensitivity",
    "Selection",
    "select_reference_frames",
    "version_decision",
]
