"""The sky of a :mod:`~astrid_assets.testing.skygen` cell: its parameters, its noise-free frames and the truth.

A :class:`Cell` fixes a detector, a pointing, a star/galaxy catalogue and 6-10 transients on a fixed TAN sky grid
(``_plan``), each science frame's observing conditions (PSF, sky, transparency, pointing, time), the noise-free
expected image of every frame (:func:`model_frame`) and the transients' fluxes, chosen for S/N 8-60 in every frame of
a night, with their truth rows. Pixels are 0-based, ``data[y, x]``, pixel ``i`` spanning ``[i - 0.5, i + 0.5]``;
fluxes are flat-corrected e- per exposure. Frame pixels ``p`` map to the sky grid by ``q = c + R(theta) (p - c) + s``
(``|s|`` <= 12 px, ``|theta|`` <= 0.3 deg). PSFs are normalised over their rendering stamp (>= 99.5 % of the light),
so a source's pixels sum to its flux. The camera (noise, calibration frames, headers) and the files:
:mod:`~astrid_assets.testing.skygen`.
"""

from __future__ import annotations

import zlib
from dataclasses import astuple, dataclass, fields
from datetime import date, timedelta
from functools import lru_cache

import numpy as np
import pandas as pd
from astropy import units
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS
from scipy.optimize import brentq
from scipy.signal import fftconvolve
from scipy.special import erf

__all__ = ["EDGE", "FIELD_NAMES", "RAW_FULL_WELL", "Cell", "catalog", "frame_table", "model_frame"]

FIELD_NAMES = ("NGC 2903 field", "M 66 field", "NGC 4565 field", "UGC 12158 field", "NGC 7331 field", "IC 342 field")
RAW_FULL_WELL = 61500.0  # ADU: where a raw pixel's charge saturates (full well / gain + bias)
EDGE = 45  # px from the sky-grid edge for transients: >= 30 px from every frame's edge
_GAUSS_LEGENDRE = {n: np.polynomial.legendre.leggauss(n) for n in (3, 5, 7)}  # nodes, weights on [-1, 1]


@dataclass(frozen=True)
class Cell:
    """One cell of the data matrix.

    Parameters
    ----------
    name : str
        Label, e.g. ``"gauss-1.3-raw-wcs"``; does not affect the data.
    psf, beta : {"gaussian", "moffat"}, float
        PSF family, and the Moffat index (2..5) when ``psf == "moffat"``.
    fwhm : float
        PSF FWHM in px before pixelisation (geometric mean of the axes); each frame jitters it by up to 10 %.
    state : {"raw", "reduced", "sky_subtracted"}
        ``raw``: uint16 ADU with bias, dark and flat response, plus bias/dark/flat frames each night;
        ``reduced``: calibrated float32 ADU with sky; ``sky_subtracted``: reduced minus a smooth background.
    wcs, gain_card, magzp : bool
        Write an exact TAN WCS (else no WCS cards); gain (e-/ADU), read-noise (e-) and saturation (ADU) cards
        (keywords rotate with the seed); ``MAGZP``, the magnitude giving 1 e-/s in that frame.
    first_night, n_nights, frames_per_night : str, int, int
        ``YYYY-MM-DD`` of the first (reference) night; consecutive nights; science frames per night.
    shape, seed : tuple of int, int
        ``(ny, nx)`` in px; seeds the sky and the header conventions
        (see :func:`~astrid_assets.testing.skygen.conventions`).
    n_stars, n_saturated, n_galaxies : int
        Stars (0: 150-300 drawn), saturated stars (-1: 3-6 drawn) and galaxies (-1: 5-10 drawn) instead of the draws.
    star_flux_min : float
        Faintest star flux in units of the S/N-5 flux (1: the power law from S/N ~ 5; e.g. 30 for a few bright stars).
    """

    name: str
    psf: str = "gaussian"
    beta: float = 3.0
    fwhm: float = 2.5
    state: str = "reduced"
    wcs: bool = True
    gain_card: bool = True
    magzp: bool = False
    first_night: str = "2015-03-10"
    n_nights: int = 4
    frames_per_night: int = 2
    shape: tuple[int, int] = (420, 560)
    seed: int = 0
    #: FWHM (px) of the first night's frames, which make the reference; None: ``fwhm``. Sharper later frames
    #: (``fwhm`` < ``reference_fwhm``) against a broader reference, as undersampled cameras on good nights give.
    reference_fwhm: float | None = None
    #: stars instead of the 150-300 drawn (0 keeps the draw): thousands make a crowded field
    n_stars: int = 0
    #: saturated stars instead of the 3-6 drawn (-1 keeps the draw)
    n_saturated: int = -1
    #: galaxies instead of the 5-10 drawn (-1 keeps the draw; the first two host transients)
    n_galaxies: int = -1
    #: faintest star flux in units of the S/N-5 flux (1 keeps the power law from S/N ~ 5): a cut-out of a few
    #: bright stars sets it high
    star_flux_min: float = 1.0
    #: drizzle-like correlated noise: footprint (px) of the area-overlap kernel that resamples each reduced frame,
    #: signal and noise (:func:`~astrid_assets.testing.skygen.drizzle_kernel`; 0: none). No cosmic rays then, as a
    #: drizzled stack rejects them.
    drizzle: float = 0.0
    #: raw cells: only the first this many nights get bias, dark and flat frames (0: every night); later nights'
    #: raw frames need the masters of an earlier night, as an observer who calibrates once a run provides
    calibration_nights: int = 0

