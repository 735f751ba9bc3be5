"""Rendering sources into an image in electrons at unit response.

Pixel-integrated Moffat stamps (optionally trailed), oversampled Moffat PSF kernels,
PSF-convolved elliptical Sérsic galaxy stamps, adding stamps into an image, and the
PSF-optimal S/N of each rendered source.  Positions are 0-based pixels, sizes pixels,
fluxes e-, noise variances e-² per pixel.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.signal import fftconvolve

from astrid_assets.science.psf.profiles import moffat_alpha, moffat_profile
from astrid_assets.testing.simulate.config import SurveyConfig

_STAMP_CHUNK_ELEMENTS = 3_000_000  # float64 elements per rendering chunk (memory bound)
_GALAXY_CHUNK = 16  # galaxies per FFT-convolution batch


def _subpixel_offsets(oversample: int) -> np.ndarray:
    return (np.arange(oversample) + 0.5) / oversample - 0.5


def _stamp_origin(position: np.ndarray, radius: int) -> np.ndarray:
    return np.floor(position + 0.5).astype(np.int64) - radius


def moffat_stamps(
    x: np.ndarray,
    y: np.ndarray,
    fwhm_px: float,
    beta: float,
    radius: int,
    oversample: int = 5,
    trail_dx: np.ndarray | None = None,
    trail_dy: np.ndarray | None = None,
    n_trail: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel-integrated unit-flux Moffat stamps centred on ``(x, y)`` (0-based pixels).

    Each stamp pixel holds the fraction of the source flux falling in that pixel, computed
    as the mean of the Moffat profile over ``oversample²`` sub-pixel points.  A trail
    ``(trail_dx, trail_dy)`` (pixels, centred on the position) is rendered as ``n_trail``
    equal sub-exposures along it.  Returns ``(stamps[n, S, S], y0[n], x0[n])`` where stamp
    pixel ``[j, i]`` is image pixel ``[y0 + j, x0 + i]`` and ``S = 2 radius + 1``.

    Parameters
    ----------
    x, y : numpy.ndarray
        Source centres, px (0-based, pixel centres at integers); the stamp's central pixel is
        the nearest pixel.
    fwhm_px : float
        Moffat FWHM before pixelisation, px.
    beta : float
        Moffat index β.
    radius : int
        Stamp half-size, px.
    oversample : int, default 5
        Sub-pixel points per axis.
    trail_dx, trail_dy : numpy.ndarray or None, default None
        Trail vector per source, px (None: no trail).
    n_trail : int, default 1
        Sub-exposures along the trail.

    Returns
    -------
    stamps : numpy.ndarray
        ``(n, S, S)`` float64 flux fractions (sum ≤ 1: wings beyond the stamp are lost).
    y0, x0 : numpy.ndarray
        int64 image row and column of each stamp's pixel ``[0, 0]``.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    trail_dx = np.zeros_like(x) if trail_dx is None else np.asarray(trail_dx, dtype=float)
    trail_dy = np.zeros_like(y) if trail_dy is None else np.asarray(trail_dy, dtype=float)
    alpha = moffat_alpha(fwhm_px, beta)
    size = 2 * radius + 1
    x0, y0 = _stamp_origin(x, radius), _stamp_origin(y, radius)
    grid = (np.arange(size)[:, None] + _subpixel_offsets(oversample)[None, :])[None]  # (1, S, os)
    stamps = np.zeros((x.size, size, size))
    for step in range(n_trail):
        shift = (step + 0.5) / n_trail - 0.5 if n_trail > 1 else 0.0
        dx = x0[:, None, None] + grid - (x + shift * trail_dx)[:, None, None]
        dy = y0[:, None, None] + grid - (y + shift * trail_dy)[:, None, None]
        r2 = dy[:, :, None, :, None] ** 2 + dx[:, None, :, None, :] ** 2
        stamps += moffat_profile(r2, alpha, beta).mean(axis=(3, 4))
    return stamps / n_trail, y0, x0


def psf_kernel(fwhm_px: float, beta: float, oversample: int, trail: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Moffat PSF (optionally trailed by ``trail = (dx, dy)`` pixels, as equal sub-exposures
    at most 0.5 pixel apart) sampled on a grid of spacing ``1/oversample`` pixel out to
    4 FWHM and normalised to unit sum (the ~0.3 % of the light beyond is folded in).

    Parameters
    ----------
    fwhm_px : float
        Moffat FWHM before pixelisation, px.
    beta : float
        Moffat index β.
    oversample : int
        Samples per pixel along each axis.
    trail : tuple of float, default (0.0, 0.0)
        Trail ``(dx, dy)``, px, centred on the source.

    Returns
    -------
    numpy.ndarray
        Odd square kernel on the fine grid (centre sample at the centre), unit sum, ``[y, x]``.
    """
    trail_length = float(np.hypot(*trail))
    half = int(np.ceil((4.0 * fwhm_px + 0.5 * trail_length) * oversample))
    offsets = np.arange(-half, half + 1) / oversample
    n_trail = int(np.ceil(2 * trail_length)) + 1 if trail_length else 1
    alpha = moffat_alpha(fwhm_px, beta)
    kernel = np.zeros((offsets.size, offsets.size))
    for step in range(n_trail):
        shift = (step + 0.5) / n_trail - 0.5 if n_trail > 1 else 0.0
        r2 = (offsets[:, None] - shift * trail[1]) ** 2 + (offsets[None, :] - shift * trail[0]) ** 2
        kernel += moffat_profile(r2, alpha, beta)
    return kernel / kernel.sum()


