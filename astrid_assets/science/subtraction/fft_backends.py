"""FFT back ends for the subtractions: scipy.fft on the CPU, or torch on a CUDA device.

ZOGY (:mod:`~astrid_assets.science.subtraction.zogy`) and the classic subtraction
(:mod:`~astrid_assets.science.subtraction.classic`) convolve full frames with small
kernels in Fourier space; :func:`select_backend` picks where — by default (``"auto"``) torch on the
GPU when ``torch.cuda.is_available()``, scipy on the CPU otherwise. The back end that ran is the
result's ``backend`` (``ZogyResult.backend``), stored with each difference as its ``FFTBACK`` card.
Arrays are ``float32`` (spectra ``complex64``), indexed ``[y, x]``; kernels are odd, centred stamps.
Convolutions are periodic; torch and scipy agree to float32 round-off (~1e-5 of an image's scale).
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any

import numpy as np
import scipy.fft as sfft

__all__ = [
    "BACKENDS",
    "NumpyBackend",
    "TorchBackend",
    "select_backend",
    "wrap_embed",
    "embedded_rfft2",
    "filtered_variance",
    "fft_threads",
    "limit_fft_threads",
]

#: Back-end names :func:`select_backend` accepts.
BACKENDS = ("auto", "numpy", "torch", "torch-cpu")

#: Threads each scipy.fft transform may use (``workers``): -1, every core, unless a frame pool's worker process
#: limits it (:func:`limit_fft_threads`, from :func:`astrid_assets.pool.limit_threads`), so that N workers use N
#: cores. scipy.fft's own thread pool is not one that threadpoolctl or ``OMP_NUM_THREADS`` reaches.
_fft_threads = -1


def fft_threads() -> int:
    """The ``workers`` argument for scipy.fft calls: -1 (every core) or the limit a worker process set."""
    return _fft_threads


def limit_fft_threads(threads: int) -> None:
    """Let each scipy.fft transform of this process use at most ``threads`` threads (results are unchanged)."""
    global _fft_threads
    _fft_threads = int(threads)


class NumpyBackend:
    """scipy.fft real transforms on the CPU, all threads, float32 / complex64.

    Attributes
    ----------
    name : str
        ``"numpy"``.
    """

    name = "numpy"

    def asarray(self, array: np.ndarray) -> np.ndarray:
        """The image as a C-contiguous ``float32`` numpy array.

        Parameters
        ----------
        array : numpy.ndarray
            Image, indexed ``[y, x]``.

        Returns
        -------
        numpy.ndarray
            C-contiguous ``float32`` array (a copy only if needed).
        """
        return np.ascontiguousarray(array, dtype=np.float32)

    def rfft2(self, image: Any) -> Any:
        """2-d real FFT of an image (unnormalised forward transform).

        Parameters
        ----------
        image : numpy.ndarray
            ``float32`` image, indexed ``[y, x]``, shape ``(ny, nx)``.

        Returns
        -------
        numpy.ndarray
            Spectrum of shape ``(ny, nx // 2 + 1)`` (``complex64`` for a ``float32`` image).
        """
        return sfft.rfft2(image, workers=fft_threads())

    def irfft2(self, spectrum: Any, shape: tuple[int, int]) -> Any:
        """Inverse 2-d real FFT (normalised by ``1 / (ny nx)``) back to an image of ``shape``.

        Parameters
        ----------
        spectrum : numpy.ndarray
            Half spectrum from :meth:`rfft2`, shape ``(ny, nx // 2 + 1)``.
        shape : tuple of int
            ``(ny, nx)`` of the output image.

        Returns
        -------
        numpy.ndarray
            Real image of ``shape`` (``float32`` for a ``complex64`` spectrum).
        """
        return sfft.irfft2(spectrum, s=shape, workers=fft_threads())

    def sqrt(self, values: Any) -> Any:
        """Element-wise square root.

        Parameters
        ----------
        values : numpy.ndarray
            Non-negative values (e.g. a variance map).

        Returns
        -------
        numpy.ndarray
            ``sqrt(values)``.
        """
        return np.sqrt(values)

    def gradient(self, image: Any) -> tuple[Any, Any]:
        """Central-difference gradient of an image (one-sided at the edges), per px.

        Parameters
        ----------
        image : numpy.ndarray
            2-d image, indexed ``[y, x]``.

        Returns
        -------
        grad_y, grad_x : numpy.ndarray
            ``∂/∂y`` (along rows) and ``∂/∂x`` (along columns), image units per px.
        """
        grad_y, grad_x = np.gradient(image)
        return grad_y, grad_x

    def to_numpy(self, values: Any) -> np.ndarray:
        """The values as a ``float32`` numpy array.

        Parameters
        ----------
        values : numpy.ndarray
            Array in this back end.

        Returns
        -------
        numpy.ndarray
            ``float32`` array.
        """
        return np.asarray(values, dtype=np.float32)

    def embed_rfft2(self, kernel: np.ndarray, shape: tuple[int, int]) -> Any:
        """``rfft2`` of a small centred odd kernel, zero-padded (wrapped) to ``shape``.

        Computed with :func:`embedded_rfft2`.

        Parameters
        ----------
        kernel : numpy.ndarray
            Odd, centred kernel stamp, indexed ``[y, x]``, no larger than ``shape``.
        shape : tuple of int
            ``(ny, nx)`` of the image it will filter.

        Returns
        -------
        numpy.ndarray
            ``complex64`` spectrum of shape ``(ny, nx // 2 + 1)``, the kernel centre at ``[0, 0]``.
        """
        return embedded_rfft2(kernel, shape)


class TorchBackend:
    """torch.fft on a CUDA device (or CPU, for testing), float32 / complex64.

    Parameters
    ----------
    device : str
        torch device, e.g. ``"cuda"`` or ``"cpu"``.

    Attributes
    ----------
    torch : module
        The imported ``torch`` module.
    device : torch.device
        Where arrays live and transforms run.
    name : str
        ``"torch-<device type>"``, e.g. ``"torch-cuda"``.
    """

    def __init__(self, device: str) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.name = f"torch-{self.device.type}"

    def asarray(self, array: np.ndarray) -> Any:
        """The image as a ``float32`` torch tensor on :attr:`device`.

        Parameters
        ----------
        array : numpy.ndarray
            Image, indexed ``[y, x]``.

        Returns
        -------
        torch.Tensor
            ``float32`` tensor on :attr:`device`.
        """
        return self.torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(self.device)

    def rfft2(self, image: Any) -> Any:
        """2-d real FFT of an image (unnormalised forward transform).

        Parameters
        ----------
        image : torch.Tensor
            ``float32`` image, indexed ``[y, x]``, shape ``(ny, nx)``.

        Returns
        -------
        torch.Tensor
            Spectrum of shape ``(ny, nx // 2 + 1)`` (``complex64`` for a ``float32`` image).
        """
        return self.torch.fft.rfft2(image)

    def irfft2(self, spectrum: Any, shape: tuple[int, int]) -> Any:
        """Inverse 2-d real FFT (normalised by ``1 / (ny nx)``) back to an image of ``shape``.

        Parameters
        ----------
        spectrum : torch.Tensor
            Half spectrum from :meth:`rfft2`, shape ``(ny, nx // 2 + 1)``.
        shape : tuple of int
            ``(ny, nx)`` of the output image.

        Returns
        -------
        torch.Tensor
            Real image of ``shape`` (``float32`` for a ``complex64`` spectrum).
        """
        return self.torch.fft.irfft2(spectrum, s=shape)

    def sqrt(self, values: Any) -> Any:
        """Element-wise square root.

        Parameters
        ----------
        values : torch.Tensor
            Non-negative values (e.g. a variance map).

        Returns
        -------
        torch.Tensor
            ``sqrt(values)``.
        """
        return self.torch.sqrt(values)

    def gradient(self, image: Any) -> tuple[Any, Any]:
        """Central-difference gradient of an image (one-sided at the edges), per px.

        Parameters
        ----------
        image : torch.Tensor
            2-d image, indexed ``[y, x]``.

        Returns
        -------
        grad_y, grad_x : torch.Tensor
            ``∂/∂y`` (along rows) and ``∂/∂x`` (along columns), image units per px.
        """
        grad_y, grad_x = self.torch.gradient(image)
        return grad_y, grad_x

    def to_numpy(self, values: Any) -> np.ndarray:
        """The values as a ``float32`` numpy array on the CPU.

        Parameters
        ----------
        values : torch.Tensor
            Array in this back end.

        Returns
        -------
        numpy.ndarray
            ``float32`` array.
        """
        return values.detach().to("cpu").numpy().astype(np.float32, copy=False)

    def embed_rfft2(self, kernel: np.ndarray, shape: tuple[int, int]) -> Any:
        """``rfft2`` of a small centred odd kernel, zero-padded (wrapped) to ``shape``.

        Computed as :meth:`rfft2` of :func:`wrap_embed`.

        Parameters
        ----------
        kernel : numpy.ndarray
            Odd, centred kernel stamp, indexed ``[y, x]``, no larger than ``shape``.
        shape : tuple of int
            ``(ny, nx)`` of the image it will filter.

        Returns
        -------
        torch.Tensor
            ``complex64`` spectrum of shape ``(ny, nx // 2 + 1)``, the kernel centre at ``[0, 0]``.
        """
        return self.rfft2(self.asarray(wrap_embed(kernel, shape)))


def _nvidia_driver_present() -> bool:
    """Cheap check for an NVIDIA driver, so that ``"auto"`` does not import torch on CPU hosts."""
    return os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi") is not None


def select_backend(backend: str) -> NumpyBackend | TorchBackend:
    """The FFT back end named by ``backend``.

    ``"auto"``: torch on CUDA when available, else numpy; ``"numpy"``; ``"torch"`` (CUDA
    if available, else torch on CPU); or ``"torch-cpu"``.

    ``"auto"`` imports torch only when it is already imported or an NVIDIA driver is present.

    Parameters
    ----------
    backend : {"auto", "numpy", "torch", "torch-cpu"}
        Requested back end.

    Returns
    -------
    NumpyBackend or TorchBackend
        The back end to use.

    Raises
    ------
    ValueError
        For an unknown ``backend``.
    ImportError
        For ``"torch"`` or ``"torch-cpu"`` when torch is not installed.
    """
    if backend == "numpy":
        return NumpyBackend()
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; use 'auto', 'numpy', 'torch' or 'torch-cpu'")
    if backend == "auto" and "torch" not in sys.modules and not _nvidia_driver_present():
        return NumpyBackend()
    try:
        import torch
    except ImportError:
        if backend == "auto":
            return NumpyBackend()
        raise
    if backend == "torch-cpu":
        return TorchBackend("cpu")
    if torch.cuda.is_available():
        return TorchBackend("cuda")
    return NumpyBackend() if backend == "auto" else TorchBackend("cpu")


def wrap_embed(kernel: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Place a centred odd kernel in a zero array of ``shape`` with its centre at [0, 0].

    The kernel is wrapped periodically, so that its negative offsets land at the far end of
    each axis.

    Parameters
    ----------
    kernel : numpy.ndarray
        Odd, centred kernel stamp, indexed ``[y, x]``; centre pixel ``[ky // 2, kx // 2]``.
    shape : tuple of int
        ``(ny, nx)`` of the output.

    Returns
    -------
    numpy.ndarray
        ``float32`` array of ``shape``.

    Raises
    ------
    ValueError
        If the kernel is larger than ``shape`` along either axis.
    """
    ky, kx = kernel.shape
    if ky > shape[0] or kx > shape[1]:
        raise ValueError(f"kernel {kernel.shape} larger than the image {shape}")
    full = np.zeros(shape, dtype=np.float32)
    full[:ky, :kx] = kernel
    return np.roll(full, (-(ky // 2), -(kx // 2)), axis=(0, 1))


def embedded_rfft2(kernel: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``rfft2`` of a small centred kernel zero-padded (wrapped) to ``shape``.

    Only the kernel's rows are non-zero, so the row transforms are done on those rows alone
    and the column transforms on the full height: about half the cost of a full ``rfft2``.

    Parameters
    ----------
    kernel : numpy.ndarray
        Odd, centred kernel stamp, indexed ``[y, x]``, at most ``shape`` along each axis (not
        checked: rows beyond ``ny`` overwrite each other).
    shape : tuple of int
        ``(ny, nx)`` of the image it will filter.

    Returns
    -------
    numpy.ndarray
        ``complex64`` spectrum of shape ``(ny, nx // 2 + 1)``, equal to
        ``rfft2(wrap_embed(kernel, shape))``.
    """
    ky, kx = kernel.shape
    ny, nx = shape
    rows = np.zeros((ky, nx), dtype=np.float32)
    rows[:, :kx] = kernel
    rows = np.roll(rows, -(kx // 2), axis=1)
    row_spectra = sfft.rfft(rows, axis=1, workers=fft_threads())
    full = np.zeros((ny, nx // 2 + 1), dtype=np.complex64)
    row_index = (np.arange(ky) - ky // 2) % ny
    full[row_index] = row_spectra
    return sfft.fft(full, axis=0, workers=fft_threads(), overwrite_x=True)


def filtered_variance(
    backend: NumpyBackend | TorchBackend,
    new_var_hat: Any,
    ref_var_hat: Any,
    kernel_new: np.ndarray,
    kernel_ref: np.ndarray,
    shape: tuple[int, int],
) -> Any:
    """``V_new ⊗ k_new² + V_ref ⊗ k_ref²`` (independent pixel noise through linear filters).

    The variance of ``new ⊗ k_new − ref ⊗ k_ref`` for uncorrelated pixels; convolutions are
    periodic.

    Parameters
    ----------
    backend : NumpyBackend or TorchBackend
        Back end that made the spectra.
    new_var_hat, ref_var_hat : numpy.ndarray or torch.Tensor
        ``rfft2`` of the variance maps of the two images, e-².
    kernel_new, kernel_ref : numpy.ndarray
        Real-space convolution kernels applied to each image (odd, centred stamps); each is
        squared here.
    shape : tuple of int
        ``(ny, nx)`` of the images.

    Returns
    -------
    numpy.ndarray or torch.Tensor
        Variance map of the filtered difference, e-² (times the kernels' units squared).
    """
    spectrum = new_var_hat * backend.embed_rfft2((kernel_new**2).astype(np.float32), shape)
    spectrum += ref_var_hat * backend.embed_rfft2((kernel_ref**2).astype(np.float32), shape)
    return backend.irfft2(spectrum, shape)
