"""Candidate detection on S_corr: extraction, measurements, flag rules, the rule score, and cut-out stamps."""

from astrid_assets.science.detection.candidates import (
    COLUMNS,
    FLAG_BRIGHT_STAR,
    FLAG_DIPOLE,
    FLAG_EDGE,
    FLAG_MASKED,
    FLAG_NAMES,
    FLAG_RULES,
    FLAG_SHAPE,
    CandidateRules,
    describe_flags,
    detect_candidates,
    false_detection_expectation,
)
from astrid_assets.science.detection.stamps import cut_stamps

__all__ = [
    "FLAG_MASKED",
    "FLAG_EDGE",
    "FLAG_DIPOLE",
    "FLAG_SHAPE",
    "FLAG_BRIGHT_STAR",
    "FLAG_NAMES",
    "COLUMNS",
    "CandidateRules",
    "FLAG_RULES",
    "false_detection_expectation",
    "describe_flags",
    "detect_candidates",
    "cut_stamps",
]
