"""Point-spread functions: profiles, single-star fits, PSF stars, empirical stacks, PSF models and fields."""

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
from astrid_assets.science.psf.profile_fit import MoffatFit, ProfileFit, fit_moffat, fit_moffats, levenberg_marquardt
from astrid_assets.science.psf.profiles import (
    GAUSSIAN_FWHM_PER_SIGMA,
    gaussian_noise_area,
    gaussian_profile,
    moffat_alpha,
    moffat_fwhm,
    moffat_noise_area,
    moffat_profile,
    profile_image,
    profile_image_jacobian,
    profile_images_jacobians,
    render_psf,
)
from astrid_assets.science.psf.stars import (
    PSF_STAR_LIMITS,
    SEP_REJECT_FLAGS,
    cut_centred_stamps,
    isolated_among,
    select_psf_stars,
    shape_cut,
    stamp_is_clean,
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
    "fit_moffats",
    "levenberg_marquardt",
    "GAUSSIAN_FWHM_PER_SIGMA",
    "moffat_alpha",
    "moffat_fwhm",
    "moffat_noise_area",
    "moffat_profile",
    "gaussian_noise_area",
    "gaussian_profile",
    "profile_image",
    "profile_image_jacobian",
    "profile_images_jacobians",
    "render_psf",
    "PSF_STAR_LIMITS",
    "SEP_REJECT_FLAGS",
    "stamp_is_clean",
    "isolated_among",
    "cut_centred_stamps",
    "select_psf_stars",
    "shape_cut",
]
