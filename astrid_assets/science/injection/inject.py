"""Artificial point sources: injection at a chosen S/N, catalogue matching and completeness (the
fakes of a whole frame through the differencing: :mod:`~astrid_assets.science.injection.fakes`).

S/N convention: the PSF-optimal signal-to-noise of a point source of flux ``F`` (e-) at
``(x, y)`` against a variance map ``V`` (e-²) is

    S/N = F · sqrt( Σ P(x_i − x, y_i − y)² / V_i )

(the S/N of an inverse-variance-weighted PSF fit with known position; e.g. Zackay, Ofek &
Gal-Yam 2016, ApJ 830, 27, §2), summed over the PSF stamp. The variance is the one given
(background, read noise and whatever sources it already includes); the injected source's
own Poisson noise is added to the image (and to the returned variance) when ``poisson``.

Pixel convention: arrays ``[y, x]``, 0-based; a stamp's centre pixel is ``[size//2, size//2]``, placed on the
pixel nearest the position and clipped at the image edges (:func:`~astrid_assets.science.cutouts.cutout_window`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from astrid_assets.science.cutouts import cutout_window
from astrid_assets.science.psf.model import PSFModel, ShiftablePSF, as_psf_image

__all__ = [
    "Injection",
    "Completeness",
    "psf_optimal_snr",
    "inject_sources",
    "match_catalogues",
    "completeness",
    "SNR_BINS",
    "summarise_completeness",
]


@dataclass(frozen=True)
class Injection:
    """Copies of the image and variance with the injected sources, and the truth table.

    ``x``, ``y`` (px), ``flux`` (e-, inside the PSF stamp) and ``snr`` (PSF-optimal, against
    the input variance) per source.

    Attributes
    ----------
    image : numpy.ndarray
        float32 copy of the image with the sources added, e-.
    variance : numpy.ndarray
        float32 copy of the variance, e-², plus the sources' expected counts when ``poisson``.
    x, y : numpy.ndarray
        Source positions, px (0-based, pixel centres at integers).
    flux : numpy.ndarray
        Source fluxes, e- inside the PSF stamp.
    snr : numpy.ndarray
        PSF-optimal S/N against the input variance.
    """

    image: np.ndarray
    variance: np.ndarray
    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray
    snr: np.ndarray


@dataclass(frozen=True)
class Completeness:
    """Recovered fraction per S/N bin.

    ``bin_edges`` (n+1), ``bin_centres``, ``n_injected``, ``n_recovered``, ``fraction``
    (NaN for empty bins), ``fraction_err`` (binomial standard error ``sqrt(f(1 − f)/n)``,
    floored at ``1/(2n)``), and ``snr_50``: the S/N where the completeness first reaches 50 %,
    linearly interpolated between bin centres (NaN when not bracketed by the bins).

    Attributes
    ----------
    bin_edges : numpy.ndarray
        ``n + 1`` S/N bin edges.
    bin_centres : numpy.ndarray
        ``n`` bin centres (mid-points), S/N.
    n_injected, n_recovered : numpy.ndarray
        Sources injected and recovered per bin.
    fraction : numpy.ndarray
        Recovered fraction per bin (NaN for empty bins).
    fraction_err : numpy.ndarray
        Binomial standard error, floored at ``1/(2n)`` (NaN for empty bins).
    snr_50 : float
        S/N of 50 % completeness, or NaN.
    """

    bin_edges: np.ndarray
    bin_centres: np.ndarray
    n_injected: np.ndarray
    n_recovered: np.ndarray
    fraction: np.ndarray
    fraction_err: np.ndarray
    snr_50: float


def psf_optimal_snr(
    flux: np.ndarray,
    psf: PSFModel | np.ndarray,
    variance: np.ndarray | float,
    x: np.ndarray,
    y: np.ndarray,
    shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """PSF-optimal S/N of sources of ``flux`` (e-) at ``(x, y)`` against ``variance`` (e-²).

    ``S/N = F · sqrt(Σ P² / V)`` over the PSF stamp shifted to each position (module docstring);
    stamp pixels off the image or with a non-finite or non-positive variance are left out.

    Parameters
    ----------
    flux : numpy.ndarray
        Source fluxes, e- inside the PSF stamp (scalar or one per position).
    psf : PSFModel or numpy.ndarray
        PSF (normalised to unit sum here).
    variance : numpy.ndarray or float
        Variance map, e-², or a scalar (then ``shape`` is needed).
    x, y : numpy.ndarray
        Positions, px (0-based, pixel centres at integers).
    shape : tuple of int or None, default None
        ``(ny, nx)`` of the image, for a scalar ``variance``.

    Returns
    -------
    numpy.ndarray
        S/N per position.

    Raises
    ------
    ValueError
        A scalar ``variance`` without ``shape``.
    """
    return np.asarray(flux, float) * _optimal_weight(psf, variance, x, y, shape)


def _optimal_weight(
    psf: PSFModel | np.ndarray,
    variance: np.ndarray | float,
    x: np.ndarray,
    y: np.ndarray,
    shape: tuple[int, int] | None,
) -> np.ndarray:
    """``sqrt(Σ P² / V)`` at each position (S/N per unit flux)."""
    shiftable = ShiftablePSF(as_psf_image(psf))
    half = shiftable.size // 2
    if np.ndim(variance) == 0:
        if shape is None:
            raise ValueError("shape is needed with a scalar variance")
        variance_map = np.broadcast_to(np.float32(variance), shape)
    else:
        variance_map = np.asarray(variance)
    x, y = np.atleast_1d(np.asarray(x, float)), np.atleast_1d(np.asarray(y, float))
    weight = np.zeros(x.size)
    for k, (xk, yk) in enumerate(zip(x, y, strict=True)):
        window = cutout_window(variance_map.shape, xk, yk, half)
        if window is None:  # no stamp pixel on the image
            continue
        model = shiftable.at(xk - window.x, yk - window.y)[window.stamp]
        pixel_var = np.asarray(variance_map[window.image], float)
        usable = np.isfinite(pixel_var) & (pixel_var > 0)
        weight[k] = np.sqrt(np.sum(model[usable] ** 2 / pixel_var[usable]))
    return weight


def inject_sources(
    image: np.ndarray,
    variance: np.ndarray,
    psf: PSFModel | np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    snr: np.ndarray | float | None = None,
    flux: np.ndarray | float | None = None,
    *,
    rng: np.random.Generator | None = None,
    poisson: bool = True,
) -> Injection:
    """Add point sources with ``psf`` at sub-pixel ``(x, y)`` to copies of an image.

    Give either ``snr`` (PSF-optimal against ``variance``; the flux is solved for) or
    ``flux`` (e-). The PSF is moved to each position by a Fourier sub-pixel shift. With
    ``poisson`` the sources' Poisson noise is drawn (``rng``) and their expected counts are
    added to the returned variance.

    Parameters
    ----------
    image : numpy.ndarray
        e- (sky subtracted or not), not modified; indexed ``[y, x]``.
    variance : numpy.ndarray
        e-², not modified.
    psf : PSFModel or numpy.ndarray
        PSF of ``image`` (unit-sum stamp or :class:`PSFModel`; normalised here). Its negative
        pixels are clipped to 0 when adding a source.
    x, y : numpy.ndarray
        Positions, px (0-based, pixel centres at integers); stamps are clipped at the edges.
    snr : numpy.ndarray or float or None, default None
        PSF-optimal S/N per source (scalar broadcast).
    flux : numpy.ndarray or float or None, default None
        Flux per source, e- inside the PSF stamp (scalar broadcast).
    rng : numpy.random.Generator or None, default None
        Random generator for the Poisson draws; None: a fresh unseeded one.
    poisson : bool, default True
        Draw the sources' counts from a Poisson distribution (positive fluxes only) and add
        their expected counts to the variance; a negative flux (a source fading) lowers the
        variance by its counts, down to the lowest variance of the frame (sky and read noise).

    Returns
    -------
    Injection
        The new image and variance and the truth table.

    Raises
    ------
    ValueError
        Unless exactly one of ``snr`` and ``flux`` is given, or for a scalar ``variance``.
    """
    if (snr is None) == (flux is None):
        raise ValueError("give exactly one of snr or flux")
    x, y = np.atleast_1d(np.asarray(x, float)), np.atleast_1d(np.asarray(y, float))
    variance = np.asarray(variance, dtype=np.float32)
    weight = _optimal_weight(psf, variance, x, y, image.shape)
    if snr is not None:
        snr_values = np.broadcast_to(np.asarray(snr, float), x.shape).copy()
        flux_values = snr_values / weight
    else:
        flux_values = np.broadcast_to(np.asarray(flux, float), x.shape).copy()
        snr_values = flux_values * weight
    rng = np.random.default_rng() if rng is None else rng
    out_image = np.array(image, dtype=np.float32, copy=True)
    out_variance = np.array(variance, dtype=np.float32, copy=True)
    positive = variance[np.isfinite(variance) & (variance > 0)]
    floor = np.float32(positive.min()) if positive.size else np.float32(0.0)  # the faintest sky pixel's variance
    shiftable = ShiftablePSF(as_psf_image(psf))
    half = shiftable.size // 2
    positive = variance[np.isfinite(variance) & (variance > 0)]
    floor = np.float32(positive.min()) if positive.size else np.float32(0.0)  # the faintest sky pixel's variance
    for xk, yk, fk in zip(x, y, flux_values, strict=True):
        window = cutout_window(out_image.shape, xk, yk, half)
        if window is None:  # wholly off the image: nothing to add
            continue
        box = window.image
        expected = fk * np.clip(shiftable.at(xk - window.x, yk - window.y)[window.stamp], 0.0, None)
        counts = rng.poisson(expected).astype(np.float64) if poisson and fk > 0 else expected
        out_image[box] += counts.astype(np.float32)
        if poisson:
            out_variance[box] += expected.astype(np.float32)
            if fk < 0:  # a fading source takes away its own shot noise, never the sky's and read noise
                np.maximum(out_variance[box], floor, out=out_variance[box])
    return Injection(out_image, out_variance, x, y, flux_values, snr_values)


def match_catalogues(truth_xy: np.ndarray, detected_xy: np.ndarray, radius: float = 1.5) -> np.ndarray:
    """One-to-one match of detections to truth within ``radius`` px, closest pairs first.

    Parameters
    ----------
    truth_xy : numpy.ndarray
        ``(n, 2)`` true positions ``(x, y)``, px.
    detected_xy : numpy.ndarray
        ``(m, 2)`` detected positions ``(x, y)``, px, on the same grid.
    radius : float, default 1.5
        Largest match distance, px.

    Returns
    -------
    numpy.ndarray
        int array, one per truth entry: the index of its detection, or -1 when unmatched.
    """
    truth_xy = np.asarray(truth_xy, float).reshape(-1, 2)
    detected_xy = np.asarray(detected_xy, float).reshape(-1, 2)
    matched = np.full(len(truth_xy), -1, dtype=int)
    if len(truth_xy) == 0 or len(detected_xy) == 0:
        return matched
    pairs = cKDTree(truth_xy).sparse_distance_matrix(cKDTree(detected_xy), radius, output_type="ndarray")
    used = np.zeros(len(detected_xy), dtype=bool)
    for pair in np.sort(pairs, order="v"):
        truth_index, detected_index = int(pair["i"]), int(pair["j"])
        if matched[truth_index] < 0 and not used[detected_index]:
            matched[truth_index] = detected_index
            used[detected_index] = True
    return matched


def completeness(truth_snr: np.ndarray, recovered: np.ndarray, bins: np.ndarray | int = 10) -> Completeness:
    """Completeness (recovered fraction) per S/N bin and the S/N of 50 % completeness.

    Parameters
    ----------
    truth_snr : numpy.ndarray
        Injected S/N per source.
    recovered : numpy.ndarray of bool
        Bool per source (e.g. ``match_catalogues(...) >= 0``).
    bins : numpy.ndarray or int, default 10
        Bin edges in S/N, or a number of equal-width bins over the range.

    Returns
    -------
    Completeness
        Counts, fractions and errors per bin and ``snr_50``.
    """
    truth_snr = np.asarray(truth_snr, float)
    recovered = np.asarray(recovered, bool)
    edges = np.histogram_bin_edges(truth_snr, bins=bins)
    n_injected, _ = np.histogram(truth_snr, bins=edges)
    n_recovered, _ = np.histogram(truth_snr[recovered], bins=edges)
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(n_injected > 0, n_recovered / n_injected, np.nan)
        error = np.sqrt(np.clip(fraction * (1 - fraction), 0, None) / n_injected)
        error = np.maximum(error, 0.5 / n_injected)
    centres = 0.5 * (edges[:-1] + edges[1:])
    return Completeness(edges, centres, n_injected, n_recovered, fraction, error, _snr_at_half(centres, fraction))


def _snr_at_half(centres: np.ndarray, fraction: np.ndarray) -> float:
    valid = np.isfinite(fraction)
    c, f = centres[valid], fraction[valid]
    for k in range(1, c.size):
        if f[k - 1] < 0.5 <= f[k]:
            return float(c[k - 1] + (0.5 - f[k - 1]) * (c[k] - c[k - 1]) / (f[k] - f[k - 1]))
    return float("nan")


# --------------------------------------------------------------------------- a frame through the differencing


SNR_BINS = np.arange(3, 33, 3)


def summarise_completeness(snr: np.ndarray, recovered: np.ndarray, bins: np.ndarray = SNR_BINS) -> dict:
    """Completeness per S/N bin, the S/N of 50 % completeness and completeness at S/N ≥ 10.

    Parameters
    ----------
    snr : numpy.ndarray
        Expected S/N per fake.
    recovered : numpy.ndarray of bool
        Whether each fake was recovered.
    bins : numpy.ndarray, default SNR_BINS
        S/N bin edges.

    Returns
    -------
    dict
        ``bin_centres``, ``fraction`` (−1 for empty bins), ``n_injected`` (lists), ``snr_50`` and
        ``completeness_snr_ge_10`` (floats, NaN when undefined).
    """
    curve = completeness(snr, recovered, bins)
    bright = snr >= 10
    return {
        "bin_centres": curve.bin_centres.tolist(),
        "fraction": np.nan_to_num(curve.fraction, nan=-1).tolist(),
        "n_injected": curve.n_injected.tolist(),
        "snr_50": float(curve.snr_50),
        "completeness_snr_ge_10": float(recovered[bright].mean()) if bright.any() else float("nan"),
    }
