"""ZOGY's filters and kernels for a pair of PSFs (Zackay, Ofek & Gal-Yam 2016, ApJ 830, 27).

:func:`zogy_filters` gives the Fourier-space filters of the proper difference ``D`` (eq. 13), the score ``S``
(eq. 12, with ``k̂_n``, ``k̂_r`` of eqs. 28–29) and the difference PSF ``P_D`` (eq. 14, zero point ``F_D`` of
eq. 15) on any transform grid; :func:`zogy_kernels` evaluates them on the full image grid of a back end and, on a
small grid, as real-space kernels (``k_n``, ``k_r`` for the variances of eqs. 26–27, the ``D`` kernels, ``P_D``,
``F_S`` of eq. 42) with the correlated-noise factors ``c(k)`` of
:mod:`~astrid_assets.science.subtraction.noise_power`. The images themselves are made by
:mod:`~astrid_assets.science.subtraction.zogy`.

Conventions: PSF stamps odd, centred on their central pixel, unit sum; ``flux_ratio`` is ``F_n / F_r`` with
``F_r = 1``; noise ``σ`` in e- per pixel (``σ²``, or the spectrum ``σ² Â(k)`` for correlated noise, in the
filters' denominator); half spectra (``rfft2``), zero frequency at ``[0, 0]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.fft as sfft

from astrid_assets.science.subtraction.fft_backends import NumpyBackend, TorchBackend
from astrid_assets.science.subtraction.image_pair import odd_common_stamps
from astrid_assets.science.subtraction.noise_power import NoiseCorrelation, white_noise

__all__ = ["ZogyKernels", "zogy_filters", "zogy_kernels"]


@dataclass(frozen=True)
class ZogyKernels:
    """ZOGY filters on the full rfft grid and their real-space squares for the variances."""

    d_new: Any  # F_r P̂_r / sqrt(den): D̂ = d_new N̂ − d_ref R̂  (eq. 13)
    d_ref: Any
    s_new: Any  # k̂_n (eq. 28): Ŝ = k̂_n N̂ − k̂_r R̂  (eq. 12)
    s_ref: Any  # k̂_r (eq. 29)
    k_new: np.ndarray  # real-space k_n, k_r, and the D kernels (small centred stamps)
    k_ref: np.ndarray
    kd_new: np.ndarray
    kd_ref: np.ndarray
    psf_d: np.ndarray  # P_D stamp (eq. 14)
    f_d: float  # eq. 15
    f_s: float  # eq. 42
    # c(k) of noise_power for k_new, k_ref, kd_new, kd_ref: the variance-map terms' correlated-noise factors
    factors: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    s_corr_norm: float = 1.0


def _kernel_grid(psf_size: int, shape: tuple[int, int]) -> int:
    """Odd side of the small grid on which real-space kernels are computed, px: at least ``4 × psf_size + 1``
    and 65, the smallest such length ``scipy.fft`` transforms fast (factors 2–11), at most the image's
    smaller side."""
    side = max(4 * psf_size + 1, 65)
    while side % 2 == 0 or sfft.next_fast_len(side) != side:
        side += 1
    side = min(side, min(shape) - (1 - min(shape) % 2))
    return side if side % 2 == 1 else side - 1


def zogy_filters(
    psf_new_hat: Any,
    psf_ref_hat: Any,
    new_power: Any,
    ref_power: Any,
    f_new: float,
    f_ref: float = 1.0,
    sqrt: Callable[[Any], Any] = np.sqrt,
    with_psf_d: bool = True,
) -> dict[str, Any]:
    """Fourier-space ZOGY filters for given PSF transforms (any grid, numpy or torch arrays).

    ``new_power``, ``ref_power`` are the noise power ``σ²`` (white) or spectra ``Φ(k)`` on the transforms'
    grid, ``[0, 0]`` the zero frequency. With ``den = Φ_n F_r² |P̂_r|² + Φ_r F_n² |P̂_n|²``:
    ``D̂ = d_new N̂ − d_ref R̂`` (eq. 13), ``Ŝ = s_new N̂ − s_ref R̂`` with ``s_new = k̂_n``, ``s_ref = k̂_r``
    (eqs. 12, 28–29), and ``P̂_D`` (eq. 14) with ``F_D`` (eq. 15, from ``Φ(0)``).
    """
    abs2_new = psf_new_hat.real**2 + psf_new_hat.imag**2
    abs2_ref = psf_ref_hat.real**2 + psf_ref_hat.imag**2
    den = (new_power * f_ref**2) * abs2_ref + (ref_power * f_new**2) * abs2_new
    den = den + float(np.finfo(np.float32).tiny) * 1e6 * float(den.max())
    sqrt_den = sqrt(den)
    new_zero, ref_zero = (float(p if np.ndim(p) == 0 else p[0, 0]) for p in (new_power, ref_power))
    f_d = f_ref * f_new / float(np.sqrt(new_zero * f_ref**2 + ref_zero * f_new**2))
    filters = {
        "d_new": psf_ref_hat * (f_ref / sqrt_den),
        "d_ref": psf_new_hat * (f_new / sqrt_den),
        "s_new": psf_new_hat.conj() * (abs2_ref * (f_new * f_ref**2) / den),
        "s_ref": psf_ref_hat.conj() * (abs2_new * (f_ref * f_new**2) / den),
        "f_d": f_d,
    }
    if with_psf_d:
        filters["psf_d"] = psf_ref_hat * psf_new_hat * ((f_ref * f_new / f_d) / sqrt_den)
    return filters


def _real_kernel(spectrum: np.ndarray, side: int) -> np.ndarray:
    """Centred real-space kernel on a small odd ``side × side`` grid from its half spectrum (``rfft2``)."""
    return np.fft.fftshift(sfft.irfft2(spectrum, s=(side, side)))


def _noise_power(sigma: float, noise: NoiseCorrelation | None, backend: Any, shape: tuple[int, int]) -> Any:
    """``σ²`` for white noise, else the spectrum ``σ² Â(k)`` on ``backend``'s rfft grid of ``shape``."""
    if noise is None or noise.n_pixels == 0:
        return sigma**2
    return noise.spectrum(backend, shape) * np.float32(sigma**2)