def sersic_b(n: np.ndarray) -> np.ndarray:
    """Sérsic b_n such that r_eff encloses half the light (Ciotti & Bertin 1999, A&A 352, 447).

    Their asymptotic expansion ``b_n ≈ 2n − 1/3 + 4/(405 n) + 46/(25515 n²)``.

    Parameters
    ----------
    n : numpy.ndarray
        Sérsic index (> 0).

    Returns
    -------
    numpy.ndarray
        ``b_n`` (dimensionless).
    """
    n = np.asarray(n, dtype=float)
    return 2.0 * n - 1.0 / 3.0 + 4.0 / (405.0 * n) + 46.0 / (25515.0 * n**2)


def galaxy_stamps(
    x: np.ndarray,
    y: np.ndarray,
    r_eff_px: np.ndarray,
    axis_ratio: np.ndarray,
    pa_deg: np.ndarray,
    sersic_n: np.ndarray,
    kernel: np.ndarray,
    radius: int,
    oversample: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit-flux elliptical Sérsic galaxies convolved with ``kernel`` (a :func:`psf_kernel`
    at the same ``oversample``), integrated over pixels.

    ``pa_deg`` is the major-axis angle counter-clockwise from the +x pixel axis.  The
    intrinsic profile is normalised to unit sum inside the stamp (flux beyond the stamp is
    folded back in); light convolved out of the stamp is lost (< 1 % for the stamp sizes
    used).  Returns stamps like :func:`moffat_stamps`.

    Parameters
    ----------
    x, y : numpy.ndarray
        Galaxy centres, px (0-based).
    r_eff_px : numpy.ndarray
        Half-light semi-major axis, px.
    axis_ratio : numpy.ndarray
        Minor / major axis ratio b/a.
    pa_deg : numpy.ndarray
        Major-axis angle, deg, counter-clockwise from +x.
    sersic_n : numpy.ndarray
        Sérsic index.
    kernel : numpy.ndarray
        Unit-sum PSF on the oversampled grid (:func:`psf_kernel`).
    radius : int
        Stamp half-size, px.
    oversample : int
        Sub-pixels per axis, as for ``kernel``.

    Returns
    -------
    stamps : numpy.ndarray
        ``(n, S, S)`` flux fractions per pixel, ``S = 2 radius + 1``.
    y0, x0 : numpy.ndarray
        Image row and column of each stamp's pixel ``[0, 0]``.
    """
    size = 2 * radius + 1
    x0, y0 = _stamp_origin(x, radius), _stamp_origin(y, radius)
    fine = (np.arange(size)[:, None] + _subpixel_offsets(oversample)[None, :]).ravel()[None]
    dx = (x0[:, None] + fine - x[:, None])[:, None, :]
    dy = (y0[:, None] + fine - y[:, None])[:, :, None]
    angle = np.deg2rad(pa_deg)[:, None, None]
    major = dx * np.cos(angle) + dy * np.sin(angle)
    minor = -dx * np.sin(angle) + dy * np.cos(angle)
    radius_ell = np.sqrt(major**2 + (minor / axis_ratio[:, None, None]) ** 2)
    n = sersic_n[:, None, None]
    intrinsic = np.exp(-sersic_b(n) * ((radius_ell / r_eff_px[:, None, None]) ** (1.0 / n) - 1.0))
    intrinsic /= intrinsic.sum(axis=(1, 2), keepdims=True)
    convolved = fftconvolve(intrinsic, kernel[None], mode="same", axes=(1, 2))
    stamps = convolved.reshape(x.size, size, oversample, size, oversample).sum(axis=(2, 4))
    return stamps, y0, x0


def add_stamps(image: np.ndarray, stamps: np.ndarray, y0: np.ndarray, x0: np.ndarray, flux: np.ndarray) -> None:
    """Add ``flux[k] * stamps[k]`` into ``image`` in place, clipping at the image edges.

    Parameters
    ----------
    image : numpy.ndarray
        Float image, e-, ``[y, x]``; modified in place.
    stamps : numpy.ndarray
        ``(n, S, S)`` flux fractions (:func:`moffat_stamps`, :func:`galaxy_stamps`).
    y0, x0 : numpy.ndarray
        Image row and column of each stamp's pixel ``[0, 0]`` (may lie off the image).
    flux : numpy.ndarray
        Flux per stamp, e-.

    Returns
    -------
    None
    """
    ny, nx = image.shape
    size = stamps.shape[1]
    rows = y0[:, None, None] + np.arange(size)[None, :, None]
    cols = x0[:, None, None] + np.arange(size)[None, None, :]
    inside = (rows >= 0) & (rows < ny) & (cols >= 0) & (cols < nx)
    values = stamps * np.asarray(flux, dtype=float)[:, None, None]
    index = np.broadcast_to(rows * nx + cols, stamps.shape)[inside]
    image += np.bincount(index, weights=values[inside], minlength=ny * nx).reshape(ny, nx)


def _optimal_snr(stamps: np.ndarray, flux: np.ndarray, response: np.ndarray, background: np.ndarray) -> np.ndarray:
    """PSF-optimal S/N ``F f sqrt(Σ p² / (F f p + B))`` per stamp (B e-²/pixel, f response)."""
    signal = (flux * response)[:, None, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = (flux * response) * np.sqrt(
            np.sum(stamps**2 / (signal * stamps + background[:, None, None]), axis=(1, 2))
        )
    return np.where(flux > 0, snr, 0.0)


def _chunks(count: int, per_item: int) -> list[slice]:
    step = max(1, _STAMP_CHUNK_ELEMENTS // max(per_item, 1))
    return [slice(start, min(start + step, count)) for start in range(0, count, step)]


def _render_point_sources(
    image: np.ndarray,
    table: pd.DataFrame,
    fwhm_px: float,
    response: np.ndarray,
    background: np.ndarray,
    config: SurveyConfig,
) -> np.ndarray:
    """Render the non-galaxy sources of ``table`` into ``image`` (e-, unit response).

    Stamps reach 5 FWHM (10 FWHM above 3e5 e-); the Moffat wings beyond are dropped
    (< 0.2 % of the flux for β = 3).  Returns each source's PSF-optimal S/N given its
    local flat ``response`` and per-pixel noise variance ``background`` (e-²).
    """
    snr = np.zeros(len(table))
    oversample = int(np.clip(np.ceil(12.0 / fwhm_px), 3, 8))
    trail_len = np.hypot(table.trail_dx.to_numpy(), table.trail_dy.to_numpy())
    radius_scale = np.where(table.flux.to_numpy() > 3e5, 10.0, 5.0)
    radii = np.ceil(radius_scale * fwhm_px + trail_len / 2).astype(int)
    n_trail = np.where(trail_len > 0, np.ceil(2 * trail_len).astype(int) + 1, 1)
    for (radius, steps), members in pd.Series(np.arange(len(table))).groupby([radii, n_trail]):
        index = members.to_numpy()
        size = 2 * int(radius) + 1
        for part in _chunks(index.size, size * size * oversample * oversample):
            rows = table.iloc[index[part]]
            stamps, y0, x0 = moffat_stamps(
                rows.x.to_numpy(),
                rows.y.to_numpy(),
                fwhm_px,
                config.moffat_beta,
                int(radius),
                oversample,
                rows.trail_dx.to_numpy(),
                rows.trail_dy.to_numpy(),
                int(steps),
            )
            flux = rows.flux.to_numpy(dtype=float)
            add_stamps(image, stamps, y0, x0, flux)
            snr[index[part]] = _optimal_snr(stamps, flux, response[index[part]], background[index[part]])
    return snr


def _render_galaxies(
    image: np.ndarray,
    table: pd.DataFrame,
    fwhm_px: float,
    rotation_deg: float,
    trail_px: tuple[float, float],
    response: np.ndarray,
    background: np.ndarray,
    config: SurveyConfig,
) -> np.ndarray:
    """Render the galaxies of ``table`` (Sérsic x PSF, oversampled 3x) into ``image``;
    returns their PSF-optimal S/N like :func:`_render_point_sources`."""
    snr = np.zeros(len(table))
    if table.empty:
        return snr
    oversample = 3
    kernel = psf_kernel(fwhm_px, config.moffat_beta, oversample, trail_px)
    r_eff_px = table.r_eff.to_numpy() / config.pixel_scale
    radii = np.ceil(5.0 * r_eff_px + 2.0 * fwhm_px + np.hypot(*trail_px) / 2).astype(int)
    order = np.argsort(radii, kind="stable")
    for start in range(0, order.size, _GALAXY_CHUNK):
        index = order[start : start + _GALAXY_CHUNK]
        rows = table.iloc[index]
        stamps, y0, x0 = galaxy_stamps(
            rows.x.to_numpy(),
            rows.y.to_numpy(),
            r_eff_px[index],
            rows.axis_ratio.to_numpy(),
            rows.pa_deg.to_numpy() + rotation_deg,
            rows.sersic_n.to_numpy(),
            kernel,
            int(radii[index].max()),
            oversample,
        )
        flux = rows.flux.to_numpy(dtype=float)
        add_stamps(image, stamps, y0, x0, flux)
        snr[index] = _optimal_snr(stamps, flux, response[index], background[index])
    return snr
