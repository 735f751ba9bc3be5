"""An independent synthetic sky: FITS drop folders with known transients, to test AstrID on data it did not make.

Written from scratch (numpy/scipy/astropy), sharing nothing with the pipeline's simulator: a :class:`Cell` becomes
``<root>/<YYYY-MM-DD>/*.fits``; :func:`write_drop` returns the truth. The cell's sky, its noise-free frames, the pixel
and flux conventions and the truth: :mod:`~astrid_assets.testing.skymodel`; here the camera exposes them (Poisson
noise, cosmic rays, full well, read noise; raw frames with bias, dark and flat response, or reduced ones, drizzled or
sky-subtracted), into images in ADU (e- / gain) with headers whose conventions rotate with the seed, and the named
cells that cover every axis.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from astropy import units
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.stats import sigma_clipped_stats
from astropy.time import Time
from scipy import ndimage
from scipy.interpolate import RectBivariateSpline

from astrid_assets.testing.skymodel import Cell, _night, _night_date, _plan, _rng, _wcs_cards

__all__ = [
    "ARCHIVAL_CELL",
    "BIAS_TYPES",
    "COVERING_CELLS",
    "DARK_TYPES",
    "FLAT_TYPES",
    "GAIN_KEYS",
    "RAW_SATURATE",
    "SCIENCE_TYPES",
    "TIME_CARDS",
    "Cell",
    "conventions",
    "drizzle_kernel",
    "write_drop",
]

SCIENCE_TYPES = ("Light Frame", "LIGHT", "object", "science")
BIAS_TYPES = ("Bias Frame", "BIAS", "zero")
DARK_TYPES = ("Dark Frame", "DARK")
FLAT_TYPES = ("Flat Field", "FLAT")
GAIN_KEYS = (("GAIN", "RDNOISE", "SATURATE"), ("EGAIN", "READNOIS", "DATAMAX"), ("GAINA", "RDNOISEA", "SATURATA"))
TIME_CARDS = (("DATE-OBS",), ("DATE-OBS", "MJD-OBS"), ("DATE-OBS", "JD"), ("MJD-OBS",))
RAW_SATURATE = 60000.0  # ADU: the SATURATE card of raw frames


def conventions(cell: Cell) -> dict:
    """Header conventions rotated by ``cell.seed``: IMAGETYP strings (``science``, ``bias``, ``dark``, ``flat``),
    ``gain_keys`` (gain, read-noise, saturation keywords, or None), ``exposure_key``, ``time_cards``, ``filter``."""
    s = cell.seed
    return {"science": SCIENCE_TYPES[s % 4], "bias": BIAS_TYPES[s % 3], "dark": DARK_TYPES[s % 2],
            "flat": FLAT_TYPES[s % 2], "gain_keys": GAIN_KEYS[s % 3] if cell.gain_card else None,
            "exposure_key": ("EXPTIME", "EXPOSURE")[(s // 2) % 2], "time_cards": TIME_CARDS[(s + s // 4) % 4],
            "filter": ("R", "Clear")[(s // 3) % 2]}


def _cosmics(rng: np.random.Generator, img: np.ndarray) -> None:
    """Add 10-30 cosmic-ray hits (e-): single pixels and 2-4 pixel tracks, 500-20000 e- each, unconvolved."""
    ny, nx = img.shape
    for _ in range(int(rng.integers(10, 31))):
        t = np.arange(int(rng.choice([1, 1, 2, 3, 4])))
        x0, y0, phi = rng.uniform(0, nx - 1), rng.uniform(0, ny - 1), rng.uniform(0, 2 * np.pi)
        xs = np.clip(np.rint(x0 + t * np.cos(phi)), 0, nx - 1).astype(int)
        ys = np.clip(np.rint(y0 + t * np.sin(phi)), 0, ny - 1).astype(int)
        energy = np.exp(rng.uniform(np.log(500.0), np.log(20000.0)))
        np.add.at(img, (ys, xs), energy * rng.dirichlet(np.ones(t.size)))


def _background(img: np.ndarray, box: int = 64) -> np.ndarray:
    """Smooth background: a clipped median per box, interpolated with a quadratic spline."""
    ny, nx = img.shape
    ey, ex = (np.linspace(0, n, max(n // box, 3) + 1).astype(int) for n in (ny, nx))
    grid = np.array([[sigma_clipped_stats(img[y0:y1, x0:x1], sigma=3.0, maxiters=3)[1]
                      for x0, x1 in zip(ex[:-1], ex[1:], strict=True)] for y0, y1 in zip(ey[:-1], ey[1:], strict=True)])
    yc, xc = (ey[:-1] + ey[1:] - 1) / 2.0, (ex[:-1] + ex[1:] - 1) / 2.0
    spline = RectBivariateSpline(yc, xc, grid, bbox=[0, ny - 1, 0, nx - 1], kx=2, ky=2)
    return spline(np.arange(ny), np.arange(nx))


def _header(cell: Cell, kind: str, t: Time, exptime: float, saturate: float, c: dict | None = None) -> fits.Header:
    """FITS header of a science (``kind="science"``) or calibration frame."""
    p, conv = _plan(cell), conventions(cell)
    h = fits.Header([("IMAGETYP", conv[kind])])
    h[conv["exposure_key"]] = (exptime, "[s] exposure time")
    h.update({key: {"DATE-OBS": t.isot, "MJD-OBS": t.mjd, "JD": t.jd}[key] for key in conv["time_cards"]})
    h["TELESCOP"], h["INSTRUME"], h["CCD-TEMP"] = "0.5 m f/6.8 reflector", "KAF-16803 CCD", -20.0
    cards = [(p["gain"], "[e-/ADU]"), (p["rn"], "[e-] read noise"), (saturate, "[ADU]")] if conv["gain_keys"] else []
    for key, card in zip(conv["gain_keys"] or (), cards, strict=True):
        h[key] = card
    if kind in ("science", "flat"):
        h["FILTER"] = conv["filter"]
    if kind == "science":
        h["OBJECT"] = p["object"]
        sc = SkyCoord(p["ra0"], p["dec0"], unit="deg")
        h["OBJCTRA"] = sc.ra.to_string("hourangle", sep=" ", precision=1, pad=True)
        h["OBJCTDEC"] = sc.dec.to_string(sep=" ", precision=0, alwayssign=True, pad=True)
        if cell.magzp:
            h["MAGZP"] = (round(c["magzp"], 4), "[mag] giving 1 e-/s")
        if cell.wcs:  # frame px p -> sky grid: CD p0 R(theta) (p - p0), p0 = c - R(-theta) s
            ct, st = np.cos(c["theta"]), np.sin(c["theta"])
            (cx, cy), (sx, sy) = p["c"], c["shift"]
            p0 = (cx - (ct * sx + st * sy), cy - (-st * sx + ct * sy))
            h.update(_wcs_cards(p, p0, p["cd"] @ np.array([[ct, -st], [st, ct]])))
    return h


def _expose(cell: Cell, rng, expected: np.ndarray, dark_s: float, cosmics: bool, raw: bool = True) -> np.ndarray:
    """Detected e- from expected e- (Poisson, cosmic rays, full well, read noise): raw uint16 ADU (flat response,
    ``dark_s`` s of dark current, bias), or flat-corrected e- if not ``raw``."""
    p = _plan(cell)
    lam = expected * p["flat"] + p["dark"] * dark_s if raw else expected
    if lam.min() > 5000.0:  # dome flats: the normal limit of the Poisson law, much faster
        e = np.rint(lam + np.sqrt(lam) * rng.standard_normal(lam.shape))
    else:
        e = rng.poisson(lam).astype(float) if lam.any() else lam
    if cosmics:
        _cosmics(rng, e)
    e = np.minimum(e, p["full_well"]) + rng.normal(0.0, p["rn"], e.shape)
    if not raw:
        return e
    adu = e / p["gain"] + p["bias_cols"][None, :] + rng.normal(0.0, 0.5)
    return np.clip(np.rint(adu), 0, 65535).astype(np.uint16)


def drizzle_kernel(footprint: float, phases: int = 4) -> np.ndarray:
    """Unit-sum kernel of a drizzle-like resampling: the area overlap of a square input footprint of ``footprint``
    output px with each output pixel (Fruchter & Hook 2002, PASP 114, 144), averaged over ``phases``² sub-pixel
    positions of the footprint, as a stack of dithered frames gives. It keeps fluxes and the noise power at low
    spatial frequencies and lowers the per-pixel noise by ``sqrt(Σ K²)`` (0.37 for a 2-px footprint)."""
    r = int(np.ceil(footprint / 2.0 + 1.0))
    x, line = np.arange(-r, r + 1), np.zeros(2 * r + 1)
    for phase in (np.arange(phases) + 0.5) / phases - 0.5:
        half = footprint / 2.0
        line += np.clip(np.minimum(x + 0.5, phase + half) - np.maximum(x - 0.5, phase - half), 0.0, None)
    line /= line.sum()
    return np.outer(line, line)


def write_drop(root, cell: Cell) -> pd.DataFrame:
    """Write a cell's FITS drop folder ``root/<YYYY-MM-DD>/*.fits`` and return its transient truth table.

    Parameters
    ----------
    root : str or Path
        Drop folder (created if missing).
    cell : Cell

    Returns
    -------
    pandas.DataFrame
        A row per transient per science frame holding it (nights after the first): ``night``, ``file``,
        ``frame_index`` (within the night), ``x``, ``y`` (0-based px, ``data[y, x]``), ``ra``, ``dec`` (deg, ICRS),
        ``flux`` (e- in that exposure), ``snr`` (expected PSF-optimal S/N), ``kind``, ``transient_id``, ``on_galaxy``.
    """
    p, root, rows = _plan(cell), Path(root), []
    for n in range(cell.n_nights):
        (folder := root / _night_date(cell, n)).mkdir(parents=True, exist_ok=True)
        for c, model, _, truth in _night(cell, n):
            rng = _rng(cell, 3, n, c["j"])
            if cell.state == "raw":
                data, sat = _expose(cell, rng, model, p["exptime"], True), RAW_SATURATE
            else:
                e = _expose(cell, rng, model, 0.0, cell.drizzle <= 0, raw=False)
                if cell.drizzle > 0:  # resampled as a drizzled mosaic: per-pixel noise falls, a PSF's does not
                    e = ndimage.convolve(e, drizzle_kernel(cell.drizzle), mode="nearest")
                data, sat = (e / p["gain"]).astype(np.float32), round(0.97 * p["full_well"] / p["gain"], 1)
                if cell.state == "sky_subtracted":
                    back = _background(data)
                    data, sat = (data - back).astype(np.float32), round(sat - float(back.max()), 1)
            header = _header(cell, "science", c["time"], p["exptime"], sat, c)
            fits.PrimaryHDU(data, header).writeto(folder / c["file"], overwrite=True)
            rows.extend(truth)
        if cell.state == "raw" and (cell.calibration_nights <= 0 or n < cell.calibration_nights):
            _write_calibrations(cell, n, folder)
    cols = ["night", "file", "frame_index", "x", "y", "ra", "dec", "flux", "snr", "kind", "transient_id", "on_galaxy"]
    return pd.DataFrame(rows, columns=cols)


def _write_calibrations(cell: Cell, n: int, folder: Path) -> None:
    """5 bias frames, 3 darks (science EXPTIME) and 5 dome flats (~20000 ADU) for night ``n``, 01:00-01:45 UTC."""
    p, day, filt = _plan(cell), _night_date(cell, n).replace("-", ""), conventions(cell)["filter"]
    t0, zero, texp = Time(f"{_night_date(cell, n)}T01:00:00", scale="utc"), np.zeros(cell.shape), p["exptime"]
    plan = [("bias", i, i * 30.0, 0.0, f"bias_{day}_{i + 1:03d}") for i in range(5)]
    plan += [("dark", i, 600.0 + i * (texp + 10), texp, f"dark_{texp:.0f}s_{day}_{i + 1:03d}") for i in range(3)]
    plan += [("flat", i, 2400.0 + i * 20, 3.0, f"flat_{filt}_{day}_{i + 1:03d}") for i in range(5)]
    for kind, i, dt, exptime, name in plan:
        rng = _rng(cell, 4, n, ("bias", "dark", "flat").index(kind), i)
        level = zero + (20000.0 * p["gain"] * rng.uniform(0.95, 1.05) if kind == "flat" else 0.0)
        data = _expose(cell, rng, level, exptime, kind == "dark")
        header = _header(cell, kind, t0 + dt * units.s, exptime, RAW_SATURATE)
        fits.PrimaryHDU(data, header).writeto(folder / f"{name}.fits", overwrite=True)


COVERING_CELLS: tuple[Cell, ...] = (
    Cell("gauss-2.5-reduced-wcs", psf="gaussian", fwhm=2.5, state="reduced", seed=0),
    Cell("gauss-1.3-raw-wcs-magzp", psf="gaussian", fwhm=1.3, state="raw", magzp=True, seed=1),
    Cell("moffat2-2.5-raw-nowcs-nogain", psf="moffat", beta=2.0, fwhm=2.5, state="raw", wcs=False,
         gain_card=False, first_night="2003-11-20", seed=2),
    Cell("gauss-6-raw-wcs-nogain-magzp", psf="gaussian", fwhm=6.0, state="raw", gain_card=False, magzp=True,
         first_night="2003-11-20", seed=3),
    Cell("moffat5-6-skysub-wcs-magzp", psf="moffat", beta=5.0, fwhm=6.0, state="sky_subtracted", magzp=True,
         first_night="2003-11-20", seed=4),
    Cell("moffat2-1.3-reduced-nowcs", psf="moffat", beta=2.0, fwhm=1.3, state="reduced", wcs=False, seed=5),
    Cell("moffat3-2.5-skysub-nowcs-nogain", psf="moffat", beta=3.0, fwhm=2.5, state="sky_subtracted", wcs=False,
         gain_card=False, first_night="2003-11-20", seed=6),
)
"""Every value of every axis, and every header convention of :func:`conventions`, appears in at least one cell."""

ARCHIVAL_CELL = Cell("gauss-2.5-reduced-wcs-1995", psf="gaussian", fwhm=2.5, state="reduced", magzp=True,
                     first_night="1995-06-02", seed=7)
"""A 1995 cell: only works once the pipeline's first partition is earlier than 1995-06-02."""
