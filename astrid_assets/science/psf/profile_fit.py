"""Profile fits of single stars: a pixel-integrated Moffat (or its Gaussian limit) fitted to a star's
stamp, for the FWHM, β and noise-equivalent area a frame's quality is judged by
(:mod:`~astrid_assets.science.calibration.quality`).

Stamps in e- (background-subtracted), variances e-², px; the profile family is
:mod:`~astrid_assets.science.psf.profiles`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from astrid_assets.science.psf.profiles import (
    GAUSSIAN_FWHM_PER_SIGMA,
    gaussian_noise_area,
    moffat_alpha,
    moffat_fwhm,
    moffat_noise_area,
    profile_image,
)

__all__ = ["ProfileFit", "MoffatFit", "fit_moffat"]

_BETA_BOUNDS = (1.1, 20.0)


@dataclass(frozen=True)
class ProfileFit:
    """A pixel-integrated circular profile fitted to one star (pixels, e-).

    ``beta`` is the Moffat index, or ``inf`` for the Gaussian limit; ``width`` is Moffat α or
    Gaussian σ (pixels).

    Attributes
    ----------
    x, y : float
        Fitted centre, px, in the pixel coordinates of the fitted stamp (0-based, pixel
        centres at integers), not of the frame.
    flux : float
        Total flux of the profile, e- (the integral of the continuous profile).
    width : float
        Moffat α or Gaussian σ of the continuous profile (before pixelisation), px.
    beta : float
        Moffat index β, or ``inf`` for the Gaussian.
    sky : float
        Fitted residual constant, e- per pixel.
    success : bool
        Whether the optimiser converged (and, for a Moffat, β is not at its lower bound).
    """

    x: float
    y: float
    flux: float
    width: float
    beta: float
    sky: float
    success: bool

    @property
    def model(self) -> str:
        """``"gaussian"`` when ``beta`` is infinite, else ``"moffat"``."""
        return "gaussian" if np.isinf(self.beta) else "moffat"

    @property
    def fwhm(self) -> float:
        """FWHM of the fitted continuous profile (before pixelisation), px."""
        if np.isinf(self.beta):
            return float(GAUSSIAN_FWHM_PER_SIGMA * self.width)
        return float(moffat_fwhm(self.width, self.beta))

    @property
    def noise_area(self) -> float:
        """Noise-equivalent area ``1/∫I²`` of the fitted profile, pixels (px²)."""
        if np.isinf(self.beta):
            return gaussian_noise_area(self.width)
        return moffat_noise_area(self.width, self.beta)


#: Kept for callers of the first version: every fit is a :class:`ProfileFit`.
MoffatFit = ProfileFit


def _least_squares_profile(stamp, weight, start, lower, upper, oversample, gaussian: bool):
    def residuals(params: np.ndarray) -> np.ndarray:
        if gaussian:
            flux, x, y, width, sky = params
            beta = None
        else:
            flux, x, y, width, beta, sky = params
        model = profile_image(stamp.shape, x, y, flux, width, beta, oversample) + sky
        return ((stamp - model) * weight).ravel()

    start = np.clip(start, np.array(lower) + 1e-9, np.array(upper) - 1e-9)
    return least_squares(residuals, start, bounds=(lower, upper), x_scale="jac", max_nfev=200)


def fit_moffat(stamp: np.ndarray, variance: np.ndarray, first_guess_fwhm: float, oversample: int = 5) -> ProfileFit:
    """Fit the Moffat family, Gaussian limit included, to a background-subtracted star stamp.

    Least squares with weights ``1/variance`` (pixels with infinite variance are ignored) of a
    pixel-integrated circular Moffat plus a constant, β free in :data:`_BETA_BOUNDS`. When β runs
    to its upper bound the star is Gaussian-like (seeing-dominated cores, defocus, or a
    simulator's Gaussian): a pixel-integrated Gaussian (β = ∞) is fitted instead and returned
    with ``beta = inf``. A fit whose β sits at the *lower* bound (wings broader than β = 1.1)
    or whose optimiser failed is marked unsuccessful.

    Parameters
    ----------
    stamp : numpy.ndarray
        Star stamp, e-, sky subtracted (a residual constant is fitted), indexed ``[y, x]``;
        the fit starts at its centre ``((nx − 1)/2, (ny − 1)/2)``.
    variance : numpy.ndarray
        Per-pixel variance, e-², shape of ``stamp``; ``inf`` ignores a pixel.
    first_guess_fwhm : float
        Starting FWHM, px (at least 0.8 px is used).
    oversample : int, default 5
        Sub-pixel points per axis in the pixel integration.

    Returns
    -------
    ProfileFit
        The fit, centre in the stamp's pixel coordinates.
    """
    ny, nx = stamp.shape
    weight = 1.0 / np.sqrt(np.clip(variance, 1e-12, None))  # infinite variance: pixel ignored
    fwhm0 = max(first_guess_fwhm, 0.8)
    centre = [(nx - 1) / 2, (ny - 1) / 2]
    lower = [0.0, 0.0, 0.0, 0.15, _BETA_BOUNDS[0], -np.inf]
    upper = [np.inf, nx - 1.0, ny - 1.0, 4.0 * max(nx, ny), _BETA_BOUNDS[1], np.inf]
    start = np.array([stamp.sum(), *centre, moffat_alpha(fwhm0, 3.0), 3.0, 0.0])
    result = _least_squares_profile(stamp, weight, start, lower, upper, oversample, gaussian=False)
    flux, x, y, alpha, beta, sky = result.x
    if beta >= _BETA_BOUNDS[1] * 0.999:
        g_lower = [0.0, 0.0, 0.0, 0.1, -np.inf]
        g_upper = [np.inf, nx - 1.0, ny - 1.0, 2.0 * max(nx, ny), np.inf]
        g_start = np.array([stamp.sum(), *centre, fwhm0 / GAUSSIAN_FWHM_PER_SIGMA, 0.0])
        gauss = _least_squares_profile(stamp, weight, g_start, g_lower, g_upper, oversample, gaussian=True)
        flux, x, y, sigma, sky = gauss.x
        return ProfileFit(float(x), float(y), float(flux), float(sigma), float("inf"), float(sky),
                          bool(gauss.success))
    at_bound = beta <= _BETA_BOUNDS[0] * 1.001
    return ProfileFit(
        float(x), float(y), float(flux), float(alpha), float(beta), float(sky), bool(result.success) and not at_bound
    )