#: Fields of the first release of :class:`Cell`: a field added later enters the seed only when it is not at its
#: default, so every cell written before it keeps its bytes.
_FIRST_FIELDS = 13


def _identity(cell: Cell) -> tuple:
    """What seeds a cell's random draws: the first-release fields but the name, then each later field changed."""
    later = fields(cell)[_FIRST_FIELDS:]
    return astuple(cell)[1:_FIRST_FIELDS] + tuple(
        (f.name, getattr(cell, f.name)) for f in later if getattr(cell, f.name) != f.default)


def _rng(cell: Cell, *key: int) -> np.random.Generator:
    digest = zlib.crc32(repr(_identity(cell)).encode())
    return np.random.default_rng(np.random.SeedSequence([cell.seed & 0xFFFFFFFF, digest], spawn_key=key))


def _cond(cell: Cell, fwhm_x: float, fwhm_y: float) -> dict:
    """PSF parameters: axis scales ``ax, ay`` (sigma or Moffat alpha, px) and the peak density (1/px^2)."""
    gauss = cell.psf == "gaussian"
    k = 2.0 * np.sqrt(2.0 * np.log(2.0)) if gauss else 2.0 * np.sqrt(2.0 ** (1.0 / cell.beta) - 1.0)
    ax, ay = fwhm_x / k, fwhm_y / k
    peak = 1.0 / (2 * np.pi * ax * ay) if gauss else (cell.beta - 1.0) / (np.pi * ax * ay)
    return {"psf": cell.psf, "beta": cell.beta, "fx": fwhm_x, "fy": fwhm_y, "ax": ax, "ay": ay, "peak": peak}


def _radius(cond: dict, flux: float) -> int:
    """Stamp half-size (px): >= 99.5 % of the light, and out to where the profile drops below 0.5 e-."""
    a, f, b = max(cond["ax"], cond["ay"]), max(cond["fx"], cond["fy"]), cond["beta"]
    level = max(flux * cond["peak"] / 0.5, 1.0)
    if cond["psf"] == "gaussian":
        r_min, r_flux = 3.0 * f + 2.0, a * np.sqrt(2.0 * np.log(level))
    else:
        r_min = max(3.0 * f, a * np.sqrt(0.005 ** (1.0 / (1.0 - b)) - 1.0)) + 2.0
        r_flux = a * np.sqrt(level ** (1.0 / b) - 1.0)
    return int(np.ceil(min(max(r_min, r_flux), 150.0)))


