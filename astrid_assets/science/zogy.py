"""Proper image subtraction (ZOGY) and a classic PSF-matching subtraction for comparison.

References
----------
* Zackay, Ofek & Gal-Yam 2016, ApJ 830, 27 ("ZOGY"): the proper difference image ``D``
  (eq. 13), its PSF ``P_D`` (eq. 14) and flux zero point ``F_D`` (eq. 15), the proper
  detection statistic ``S`` (eq. 12, in Fourier space; equivalently ``S = F_D · D ⋆ P_D``), the
  corrected statistic ``S_corr = S / sqrt(V(S_N) + V(S_R) + V_ast(S_N) + V_ast(S_R))``
  (eq. 25) with the source-noise terms ``V(S_N) = V(ε_n) ⊗ k_n²``, ``V(S_R) = V(ε_r) ⊗ k_r²``
  (eqs. 26–27) and kernels ``k_n``, ``k_r`` (eqs. 28–29), the astrometric-noise terms
  ``V_ast(S_N) = σ_x² (∂S_N/∂x)² + σ_y² (∂S_N/∂y)²`` and likewise for ``S_R`` (eqs. 30–33),
  and the PSF-photometry normalisation ``F_S`` (eq. 42; flux ``α = S / F_S``).
* Alard & Lupton 1998, ApJ 503, 325: PSF matching with a kernel expanded on Gaussian ×
  polynomial basis functions (used by :func:`classic_subtraction` with
  ``method="alard_lupton"``).

Conventions
-----------
* ``new`` and ``ref`` are background-subtracted images in electrons (e-) on the same pixel
  grid (see :mod:`astrid_assets.science.register`), indexed ``[y, x]``, 0-based.
* PSFs are odd-sized stamps centred on their central pixel (any sum; they are normalised).
* ``flux_ratio`` is ``F_n / F_r``: the counts a source gives in the new image per count in
  the reference (``10**(0.4 (zp_new − zp_ref))`` for photometric zero points ``zp``). We set
  ``F_r = 1`` and ``F_n = flux_ratio``.
* ``new_sigma`` / ``ref_sigma`` are the background noise (e- rms per pixel) used in the
  filters; the variance maps (e-², background + source Poisson + read noise) enter only
  the ``S_corr`` normalisation and the difference-image noise map.
* ``difference`` is ``D`` rescaled to new-image electrons: a transient of ``c`` e- in the
  new image appears as ``c · P_D`` in it.

FFT convolutions are periodic: a source within a kernel radius of one edge leaks into the
opposite edge band, so detections within ``edge`` pixels of the border must be flagged (as
:func:`astrid_assets.science.detect.detect_candidates` does). Pixels that are non-finite or
flagged ``UNUSABLE`` in ``mask`` are set to zero with zero variance in both images, which
keeps ``S_corr`` correctly normalised around them.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.fft as sfft
from astropy.stats import mad_std

from astrid_assets.science import masks
from astrid_assets.science.psf import (
    PSFModel,
    as_psf_image,
    find_sources,
    frame_for_sep,
    measure_fwhm,
    noise_for_sep,
    psf_photometry,
    unusable_pixels,
)


class FluxRatioError(ValueError):
    """The flux ratio F_n / F_r could not be fitted (too few matched stars)."""


@dataclass(frozen=True)
class FluxRatioFit:
    """``F_n / F_r`` from forced PSF photometry of stars in both images."""

    ratio: float
    ratio_err: float
    n_stars: int


@dataclass(frozen=True)
class ZogyResult:
    """Outputs of :func:`zogy` (float32 images on the input grid).

    Attributes
    ----------
    D : proper difference image (eq. 13), in units of its noise (white, unit variance on
        blank sky).
    S : proper detection statistic (eq. 12).
    S_corr : ``S`` normalised by its source- and astrometric-noise-corrected standard
        deviation (eq. 25); on blank sky it is N(0, 1).
    difference : ``D`` in new-image electrons (``D · F_n / F_D``), PSF ``P_D``.
    difference_var : variance map of ``difference``, e-².
    P_D : PSF of ``D`` (eq. 14), unit-sum stamp.
    F_D : flux zero point of ``D`` (eq. 15).
    F_S : flux normalisation of ``S`` (eq. 42); ``S · F_n / F_S`` is the PSF flux in new e-.
    flux_ratio, flux_ratio_err : ``F_n / F_r`` used (and its error, 0 if given).
    psf_fwhm : FWHM of ``P_D``, px.
    s_corr_std : robust (1.4826 × MAD) standard deviation of ``S_corr`` over usable pixels,
        measured before any renormalisation.
    s_corr_scale : factor ``S_corr`` was divided by (1.0 unless ``renormalise=True``).
    mask : uint16 mask on the output grid (the input mask; non-finite input → ``NO_DATA``).
    backend : ``"numpy"`` or ``"torch-cuda"`` / ``"torch-cpu"``.
    """

    D: np.ndarray
    S: np.ndarray
    S_corr: np.ndarray
    difference: np.ndarray
    difference_var: np.ndarray
    P_D: np.ndarray
    F_D: float
    F_S: float
    flux_ratio: float
    flux_ratio_err: float
    psf_fwhm: float
    s_corr_std: float
    s_corr_scale: float
    mask: np.ndarray
    backend: str


@dataclass(frozen=True)
class ClassicResult:
    """Outputs of :func:`classic_subtraction` (float32 images on the input grid).

    Attributes
    ----------
    difference : ``new − F_n/F_r · ref`` after PSF matching, new-image e-, PSF ``psf``.
    difference_var : variance map of ``difference`` (independent-pixel propagation), e-².
    score : ``difference`` cross-correlated with ``psf`` and divided by its propagated
        standard deviation: a matched-filter S/N image, unit variance on blank sky.
    psf : PSF of the difference (the broader of the two), unit-sum stamp.
    kernel : PSF-matching kernel applied to the sharper image, unit-sum stamp.
    convolved : which image was convolved, ``"new"`` or ``"ref"``.
    flux_ratio : ``F_n / F_r`` used.
    psf_fwhm : FWHM of ``psf``, px.
    score_std : robust standard deviation of ``score`` over usable pixels.
    mask : uint16 mask (as for :class:`ZogyResult`).
    """

    difference: np.ndarray
    difference_var: np.ndarray
    score: np.ndarray
    psf: np.ndarray
    kernel: np.ndarray
    convolved: str
    flux_ratio: float
    psf_fwhm: float
    score_std: float
    mask: np.ndarray


# --------------------------------------------------------------------------- FFT backends


class _NumpyBackend:
    """scipy.fft real transforms on the CPU, all threads, float32 / complex64."""

    name = "numpy"

    def asarray(self, array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(array, dtype=np.float32)

    def rfft2(self, image: Any) -> Any:
        return sfft.rfft2(image, workers=-1)

    def irfft2(self, spectrum: Any, shape: tuple[int, int]) -> Any:
        return sfft.irfft2(spectrum, s=shape, workers=-1)

    def sqrt(self, values: Any) -> Any:
        return np.sqrt(values)

    def gradient(self, image: Any) -> tuple[Any, Any]:
        grad_y, grad_x = np.gradient(image)
        return grad_y, grad_x

    def to_numpy(self, values: Any) -> np.ndarray:
        return np.asarray(values, dtype=np.float32)

    def embed_rfft2(self, kernel: np.ndarray, shape: tuple[int, int]) -> Any:
        return _embedded_rfft2(kernel, shape)


class _TorchBackend:
    """torch.fft on a CUDA device (or CPU, for testing), float32 / complex64."""

    def __init__(self, device: str) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.name = f"torch-{self.device.type}"

    def asarray(self, array: np.ndarray) -> Any:
        return self.torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(self.device)

    def rfft2(self, image: Any) -> Any:
        return self.torch.fft.rfft2(image)

    def irfft2(self, spectrum: Any, shape: tuple[int, int]) -> Any:
        return self.torch.fft.irfft2(spectrum, s=shape)

    def sqrt(self, values: Any) -> Any:
        return self.torch.sqrt(values)

    def gradient(self, image: Any) -> tuple[Any, Any]:
        grad_y, grad_x = self.torch.gradient(image)
        return grad_y, grad_x

    def to_numpy(self, values: Any) -> np.ndarray:
        return values.detach().to("cpu").numpy().astype(np.float32, copy=False)

    def embed_rfft2(self, kernel: np.ndarray, shape: tuple[int, int]) -> Any:
        return self.rfft2(self.asarray(_wrap_embed(kernel, shape)))


def _nvidia_driver_present() -> bool:
    """Cheap check for an NVIDIA driver, so that ``"auto"`` does not import torch on CPU hosts."""
    return os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi") is not None


def _select_backend(backend: str) -> _NumpyBackend | _TorchBackend:
    """``"auto"``: torch on CUDA when available, else numpy; ``"numpy"``; ``"torch"`` (CUDA
    if available, else torch on CPU); or ``"torch-cpu"``.

    ``"auto"`` imports torch only when it is already imported or an NVIDIA driver is present.
    """
    if backend == "numpy":
        return _NumpyBackend()
    if backend not in ("auto", "torch", "torch-cpu"):
        raise ValueError(f"unknown backend {backend!r}; use 'auto', 'numpy', 'torch' or 'torch-cpu'")
    if backend == "auto" and "torch" not in sys.modules and not _nvidia_driver_present():
        return _NumpyBackend()
    try:
        import torch
    except ImportError:
        if backend == "auto":
            return _NumpyBackend()
        raise
    if backend == "torch-cpu":
        return _TorchBackend("cpu")
    if torch.cuda.is_available():
        return _TorchBackend("cuda")
    return _NumpyBackend() if backend == "auto" else _TorchBackend("cpu")


def _wrap_embed(kernel: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Place a centred odd kernel in a zero array of ``shape`` with its centre at [0, 0]."""
    ky, kx = kernel.shape
    if ky > shape[0] or kx > shape[1]:
        raise ValueError(f"kernel {kernel.shape} larger than the image {shape}")
    full = np.zeros(shape, dtype=np.float32)
    full[:ky, :kx] = kernel
    return np.roll(full, (-(ky // 2), -(kx // 2)), axis=(0, 1))


def _embedded_rfft2(kernel: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``rfft2`` of a small centred kernel zero-padded (wrapped) to ``shape``.

    Only the kernel's rows are non-zero, so the row transforms are done on those rows alone
    and the column transforms on the full height: about half the cost of a full ``rfft2``.
    """
    ky, kx = kernel.shape
    ny, nx = shape
    rows = np.zeros((ky, nx), dtype=np.float32)
    rows[:, :kx] = kernel
    rows = np.roll(rows, -(kx // 2), axis=1)
    row_spectra = sfft.rfft(rows, axis=1, workers=-1)
    full = np.zeros((ny, nx // 2 + 1), dtype=np.complex64)
    row_index = (np.arange(ky) - ky // 2) % ny
    full[row_index] = row_spectra
    return sfft.fft(full, axis=0, workers=-1, overwrite_x=True)


# --------------------------------------------------------------------------- inputs


def _odd_common_stamps(psf_a: np.ndarray, psf_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pad two odd centred PSF stamps to a common odd size (float64, unit sum)."""
    size = max(psf_a.shape[0], psf_b.shape[0], psf_a.shape[1], psf_b.shape[1])
    size += 1 - size % 2

    def pad(psf: np.ndarray) -> np.ndarray:
        if psf.shape[0] % 2 == 0 or psf.shape[1] % 2 == 0:
            raise ValueError(f"PSF stamps must have odd sides, got {psf.shape}")
        py, px = (size - psf.shape[0]) // 2, (size - psf.shape[1]) // 2
        return np.pad(psf, ((py, py), (px, px)))

    return pad(psf_a), pad(psf_b)


def _sanitise(
    new: np.ndarray,
    ref: np.ndarray,
    new_var: np.ndarray | None,
    ref_var: np.ndarray | None,
    mask: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray, np.ndarray]:
    """Zero unusable / non-finite pixels (and their variance) in both images."""
    new = np.asarray(new, dtype=np.float32)
    ref = np.asarray(ref, dtype=np.float32)
    if new.shape != ref.shape or new.ndim != 2:
        raise ValueError(f"new {new.shape} and ref {ref.shape} must be 2-d images of one shape")
    nonfinite = ~np.isfinite(new) | ~np.isfinite(ref)
    for variance in (new_var, ref_var):
        if variance is not None:
            if np.shape(variance) != new.shape:
                raise ValueError("variance maps must have the image shape")
            nonfinite |= ~np.isfinite(variance)
    bad = nonfinite | unusable_pixels(mask, new.shape)
    out_mask = np.zeros(new.shape, np.uint16) if mask is None else np.array(mask, np.uint16)
    out_mask[nonfinite] |= masks.NO_DATA
    if bad.any():
        zero = np.float32(0.0)
        new, ref = np.where(bad, zero, new), np.where(bad, zero, ref)
        if new_var is not None:
            new_var = np.where(bad, zero, np.asarray(new_var, np.float32))
        if ref_var is not None:
            ref_var = np.where(bad, zero, np.asarray(ref_var, np.float32))
    return new, ref, new_var, ref_var, bad, out_mask


def _robust_std(values: np.ndarray, usable: np.ndarray, max_samples: int = 1_000_000) -> float:
    """1.4826 × median absolute deviation of ``values[usable]`` (subsampled for speed)."""
    sample = values[usable]
    if sample.size > max_samples:
        sample = sample[:: sample.size // max_samples + 1]
    return float(mad_std(sample)) if sample.size else float("nan")


# --------------------------------------------------------------------------- flux ratio


def fit_flux_ratio(
    new: np.ndarray,
    ref: np.ndarray,
    new_psf: PSFModel | np.ndarray,
    ref_psf: PSFModel | np.ndarray,
    new_var: np.ndarray | float,
    ref_var: np.ndarray | float,
    mask: np.ndarray | None = None,
    star_xy: np.ndarray | None = None,
    *,
    min_snr: float = 20.0,
    clip: float = 3.0,
) -> FluxRatioFit:
    """Fit ``F_n / F_r`` from forced PSF photometry of the same stars in both images.

    Stars: ``star_xy`` if given (e.g. the PSF stars), else SEP detections on the reference.
    Each image is measured with its own PSF (:func:`psf_photometry`); stars with S/N ≥
    ``min_snr`` in both enter an iteratively ``clip``-σ clipped weighted mean of
    ``f_new / f_ref``, started from their median. Each star's σ is its photometric error plus,
    in quadrature, the scatter beyond those errors (robust spread of the kept ratios minus
    their median error: blends, PSF-model errors), which also sets its weight. Variable stars,
    transients and cores flattened near saturation are clipped. (Clipping about the
    inverse-variance mean of all stars, as before, let one bright variable star with a
    0.5 % error pull the ratio by 5–15 % and then survive the clipping.)

    Raises
    ------
    FluxRatioError : fewer than 3 stars survive.
    """
    if star_xy is None:
        ref_frame, nonfinite = frame_for_sep(ref, 0.0)
        ref_rms = noise_for_sep(np.sqrt(np.asarray(ref_var, dtype=np.float32)), ref_frame.shape)
        objects = find_sources(ref_frame, ref_rms, unusable_pixels(mask, ref_frame.shape) | nonfinite, 10.0)
        objects = objects[objects["flag"] == 0]
        star_xy = np.column_stack([objects["x"], objects["y"]]) if objects.size else np.empty((0, 2))
    star_xy = np.asarray(star_xy, dtype=np.float64).reshape(-1, 2)
    flux_new, err_new = psf_photometry(new, new_var, new_psf, star_xy[:, 0], star_xy[:, 1], mask)
    flux_ref, err_ref = psf_photometry(ref, ref_var, ref_psf, star_xy[:, 0], star_xy[:, 1], mask)
    with np.errstate(divide="ignore", invalid="ignore"):
        good = (flux_new / err_new >= min_snr) & (flux_ref / err_ref >= min_snr)
        ratio = flux_new / flux_ref
        ratio_err = np.abs(ratio) * np.hypot(err_new / flux_new, err_ref / flux_ref)
    good &= np.isfinite(ratio) & np.isfinite(ratio_err)
    if good.sum() < 3:
        raise FluxRatioError(
            f"only {int(good.sum())} stars with S/N >= {min_snr:g} in both images; cannot fit "
            "the flux ratio F_n/F_r (pass flux_ratio explicitly)"
        )
    keep = good.copy()
    centre = float(np.median(ratio[good]))
    sigma = ratio_err
    for _ in range(20):
        residual = ratio - centre
        spread = 1.4826 * float(np.median(np.abs(residual[keep])))
        extra = max(spread**2 - float(np.median(ratio_err[keep] ** 2)), 0.0)
        sigma = np.sqrt(ratio_err**2 + extra)
        new_keep = good & (np.abs(residual) <= clip * sigma)
        if new_keep.sum() < 3:
            break
        weights = 1.0 / sigma[new_keep] ** 2
        new_centre = float(np.sum(weights * ratio[new_keep]) / np.sum(weights))
        converged = np.array_equal(new_keep, keep) and abs(new_centre - centre) <= 1e-6 * abs(centre)
        keep, centre = new_keep, new_centre
        if converged:
            break
    weights = 1.0 / sigma[keep] ** 2
    mean = float(np.sum(weights * ratio[keep]) / np.sum(weights))
    n = int(keep.sum())
    chi2 = float(np.sum(weights * (ratio[keep] - mean) ** 2)) / max(n - 1, 1)
    error = float(np.sqrt(max(chi2, 1.0) / np.sum(weights)))
    return FluxRatioFit(ratio=mean, ratio_err=error, n_stars=n)


def _star_positions(*psfs: PSFModel | np.ndarray) -> np.ndarray | None:
    """Star positions carried by PSF models (reference first), or None."""
    for psf in psfs:
        if isinstance(psf, PSFModel) and len(psf.star_xy) >= 3:
            return np.asarray(psf.star_xy)
    return None


# --------------------------------------------------------------------------- ZOGY kernels


@dataclass(frozen=True)
class _ZogyKernels:
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


def _kernel_grid(psf_size: int, shape: tuple[int, int]) -> int:
    """Odd side of the small grid on which real-space kernels are computed."""
    side = max(4 * psf_size + 1, 65)
    side = min(side, min(shape) - (1 - min(shape) % 2))
    return side if side % 2 == 1 else side - 1


def _zogy_filters(
    psf_new_hat: Any,
    psf_ref_hat: Any,
    new_sigma: float,
    ref_sigma: float,
    f_new: float,
    f_ref: float = 1.0,
    sqrt: Callable[[Any], Any] = np.sqrt,
    with_psf_d: bool = True,
) -> dict[str, Any]:
    """Fourier-space ZOGY filters for given PSF transforms (any grid, numpy or torch arrays).

    With ``den = σ_n² F_r² |P̂_r|² + σ_r² F_n² |P̂_n|²``: ``D̂ = d_new N̂ − d_ref R̂`` (eq. 13),
    ``Ŝ = s_new N̂ − s_ref R̂`` with ``s_new = k̂_n``, ``s_ref = k̂_r`` (eqs. 12, 28–29), and
    ``P̂_D`` (eq. 14) with ``F_D`` (eq. 15).
    """
    abs2_new = psf_new_hat.real**2 + psf_new_hat.imag**2
    abs2_ref = psf_ref_hat.real**2 + psf_ref_hat.imag**2
    den = (new_sigma**2 * f_ref**2) * abs2_ref + (ref_sigma**2 * f_new**2) * abs2_new
    den = den + float(np.finfo(np.float32).tiny) * 1e6 * float(den.max())
    sqrt_den = sqrt(den)
    f_d = f_ref * f_new / float(np.sqrt(new_sigma**2 * f_ref**2 + ref_sigma**2 * f_new**2))
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


def _real_kernel(spectrum: np.ndarray) -> np.ndarray:
    """Centred real-space kernel from a full complex spectrum on a small odd grid."""
    kernel = np.fft.ifft2(spectrum).real
    return np.fft.fftshift(kernel)


def _zogy_kernels(
    backend: _NumpyBackend | _TorchBackend,
    psf_new: np.ndarray,
    psf_ref: np.ndarray,
    shape: tuple[int, int],
    new_sigma: float,
    ref_sigma: float,
    flux_ratio: float,
) -> _ZogyKernels:
    psf_new, psf_ref = _odd_common_stamps(psf_new, psf_ref)
    # Real-space kernels on a small grid (they are compact: PSF-sized).
    side = _kernel_grid(psf_new.shape[0], shape)
    small_new = np.fft.fft2(np.fft.ifftshift(np.pad(psf_new, (side - psf_new.shape[0]) // 2)))
    small_ref = np.fft.fft2(np.fft.ifftshift(np.pad(psf_ref, (side - psf_ref.shape[0]) // 2)))
    small_filters = _zogy_filters(small_new, small_ref, new_sigma, ref_sigma, flux_ratio)
    f_d = float(small_filters["f_d"])
    psf_d = _real_kernel(small_filters["psf_d"])
    f_s = f_d**2 * float((psf_d**2).sum())  # eq. 42: S at a unit-flux source
    # Full-grid filters (complex64, on the backend's device) for the images themselves.
    full_new = backend.embed_rfft2(psf_new.astype(np.float32), shape)
    full_ref = backend.embed_rfft2(psf_ref.astype(np.float32), shape)
    full_filters = _zogy_filters(
        full_new, full_ref, new_sigma, ref_sigma, flux_ratio, sqrt=backend.sqrt, with_psf_d=False
    )
    crop = psf_new.shape[0]
    lo = side // 2 - crop // 2
    return _ZogyKernels(
        d_new=full_filters["d_new"],
        d_ref=full_filters["d_ref"],
        s_new=full_filters["s_new"],
        s_ref=full_filters["s_ref"],
        k_new=_real_kernel(small_filters["s_new"]),
        k_ref=_real_kernel(small_filters["s_ref"]),
        kd_new=_real_kernel(small_filters["d_new"]),
        kd_ref=_real_kernel(small_filters["d_ref"]),
        psf_d=(psf_d[lo : lo + crop, lo : lo + crop] / psf_d[lo : lo + crop, lo : lo + crop].sum()),
        f_d=f_d,
        f_s=f_s,
    )


def _variance_pair(
    backend: _NumpyBackend | _TorchBackend,
    new_var_hat: Any,
    ref_var_hat: Any,
    kernel_new: np.ndarray,
    kernel_ref: np.ndarray,
    shape: tuple[int, int],
) -> Any:
    """``V_new ⊗ k_new² + V_ref ⊗ k_ref²`` (independent pixel noise through linear filters)."""
    spectrum = new_var_hat * backend.embed_rfft2((kernel_new**2).astype(np.float32), shape)
    spectrum += ref_var_hat * backend.embed_rfft2((kernel_ref**2).astype(np.float32), shape)
    return backend.irfft2(spectrum, shape)


# --------------------------------------------------------------------------- ZOGY


def zogy(
    new: np.ndarray,
    ref: np.ndarray,
    new_psf: PSFModel | np.ndarray,
    ref_psf: PSFModel | np.ndarray,
    new_sigma: float,
    ref_sigma: float,
    new_var: np.ndarray | None = None,
    ref_var: np.ndarray | None = None,
    flux_ratio: float | None = None,
    astrometric_sigma: tuple[float, float] = (0.0, 0.0),
    backend: str = "auto",
    *,
    mask: np.ndarray | None = None,
    renormalise: bool = False,
) -> ZogyResult:
    """Proper image subtraction of Zackay, Ofek & Gal-Yam (2016, ApJ 830, 27).

    Parameters
    ----------
    new, ref : background-subtracted images on one pixel grid, e-.
    new_psf, ref_psf : their PSFs (:class:`PSFModel` or odd centred stamps).
    new_sigma, ref_sigma : background noise per pixel, e- (used in the ZOGY filters).
    new_var, ref_var : per-pixel variance maps, e-², including source Poisson noise; they
        give the source-noise terms V(S_N), V(S_R) (eqs. 26–27) and the difference noise map.
        Without them the variance is taken as uniform ``sigma²`` (no source-noise term).
    flux_ratio : ``F_n / F_r``; fitted with :func:`fit_flux_ratio` when None (stars from the
        PSF models if they carry them, else SEP detections on ``ref``).
    astrometric_sigma : registration noise ``(σ_x, σ_y)``, px, for eqs. 30–33.
    backend : ``"auto"`` (torch on CUDA when available, else numpy), ``"numpy"``,
        ``"torch"`` or ``"torch-cpu"``. The numpy path never imports torch.
    mask : uint16 combined mask of both images on this grid; ``UNUSABLE`` pixels are zeroed.
    renormalise : divide ``S_corr`` by its measured robust standard deviation (absorbs noise
        correlations from resampling that the variance maps do not describe).

    Returns
    -------
    ZogyResult
    """
    new, ref, new_var, ref_var, bad, out_mask = _sanitise(new, ref, new_var, ref_var, mask)
    shape = new.shape
    if flux_ratio is None:
        fit = fit_flux_ratio(
            new,
            ref,
            new_psf,
            ref_psf,
            new_sigma**2 if new_var is None else np.where(bad, np.inf, new_var),
            ref_sigma**2 if ref_var is None else np.where(bad, np.inf, ref_var),
            mask=None,
            star_xy=_star_positions(ref_psf, new_psf),
        )
        flux_ratio, flux_ratio_err = fit.ratio, fit.ratio_err
    else:
        flux_ratio_err = 0.0
    if not (np.isfinite(flux_ratio) and flux_ratio > 0):
        raise ValueError(f"flux_ratio must be positive and finite, got {flux_ratio}")
    if not (new_sigma > 0 and ref_sigma > 0):
        raise ValueError(f"new_sigma and ref_sigma must be positive, got {new_sigma}, {ref_sigma}")
    engine = _select_backend(backend)
    kernels = _zogy_kernels(
        engine,
        as_psf_image(new_psf),
        as_psf_image(ref_psf),
        shape,
        float(new_sigma),
        float(ref_sigma),
        float(flux_ratio),
    )
    outputs = _zogy_images(
        engine, kernels, new, ref, new_var, ref_var, float(new_sigma), float(ref_sigma), astrometric_sigma
    )
    D, S, S_corr, d_var = (engine.to_numpy(outputs[key]) for key in ("D", "S", "S_corr", "D_var"))
    for image in (D, S, S_corr):
        image[bad] = 0.0
    usable = ~bad
    s_corr_std = _robust_std(S_corr, usable)
    scale = s_corr_std if renormalise and np.isfinite(s_corr_std) and s_corr_std > 0 else 1.0
    if scale != 1.0:
        S_corr /= np.float32(scale)
    to_electrons = np.float32(flux_ratio / kernels.f_d)
    return ZogyResult(
        D=D,
        S=S,
        S_corr=S_corr,
        difference=D * to_electrons,
        difference_var=d_var * to_electrons**2,
        P_D=kernels.psf_d.astype(np.float32),
        F_D=kernels.f_d,
        F_S=kernels.f_s,
        flux_ratio=float(flux_ratio),
        flux_ratio_err=float(flux_ratio_err),
        psf_fwhm=measure_fwhm(kernels.psf_d),
        s_corr_std=s_corr_std,
        s_corr_scale=float(scale),
        mask=out_mask,
        backend=engine.name,
    )


def _zogy_images(
    engine: _NumpyBackend | _TorchBackend,
    kernels: _ZogyKernels,
    new: np.ndarray,
    ref: np.ndarray,
    new_var: np.ndarray | None,
    ref_var: np.ndarray | None,
    new_sigma: float,
    ref_sigma: float,
    astrometric_sigma: tuple[float, float],
) -> dict[str, Any]:
    """D, S, S_corr and var(D) on the chosen backend (see :func:`zogy`)."""
    shape = new.shape
    new_hat = engine.rfft2(engine.asarray(new))
    ref_hat = engine.rfft2(engine.asarray(ref))
    D = engine.irfft2(kernels.d_new * new_hat - kernels.d_ref * ref_hat, shape)  # eq. 13
    sigma_x, sigma_y = (float(s) for s in astrometric_sigma)
    astrometric = sigma_x > 0 or sigma_y > 0
    if astrometric:
        S_new = engine.irfft2(kernels.s_new * new_hat, shape)
        S_ref = engine.irfft2(kernels.s_ref * ref_hat, shape)
        S = S_new - S_ref
    else:
        S = engine.irfft2(kernels.s_new * new_hat - kernels.s_ref * ref_hat, shape)  # eq. 12
    del new_hat, ref_hat
    if new_var is not None or ref_var is not None:
        new_var_hat = engine.rfft2(
            engine.asarray(new_sigma**2 * np.ones(shape, np.float32) if new_var is None else new_var)
        )
        ref_var_hat = engine.rfft2(
            engine.asarray(ref_sigma**2 * np.ones(shape, np.float32) if ref_var is None else ref_var)
        )
        V_S = _variance_pair(engine, new_var_hat, ref_var_hat, kernels.k_new, kernels.k_ref, shape)
        D_var = _variance_pair(engine, new_var_hat, ref_var_hat, kernels.kd_new, kernels.kd_ref, shape)
        del new_var_hat, ref_var_hat
    else:  # uniform noise: the variances are constants (eqs. 26-27 with V(ε) = σ²)
        V_S = new_sigma**2 * float((kernels.k_new**2).sum()) + ref_sigma**2 * float((kernels.k_ref**2).sum())
        D_var = new_sigma**2 * float((kernels.kd_new**2).sum()) + ref_sigma**2 * float((kernels.kd_ref**2).sum())
        V_S = engine.asarray(np.full(shape, V_S, np.float32))
        D_var = engine.asarray(np.full(shape, D_var, np.float32))
    if astrometric:  # eqs. 30-33
        grad_new_y, grad_new_x = engine.gradient(S_new)
        grad_ref_y, grad_ref_x = engine.gradient(S_ref)
        V_S = V_S + sigma_x**2 * (grad_new_x**2 + grad_ref_x**2) + sigma_y**2 * (grad_new_y**2 + grad_ref_y**2)
    floor = 1e-12 * float(kernels.f_d) ** 2
    S_corr = S / engine.sqrt(V_S.clip(min=floor))  # eq. 25
    return {"D": D, "S": S, "S_corr": S_corr, "D_var": D_var.clip(min=0)}


# --------------------------------------------------------------------------- classic


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
    new: np.ndarray,
    ref: np.ndarray,
    new_psf: PSFModel | np.ndarray,
    ref_psf: PSFModel | np.ndarray,
    new_var: np.ndarray | float,
    ref_var: np.ndarray | float,
    flux_ratio: float | None = None,
    *,
    method: str = "fourier",
    regularisation: float = 1e-3,
    mask: np.ndarray | None = None,
) -> ClassicResult:
    """Convolve the sharper image to the broader PSF, scale, subtract (for comparison).

    ``method="fourier"``: the matching kernel is the Wiener-regularised Fourier ratio of the
    two PSF models (``regularisation`` λ relative to ``|P̂|² ≤ 1``); ``method="alard_lupton"``:
    the kernel is a least-squares combination of Gaussian × polynomial basis functions
    (Alard & Lupton 1998) fitted to the PSF models (spatially constant, no background term).
    The difference is ``new − flux_ratio · ref`` with the sharper one convolved, in new-image
    e-. ``score`` is the difference cross-correlated with its PSF over the propagated
    standard deviation (independent pixels; exact for white input noise).

    Parameters
    ----------
    new, ref : background-subtracted images on one grid, e-.
    new_var, ref_var : variance maps (or scalars), e-².
    flux_ratio : ``F_n / F_r``; fitted with :func:`fit_flux_ratio` when None.
    """
    var_new = np.broadcast_to(np.asarray(new_var, np.float32), np.shape(new))
    var_ref = np.broadcast_to(np.asarray(ref_var, np.float32), np.shape(ref))
    new, ref, var_new, var_ref, bad, out_mask = _sanitise(new, ref, var_new, var_ref, mask)
    shape = new.shape
    if flux_ratio is None:
        flux_ratio = fit_flux_ratio(
            new,
            ref,
            new_psf,
            ref_psf,
            np.where(bad, np.inf, var_new),
            np.where(bad, np.inf, var_ref),
            star_xy=_star_positions(ref_psf, new_psf),
        ).ratio
    psf_new, psf_ref = _odd_common_stamps(as_psf_image(new_psf), as_psf_image(ref_psf))
    new_is_sharper = measure_fwhm(psf_new) <= measure_fwhm(psf_ref)
    sharp, broad = (psf_new, psf_ref) if new_is_sharper else (psf_ref, psf_new)
    if method == "fourier":
        kernel = _fourier_kernel(sharp, broad, regularisation)
    elif method == "alard_lupton":
        kernel = _alard_lupton_kernel(sharp, broad)
    else:
        raise ValueError(f"unknown method {method!r}; use 'fourier' or 'alard_lupton'")
    engine = _NumpyBackend()
    kernel_hat = _embedded_rfft2(kernel.astype(np.float32), shape)
    psf_hat = _embedded_rfft2(broad.astype(np.float32), shape)
    one = np.complex64(1.0)
    filter_new, filter_ref = (kernel_hat, one * flux_ratio) if new_is_sharper else (one, flux_ratio * kernel_hat)
    new_hat, ref_hat = engine.rfft2(new), engine.rfft2(ref)
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
    diff_var = _variance_pair(engine, new_var_hat, ref_var_hat, act_new, act_ref, shape)
    score_var = _variance_pair(engine, new_var_hat, ref_var_hat, score_new, score_ref, shape)
    score = score_num / np.sqrt(np.clip(score_var, 1e-12 * float(np.max(score_var)), None))
    difference, score = difference.astype(np.float32), score.astype(np.float32)
    difference[bad] = 0.0
    score[bad] = 0.0
    return ClassicResult(
        difference=difference,
        difference_var=np.clip(diff_var, 0, None).astype(np.float32),
        score=score,
        psf=broad.astype(np.float32),
        kernel=kernel.astype(np.float32),
        convolved="new" if new_is_sharper else "ref",
        flux_ratio=float(flux_ratio),
        psf_fwhm=measure_fwhm(broad),
        score_std=_robust_std(score, ~bad),
        mask=out_mask,
    )
