"""Proper co-addition of registered, flux-scaled frames (Zackay & Ofek 2017, ApJ 836, 187 and 188).

Method
------
Frames ``M_j`` on one grid, background subtracted and divided by their flux scales (so a source
gives the same counts in each, ``F_j = 1`` in the anchor frame's e-), with PSFs ``P_j`` (unit sum)
and background noise ``σ_j`` (e-, after scaling). In Fourier space (``^``, ``*`` the complex
conjugate), with ``w_j = 1 / σ_j²`` (Zackay & Ofek 2017 I, eqs. 7–9, 11)::

    D(k)  = sqrt(Σ_j w_j |P̂_j(k)|²)
    R̂     = Σ_j w_j P̂_j* M̂_j / D                    (white noise of unit variance)
    F_R   = sqrt(Σ_j w_j)                            (R's flux scale: D(0))
    P̂_R   = D / F_R                                  (R's PSF, unit sum, real and centro-symmetric)

``R`` is the sufficient statistic for detecting a point source in the stack: its matched-filter
S/N is ``sqrt(Σ_j S/N_j²)`` for background-limited frames, whatever their PSFs, and its PSF is
the same everywhere. The image returned is ``R / F_R``: a source of ``f`` anchor e- gives
``f · P_R`` (the anchor frame's e- and zero point, as the mean co-add of :mod:`~astrid_assets.science.reference.coadd`).

Per-pixel variance
------------------
``R / F_R = Σ_j k_j ⊛ M_j`` with ``k̂_j = w_j P̂_j* / (D F_R)``. For independent input pixels the
variance is ``Σ_j k_j² ⊛ V_j`` (e-²), with ``V_j`` the frames' variance maps (sky, read noise and
the sources' own Poisson noise): on blank sky it is ``1 / Σ_j w_j``, white (the approximation:
the correlation that resampling gives the input pixels, and between co-add pixels over a
source, is not carried). Frames not covering a pixel (``NO_DATA``) enter as 0 with variance 0;
the image and variance are divided by the covered flux fraction ``c = Σ_j k_j ⊛ cover_j`` (1
where every frame covers) and are NaN where ``c`` < :data:`MIN_COVERAGE`.

Masked pixels
-------------
Unusable pixels of a covered frame (saturated, bad, cosmic rays, outliers rejected by
:func:`reject_outliers`) are filled from their neighbours before the transforms
(:func:`~astrid_assets.science.inpaint.fill_from_neighbours`), their variances too. The frames
are zero-padded by the kernel extent so the FFTs' wrap-around stays off the image.

Images in e- (``float32`` out, ``float64`` inside), variances e-², ``[y, x]``, 0-based.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import fft
from scipy.ndimage import binary_dilation

from astrid_assets.science.inpaint import fill_from_neighbours

__all__ = [
    "MIN_COVERAGE",
    "SOURCE_SIGMA",
    "SOURCE_GROWTH",
    "ProperStack",
    "proper_psf",
    "reject_outliers",
    "proper_combine",
]

#: Covered flux fraction below which a co-add pixel is left empty (NaN, ``NO_DATA``).
MIN_COVERAGE = 0.05
#: A pixel whose median over frames exceeds this many σ of that median lies on a source: never clipped.
SOURCE_SIGMA = 3.0
#: Pixels (4-connected steps) that a source footprint is grown by before clipping is switched off.
SOURCE_GROWTH = 4


@dataclass(frozen=True)
class ProperStack:
    """The proper co-add of frames on one grid.

    Attributes
    ----------
    image : numpy.ndarray
        float32 ``R / F_R``, e- of the anchor frame (sources ``f · P_R``); NaN where not covered.
    variance : numpy.ndarray
        float32 per-pixel variance, e-² (``Σ_j k_j² ⊛ V_j / c²``); NaN where not covered.
    psf : numpy.ndarray
        ``(size, size)`` float32 PSF stamp ``P_R`` of ``image``, unit sum, centred.
    coverage : numpy.ndarray
        float32 covered flux fraction ``c`` (1 where every frame covers the pixel).
    sigma : float
        Background noise of ``image``, ``1 / sqrt(Σ w_j)``, e-.
    """

    image: np.ndarray
    variance: np.ndarray
    psf: np.ndarray
    coverage: np.ndarray
    sigma: float


def _embed(stamp: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A stamp centred on pixel ``[0, 0]`` of a periodic array of ``shape``."""
    out = np.zeros(shape)
    half = stamp.shape[0] // 2
    out[: stamp.shape[0], : stamp.shape[1]] = stamp
    return np.roll(out, (-half, -half), axis=(0, 1))