def _stamp(cond: dict, x: float, y: float, r: int) -> tuple[int, int, np.ndarray]:
    """Pixel-integrated PSF at ``(x, y)``: first row, first column and values (sum 1) of a ``2 r + 1`` stamp.

    Gaussian: exact (erf at the pixel edges; ellipse axes along the pixel axes). Moffat: an n x n Gauss-Legendre
    rule per pixel in the core (n = 7 below 2 px FWHM, 5 below 4 px, else 3), pixel centres in the wings.
    """
    ix, iy, off = int(round(x)), int(round(y)), np.arange(-r, r + 1)
    dx, dy = ix + off - x, iy + off - y
    ax, ay = cond["ax"], cond["ay"]
    if cond["psf"] == "gaussian":
        def band(d, s):
            return erf((d + 0.5) / (np.sqrt(2.0) * s)) - erf((d - 0.5) / (np.sqrt(2.0) * s))
        st = np.outer(band(dy, ay), band(dx, ax))
    else:
        def moffat(u, v):
            return (1.0 + (u / ax) ** 2 + (v / ay) ** 2) ** -cond["beta"]
        st = moffat(dx[None, :], dy[:, None])
        n = 7 if (f := np.sqrt(cond["fx"] * cond["fy"])) < 2 else 5 if f < 4 else 3
        rc = min(r, int(np.ceil(2 * max(cond["fx"], cond["fy"]))) + 2)
        t, w = _GAUSS_LEGENDRE[n]
        core = slice(r - rc, r + rc + 1)
        cu, cv = (dx[core, None] + t / 2).ravel(), (dy[core, None] + t / 2).ravel()
        sub = moffat(cu[None, :], cv[:, None]).reshape(2 * rc + 1, n, 2 * rc + 1, n)
        st[core, core] = np.einsum("aibj,i,j->ab", sub, w / 2, w / 2)
    return iy - r, ix - r, st / st.sum()


def _window(shape, iy0: int, ix0: int, st: np.ndarray):
    """Overlap of a stamp with the image: (image slices, stamp slices), or None."""
    y0, x0 = max(iy0, 0), max(ix0, 0)
    y1, x1 = min(iy0 + st.shape[0], shape[0]), min(ix0 + st.shape[1], shape[1])
    return None if y0 >= y1 or x0 >= x1 else ((slice(y0, y1), slice(x0, x1)),
                                               (slice(y0 - iy0, y1 - iy0), slice(x0 - ix0, x1 - ix0)))


def _add(img: np.ndarray, iy0: int, ix0: int, st: np.ndarray, scale: float) -> None:
    if (win := _window(img.shape, iy0, ix0, st)) is not None:
        img[win[0]] += scale * st[win[1]]


def _wcs_cards(p: dict, p0, cd: np.ndarray) -> dict:
    """TAN WCS cards about the field centre, with 0-based reference pixel ``p0`` and CD matrix (deg/px)."""
    return {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CUNIT1": "deg", "CUNIT2": "deg", "CRVAL1": p["ra0"],
            "CRVAL2": p["dec0"], "CRPIX1": p0[0] + 1.0, "CRPIX2": p0[1] + 1.0, "RADESYS": "ICRS", "EQUINOX": 2000.0,
            **{f"CD{i + 1}_{k + 1}": cd[i, k] for i in range(2) for k in range(2)}}


