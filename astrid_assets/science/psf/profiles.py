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
from scipy import special

__all__ = [
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
]

#: FWHM / σ of a Gaussian, ``2 sqrt(2 ln 2)``.
GAUSSIAN_FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def moffat_alpha(fwhm: float, beta: float) -> float:
    """Moffat core width α for a FWHM (same units): ``α = FWHM / (2 sqrt(2^(1/β) − 1))``.

    Parameters
    ----------
    fwhm : float
        Full width at half maximum of the continuous profile (before pixelisation), px or any
        length unit.
    beta : float
        Moffat power-law index β (> 1 for a finite flux).

    Returns
    -------
    float
        Core width α, in the unit of ``fwhm``.
    """
    return fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))


def moffat_fwhm(alpha: float | np.ndarray, beta: float | np.ndarray) -> float | np.ndarray:
    """Moffat FWHM for core width α (same units) and index β: ``FWHM = 2 α sqrt(2^(1/β) − 1)``.

    Parameters
    ----------
    alpha : float or numpy.ndarray
        Core width α, px or any length unit.
    beta : float or numpy.ndarray
        Moffat power-law index β; broadcast against ``alpha``.

    Returns
    -------
    float or numpy.ndarray
        FWHM of the continuous profile (before pixelisation), in the unit of ``alpha``.
    """
    return 2.0 * alpha * np.sqrt(2.0 ** (1.0 / beta) - 1.0)


def moffat_noise_area(alpha: float, beta: float) -> float:
    """Noise-equivalent area ``1 / ∫ I²`` of a unit Moffat, ``π α² (2β − 1) / (β − 1)²`` (units of α²).

    Parameters
    ----------
    alpha : float
        Core width α, px or any length unit.
    beta : float
        Moffat power-law index β (> 1; β = 1 divides by zero).

    Returns
    -------
    float
        Noise-equivalent area of the continuous profile, in the unit of ``alpha`` squared (e.g. px²).
    """
    return float(np.pi * alpha**2 * (2.0 * beta - 1.0) / (beta - 1.0) ** 2)