def proper_psf(psfs: list[np.ndarray], sigmas: np.ndarray, size: int | None = None) -> np.ndarray:
    """The PSF ``P_R`` of the proper co-add of frames with PSFs ``psfs`` and noise ``sigmas``.

    Parameters
    ----------
    psfs : list of numpy.ndarray
        Odd square PSF stamps (any sizes), centred, each normalised here to unit sum.
    sigmas : numpy.ndarray
        Background noise of each frame after flux scaling, e-.
    size : int or None, default None
        Odd side of the stamp returned; None: the largest input stamp.

    Returns
    -------
    numpy.ndarray
        float64 ``(size, size)`` stamp ``IFFT(sqrt(Σ w_j |P̂_j|²) / sqrt(Σ w_j))``, unit sum, centred.
    """
    size = size or max(p.shape[0] for p in psfs)
    side = 2 * max(size, max(p.shape[0] for p in psfs)) + 1
    weights = 1.0 / np.asarray(sigmas, dtype=float) ** 2
    power = sum(w * np.abs(fft.fft2(_embed(p / p.sum(), (side, side)))) ** 2
                for w, p in zip(weights, psfs, strict=True))
    stamp = np.fft.fftshift(fft.ifft2(np.sqrt(power / weights.sum())).real)
    c, half = side // 2, size // 2
    stamp = stamp[c - half : c + half + 1, c - half : c + half + 1]
    return stamp / stamp.sum()


