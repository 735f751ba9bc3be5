"""The shift between two images by phase correlation, to a small fraction of a pixel.

For frames that differ by a translation only (a dither, a drift), the shift is the peak of the
inverse transform of the normalised cross-power spectrum ``F G* / |F G*|`` (Kuglin & Hines 1975;
phase correlation), refined around the peak by an upsampled discrete Fourier transform of the
cross-power spectrum on a 1/:data:`UPSAMPLE` px grid (Guizar-Sicairos, Thurman & Fienup 2008, Opt.
Lett. 33, 156), with numpy's FFT only. The images are background-subtracted, unusable pixels set to
0, clipped at ±:data:`CLIP_SIGMA` σ below and at a high percentile above (so that no saturated star
or cosmic ray dominates), and apodised with a Tukey window (edges carry no spurious zero-shift peak).
Given the PSF's FWHM, the whitened spectrum is weighted by the PSF's squared transform (a matched
filter), which lifts the peak of a sparse field above the pixel noise.

The peak's significance is its height over the robust scatter of the correlation surface; below
:data:`MIN_SIGNIFICANCE`, or below :data:`MIN_PEAK_RATIO` times the highest value elsewhere (any two star
fields correlate where one star falls on another), the shift is refused.

Convention: the returned ``(dx, dy)`` maps frame pixels to reference pixels, ``q = p + (dx, dy)``:
a star at ``(x, y)`` in the frame is at ``(x + dx, y + dy)`` in the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.stats import mad_std
from scipy.signal.windows import tukey

__all__ = ["UPSAMPLE", "MIN_SIGNIFICANCE", "MIN_PEAK_RATIO", "CLIP_SIGMA", "CorrelationShift", "CorrelationError",
           "phase_correlation"]

#: Sub-pixel refinement factor (the shift is found to 1/UPSAMPLE px before any star refinement).
UPSAMPLE = 20
#: Smallest accepted peak height, in robust standard deviations of the correlation surface.
MIN_SIGNIFICANCE = 8.0
#: Smallest accepted ratio of the peak to the highest correlation elsewhere (above the median): two fields of
#: stars correlate at every shift that puts one star on another, so a shift must be confirmed by more than one.
MIN_PEAK_RATIO = 1.5
#: Pixel values are clipped below at −CLIP_SIGMA σ of the image's noise.
CLIP_SIGMA = 5.0


class CorrelationError(ValueError):
    """No significant correlation peak: the images do not overlap by a shift."""


@dataclass(frozen=True)
class CorrelationShift:
    """A shift between two images.

    Attributes
    ----------
    dx, dy : float
        Frame → reference shift, px (module docstring).
    significance : float
        Peak height over the robust scatter of the correlation surface.
    """

    dx: float
    dy: float
    significance: float


def _prepare(image: np.ndarray, bad: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """Clip, zero the unusable pixels, apodise and zero-pad ``image`` to ``shape``."""
    data = np.array(image, dtype=np.float64, copy=True)
    invalid = ~np.isfinite(data) if bad is None else (bad | ~np.isfinite(data))
    good = data[~invalid]
    if good.size == 0:
        return np.zeros(shape)
    sigma = mad_std(good) or 1.0
    high = max(np.percentile(good, 99.5), CLIP_SIGMA * sigma)
    data = np.clip(data - np.median(good), -CLIP_SIGMA * sigma, high)
    data[invalid] = 0.0
    ny, nx = data.shape
    data *= np.outer(tukey(ny, 0.2), tukey(nx, 0.2))
    out = np.zeros(shape)
    out[:ny, :nx] = data
    return out


def _surface_at(cross: np.ndarray, sy: np.ndarray, sx: np.ndarray) -> np.ndarray:
    """The correlation surface ``ifft2(cross)`` at arbitrary (fractional) shifts ``sy`` × ``sx``, as two matrix
    products over the signed integer frequencies (the upsampled DFT of Guizar-Sicairos et al. 2008)."""
    ny, nx = cross.shape
    ky, kx = np.fft.fftfreq(ny) * ny, np.fft.fftfreq(nx) * nx
    rows = np.exp(2j * np.pi * np.outer(sy, ky) / ny)
    cols = np.exp(2j * np.pi * np.outer(kx, sx) / nx)
    return (rows @ cross @ cols).real / cross.size


def phase_correlation(
    image: np.ndarray, reference: np.ndarray, *, bad: np.ndarray | None = None,
    reference_bad: np.ndarray | None = None, max_shift: float | None = None, fwhm: float | None = None,
) -> CorrelationShift:
    """The shift taking ``image`` onto ``reference`` (module docstring).

    Parameters
    ----------
    image, reference : numpy.ndarray
        Background-subtracted images (any units), indexed ``[y, x]``; shapes may differ.
    bad, reference_bad : numpy.ndarray of bool or None, default None
        Unusable pixels of each (set to 0).
    max_shift : float or None, default None
        Largest shift searched on either axis, px (None: half the padded size).
    fwhm : float or None, default None
        The images' PSF FWHM, px: the whitened cross-power spectrum is weighted by the squared
        transform of a Gaussian of that FWHM (a matched filter for point sources), which keeps the
        peak of a field of a few stars above the pixel noise. None: no weighting (pure phase correlation).

    Returns
    -------
    CorrelationShift

    Raises
    ------
    CorrelationError
        The peak is not significant (:data:`MIN_SIGNIFICANCE`).
    """
    shape = (max(image.shape[0], reference.shape[0]), max(image.shape[1], reference.shape[1]))
    f = np.fft.fft2(_prepare(image, bad, shape))
    g = np.fft.fft2(_prepare(reference, reference_bad, shape))
    cross = g * np.conj(f)
    cross /= np.maximum(np.abs(cross), 1e-12 * np.abs(cross).max() + 1e-300)
    if fwhm is not None and np.isfinite(fwhm) and fwhm > 0:
        sigma = fwhm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
        k2 = np.fft.fftfreq(shape[0])[:, None] ** 2 + np.fft.fftfreq(shape[1])[None, :] ** 2
        cross *= np.exp(-4.0 * np.pi**2 * sigma**2 * k2)
    surface = np.fft.ifft2(cross).real
    if max_shift is not None:
        ny, nx = shape
        ky = np.minimum(np.arange(ny), ny - np.arange(ny))
        kx = np.minimum(np.arange(nx), nx - np.arange(nx))
        surface = np.where((ky[:, None] <= max_shift) & (kx[None, :] <= max_shift), surface, -np.inf)
    peak = np.unravel_index(int(np.argmax(surface)), shape)
    finite = surface[np.isfinite(surface)]
    level = np.median(finite)
    significance = float((surface[peak] - level) / (mad_std(finite) or 1e-12))
    if significance < MIN_SIGNIFICANCE:
        raise CorrelationError(f"no significant correlation peak (height {significance:.1f} sigma, "
                               f"minimum {MIN_SIGNIFICANCE:g})")
    # the runner-up away from the peak: a field of stars correlates with any other at single-star pairs
    ny, nx = shape
    wy = np.minimum(np.abs(np.arange(ny) - peak[0]), ny - np.abs(np.arange(ny) - peak[0]))
    wx = np.minimum(np.abs(np.arange(nx) - peak[1]), nx - np.abs(np.arange(nx) - peak[1]))
    apart = np.hypot(wy[:, None], wx[None, :]) > max(3.0, 2.0 * (fwhm or 1.5))
    runner_up = float(np.max(np.where(apart & np.isfinite(surface), surface, -np.inf)))
    ratio = (surface[peak] - level) / max(runner_up - level, 1e-12)
    if ratio < MIN_PEAK_RATIO:
        raise CorrelationError(f"ambiguous correlation peak: {ratio:.2f} times the next one (minimum "
                               f"{MIN_PEAK_RATIO:g}); the images share too little to be aligned by a shift")
    shifts = np.array([p if p <= n // 2 else p - n for p, n in zip(peak, shape, strict=True)], dtype=float)
    grid = np.arange(-UPSAMPLE, UPSAMPLE + 1) / UPSAMPLE  # ±1 px around the integer peak
    fine = _surface_at(cross, shifts[0] + grid, shifts[1] + grid)
    sub = np.unravel_index(int(np.argmax(fine)), fine.shape)
    dy, dx = shifts[0] + grid[sub[0]], shifts[1] + grid[sub[1]]
    return CorrelationShift(float(dx), float(dy), significance)