def zogy_kernels(
    backend: NumpyBackend | TorchBackend | None,
    psf_new: np.ndarray,
    psf_ref: np.ndarray,
    shape: tuple[int, int],
    new_sigma: float,
    ref_sigma: float,
    flux_ratio: float,
    new_noise: NoiseCorrelation | None = None,
    ref_noise: NoiseCorrelation | None = None,
) -> ZogyKernels:
    psf_new, psf_ref = odd_common_stamps(psf_new, psf_ref)
    # Real-space kernels on a small grid (they are compact: PSF-sized).
    side = _kernel_grid(psf_new.shape[0], shape)
    # the stamps are real: their spectra, the filters and the kernels' spectra are Hermitian (half spectra)
    small_new = sfft.rfft2(np.fft.ifftshift(np.pad(psf_new, (side - psf_new.shape[0]) // 2)))
    small_ref = sfft.rfft2(np.fft.ifftshift(np.pad(psf_ref, (side - psf_ref.shape[0]) // 2)))
    small_filters = zogy_filters(small_new, small_ref, _noise_power(new_sigma, new_noise, None, (side, side)),
                                  _noise_power(ref_sigma, ref_noise, None, (side, side)), flux_ratio)
    f_d = float(small_filters["f_d"])
    psf_d = _real_kernel(small_filters["psf_d"], side)
    f_s = f_d**2 * float((psf_d**2).sum())  # eq. 42: S at a unit-flux source
    # Full-grid filters (complex64, on the backend's device) for the images themselves; none without a backend
    # (the real-space kernels alone: subtraction.at_stars)
    full_filters = dict.fromkeys(("d_new", "d_ref", "s_new", "s_ref"))
    if backend is not None:
        full_new = backend.embed_rfft2(psf_new.astype(np.float32), shape)
        full_ref = backend.embed_rfft2(psf_ref.astype(np.float32), shape)
        full_filters = zogy_filters(
            full_new, full_ref, _noise_power(new_sigma, new_noise, backend, shape),
            _noise_power(ref_sigma, ref_noise, backend, shape), flux_ratio, sqrt=backend.sqrt, with_psf_d=False
        )
    crop = psf_new.shape[0]
    lo = side // 2 - crop // 2
    k_new, k_ref = _real_kernel(small_filters["s_new"], side), _real_kernel(small_filters["s_ref"], side)
    kd_new, kd_ref = _real_kernel(small_filters["d_new"], side), _real_kernel(small_filters["d_ref"], side)
    new_noise, ref_noise = new_noise or white_noise(), ref_noise or white_noise()
    factors = (new_noise.filter_factor(k_new), ref_noise.filter_factor(k_ref), new_noise.filter_factor(kd_new),
               ref_noise.filter_factor(kd_ref))
    white_var = new_sigma**2 * float((k_new**2).sum()) + ref_sigma**2 * float((k_ref**2).sum())
    var = factors[0] * new_sigma**2 * float((k_new**2).sum()) + factors[1] * ref_sigma**2 * float((k_ref**2).sum())
    return ZogyKernels(
        d_new=full_filters["d_new"],
        d_ref=full_filters["d_ref"],
        s_new=full_filters["s_new"],
        s_ref=full_filters["s_ref"],
        k_new=k_new,
        k_ref=k_ref,
        kd_new=kd_new,
        kd_ref=kd_ref,
        psf_d=(psf_d[lo : lo + crop, lo : lo + crop] / psf_d[lo : lo + crop, lo : lo + crop].sum()),
        f_d=f_d,
        f_s=f_s,
        factors=factors,
        s_corr_norm=float(np.sqrt(var / white_var)) if white_var > 0 else 1.0,
    )
