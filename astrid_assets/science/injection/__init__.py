"""Artificial sources: injection at a chosen S/N, recovery, and whole-frame injection through the differencing."""

from astrid_assets.science.injection.fakes import (
    FWHM_TO_SIGMA,
    InjectionRecovery,
    clean_position,
    fake_positions,
    footprint_masks,
    injection_recovery,
)
from astrid_assets.science.injection.inject import (
    SNR_BINS,
    Completeness,
    Injection,
    completeness,
    inject_sources,
    match_catalogues,
    psf_optimal_snr,
    summarise_completeness,
)

__all__ = [
    "FWHM_TO_SIGMA",
    "InjectionRecovery",
    "fake_positions",
    "clean_position",
    "footprint_masks",
    "injection_recovery",
    "Injection",
    "Completeness",
    "psf_optimal_snr",
    "inject_sources",
    "match_catalogues",
    "completeness",
    "SNR_BINS",
    "summarise_completeness",
]
