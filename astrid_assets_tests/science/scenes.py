"""Synthetic star fields for the differencing tests: known PSFs, sky, Poisson and read noise.

Everything is made here with numpy so the tests do not depend on the simulated survey.
Images are in electrons with the sky NOT subtracted, as calibrated frames arrive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from astrid_assets.science.psf.profiles import render_psf

STAMP = 31  #: side of the stamp used to render a star, pixels


@dataclass
class Frame:
    """A synthetic calibrated frame and what went into it."""

    image: np.ndarray  #: e-, sky included
    variance: np.ndarray  #: e-², read noise² + sky + source (from the data, as calibration does)
    background: float  #: sky level, e-
    background_rms: float  #: sky noise, e-
    mask: np.ndarray  #: uint16, all clear
    fwhm: float
    profile: str


def star_positions(
    shape: tuple[int, int], n: int, rng: np.random.Generator, margin: int = 20, min_separation: float = 18.0
) -> tuple[np.ndarray, np.ndarray]:
    """Random positions at least ``min_separation`` px apart and ``margin`` px from the edges."""
    xs: list[float] = []
    ys: list[float] = []
    tries = 0
    while len(xs) < n and tries < 200 * n:
        tries += 1
        x = rng.uniform(margin, shape[1] - 1 - margin)
        y = rng.uniform(margin, shape[0] - 1 - margin)
        if xs and np.min(np.hypot(np.asarray(xs) - x, np.asarray(ys) - y)) < min_separation:
            continue
        xs.append(x)
        ys.append(y)
    return np.asarray(xs), np.asarray(ys)


def render_stars(
    shape: tuple[int, int],
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    fwhm: float | np.ndarray,
    profile: str = "moffat",
    beta: float = 3.0,
) -> np.ndarray:
    """Noise-free image of point sources (flux in e- inside a 31-px stamp); ``fwhm`` px, one or one per star."""
    model = np.zeros(shape, dtype=np.float64)
    half = STAMP // 2
    widths = np.broadcast_to(np.asarray(fwhm, dtype=np.float64), np.shape(x))
    for xk, yk, fk, wk in zip(x, y, flux, widths, strict=True):
        ic, jc = int(np.rint(xk)), int(np.rint(yk))
        stamp = fk * render_psf(float(wk), STAMP, profile, beta, offset=(xk - ic, yk - jc))
        y0, y1 = jc - half, jc + half + 1
        x0, x1 = ic - half, ic + half + 1
        sy0, sx0 = max(0, -y0), max(0, -x0)
        sy1 = STAMP - max(0, y1 - shape[0])
        sx1 = STAMP - max(0, x1 - shape[1])
        model[max(y0, 0) : min(y1, shape[0]), max(x0, 0) : min(x1, shape[1])] += stamp[sy0:sy1, sx0:sx1]
    return model


def observe(
    model: np.ndarray, sky: float, read_noise: float, rng: np.random.Generator, fwhm: float, profile: str = "moffat"
) -> Frame:
    """Poisson(sky + model) + Gaussian read noise, with its variance map and an empty mask."""
    expected = sky + model
    image = rng.poisson(expected).astype(np.float64) + rng.normal(0.0, read_noise, model.shape)
    variance = read_noise**2 + sky + np.clip(image - sky, 0.0, None)
    return Frame(
        image=image.astype(np.float32),
        variance=variance.astype(np.float32),
        background=float(sky),
        background_rms=float(np.sqrt(sky + read_noise**2)),
        mask=np.zeros(model.shape, dtype=np.uint16),
        fwhm=fwhm,
        profile=profile,
    )


@dataclass
class Pair:
    """A new / reference pair on the same pixel grid with the same static stars."""

    new: Frame
    ref: Frame
    star_x: np.ndarray
    star_y: np.ndarray
    star_flux: np.ndarray


def make_pair(
    shape: tuple[int, int] = (512, 512),
    new_fwhm: float = 2.5,
    ref_fwhm: float = 4.0,
    n_stars: int = 80,
    flux_range: tuple[float, float] = (3e3, 3e5),
    new_sky: float = 400.0,
    ref_sky: float = 100.0,
    read_noise: float = 5.0,
    ref_read_noise: float | None = None,
    seed: int = 1,
    profile: str = "moffat",
    flux_ratio: float = 1.0,
    new_model_extra: np.ndarray | None = None,
    ref_model_extra: np.ndarray | None = None,
) -> Pair:
    """Static stars (log-uniform fluxes, in reference e-) seen through two different PSFs.

    ``flux_ratio`` = F_n / F_r multiplies the star fluxes in the new image. The reference has
    a lower sky (it stands for a deep co-add scaled to one exposure) so it is the deeper image.
    """
    rng = np.random.default_rng(seed)
    x, y = star_positions(shape, n_stars, rng)
    flux = np.exp(rng.uniform(np.log(flux_range[0]), np.log(flux_range[1]), x.size))
    new_model = render_stars(shape, x, y, flux * flux_ratio, new_fwhm, profile)
    ref_model = render_stars(shape, x, y, flux, ref_fwhm, profile)
    if new_model_extra is not None:
        new_model = new_model + new_model_extra
    if ref_model_extra is not None:
        ref_model = ref_model + ref_model_extra
    new = observe(new_model, new_sky, read_noise, rng, new_fwhm, profile)
    ref_noise = read_noise if ref_read_noise is None else ref_read_noise
    ref = observe(ref_model, ref_sky, ref_noise, rng, ref_fwhm, profile)
    return Pair(new=new, ref=ref, star_x=x, star_y=y, star_flux=flux)


def tan_wcs(
    shape: tuple[int, int],
    ra: float = 150.0,
    dec: float = 2.0,
    scale_arcsec: float = 1.0,
    rotation_deg: float = 0.0,
    crpix_shift: tuple[float, float] = (0.0, 0.0),
):
    """A TAN WCS with the tangent point ``(ra, dec)`` at the grid centre (+ ``crpix_shift`` px)."""
    from astropy.wcs import WCS

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    # FITS CRPIX is 1-based: the grid centre (n - 1) / 2 in 0-based pixels is (n + 1) / 2.
    wcs.wcs.crpix = [(shape[1] + 1) / 2 + crpix_shift[0], (shape[0] + 1) / 2 + crpix_shift[1]]
    theta = np.deg2rad(rotation_deg)
    scale = scale_arcsec / 3600.0
    wcs.wcs.cd = scale * np.array([[-np.cos(theta), np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    wcs.pixel_shape = (shape[1], shape[0])
    return wcs


@dataclass
class VaryingPair:
    """A pair whose new frame's PSF widens from left to right, with faint transients in the new frame."""

    pair: Pair  #: the static stars and both frames (the new one carries the transients)
    transient_x: np.ndarray  #: px
    transient_y: np.ndarray  #: px
    transient_flux: float  #: e- in the new frame
    new_fwhm: tuple[float, float]  #: FWHM at x = 0 and at the right edge, px
    without_transients: np.ndarray  #: the new frame's image with the same noise and no transients, e-