@lru_cache(maxsize=16)
def _plan(cell: Cell) -> dict:
    """Everything static in a cell: detector, pointing centre, star/galaxy/transient catalogue in sky-grid px."""
    if cell.psf not in ("gaussian", "moffat") or cell.state not in ("raw", "reduced", "sky_subtracted"):
        raise ValueError(f"unknown psf {cell.psf!r} or state {cell.state!r}")
    if cell.drizzle > 0 and cell.state == "raw":
        raise ValueError("a raw frame is not drizzled: drizzle needs state 'reduced' or 'sky_subtracted'")
    rng, (ny, nx) = _rng(cell, 0), cell.shape
    p = {"gain": round(rng.uniform(1.2, 3.0), 3), "rn": round(rng.uniform(4.0, 10.0), 2),
         "bias": rng.uniform(400.0, 1100.0), "exptime": float(rng.choice([60, 90, 120, 180, 300])),
         "ra0": rng.uniform(10.0, 350.0), "dec0": rng.uniform(-25.0, 65.0), "scale": rng.choice([0.62, 0.81, 1.17]),
         "angle": np.radians(rng.uniform(-3.0, 3.0)), "zp0": rng.uniform(22.3, 24.3),
         "object": str(rng.choice(FIELD_NAMES)), "c": ((nx - 1) / 2.0, (ny - 1) / 2.0)}
    p["full_well"] = (RAW_FULL_WELL - p["bias"]) * p["gain"]
    p["bias_cols"] = p["bias"] + rng.normal(0.0, 2.0, nx) + rng.uniform(-4, 4) * (np.arange(nx) / nx - 0.5)
    p["dark"] = dark = np.full(cell.shape, rng.uniform(0.005, 0.03))  # e-/s/px, with hot pixels
    hot = rng.random(cell.shape) < 3e-4
    dark[hot] = np.exp(rng.uniform(np.log(0.5), np.log(20.0), hot.sum()))
    yy, xx = np.mgrid[0:ny, 0:nx]
    r2 = ((xx - nx / 2 - rng.uniform(-20, 20)) ** 2 + (yy - ny / 2 - rng.uniform(-20, 20)) ** 2) / (nx**2 + ny**2)
    p["flat"] = (1.05 - 0.4 * r2) * (1.0 + 0.01 * rng.standard_normal(cell.shape))
    ca, sa = np.cos(p["angle"]), np.sin(p["angle"])
    p["cd"] = p["scale"] / 3600.0 * np.array([[-ca, sa], [sa, ca]])
    p["wcs"] = WCS(fits.Header(list(_wcs_cards(p, p["c"], p["cd"]).items())))
    # Faintest stars near S/N 5 on a 1000 e- sky with the nominal PSF; power law N(>F) ~ F^-0.75 up to 2e5 e-.
    nominal = _cond(cell, cell.fwhm, cell.fwhm)
    st = _stamp(nominal, 0.0, 0.0, _radius(nominal, 1.0))[2]
    p["f_min"] = f_min = 5.0 * np.sqrt((1000.0 + p["rn"] ** 2) / np.sum(st**2))
    n_star, n_sat, m, a = int(rng.integers(150, 301)), int(rng.integers(3, 6)), 20.0, 0.75
    n_star, n_sat = cell.n_stars or n_star, n_sat if cell.n_saturated < 0 else cell.n_saturated
    low = f_min * cell.star_flux_min
    flux = low * (1.0 - rng.random(n_star) * (1.0 - (2e5 / low) ** -a)) ** (-1.0 / a)
    sat = rng.uniform(2.0, 6.0, n_sat) * p["full_well"] / st.max()
    p["stars"] = np.column_stack([
        np.concatenate([rng.uniform(-m, nx - 1 + m, n_star), rng.uniform(m, nx - 1 - m, n_sat)]),
        np.concatenate([rng.uniform(-m, ny - 1 + m, n_star), rng.uniform(m, ny - 1 - m, n_sat)]),
        np.concatenate([flux, sat])])  # u, v (px), flux (e- at transparency 1)
    n_gal = int(rng.integers(5, 11))  # the first two well inside and apart (left, right half): transient hosts
    n_gal = n_gal if cell.n_galaxies < 0 else cell.n_galaxies
    k, inner = np.arange(n_gal), np.arange(n_gal) < 2
    gu = np.where(inner, 60 + (nx - 121) * (k + rng.uniform(0.1, 0.9, n_gal)) / 2, rng.uniform(0, nx - 1, n_gal))
    gv = np.where(inner, rng.uniform(60, ny - 61, n_gal), rng.uniform(0, ny - 1, n_gal))
    p["galaxies"] = np.column_stack([gu, gv, np.exp(rng.uniform(np.log(2e4), np.log(2e5), n_gal)),
                                     rng.uniform(2.0, 4.5, n_gal), rng.uniform(0.35, 0.9, n_gal),
                                     rng.uniform(0, np.pi, n_gal)])  # u, v, flux, h (px), axis ratio, PA (rad)
    p["transients"] = _place_transients(rng, cell, p)
    return p