def moffat_profile(r2: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """Unit-integral Moffat surface brightness at squared radius ``r2`` (per unit area).

    ``I = (β − 1) / (π α²) · (1 + r2/α²)^−β`` (Moffat 1969, A&A 3, 455), sampled at points,
    not integrated over pixels.

    Parameters
    ----------
    r2 : numpy.ndarray
        Squared distances from the centre, in the squared unit of ``alpha`` (e.g. px²).
    alpha : float
        Core width α, px or any length unit.
    beta : float
        Moffat power-law index β (> 1 for unit integral).

    Returns
    -------
    numpy.ndarray
        Surface brightness per unit area (per α-unit²), shape of ``r2``.
    """
    u = 1.0 + r2 / alpha**2
    profile = 1.0 / (u * u * u) if beta == 3.0 else u ** (-beta)
    return profile * ((beta - 1.0) / (np.pi * alpha**2))


def gaussian_noise_area(sigma: float) -> float:
    """Noise-equivalent area ``4π σ²`` of a unit circular Gaussian (units of σ²).

    Parameters
    ----------
    sigma : float
        Gaussian standard deviation σ, px or any length unit.

    Returns
    -------
    float
        Noise-equivalent area, in the unit of ``sigma`` squared (e.g. px²).
    """
    return float(4.0 * np.pi * sigma**2)


def gaussian_profile(r2: np.ndarray, sigma: float) -> np.ndarray:
    """Unit-integral circular Gaussian surface brightness at squared radius ``r2`` (per unit area).

    ``I = exp(−r2 / 2σ²) / (2π σ²)``, sampled at points, not integrated over pixels.

    Parameters
    ----------
    r2 : numpy.ndarray
        Squared distances from the centre, in the squared unit of ``sigma`` (e.g. px²).
    sigma : float
        Standard deviation σ, px or any length unit.

    Returns
    -------
    numpy.ndarray
        Surface brightness per unit area (per σ-unit²), shape of ``r2``.
    """
    return np.exp(-0.5 * r2 / sigma**2) / (2.0 * np.pi * sigma**2)


def profile_image(
    shape: tuple[int, int], x: float, y: float, flux: float, width: float, beta: float | None,
    oversample: int = 5,
) -> np.ndarray:
    """A profile of total ``flux`` centred at ``(x, y)`` integrated over the pixels of a stamp.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` of the stamp; pixel ``[j, i]`` is centred at ``(x, y) = (i, j)`` (0-based).
    x, y : float
        Centre of the profile, px, in the stamp's pixel coordinates.
    flux : float
        Total flux (any unit; the stamp sums to it when the profile fits inside).
    width : float
        Moffat α (``beta`` given) or Gaussian σ (``beta is None``), px, of the continuous
        profile (before pixelisation).
    beta : float or None
        Moffat index, or None for the Gaussian.
    oversample : int, default 5
        Sub-pixel points per axis averaged in each pixel (≥ 7 for FWHM ≲ 2 px); the points sit
        at the centres of an ``oversample × oversample`` grid of sub-pixels.

    Returns
    -------
    numpy.ndarray
        ``float64`` stamp of ``shape``, in the unit of ``flux`` per pixel.
    """
    ys, xs = _sub_pixel_offsets(shape, x, y, oversample)
    r2 = ys**2 + xs**2
    profile = gaussian_profile(r2, width) if beta is None else moffat_profile(r2, width, beta)
    return flux * profile.mean(axis=(2, 3))


def _sub_pixel_offsets(
    shape: tuple[int, int], x: float, y: float, oversample: int
) -> tuple[np.ndarray, np.ndarray]:
    """Offsets ``(y_s − y, x_s − x)`` of the sub-pixel points from a centre, px, broadcastable to
    ``(ny, nx, oversample, oversample)`` (pixel ``[j, i]``, sub-pixel ``[a, b]``)."""
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5
    ys = (np.arange(shape[0])[:, None] + sub[None, :]) - y
    xs = (np.arange(shape[1])[:, None] + sub[None, :]) - x
    return ys[:, None, :, None], xs[None, :, None, :]


def profile_image_jacobian(
    shape: tuple[int, int], x: float, y: float, flux: float, width: float, beta: float | None,
    oversample: int = 5,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`profile_image` and its derivatives with respect to the profile's parameters.

    The derivatives are those of the continuous profile, averaged over the same sub-pixel points as
    the image (the exact derivatives of :func:`profile_image`). For a Moffat ``I = c u^−β`` with
    ``u = 1 + r²/α²`` and ``c = (β − 1)/(π α²)``: ``∂I/∂x = 2β (x_s − x) I / (α² u)`` (likewise
    ``y``), ``∂I/∂α = I (2β r² / (α³ u) − 2/α)`` and ``∂I/∂β = I (1/(β − 1) − ln u)``; for a
    Gaussian of σ: ``∂I/∂x = (x_s − x) I / σ²`` and ``∂I/∂σ = I (r²/σ³ − 2/σ)``.

    Parameters
    ----------
    shape, x, y, flux, width, beta, oversample
        As for :func:`profile_image` (``x``, ``y``, ``width`` in px; ``beta`` None for the Gaussian).

    Returns
    -------
    image : numpy.ndarray
        ``float64`` stamp of ``shape``, in the unit of ``flux`` per pixel (:func:`profile_image`).
    jacobian : numpy.ndarray
        ``(n_params, ny, nx)`` float64 derivatives of ``image`` with respect to ``(flux, x, y, width,
        beta)`` (``n_params = 5``) or, for the Gaussian, ``(flux, x, y, width)`` (``n_params = 4``);
        per px for ``x``, ``y``, ``width``.
    """
    images, jacobians = profile_images_jacobians(
        shape, np.array([x], float), np.array([y], float), np.array([flux], float), np.array([width], float),
        None if beta is None else np.array([beta], float), oversample,
    )
    return images[0], jacobians[0]


def profile_images_jacobians(
    shape: tuple[int, int], x: np.ndarray, y: np.ndarray, flux: np.ndarray, width: np.ndarray,
    beta: np.ndarray | None, oversample: int = 5,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`profile_image_jacobian` for ``K`` profiles on stamps of one shape at once.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` of every stamp.
    x, y, flux, width : numpy.ndarray
        ``(K,)`` centres (px, stamp coordinates), total fluxes and Moffat α or Gaussian σ (px).
    beta : numpy.ndarray or None
        ``(K,)`` Moffat indices, or None for Gaussians.
    oversample : int, default 5
        Sub-pixel points per axis (:func:`profile_image`).

    Returns
    -------
    images : numpy.ndarray
        ``(K, ny, nx)`` float64 stamps, in the unit of ``flux`` per pixel.
    jacobians : numpy.ndarray
        ``(K, n_params, ny, nx)`` float64 derivatives with respect to ``(flux, x, y, width[, beta])``.
    """
    k = np.arange(len(x))
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5
    ys = (np.arange(shape[0])[:, None] + sub[None, :])[None] - np.asarray(y, float)[:, None, None]
    xs = (np.arange(shape[1])[:, None] + sub[None, :])[None] - np.asarray(x, float)[:, None, None]
    ys, xs = ys[:, :, None, :, None], xs[:, None, :, None, :]  # (K, ny, nx, a, b) by broadcasting
    r2 = ys**2 + xs**2
    width = np.asarray(width, float)[k, None, None, None, None]
    if beta is None:
        inverse_var = 1.0 / width**2
        unit = np.exp(-0.5 * inverse_var * r2) * (inverse_var / (2.0 * np.pi))
        factors = (xs * inverse_var, ys * inverse_var, r2 * (inverse_var / width) - 2.0 / width)
    else:
        beta = np.asarray(beta, float)[k, None, None, None, None]
        inverse_area = 1.0 / width**2
        u = 1.0 + r2 * inverse_area
        log_u = np.log(u)
        unit = np.exp(-beta * log_u) * ((beta - 1.0) * inverse_area / np.pi)
        slope = (2.0 * beta * inverse_area) / u  # −2 ∂ln I/∂r²
        factors = (xs * slope, ys * slope, r2 * slope / width - 2.0 / width, 1.0 / (beta - 1.0) - log_u)
    n_points = oversample * oversample
    images = unit.sum(axis=(3, 4)) / n_points
    scale = np.asarray(flux, float)[:, None, None]
    jacobians = np.empty((len(k), 1 + len(factors), *shape))
    jacobians[:, 0] = images
    for n, factor in enumerate(factors, start=1):
        jacobians[:, n] = (unit * factor).sum(axis=(3, 4)) * (scale / n_points)
    return scale * images, jacobians


def render_psf(
    fwhm: float,
    size: int = 25,
    profile: str = "gaussian",
    beta: float = 3.0,
    offset: tuple[float, float] = (0.0, 0.0),
    oversample: int = 5,
) -> np.ndarray:
    """A pixel-integrated circular PSF stamp, normalised to unit sum over the stamp.

    Parameters
    ----------
    fwhm : float
        Full width at half maximum of the continuous profile (before pixelisation), px.
    size : int, default 25
        Odd stamp side, px; the central pixel is ``[size // 2, size // 2]``.
    profile : {"gaussian", "moffat"}, default "gaussian"
        ``"gaussian"`` (integrated exactly with the error function) or ``"moffat"``
        (Moffat 1969, A&A 3, 455; integrated by ``oversample``² sub-pixel sampling).
    beta : float, default 3.0
        Moffat power-law index (ignored for the Gaussian).
    offset : tuple of float, default (0.0, 0.0)
        ``(dx, dy)`` of the profile centre from the central pixel, px.
    oversample : int, default 5
        Sub-pixel points per axis for the Moffat (ignored for the Gaussian).

    Returns
    -------
    numpy.ndarray
        ``(size, size)`` float32 array summing to 1 (flux beyond the stamp is dropped, not kept).

    Raises
    ------
    ValueError
        If ``size`` is even or ``profile`` is unknown.
    """
    if size % 2 != 1:
        raise ValueError(f"PSF stamp size must be odd, got {size}")
    half = size // 2
    dx, dy = offset
    if profile == "gaussian":
        sigma = fwhm / GAUSSIAN_FWHM_PER_SIGMA
        edges = np.arange(-half - 0.5, half + 1.0, 1.0)
        cdf_x = special.ndtr((edges - dx) / sigma)
        cdf_y = special.ndtr((edges - dy) / sigma)
        stamp = np.outer(np.diff(cdf_y), np.diff(cdf_x))
    elif profile == "moffat":
        stamp = profile_image((size, size), half + dx, half + dy, 1.0, moffat_alpha(fwhm, beta), beta, oversample)
    else:
        raise ValueError(f"unknown PSF profile {profile!r}; use 'gaussian' or 'moffat'")
    return (stamp / stamp.sum()).astype(np.float32)