def make_varying_pair(
    shape: tuple[int, int] = (512, 512),
    new_fwhm: tuple[float, float] = (3.0, 4.5),
    ref_fwhm: float | tuple[float, float] = 3.5,
    n_stars: int = 110,
    flux_range: tuple[float, float] = (3e3, 3e5),
    n_transients: int = 36,
    transient_flux: float = 1500.0,
    seed: int = 12,
) -> VaryingPair:
    """Static Moffat (β = 3) stars, new-frame FWHM linear in x from ``new_fwhm[0]`` to ``new_fwhm[1]``.

    The reference has one FWHM everywhere (or, given two, varies like the new frame).
    Transients (``transient_flux`` e-, in the new frame
    only, at the local FWHM) lie at least 25 px from every star and 30 px from the edges, spread
    evenly over the left, middle and right thirds. Skies 400 / 100 e-, read noise 5 e-.
    ``without_transients`` is the new frame with the same noise draw and no transients, so a
    transient's flux can be measured free of the noise (the difference of the two results).
    """
    rng = np.random.default_rng(seed)
    x, y = star_positions(shape, n_stars, rng)
    flux = np.exp(rng.uniform(np.log(flux_range[0]), np.log(flux_range[1]), x.size))

    def width(xs: np.ndarray, ends: tuple[float, float] = new_fwhm) -> np.ndarray:
        return ends[0] + (ends[1] - ends[0]) * np.asarray(xs) / (shape[1] - 1)

    tx: list[float] = []
    ty: list[float] = []
    per_third = n_transients // 3
    for third in range(3):
        lo, hi = max(30.0, third * shape[1] / 3 + 8), min(shape[1] - 31.0, (third + 1) * shape[1] / 3 - 8)
        count = 0
        while count < per_third:
            px, py = rng.uniform(lo, hi), rng.uniform(30.0, shape[0] - 31.0)
            near_star = np.min(np.hypot(x - px, y - py)) < 25
            if near_star or (tx and np.min(np.hypot(np.subtract(tx, px), np.subtract(ty, py))) < 20):
                continue
            tx.append(px)
            ty.append(py)
            count += 1
    tx_a, ty_a = np.asarray(tx), np.asarray(ty)
    new_model = render_stars(shape, x, y, flux, width(x))
    transients = render_stars(shape, tx_a, ty_a, np.full(tx_a.size, transient_flux), width(tx_a))
    new = observe(new_model, 400.0, 5.0, rng, float(np.mean(new_fwhm)))
    ref_width = width(x, ref_fwhm) if isinstance(ref_fwhm, tuple) else ref_fwhm
    ref = observe(render_stars(shape, x, y, flux, ref_width), 100.0, 5.0, rng, float(np.mean(ref_fwhm)))
    plain = new.image.copy()
    new.image = (new.image + transients).astype(np.float32)
    new.variance = (new.variance + transients).astype(np.float32)
    return VaryingPair(Pair(new, ref, x, y, flux), tx_a, ty_a, transient_flux, new_fwhm, plain)