def _place_transients(rng: np.random.Generator, cell: Cell, p: dict) -> np.ndarray:
    """6-10 transient positions (u, v, on_galaxy): 1-2 on galaxies, the rest clear of stars and galaxies."""
    (ny, nx), n_t, n_host = cell.shape, int(rng.integers(6, 11)), int(rng.integers(1, 3))
    out = []
    for gu, gv, _, h, _q, pa in p["galaxies"][:n_host]:
        d = rng.uniform(0.3, 1.2) * h * rng.choice([-1.0, 1.0])
        out.append((gu + d * np.cos(pa), gv + d * np.sin(pa), 1.0))
    stars, gal = p["stars"], p["galaxies"]
    bright, saturated = stars[:, 2] > 10 * p["f_min"], stars[:, 2] > 2e5
    for _ in range(20000):
        u, v = rng.uniform(EDGE, nx - 1 - EDGE), rng.uniform(EDGE, ny - 1 - EDGE)
        d_star, d_gal = np.hypot(stars[:, 0] - u, stars[:, 1] - v), np.hypot(gal[:, 0] - u, gal[:, 1] - v)
        d_tr = np.hypot(*(np.array(out).reshape(-1, 3)[:, :2] - (u, v)).T)
        if (np.all(d_star[bright] >= max(8.0, 2.5 * cell.fwhm)) and np.all(d_star[saturated] >= max(30, 8 * cell.fwhm))
                and np.all(d_gal >= 7 * gal[:, 3] + 2 * cell.fwhm) and np.all(d_tr >= max(20.0, 5 * cell.fwhm))):
            out.append((u, v, 0.0))
            if len(out) >= n_t:
                break
    return np.array(out)


def _night_date(cell: Cell, n: int) -> str:
    return (date.fromisoformat(cell.first_night) + timedelta(days=n)).isoformat()


def _conditions(cell: Cell, n: int, j: int) -> dict:
    """Observing conditions of science frame ``j`` of night ``n`` (PSF, sky, transparency, pointing, time)."""
    p, night = _plan(cell), _night_date(cell, n)
    rn = _rng(cell, 1, n)
    night_sky, night_t, start = np.exp(rn.uniform(np.log(250), np.log(1800))), rn.uniform(0.8, 1.0), rn.uniform(0, 60)
    rf = _rng(cell, 2, n, j)
    nominal_fwhm = cell.reference_fwhm if n == 0 and cell.reference_fwhm is not None else cell.fwhm
    f, q = nominal_fwhm * rf.uniform(0.9, 1.1), rf.uniform(1.0, 1.1)
    fx, fy = (f * np.sqrt(q), f / np.sqrt(q)) if rf.random() < 0.5 else (f / np.sqrt(q), f * np.sqrt(q))
    c = _cond(cell, fx, fy)
    t = Time(f"{night}T02:00:00", scale="utc") + (start * 60.0 + j * (p["exptime"] + 40.0)) * units.s
    c.update(night=night, n=n, j=j, fwhm=f, sky=night_sky * rf.uniform(0.9, 1.1), grad=rf.uniform(-0.02, 0.02, 2),
             transparency=night_t * rf.uniform(0.98, 1.0), shift=rf.uniform(-12.0, 12.0, 2),
             theta=np.radians(rf.uniform(-0.3, 0.3)), time=t,
             file=f"{p['object'].replace(' field', '').replace(' ', '')}_{night.replace('-', '')}_{j + 1:03d}.fits")
    c["magzp"] = p["zp0"] + 2.5 * np.log10(c["transparency"])
    return c


