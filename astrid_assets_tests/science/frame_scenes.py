"""Small synthetic scenes for the calibration tests, independent of ``astrid_assets.testing.simulate``.

Stars are circular Gaussians integrated exactly over the pixels (``erf`` of the pixel edges) or
Moffat profiles averaged over a sub-pixel grid; the sky is flat; noise is Poisson in electrons
plus Gaussian read noise; cosmic rays are sharp hits (single pixels and short straight tracks,
charge shared by path length), added after the noise.  Pixel ``(x, y)`` is ``image[y, x]`` and
covers ``[x - 0.5, x + 0.5]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_dilation
from scipy.special import erf

from astrid_assets.science.calibration.masters import MasterCalibrations

SIGMA_PER_FWHM = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


@dataclass
class Scene:
    """Electrons (before any gain), with the truth: star positions, fluxes and peak S/N, the
    cosmic-ray charge per pixel, and the sky noise (e-)."""

    electrons: np.ndarray
    stars: np.ndarray
    cosmic: np.ndarray
    xs: np.ndarray
    ys: np.ndarray
    fluxes: np.ndarray
    peak_snr: np.ndarray
    sky_sigma: float
    fwhm: float


def gaussian_stars(shape, xs, ys, fluxes, fwhm) -> np.ndarray:
    """Pixel-integrated circular Gaussians (e-)."""
    sigma = fwhm * SIGMA_PER_FWHM
    image = np.zeros(shape)
    half = int(np.ceil(5 * sigma)) + 2
    ny, nx = shape
    for x, y, flux in zip(xs, ys, fluxes, strict=True):
        ix, iy = int(round(x)), int(round(y))
        x0, x1, y0, y1 = max(ix - half, 0), min(ix + half + 1, nx), max(iy - half, 0), min(iy + half + 1, ny)
        if x0 >= x1 or y0 >= y1:
            continue
        px = np.diff(0.5 * erf((np.arange(x0, x1 + 1) - 0.5 - x) / (np.sqrt(2) * sigma)))
        py = np.diff(0.5 * erf((np.arange(y0, y1 + 1) - 0.5 - y) / (np.sqrt(2) * sigma)))
        image[y0:y1, x0:x1] += flux * np.outer(py, px)
    return image


def moffat_stars(shape, xs, ys, fluxes, fwhm, beta, oversample=7, half=10) -> np.ndarray:
    """Circular Moffat profiles (e-), each pixel the mean over ``oversample²`` sub-pixel points."""
    alpha = fwhm / (2 * np.sqrt(2 ** (1 / beta) - 1))
    image = np.zeros(shape)
    ny, nx = shape
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5
    for x, y, flux in zip(xs, ys, fluxes, strict=True):
        ix, iy = int(round(x)), int(round(y))
        x0, x1, y0, y1 = max(ix - half, 0), min(ix + half + 1, nx), max(iy - half, 0), min(iy + half + 1, ny)
        gx = (np.arange(x0, x1)[:, None] + sub[None, :]).ravel() - x
        gy = (np.arange(y0, y1)[:, None] + sub[None, :]).ravel() - y
        r2 = gy[:, None] ** 2 + gx[None, :] ** 2
        profile = (beta - 1) / (np.pi * alpha**2) * (1 + r2 / alpha**2) ** (-beta)
        image[y0:y1, x0:x1] += flux * profile.reshape(y1 - y0, oversample, x1 - x0, oversample).mean(axis=(1, 3))
    return image


def cosmic_rays(shape, n, rng, low, high, margin=4) -> np.ndarray:
    """``n`` sharp hits (e-): a third single pixels, the rest straight tracks of 1-5 pixels length
    at random angles; total charge log-uniform in ``[low, high]``, shared by path length."""
    cosmic = np.zeros(shape)
    ny, nx = shape
    for _ in range(n):
        x, y = rng.uniform(margin, nx - margin), rng.uniform(margin, ny - margin)
        length = rng.choice([0, 0, 1, 2, 3, 5])
        charge = np.exp(rng.uniform(np.log(low), np.log(high)))
        if length == 0:
            cosmic[int(y), int(x)] += charge
            continue
        angle = rng.uniform(0, np.pi)
        t = np.linspace(0, length, int(length * 20) + 1)
        px = np.clip((x + t * np.cos(angle)).astype(int), 0, nx - 1)
        py = np.clip((y + t * np.sin(angle)).astype(int), 0, ny - 1)
        np.add.at(cosmic, (py, px), charge / len(t))
    return cosmic


def make_scene(
    fwhm: float,
    shape=(512, 512),
    n_stars=300,
    sky=300.0,
    read_noise=5.0,
    n_cosmic=200,
    seed=1,
    psf="gaussian",
    beta=3.0,
    flux_range=(10**2.3, 1e5),
) -> Scene:
    """A star field (e-) with sky, noise and cosmic rays of 10-300 sky sigma."""
    rng = np.random.default_rng(seed)
    xs, ys = rng.uniform(3, shape[1] - 3, n_stars), rng.uniform(3, shape[0] - 3, n_stars)
    fluxes = np.exp(rng.uniform(np.log(flux_range[0]), np.log(flux_range[1]), n_stars))
    if psf == "gaussian":
        stars = gaussian_stars(shape, xs, ys, fluxes, fwhm)
        peak_fraction = erf(0.5 / (np.sqrt(2) * fwhm * SIGMA_PER_FWHM)) ** 2
    else:
        stars = moffat_stars(shape, xs, ys, fluxes, fwhm, beta)
        peak_fraction = moffat_stars((9, 9), [4.0], [4.0], [1.0], fwhm, beta)[4, 4]
    sky_sigma = float(np.sqrt(sky + read_noise**2))
    cosmic = cosmic_rays(shape, n_cosmic, rng, 10 * sky_sigma, 300 * sky_sigma) if n_cosmic else np.zeros(shape)
    electrons = rng.poisson(sky + stars).astype(float) + rng.normal(0, read_noise, shape) + cosmic
    return Scene(electrons, stars, cosmic, xs, ys, fluxes, fluxes * peak_fraction / sky_sigma, sky_sigma, fwhm)


def star_cores(scene: Scene, min_snr: float = 20.0, clear_of_cosmics: int = 3) -> np.ndarray:
    """Pixels within 1 FWHM of the stars with peak S/N above ``min_snr``, leaving out pixels within
    ``clear_of_cosmics`` pixels of an injected hit (L.A.Cosmic rightly grows a hit into them)."""
    shape = scene.electrons.shape
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    core = np.zeros(shape, bool)
    reach = int(np.ceil(scene.fwhm)) + 1
    for x, y, snr in zip(scene.xs, scene.ys, scene.peak_snr, strict=True):
        if snr <= min_snr:
            continue
        ix, iy = int(round(x)), int(round(y))
        window = (slice(max(iy - reach, 0), iy + reach + 1), slice(max(ix - reach, 0), ix + reach + 1))
        core[window] |= (xx[window] - x) ** 2 + (yy[window] - y) ** 2 <= scene.fwhm**2
    return core & ~binary_dilation(scene.cosmic > 0, iterations=clear_of_cosmics)


def cosmic_scores(scene: Scene, cosmic_mask: np.ndarray) -> dict[str, float]:
    """``recall``: fraction of the pixels holding > 10 sky sigma of hit charge that are masked;
    ``core_masked``: fraction of :func:`star_cores` masked; ``masked_fraction`` of the frame."""
    hits = scene.cosmic > 10 * scene.sky_sigma
    cores = star_cores(scene)
    return {
        "recall": float((cosmic_mask & hits).sum() / hits.sum()),
        "core_masked": float((cosmic_mask & cores).sum() / cores.sum()),
        "masked_fraction": float(cosmic_mask.mean()),
        "hits": int(hits.sum()),
        "cores": int(cores.sum()),
    }


def identity_masters(shape) -> MasterCalibrations:
    """The calibrations of a frame reduced elsewhere (``defs.calibration.archive_reduced``)."""
    return MasterCalibrations(
        bias=np.zeros(shape, np.float32),
        dark=np.zeros(shape, np.float32),
        flat=np.ones(shape, np.float32),
        bad_pixels=np.zeros(shape, bool),
    )
