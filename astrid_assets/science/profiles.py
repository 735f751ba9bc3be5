"""The point-spread-function profile family: circular Moffat profiles and their Gaussian limit.

A Moffat profile (Moffat 1969, A&A 3, 455) of core width α and index β,

    I(r) = (β − 1) / (π α²) · (1 + r²/α²)^−β,

has unit integral, ``FWHM = 2 α sqrt(2^(1/β) − 1)`` and noise-equivalent area
``NEA = 1 / ∫ I² = π α² (2β − 1) / (β − 1)²``. As β → ∞ with the FWHM fixed it becomes a Gaussian
(σ = FWHM / 2.3548, NEA = 4π σ²); ground-based seeing lies between β ≈ 2.5 (Kolmogorov wings)
and the Gaussian, and β ≈ 1.5 describes broad instrumental wings. One family, one place: the
simulator, PSF estimation and frame quality all use these functions.

Units: α, σ, FWHM and radii in pixels (or any one length unit); ``I`` per unit area.
"""

from __future__ import annotations

import numpy as np

#: FWHM / σ of a Gaussian, ``2 sqrt(2 ln 2)``.
GAUSSIAN_FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def moffat_alpha(fwhm: float, beta: float) -> float:
    """Moffat core width α for a FWHM (same units): ``α = FWHM / (2 sqrt(2^(1/β) − 1))``."""
    return fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))


def moffat_fwhm(alpha: float | np.ndarray, beta: float | np.ndarray) -> float | np.ndarray:
    """Moffat FWHM for core width α (same units) and index β."""
    return 2.0 * alpha * np.sqrt(2.0 ** (1.0 / beta) - 1.0)


def moffat_noise_area(alpha: float, beta: float) -> float:
    """Noise-equivalent area ``1 / ∫ I²`` of a unit Moffat, ``π α² (2β − 1) / (β − 1)²`` (units of α²)."""
    return float(np.pi * alpha**2 * (2.0 * beta - 1.0) / (beta - 1.0) ** 2)


def moffat_profile(r2: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """Unit-integral Moffat surface brightness at squared radius ``r2`` (per unit area)."""
    u = 1.0 + r2 / alpha**2
    profile = 1.0 / (u * u * u) if beta == 3.0 else u ** (-beta)
    return profile * ((beta - 1.0) / (np.pi * alpha**2))


def gaussian_noise_area(sigma: float) -> float:
    """Noise-equivalent area ``4π σ²`` of a unit circular Gaussian (units of σ²)."""
    return float(4.0 * np.pi * sigma**2)


def gaussian_profile(r2: np.ndarray, sigma: float) -> np.ndarray:
    """Unit-integral circular Gaussian surface brightness at squared radius ``r2`` (per unit area)."""
    return np.exp(-0.5 * r2 / sigma**2) / (2.0 * np.pi * sigma**2)


def profile_image(
    shape: tuple[int, int], x: float, y: float, flux: float, width: float, beta: float | None,
    oversample: int = 5,
) -> np.ndarray:
    """A profile of total ``flux`` centred at ``(x, y)`` integrated over the pixels of a stamp.

    Parameters
    ----------
    shape : ``(ny, nx)`` of the stamp; pixel ``[j, i]`` is centred at ``(x, y) = (i, j)`` (0-based).
    x, y : centre, pixels.
    flux : total flux (any unit; the stamp sums to it when the profile fits inside).
    width : Moffat α (``beta`` given) or Gaussian σ (``beta is None``), pixels.
    beta : Moffat index, or None for the Gaussian.
    oversample : sub-pixel points per axis averaged in each pixel (≥ 7 for FWHM ≲ 2 px).

    Returns
    -------
    numpy.ndarray
        ``float64`` stamp of ``shape``.
    """
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5
    ys = (np.arange(shape[0])[:, None] + sub[None, :]) - y
    xs = (np.arange(shape[1])[:, None] + sub[None, :]) - x
    r2 = ys[:, None, :, None] ** 2 + xs[None, :, None, :] ** 2
    profile = gaussian_profile(r2, width) if beta is None else moffat_profile(r2, width, beta)
    return flux * profile.mean(axis=(2, 3))