def reject_outliers(
    images: np.ndarray, variances: np.ndarray, usable: np.ndarray, clip_sigma: float = 4.0
) -> np.ndarray:
    """Values that one or a few frames alone show on blank sky (cosmic rays, satellites, transients).

    A value further than ``clip_sigma × σ_j`` from the median over frames is rejected, except on
    sources: pixels whose median exceeds :data:`SOURCE_SIGMA` times its own noise
    (``1.25 × median σ / sqrt(n)``), grown by :data:`SOURCE_GROWTH` px. Frames of different seeing
    differ far beyond their noise at every star's core and wings; rejecting and filling those
    values (the mean co-add's rule, which an amplitude term only partly protects) would change
    the frames' PSFs star by star. As in :mod:`~astrid_assets.science.reference.coadd`, at most ``max(1, n // 4)`` of a
    pixel's
    ``n`` values go, and at least 3 must be usable.

    Parameters
    ----------
    images, variances : numpy.ndarray
        ``(n, ny, nx)`` flux-scaled frames (e-) and variances (e-²).
    usable : numpy.ndarray of bool
        ``(n, ny, nx)`` values that may enter the co-add.
    clip_sigma : float, default 4.0
        Rejection threshold, σ of each value.

    Returns
    -------
    numpy.ndarray of bool
        ``(n, ny, nx)`` rejected values (a subset of ``usable``).
    """
    values = np.where(usable, images, np.nan)
    count = usable.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: pixels no frame covers
        median = np.nanmedian(values, axis=0)
        noise = 1.25 * np.sqrt(np.nanmedian(np.where(usable, variances, np.nan), axis=0) / np.maximum(count, 1))
        on_source = binary_dilation(np.nan_to_num(median / noise) > SOURCE_SIGMA, iterations=SOURCE_GROWTH)
        rejected = usable & (np.abs(images - median) > clip_sigma * np.sqrt(np.abs(variances))) & (count >= 3)
    rejected &= ~on_source[None]
    rejected &= (rejected.sum(axis=0) <= np.maximum(1, count // 4))[None]
    return rejected


def proper_combine(
    images: np.ndarray,
    variances: np.ndarray,
    kept: np.ndarray,
    covered: np.ndarray,
    psfs: list[np.ndarray],
    sigmas: np.ndarray,
    psf_size: int = 25,
    workers: int = -1,
) -> ProperStack:
    """Proper co-add (module docstring) of flux-scaled frames on one grid.

    Parameters
    ----------
    images : numpy.ndarray
        ``(n, ny, nx)`` background-subtracted frames divided by their flux scales, e- of the anchor.
    variances : numpy.ndarray
        ``(n, ny, nx)`` their variance maps, e-² (scaled by ``1 / s_j²``).
    kept : numpy.ndarray of bool
        ``(n, ny, nx)`` values used as they are; the others of a covered pixel are filled from
        their neighbours.
    covered : numpy.ndarray of bool
        ``(n, ny, nx)`` pixels the frame has data for (not ``NO_DATA``); outside, the frame is 0.
    psfs : list of numpy.ndarray
        PSF stamp of each frame on the grid (odd, centred; normalised here to unit sum).
    sigmas : numpy.ndarray
        Background noise of each scaled frame, e- (weights ``1 / σ_j²``).
    psf_size : int, default 25
        Odd side of the co-add's PSF stamp, px.
    workers : int, default -1
        Threads for the FFTs (:func:`scipy.fft.rfft2`).

    Returns
    -------
    ProperStack
        Image, variance, PSF, coverage and background noise of the co-add.
    """
    n, ny, nx = images.shape
    pad = max(max(p.shape[0] for p in psfs), psf_size)
    shape = (ny + 2 * pad, nx + 2 * pad)
    inner = np.s_[pad : pad + ny, pad : pad + nx]
    weights = 1.0 / np.asarray(sigmas, dtype=float) ** 2
    total = weights.sum()
    otfs = [fft.rfft2(_embed(p / p.sum(), shape), workers=workers) for p in psfs]
    denominator = np.sqrt(sum(w * np.abs(otf) ** 2 for w, otf in zip(weights, otfs, strict=True)))
    denominator = np.maximum(denominator, 1e-12 * np.sqrt(total))
    image_ft = np.zeros_like(otfs[0])
    variance_ft = np.zeros_like(otfs[0])
    coverage_ft = np.zeros_like(otfs[0])
    frame = np.zeros(shape)
    for j in range(n):
        kernel_ft = weights[j] * np.conj(otfs[j]) / (denominator * np.sqrt(total))
        kernel = fft.irfft2(kernel_ft, shape, workers=workers)
        squared_ft = fft.rfft2(kernel**2, workers=workers)
        frame[inner] = np.where(covered[j], fill_from_neighbours(images[j], ~kept[j]), 0.0)
        image_ft += kernel_ft * fft.rfft2(frame, workers=workers)
        frame[inner] = np.where(covered[j], fill_from_neighbours(variances[j], ~kept[j]), 0.0)
        variance_ft += squared_ft * fft.rfft2(frame, workers=workers)
        frame[inner] = covered[j]
        coverage_ft += kernel_ft * fft.rfft2(frame, workers=workers)
    coverage = fft.irfft2(coverage_ft, shape, workers=workers)[inner]
    with np.errstate(invalid="ignore", divide="ignore"):
        empty = coverage < MIN_COVERAGE
        image = np.where(empty, np.nan, fft.irfft2(image_ft, shape, workers=workers)[inner] / coverage)
        variance = np.where(empty, np.nan, fft.irfft2(variance_ft, shape, workers=workers)[inner] / coverage**2)
    return ProperStack(
        image=image.astype(np.float32),
        variance=np.maximum(variance, 0.0).astype(np.float32),
        psf=proper_psf(psfs, sigmas, psf_size).astype(np.float32),
        coverage=coverage.astype(np.float32),
        sigma=float(1.0 / np.sqrt(total)),
    )