def _to_frame(cell: Cell, c: dict, u, v):
    """Sky-grid px (u, v) -> frame px (x, y)."""
    cx, cy = _plan(cell)["c"]
    ct, st = np.cos(c["theta"]), np.sin(c["theta"])
    du, dv = np.asarray(u) - cx - c["shift"][0], np.asarray(v) - cy - c["shift"][1]
    return cx + ct * du + st * dv, cy - st * du + ct * dv


def frame_table(cell: Cell) -> pd.DataFrame:
    """Conditions of every science frame: night, file, frame_index, date_obs (ISO UTC), exptime (s), fwhm,
    fwhm_x, fwhm_y (px), sky (e-/px), transparency, shift_x, shift_y (px), rotation (deg), magzp (mag)."""
    cs = [_conditions(cell, n, j) for n in range(cell.n_nights) for j in range(cell.frames_per_night)]
    return pd.DataFrame([{"night": c["night"], "file": c["file"], "frame_index": c["j"], "date_obs": c["time"].isot,
                          "exptime": _plan(cell)["exptime"], "fwhm": c["fwhm"], "fwhm_x": c["fx"], "fwhm_y": c["fy"],
                          "sky": c["sky"], "transparency": c["transparency"], "shift_x": c["shift"][0],
                          "shift_y": c["shift"][1], "rotation": np.degrees(c["theta"]), "magzp": c["magzp"]}
                         for c in cs])


def catalog(cell: Cell, night_index: int, frame_index: int) -> pd.DataFrame:
    """Static sources of one science frame: kind ("star"/"galaxy"), x, y (px of that frame), ra, dec (deg),
    flux (e- in that exposure), h (exponential scale length, px; 0 for stars)."""
    p, c = _plan(cell), _conditions(cell, night_index, frame_index)
    s, g = p["stars"], p["galaxies"]
    u, v, f = np.concatenate([s[:, :3], g[:, :3]]).T
    (x, y), (ra, dec) = _to_frame(cell, c, u, v), p["wcs"].wcs_pix2world(u, v, 0)
    return pd.DataFrame({"kind": ["star"] * len(s) + ["galaxy"] * len(g), "x": x, "y": y, "ra": ra, "dec": dec,
                         "flux": f * c["transparency"], "h": np.r_[np.zeros(len(s)), g[:, 3]]})


def _static(cell: Cell, c: dict) -> np.ndarray:
    """Noise-free expected e- per pixel (flat-corrected) of the static sky in frame ``c``."""
    p, (ny, nx), (cx, cy) = _plan(cell), cell.shape, _plan(cell)["c"]
    img = c["sky"] * (1.0 + c["grad"][0] * (np.arange(nx)[None, :] - cx) / nx
                      + c["grad"][1] * (np.arange(ny)[:, None] - cy) / ny)
    xs, ys = _to_frame(cell, c, p["stars"][:, 0], p["stars"][:, 1])
    for x, y, f in zip(xs, ys, p["stars"][:, 2] * c["transparency"], strict=True):
        if -(r := _radius(c, f)) <= x <= nx - 1 + r and -r <= y <= ny - 1 + r:
            _add(img, *_stamp(c, x, y, r), f)
    g, rp = p["galaxies"], _radius(c, 1e4)
    gx, gy, psf = *_to_frame(cell, c, g[:, 0], g[:, 1]), _stamp(c, 0.0, 0.0, rp)[2]
    for x, y, (_, _, f, h, q, pa) in zip(gx, gy, g, strict=True):  # exponential discs, 3x3 subsampled, * PSF
        r, o, ix, iy = int(np.ceil(7 * h)), 3, int(round(x)), int(round(y))
        sub = (np.arange((2 * r + 1) * o) + 0.5) / o - 0.5 - r
        du, dv = (ix + sub - x)[None, :], (iy + sub - y)[:, None]
        ang = pa - c["theta"]
        xr, yr = du * np.cos(ang) + dv * np.sin(ang), -du * np.sin(ang) + dv * np.cos(ang)
        prof = np.exp(-np.sqrt(xr**2 + (yr / q) ** 2) / h).reshape(2 * r + 1, o, 2 * r + 1, o).mean(axis=(1, 3))
        conv = np.clip(fftconvolve(prof / prof.sum(), psf), 0.0, None)
        _add(img, iy - r - rp, ix - r - rp, conv / conv.sum(), f * c["transparency"])
    return img


