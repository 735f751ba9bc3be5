"""Classic PSF-matched subtraction, for comparison with ZOGY.

The reference is convolved with a kernel that matches its PSF to the new image's — from the PSF
models in Fourier space, or expanded on Gaussian × polynomial basis functions (Alard & Lupton
1998, ApJ 503, 325) — scaled by the flux ratio and subtracted; the score is the difference over
its noise (unit variance on blank sky). Conventions as in :mod:`~astrid_assets.science.subtraction.zogy`; the
images are :class:`~astrid_assets.science.subtraction.inputs.SubtractionImage`, the knobs a
:class:`~astrid_assets.science.subtraction.inputs.ClassicOptions`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from astrid_assets.science.photometry.flux_ratio import fit_flux_ratio, psf_star_positions
from astrid_assets.science.psf.model import as_psf_image, measure_fwhm
from astrid_assets.science.subtraction.fft_backends import NumpyBackend, embedded_rfft2, filtered_variance
from astrid_assets.science.subtraction.image_pair import odd_common_stamps, robust_std, sanitise_pair
from astrid_assets.science.subtraction.inputs import ClassicOptions, SubtractionImage, pair_mask

__all__ = ["ClassicResult", "classic_subtraction"]


@dataclass(frozen=True)
class ClassicResult:
    """Outputs of :func:`classic_subtraction` (float32 images on the input grid).

    Attributes
    ----------
    difference : numpy.ndarray
        ``new − F_n/F_r · ref`` after PSF matching, new-image e-, PSF ``psf``; unusable
        pixels 0.
    difference_var : numpy.ndarray
        Variance map of ``difference`` (independent-pixel propagation), e-².
    score : numpy.ndarray
        ``difference`` cross-correlated with ``psf`` and divided by its propagated
        standard deviation: a matched-filter S/N image, unit variance on blank sky; unusable
        pixels 0.
    psf : numpy.ndarray
        PSF of the difference (the broader of the two), unit-sum stamp.
    kernel : numpy.ndarray
        PSF-matching kernel applied to the sharper image, unit-sum stamp.
    convolved : str
        Which image was convolved, ``"new"`` or ``"ref"``.
    flux_ratio : float
        ``F_n / F_r`` used.
    psf_fwhm : float
        FWHM of ``psf``, px.
    significance_std : float
        Robust standard deviation of ``significance`` over usable pixels.
    mask : numpy.ndarray
        uint16 mask (as for :class:`ZogyResult`).
    """

    difference: np.ndarray
    difference_var: np.ndarray
    significance: np.ndarray
    psf: np.ndarray
    kernel: np.ndarray
    convolved: str
    flux_ratio: float
    psf_fwhm: float
    significance_std: float
    mask: np.ndarray


def _alard_lupton_basis(size: int, sigmas: tuple[float, ...], degrees: tuple[int, ...]) -> np.ndarray:
    """Gaussian × polynomial basis kernels of Alard & Lupton (1998), (n_basis, size, size).

    Each Gaussian of width σ_i is multiplied by ``x^p y^q`` for ``p + q <= degree_i``; the
    kernels are normalised (unit sum for even monomials of total degree 0, unit L2 norm
    otherwise) for a well-conditioned fit.
    """
    half = size // 2
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    basis = []
    for sigma, degree in zip(sigmas, degrees, strict=True):
        gauss = np.exp(-(xx**2 + yy**2) / (2.0 * sigma**2))
        for p in range(degree + 1):
            for q in range(degree + 1 - p):
                kernel = gauss * xx**p * yy**q
                basis.append(kernel / np.sqrt((kernel**2).sum()))
    return np.asarray(basis)


def _alard_lupton_kernel(psf_sharp: np.ndarray, psf_broad: np.ndarray) -> np.ndarray:
    """Least-squares AL kernel K with ``psf_sharp ⊗ K ≈ psf_broad`` (spatially constant)."""
    from scipy.signal import fftconvolve

    fwhm_sharp, fwhm_broad = measure_fwhm(psf_sharp), measure_fwhm(psf_broad)
    sigma_match = np.sqrt(max(fwhm_broad**2 - fwhm_sharp**2, 0.25)) / 2.3548
    size = psf_sharp.shape[0]
    basis = _alard_lupton_basis(size, (0.5 * sigma_match, sigma_match, 2.0 * sigma_match), (6, 4, 2))
    design = np.stack([fftconvolve(psf_sharp, b, mode="same").ravel() for b in basis], axis=1)
    coefficients, *_ = np.linalg.lstsq(design, psf_broad.ravel(), rcond=None)
    kernel = np.tensordot(coefficients, basis, axes=1)
    return kernel / kernel.sum()


def _fourier_kernel(psf_sharp: np.ndarray, psf_broad: np.ndarray, regularisation: float) -> np.ndarray:
    """Wiener-regularised Fourier-ratio kernel ``K̂ = P̂_b P̂_s* / (|P̂_s|² + λ)``."""
    size = psf_sharp.shape[0]
    side = 2 * size + 1
    pad = (side - size) // 2
    sharp_hat = np.fft.fft2(np.fft.ifftshift(np.pad(psf_sharp, pad)))
    broad_hat = np.fft.fft2(np.fft.ifftshift(np.pad(psf_broad, pad)))
    kernel_hat = broad_hat * np.conj(sharp_hat) / (np.abs(sharp_hat) ** 2 + regularisation)
    kernel = np.fft.fftshift(np.fft.ifft2(kernel_hat).real)
    kernel = kernel[pad : pad + size, pad : pad + size]
    return kernel / kernel.sum()


def classic_subtraction(
    new: SubtractionImage, ref: SubtractionImage, options: ClassicOptions = ClassicOptions()
) -> ClassicResult:
    """Convolve the sharper image to the broader PSF, scale, subtract (for comparison).

    ``options.method="fourier"``: the matching kernel is the Wiener-regularised Fourier ratio of the
    two PSF models (``regularisation`` λ relative to ``|P̂|² ≤ 1``); ``"alard_lupton"``:
    the kernel is a least-squares combination of Gaussian × polynomial basis functions
    (Alard & Lupton 1998) fitted to the PSF models (spatially constant, no background term).
    The difference is ``new − flux_ratio · ref`` with the sharper one convolved, in new-image
    e-. ``score`` is the difference cross-correlated with its PSF over the propagated
    standard deviation (independent pixels; exact for white input noise).

    Parameters
    ----------
    new, ref : SubtractionImage
        The pair on one grid: background-subtracted pixels (e-, ``[y, x]``), PSF models or odd centred
        stamps (normalised to unit sum here; the sharper one, smaller
        :func:`~astrid_assets.science.psf.empirical.measure_fwhm` and ``new`` on a tie, is convolved),
        variance maps (e-²; uniform ``sigma²`` where None). The mask used is ``new.mask | ref.mask``:
        ``UNUSABLE`` and non-finite pixels are zeroed.
    options : ClassicOptions, default ClassicOptions()
        Flux ratio (fitted with :func:`fit_flux_ratio` when None), kernel method and regularisation.

    Returns
    -------
    ClassicResult
        Float32 images on the input grid, the kernel and the scalars of the subtraction.

    Raises
    ------
    ValueError
        Images of different shapes, or even-sided PSFs.
    FluxRatioError
        When ``options.flux_ratio`` is None and cannot be fitted.
    """
    var_new, var_ref = (
        np.broadcast_to(np.asarray(image.sigma**2 if image.variance is None else image.variance, np.float32),
                        np.shape(image.image))
        for image in (new, ref)
    )
    new_image, ref_image, var_new, var_ref, bad, out_mask = sanitise_pair(new.image, ref.image, var_new, var_ref,
                                                                          pair_mask(new, ref))
    shape = new_image.shape
    flux_ratio = options.flux_ratio
    if flux_ratio is None:
        flux_ratio = fit_flux_ratio(
            new_image,
            ref_image,
            new.psf,
            ref.psf,
            np.where(bad, np.inf, var_new),
            np.where(bad, np.inf, var_ref),
            star_xy=psf_star_positions(ref.psf, new.psf),
        ).ratio
    psf_new, psf_ref = odd_common_stamps(as_psf_image(new.psf), as_psf_image(ref.psf))
    new_is_sharper = measure_fwhm(psf_new) <= measure_fwhm(psf_ref)
    sharp, broad = (psf_new, psf_ref) if new_is_sharper else (psf_ref, psf_new)
    if options.method == "fourier":
        kernel = _fourier_kernel(sharp, broad, options.regularisation)
    else:
        kernel = _alard_lupton_kernel(sharp, broad)
    engine = NumpyBackend()
    kernel_hat = embedded_rfft2(kernel.astype(np.float32), shape)
    psf_hat = embedded_rfft2(broad.astype(np.float32), shape)
    one = np.complex64(1.0)
    filter_new, filter_ref = (kernel_hat, one * flux_ratio) if new_is_sharper else (one, flux_ratio * kernel_hat)
    new_hat, ref_hat = engine.rfft2(new_image), engine.rfft2(ref_image)
    diff_hat = filter_new * new_hat - filter_ref * ref_hat
    difference = engine.irfft2(diff_hat, shape)
    score_num = engine.irfft2(diff_hat * np.conj(psf_hat), shape)
    # Real-space kernels acting on each image, for the variance propagation.
    delta = np.zeros_like(kernel)
    delta[kernel.shape[0] // 2, kernel.shape[1] // 2] = 1.0
    act_new = kernel if new_is_sharper else delta
    act_ref = flux_ratio * (delta if new_is_sharper else kernel)
    flipped = broad[::-1, ::-1]
    from scipy.signal import fftconvolve

    score_new = fftconvolve(act_new, flipped, mode="full")
    score_ref = fftconvolve(act_ref, flipped, mode="full")
    new_var_hat, ref_var_hat = engine.rfft2(var_new), engine.rfft2(var_ref)
    diff_var = filtered_variance(engine, new_var_hat, ref_var_hat, act_new, act_ref, shape)
    score_var = filtered_variance(engine, new_var_hat, ref_var_hat, score_new, score_ref, shape)
    score = score_num / np.sqrt(np.clip(score_var, 1e-12 * float(np.max(score_var)), None))
    difference, score = difference.astype(np.float32), score.astype(np.float32)
    difference[bad] = 0.0
    score[bad] = 0.0
    return ClassicResult(
        difference=difference,
        difference_var=np.clip(diff_var, 0, None).astype(np.float32),
        significance=score,
        psf=broad.astype(np.float32),
        kernel=kernel.astype(np.float32),
        convolved="new" if new_is_sharper else "ref",
        flux_ratio=float(flux_ratio),
        psf_fwhm=measure_fwhm(broad),
        significance_std=robust_std(score, ~bad),
        mask=out_mask,
    )
