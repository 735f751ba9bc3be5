"""The noise an image really has: its autocorrelation on source-free pixels, relative to its variance map.

A variance map describes independent pixels. Drizzled mosaics, frames resampled onto another grid and co-adds
of resampled frames have noise that is correlated between neighbouring pixels: their per-pixel rms (what a
sky-noise measurement or a ``WHT``/``ERR`` map gives) understates the noise that a PSF-sized filter integrates
(Casertano et al. 2000, AJ 120, 2747, §3; Fruchter & Hook 2002, PASP 114, 144, §7), and ZOGY's ``S_corr``,
normalised by the maps as independent pixels, then has a standard deviation well above 1 (2.2 on drizzled
space-telescope mosaics). This module measures, for one image, the autocorrelation ``A(τ)`` of its noise
*whitened by its own variance map*, ``w = image / sqrt(V)``, over pixels away from every source:

``A(τ) = Σ_p m(p) m(p+τ) w(p) w(p+τ) / Σ_p m(p) m(p+τ)``  for ``|τ_x|, |τ_y| ≤ R``

(``m`` the source-free pixels; both sums by FFT). ``A(0)`` is the ratio of the measured per-pixel variance to
the map's, and the noise power spectrum of the image is ``Φ(k) = σ² Â(k)`` with ``Â`` the Fourier transform
of ``A`` (Wiener–Khinchin): for white noise described by its map, ``A = δ`` and ``Â ≡ 1``. A linear filter
``k`` applied to the image then has the variance ``V ⊗ k²`` (what the maps alone give) times

``c(k) = Σ_τ A(τ) (k ⋆ k)(τ) / Σ_τ k(τ)²``  (= ``Σ_k |k̂|² Â / Σ_k |k̂|²``),

for a variance ``V`` that changes slowly over the filter. :mod:`~astrid_assets.science.subtraction.zogy` folds
``Φ`` into the denominator of the proper-subtraction filters and ``c`` into the variances of ``S`` and ``D``:
the ZOGY derivation (Zackay, Ofek & Gal-Yam 2016, ApJ 830, 27, §3 and Appendix A) only uses that the Fourier
modes of the noise are independent with variance ``σ²``; for stationary Gaussian noise they are independent with
variance ``Φ(k)``, so the same derivation with ``σ² → Φ(k)`` gives the proper statistic for correlated noise
(a local extension, not in the paper; Rubin's image-difference decorrelation, Reiss & Lupton 2016, LSST DMTN-021,
whitens a difference's correlated noise in the same way).

Why measure the inputs rather than rescale ``S_corr`` by its own spread (the empirical normalisation that
:class:`~astrid_assets.science.subtraction.inputs.ZogyOptions` ``renormalise`` offers): the inputs' blank sky
holds only noise, whereas ``S_corr`` also holds whatever the subtraction left at stars, a misregistration or a
wrong PSF. Normalising by the noise the inputs have keeps the quality gate on std(``S_corr``) a test of the
subtraction, and a frame whose noise really is correlated is neither rejected nor over-trusted.

Conventions: images background-subtracted, e-, ``[y, x]`` 0-based; variance maps e-²; ``A`` an odd
``(2R+1) × (2R+1)`` stamp centred on lag 0, dimensionless.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.fft as sfft
from astropy.stats import mad_std
from scipy import ndimage

from astrid_assets.science.subtraction.fft_backends import fft_threads

__all__ = ["NOISE_CORRELATION_MODELS", "NoiseCorrelation", "source_free_pixels", "measure_noise_correlation",
           "white_noise", "correlation_method", "source_pixels", "difference_noise", "measurement_windows",
           "MAX_MEASURED_PIXELS", "WINDOWS_PER_AXIS"]

#: ``ZogyOptions.noise_correlation``: ``"white"`` (the variance maps describe the noise), ``"measured"`` (each
#: input's, into the filters) or ``"difference"`` (the proper difference's, into the score's normalisation).
NOISE_CORRELATION_MODELS = ("white", "measured", "difference")

#: Largest lag measured, px (both axes): drizzle and interpolation kernels correlate pixels 1–3 px apart, a
#: co-add of resampled frames a little further.
LAG_RADIUS = 5
#: Fewest source-free pixels for a measurement (the error of each lag is ~1 / sqrt(n)).
MIN_PIXELS = 5000
#: Most pixels a measurement looks at: larger frames are measured in :data:`WINDOWS_PER_AXIS`² windows spread
#: over the frame (:func:`measurement_windows`), so its cost does not grow with the frame.
MAX_MEASURED_PIXELS = 1 << 20
WINDOWS_PER_AXIS = 2
#: Side of the box (px) whose local mean is removed from the whitened image before the autocorrelation: residual
#: sky structure larger than this does not enter the small lags (it would add ``b²`` to every lag).
HIGH_PASS_BOX = 65
#: Floor of ``Â(k)`` relative to ``A(0)``: a box-like drizzle kernel has spectral zeros, where the filters would
#: otherwise divide by nearly nothing (or by the estimate's noise).
POWER_FLOOR = 0.05


@dataclass(frozen=True)
class NoiseCorrelation:
    """The measured noise correlation of one image, relative to its variance map.

    Attributes
    ----------
    acf : numpy.ndarray
        ``(2R+1, 2R+1)`` float64 autocorrelation ``A(τ)`` of the noise whitened by the variance map, centred on
        lag 0 (module docstring). The identity ``[[1]]``-like stamp (1 at the centre, 0 elsewhere) is white noise
        that the map describes.
    n_pixels : int
        Source-free pixels it was measured on (0: not measured, white assumed).
    method : str
        ``"measured"`` or ``"white"`` (assumed: too few source-free pixels, or not asked for).
    """

    acf: np.ndarray
    n_pixels: int
    method: str = "measured"

    @property
    def pixel_ratio(self) -> float:
        """``A(0)``: measured per-pixel variance over the map's (below 1 for smoothed, e.g. drizzled, noise)."""
        return float(self.acf[self.acf.shape[0] // 2, self.acf.shape[1] // 2])

    @property
    def total_power(self) -> float:
        """``Â(0) = Σ_τ A(τ)``: the noise power at zero frequency over the map's (the variance of a large aperture)."""
        return float(self.acf.sum())

    def filter_factor(self, kernel: np.ndarray) -> float:
        """``c(k) = Σ_τ A(τ) (k ⋆ k)(τ) / Σ k²``: the variance a filter ``k`` sees over what the map predicts.

        Parameters
        ----------
        kernel : numpy.ndarray
            Odd, centred real-space filter stamp (any normalisation).

        Returns
        -------
        float
            Dimensionless factor, floored at ``POWER_FLOOR × A(0)`` (1 for white noise described by its map).
        """
        kernel = np.asarray(kernel, np.float64)
        norm = float((kernel**2).sum())
        if norm <= 0:
            return 1.0
        radius = self.acf.shape[0] // 2
        ny, nx = kernel.shape
        total = 0.0
        for dy in range(-min(radius, ny - 1), min(radius, ny - 1) + 1):
            for dx in range(-min(radius, nx - 1), min(radius, nx - 1) + 1):
                lag = float(self.acf[radius + dy, radius + dx])
                if lag == 0.0:
                    continue
                a = kernel[max(dy, 0): ny + min(dy, 0), max(dx, 0): nx + min(dx, 0)]
                b = kernel[max(-dy, 0): ny + min(-dy, 0), max(-dx, 0): nx + min(-dx, 0)]
                total += lag * float((a * b).sum())
        return max(total / norm, POWER_FLOOR * self.pixel_ratio)

    def spectrum(self, backend: Any, shape: tuple[int, int]) -> Any:
        """``Â(k)`` on the ``rfft2`` grid of an image of ``shape``, on ``backend``, floored at
        ``POWER_FLOOR × A(0)`` (the estimate's noise, ~``(2R+1) / sqrt(n_pixels)``, is below that).

        Parameters
        ----------
        backend : NumpyBackend or TorchBackend
            :mod:`~astrid_assets.science.subtraction.fft_backends` back end (``embed_rfft2``), or None for numpy.
        shape : tuple of int
            ``(ny, nx)``; at least the stamp's size.

        Returns
        -------
        numpy.ndarray or torch.Tensor
            Real ``(ny, nx // 2 + 1)`` float32 spectrum (dimensionless: ``Φ = σ² Â``).
        """
        stamp = self.acf.astype(np.float32)
        if backend is None:
            from astrid_assets.science.subtraction.fft_backends import embedded_rfft2

            power = embedded_rfft2(stamp, shape).real
        else:
            power = backend.embed_rfft2(stamp, shape).real
        return power.clip(min=POWER_FLOOR * self.pixel_ratio)


def white_noise(method: str = "white") -> NoiseCorrelation:
    """The correlation of white noise that its variance map describes (``A = δ``): nothing changes."""
    acf = np.zeros((1, 1))
    acf[0, 0] = 1.0
    return NoiseCorrelation(acf, 0, method)


def correlation_method(*noises: NoiseCorrelation | None) -> str:
    """``"measured"`` when any of ``noises`` was measured (and so used by a subtraction), else ``"white"``."""
    return "measured" if any(noise is not None and noise.n_pixels > 0 for noise in noises) else "white"


def source_pixels(image: np.ndarray, variance: np.ndarray | None, sigma: float, usable: np.ndarray,
                  fwhm: float = 3.0) -> np.ndarray:
    """Usable pixels on or near a source of one image (the complement of :func:`source_free_pixels` of the image
    whitened by ``sqrt(variance)``, or ``sigma`` without a map)."""
    noise = np.sqrt(np.asarray(variance, np.float32)) if variance is not None else np.float32(sigma)
    with np.errstate(invalid="ignore", divide="ignore"):
        whitened = np.asarray(image, np.float32) / noise
    usable = usable & np.isfinite(whitened)
    return usable & ~source_free_pixels(whitened, usable, fwhm)


def source_free_pixels(whitened: np.ndarray, usable: np.ndarray, fwhm: float = 3.0,
                       two_sided: bool = False) -> np.ndarray:
    """Pixels away from every source of a whitened image (unit noise where the map holds).

    A source is where the image smoothed by a Gaussian of ``σ = max(1, FWHM / 2.355)`` px lies more than 4
    robust standard deviations (of the smoothed image itself, so correlated noise sets its own threshold) above
    its median (noise alone seldom gets there: a lower cut masks the noise's own positive excursions and biases
    the autocorrelation of what is left low), or a pixel more than 5 robust σ from zero either way (cosmic
    rays, defects, negative holes); sources are grown by ``2 FWHM + 3`` px (a square).

    Parameters
    ----------
    whitened : numpy.ndarray
        ``image / sqrt(variance)``, ``[y, x]``.
    usable : numpy.ndarray of bool
        Pixels that may be used (finite, not flagged unusable).
    fwhm : float, default 3.0
        PSF FWHM of the image, px.
    two_sided : bool, default False
        Smoothed excursions below the median are sources too (a difference image: faded sources, residuals).

    Returns
    -------
    numpy.ndarray of bool
        Usable, source-free pixels.
    """
    values = np.where(usable, whitened, 0.0).astype(np.float32)
    if usable.sum() < 100:
        return np.zeros_like(usable)
    sigma = max(1.0, float(fwhm) / 2.355)
    weight = ndimage.gaussian_filter(usable.astype(np.float32), sigma)
    smooth = ndimage.gaussian_filter(values, sigma) / np.maximum(weight, 1e-3)
    step = max(1, int(usable.sum()) // 200_000)  # the robust statistics on a regular subsample (speed)
    level, spread = float(np.median(smooth[usable][::step])), float(mad_std(smooth[usable][::step]))
    pixel_spread = float(mad_std(values[usable][::step]))
    excursion = np.abs(smooth - level) if two_sided else smooth - level
    source = (excursion > 4.0 * spread) | (np.abs(values) > 5.0 * pixel_spread)
    if source.any():  # grown by a square of half-side 2 FWHM + 3 px (separable: fast)
        source = ndimage.maximum_filter(source, size=2 * int(np.ceil(2.0 * fwhm + 3.0)) + 1)
    return usable & ~source & (weight > 0.99)


def measure_noise_correlation(
    image: np.ndarray,
    variance: np.ndarray | None,
    sigma: float,
    bad: np.ndarray | None = None,
    fwhm: float = 3.0,
    radius: int = LAG_RADIUS,
) -> NoiseCorrelation:
    """The autocorrelation ``A(τ)``, ``|τ| ≤ radius``, of an image's noise whitened by its variance map.

    The image is divided by ``sqrt(variance)`` (``sigma`` where there is no map), its source-free pixels are
    found (:func:`source_free_pixels`), the local mean over :data:`HIGH_PASS_BOX` px is removed from them (and
    the ``Â(0) / HIGH_PASS_BOX²`` this takes from every small lag is added back), and ``A`` is the masked
    autocorrelation (module docstring), computed by FFTs zero-padded by ``radius`` (no
    wrap-around).

    Parameters
    ----------
    image : numpy.ndarray
        Background-subtracted image, e-, ``[y, x]``; non-finite pixels are left out.
    variance : numpy.ndarray or None
        Its variance map, e-² (None: uniform ``sigma²``).
    sigma : float
        Background noise, e- (used where there is no map).
    bad : numpy.ndarray of bool or None, default None
        Unusable pixels, left out.
    fwhm : float, default 3.0
        The image's PSF FWHM, px (how far sources are grown).
    radius : int, default :data:`LAG_RADIUS`
        Largest lag, px.

    Returns
    -------
    NoiseCorrelation
        ``method="white"`` (``A = δ``) when fewer than :data:`MIN_PIXELS` source-free pixels remain.
    """
    image = np.asarray(image, np.float32)
    noise = np.sqrt(np.asarray(variance, np.float32)) if variance is not None else np.float32(sigma)
    with np.errstate(invalid="ignore", divide="ignore"):
        whitened = image / noise
    usable = np.isfinite(whitened) & np.broadcast_to(np.isfinite(noise) & (noise > 0), image.shape)
    if bad is not None:
        usable &= ~bad
    return _masked_autocorrelation([(whitened[w], source_free_pixels(whitened[w], usable[w], fwhm))
                                    for w in measurement_windows(image.shape)], radius)


def measurement_windows(shape: tuple[int, int], max_pixels: int = MAX_MEASURED_PIXELS) -> list[tuple[slice, slice]]:
    """Where a frame's noise correlation is measured: the whole frame when it has at most ``max_pixels``,
    else :data:`WINDOWS_PER_AXIS`² square windows of ``max_pixels`` in all, each centred in its cell of an
    equal grid over the frame (the estimate's error, ~1 / sqrt(pixels), is then below 0.002 per lag)."""
    ny, nx = shape
    if ny * nx <= max_pixels:
        return [(slice(0, ny), slice(0, nx))]
    n = WINDOWS_PER_AXIS
    side = min(int(np.sqrt(max_pixels)) // n, ny // n, nx // n)
    starts_y, starts_x = ((((np.arange(n) + 0.5) * length / n).astype(int) - side // 2) for length in (ny, nx))
    return [(slice(int(y0), int(y0) + side), slice(int(x0), int(x0) + side)) for y0 in starts_y for x0 in starts_x]


def _masked_autocorrelation(pieces: list[tuple[np.ndarray, np.ndarray]], radius: int) -> NoiseCorrelation:
    """``A(τ)`` of whitened images over their clean pixels, ``pieces`` of ``(whitened, clean)`` (windows of one
    frame, :func:`measurement_windows`): both sums of the estimator run over every piece
    (:func:`measure_noise_correlation`)."""
    n_pixels = int(sum(clean.sum() for _, clean in pieces))
    if n_pixels < MIN_PIXELS:
        return white_noise()
    lags = np.r_[np.arange(-radius, 0), np.arange(0, radius + 1)]
    numerator, pairs = np.zeros((lags.size, lags.size)), np.zeros((lags.size, lags.size))
    for whitened, clean in pieces:
        values = np.where(clean, whitened, 0.0).astype(np.float64)
        weight = clean.astype(np.float64)
        box_weight = ndimage.uniform_filter(weight, HIGH_PASS_BOX, mode="constant")
        local_mean = ndimage.uniform_filter(values, HIGH_PASS_BOX, mode="constant") / np.maximum(box_weight, 1e-6)
        values = np.where(clean, values - local_mean, 0.0)
        shape = [sfft.next_fast_len(n + radius) for n in whitened.shape]
        for total, field in ((numerator, values), (pairs, weight)):
            spectrum = sfft.rfft2(field, s=shape, workers=fft_threads())
            product = sfft.irfft2(spectrum * spectrum.conj(), s=shape, workers=fft_threads())
            total += product[np.ix_(lags % shape[0], lags % shape[1])]
    acf = numerator / np.maximum(pairs, 1.0)
    acf = 0.5 * (acf + acf[::-1, ::-1])  # A(τ) = A(−τ)
    # removing the local mean of B = HIGH_PASS_BOX² px lowers every small lag by ≈ Â(0) / B: put it back
    lags_in, box = acf.size, float(HIGH_PASS_BOX) ** 2
    acf = acf + acf.sum() / (1.0 - lags_in / box) / box
    return NoiseCorrelation(acf, n_pixels, "measured")


def difference_noise(
    D: np.ndarray,
    D_var: np.ndarray,
    psf_d: np.ndarray,
    usable: np.ndarray,
    inputs: tuple[tuple[np.ndarray, np.ndarray | None, float, float], ...] = (),
    fwhm: float = 3.0,
    radius: int = LAG_RADIUS,
) -> tuple[NoiseCorrelation, float]:
    """The noise correlation of a proper difference ``D`` and the variance factor of its matched filter.

    ``S = F_D · D ⋆ P_D`` (ZOGY eq. 12 in real space), so the variance of ``S`` is ``F_D²`` times that of
    ``D ⋆ P_D``: with ``A_D`` the autocorrelation of ``D / sqrt(var D)`` on pixels away from every source
    (:func:`measure_noise_correlation`'s estimator), the score's variance is its maps' times
    ``c = Σ_τ A_D(τ) (P_D ⋆ P_D)(τ) / Σ P_D²`` (:meth:`NoiseCorrelation.filter_factor`). Static sky structure
    (faint sources below any detection threshold, a galaxy's light) cancels in ``D``, but not in each input,
    where it reads as correlated noise: measured on the real ESO 085-030 pair, the inputs' blank sky gave
    factors 1.12 (new) and 1.27 (reference) and ``S_corr`` a robust std of 0.89, where its maps were right
    (0.98). This is the difference-domain, empirical counterpart of the inputs' noise power spectra (cf. the
    decorrelation of Rubin's differences, Reiss & Lupton 2016, LSST DMTN-021), measured on source-free pixels
    only, so residuals at stars still show in ``S_corr`` and its quality gate.

    Parameters
    ----------
    D : numpy.ndarray
        Proper difference (any units), ``[y, x]``.
    D_var : numpy.ndarray
        Its variance map, units of ``D`` squared.
    psf_d : numpy.ndarray
        PSF of ``D``, odd centred stamp.
    usable : numpy.ndarray of bool
        Pixels that may be used.
    inputs : tuple of tuple
        ``(image, variance, sigma, fwhm)`` of each input (as for :func:`source_pixels`): the pixels of their
        sources (static stars leave residuals in ``D``) are left out.
    fwhm : float, default 3.0
        FWHM of ``P_D``, px.
    radius : int, default :data:`LAG_RADIUS`
        Largest lag, px.

    Returns
    -------
    noise : NoiseCorrelation
        ``A_D`` (white, ``n_pixels`` 0, when too few clean pixels remain).
    factor : float
        ``c``: the variance of ``S`` over what the maps give (1 for white noise that the maps describe).
    """
    pieces = []
    for window in measurement_windows(D.shape):
        with np.errstate(invalid="ignore", divide="ignore"):
            whitened = np.asarray(D[window], np.float32) / np.sqrt(np.asarray(D_var[window], np.float32))
        clean = usable[window] & np.isfinite(whitened)
        for image, variance, sigma, input_fwhm in inputs:
            clean &= ~source_pixels(image[window], None if variance is None else variance[window], sigma,
                                    usable[window], input_fwhm)
        pieces.append((whitened, source_free_pixels(whitened, clean, fwhm, two_sided=True)))
    noise = _masked_autocorrelation(pieces, radius)
    factor = noise.filter_factor(psf_d) if noise.n_pixels else 1.0
    return (noise if noise.n_pixels else white_noise()), float(factor)
