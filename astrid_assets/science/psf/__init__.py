"""Point-spread functions: profiles, single-star fits, empirical stacks, the PSF model and its variation over a
frame."""

from astrid_assets.science.psf.empirical import estimate_psf
from astrid_assets.science.psf.field import (
    CALIBRATION_MIN_RATIO,
    MAX_FIELD_STARS,
    PSFField,
    calibrate_psf_error,
    estimate_psf_field,
    with_psf_error,
)
from astrid_assets.science.psf.model import PSFError, PSFModel, ShiftablePSF, as_psf_image, measure_fwhm
from astrid_assets.science.psf.profile_fit import MoffatFit, ProfileFit, fit_moffat
from astrid_assets.science.psf.profiles import (
    GAUSSIAN_FWHM_PER_SIGMA,
    gaussian_noise_area,
    gaussian_profile,
    moffat_alpha,
    moffat_fwhm,
    moffat_noise_area,
    moffat_profile,
    profile_image,
    render_psf,
)

__all__ = [
    "estimate_psf",
    "CALIBRATION_MIN_RATIO",
    "with_psf_error",
    "calibrate_psf_error",
    "MAX_FIELD_STARS",
    "PSFField",
    "estimate_psf_field",
    "PSFError",
    "PSFModel",
    "ShiftablePSF",
    "as_psf_image",
    "measure_fwhm",
    "ProfileFit",
    "MoffatFit",
    "fit_moffat",
    "GAUSSIAN_FWHM_PER_SIGMA",
    "moffat_alpha",
    "moffat_fwhm",
    "moffat_noise_area",
    "moffat_profile",
    "gaussian_noise_area",
    "gaussian_profile",
    "profile_image",
    "render_psf",
]