def _snr(cell: Cell, flux: float, st: np.ndarray, win, model: np.ndarray, included: bool = False) -> float:
    """PSF-optimal S/N, flux * sqrt(sum P^2 / var): var from sky, sources (``model``, e-, which already holds this
    source if ``included``), dark and read noise, in flat-corrected e-."""
    p, P, m, raw = _plan(cell), st[win[1]], model[win[0]], cell.state == "raw"
    fl, dark = (p["flat"][win[0]], p["dark"][win[0]] * p["exptime"]) if raw else (1.0, 0.0)
    var = ((m + (0.0 if included else flux) * P) * fl + dark + p["rn"] ** 2) / fl**2
    return float(flux * np.sqrt(np.sum(P**2 / var)))


@lru_cache(maxsize=4)
def _night(cell: Cell, n: int) -> tuple:
    """Frames of night ``n``: (conditions, expected e- image with transients, static image, truth rows)."""
    p, tr, frames = _plan(cell), _plan(cell)["transients"], []
    for j in range(cell.frames_per_night):
        c = _conditions(cell, n, j)
        tx, ty = _to_frame(cell, c, tr[:, 0], tr[:, 1])
        stamps = [_stamp(c, x, y, _radius(c, 3e4)) for x, y in zip(tx, ty, strict=True)]
        frames.append((c, _static(cell, c), tx, ty, stamps))
    if n == 0:
        return tuple((c, static, static, []) for c, static, *_ in frames)
    ra, dec = p["wcs"].wcs_pix2world(tr[:, 0], tr[:, 1], 0)
    target = np.exp(_rng(cell, 5, n).uniform(np.log(8.0), np.log(60.0), len(tr)))

    def solve(c, static, st, s):  # flux at transparency 1 (e-) giving S/N s in this frame
        win = _window(static.shape, *st)
        return np.exp(brentq(lambda lf: _snr(cell, np.exp(lf) * c["transparency"], st[2], win, static) - s,
                             0.0, 25.0, xtol=1e-6)) if win else np.nan

    fluxes = []  # per transient: flux at transparency 1 (e-), the same all night, S/N in [8, 60] in every frame
    for k in range(len(tr)):
        per = [[solve(c, static, stamps[k], s) for s in (8.0, target[k], 60.0)] for c, static, _, _, stamps in frames]
        lo, mid, hi = np.max([q[0] for q in per]), per[0][1], np.min([q[2] for q in per])
        fluxes.append(np.clip(mid, lo * 1.01, hi * 0.99) if lo < hi else np.sqrt(lo * hi))
    out = []
    for c, static, tx, ty, stamps in frames:
        model = static.copy()
        for st, f in zip(stamps, fluxes, strict=True):
            _add(model, *st, f * c["transparency"])
        fs = np.multiply(fluxes, c["transparency"])
        rows = [{"night": c["night"], "file": c["file"], "frame_index": c["j"], "x": float(tx[k]), "y": float(ty[k]),
                 "ra": float(ra[k]), "dec": float(dec[k]), "flux": float(f), "kind": "transient", "transient_id": k,
                 "snr": _snr(cell, f, st[2], _window(model.shape, *st), model, included=True),  # >= 30 px inside
                 "on_galaxy": bool(tr[k, 2])} for k, (st, f) in enumerate(zip(stamps, fs, strict=True))]
        out.append((c, model, static, rows))
    return tuple(out)


def model_frame(cell: Cell, night_index: int, frame_index: int, transients: bool = True) -> np.ndarray:
    """Noise-free expected image (flat-corrected e-/px, sky included) of science frame ``frame_index`` (0-based,
    within the night) of night ``night_index``; with or without the transients (none on night 0)."""
    _, model, static, _ = _night(cell, night_index)[frame_index]
    return (model if transients else static).copy()
