"""The static sky of a field and source lists for a frame.

Field pointings (RA, Dec in degrees), the nominal TAN WCS of a field (deg / pixel), the
stars and galaxies of a field (magnitudes, galaxy shapes in arcsec), custom point-source
lists (0-based pixels, e-) and the placing of a source list on a frame's pixel grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import pandas as pd
from astropy.wcs import WCS

from astrid_assets.testing.simulate.config import _DEFAULT_CONFIG, SurveyConfig
from astrid_assets.testing.simulate.conventions import _rng, _seed_sequence


def field_center(field: str, config: SurveyConfig = _DEFAULT_CONFIG) -> tuple[float, float]:
    """Nominal pointing (RA, Dec) in degrees of a field, deterministic from (seed, field).

    Fields are spread uniformly on the sphere within |Dec| < 30 deg.

    Parameters
    ----------
    field : str
        Field name.
    config : SurveyConfig, default SurveyConfig()
        The survey.

    Returns
    -------
    ra, dec : float
        Nominal pointing, deg (ICRS).
    """
    rng = _rng(config.seed, "pointing", field)
    ra = rng.uniform(0.0, 360.0)
    dec = np.rad2deg(np.arcsin(rng.uniform(-0.5, 0.5)))
    return float(ra), float(dec)


def make_wcs(center: tuple[float, float], config: SurveyConfig, rotation_deg: float = 0.0) -> WCS:
    """TAN WCS with the reference pixel at the detector centre and North up, East left
    (before a counter-clockwise ``rotation_deg``).  CDELT in deg/pixel.

    Parameters
    ----------
    center : tuple of float
        ``(ra, dec)`` of the detector centre, deg.
    config : SurveyConfig
        Supplies ``shape`` (px) and ``pixel_scale`` (arcsec / pixel).
    rotation_deg : float, default 0.0
        Rotation of the frame, deg.

    Returns
    -------
    astropy.wcs.WCS
        ICRS ``RA---TAN`` / ``DEC--TAN`` WCS, ``CRPIX = ((nx + 1)/2, (ny + 1)/2)`` (FITS 1-based).
    """
    ny, nx = config.shape
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [center[0], center[1]]
    wcs.wcs.crpix = [(nx + 1) / 2.0, (ny + 1) / 2.0]  # FITS 1-based: the detector centre
    scale = config.pixel_scale / 3600.0
    theta = np.deg2rad(rotation_deg)
    wcs.wcs.cdelt = [scale, scale]
    wcs.wcs.pc = [[-np.cos(theta), np.sin(theta)], [np.sin(theta), np.cos(theta)]]
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.radesys = "ICRS"
    wcs.wcs.set()
    return wcs


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float], size: int) -> np.ndarray:
    return np.exp(rng.uniform(np.log(bounds[0]), np.log(bounds[1]), size))


def _power_law_mags(rng: np.random.Generator, bounds: tuple[float, float], slope: float, size: int) -> np.ndarray:
    """Magnitudes with ``dN/dm ∝ 10^(slope m)`` in ``bounds`` (inverse-CDF sampling)."""
    low, high = 10 ** (slope * bounds[0]), 10 ** (slope * bounds[1])
    return np.log10(low + rng.uniform(size=size) * (high - low)) / slope


def _uniform_positions(
    rng: np.random.Generator, config: SurveyConfig, size: int, margin: float
) -> tuple[np.ndarray, np.ndarray]:
    ny, nx = config.shape
    return rng.uniform(-margin, nx - 1 + margin, size), rng.uniform(-margin, ny - 1 + margin, size)


@lru_cache(maxsize=16)
def _sky_catalogue(field: str, config: SurveyConfig) -> pd.DataFrame:
    streams = _seed_sequence(config.seed, "catalogue", field).spawn(2)
    star_rng, galaxy_rng = (np.random.default_rng(s) for s in streams)
    nominal = make_wcs(field_center(field, config), config)
    margin = 20
    ny, nx = config.shape
    area_arcmin2 = (nx + 2 * margin) * (ny + 2 * margin) * (config.pixel_scale / 60.0) ** 2
    n_stars = int(round(config.star_density * area_arcmin2))
    n_galaxies = int(round(config.galaxy_density * area_arcmin2))
    star_x, star_y = _uniform_positions(star_rng, config, n_stars, margin)
    star_mag = _power_law_mags(star_rng, config.star_mag_range, config.star_count_slope, n_stars)
    gal_x, gal_y = _uniform_positions(galaxy_rng, config, n_galaxies, margin)
    gal_mag = _power_law_mags(galaxy_rng, config.galaxy_mag_range, config.galaxy_count_slope, n_galaxies)
    r_eff = _log_uniform(galaxy_rng, config.galaxy_r_eff_range, n_galaxies)
    axis_ratio = galaxy_rng.uniform(0.35, 1.0, n_galaxies)
    pa = galaxy_rng.uniform(0.0, 180.0, n_galaxies)
    sersic_n = galaxy_rng.uniform(0.7, 2.5, n_galaxies)
    x = np.concatenate([star_x, gal_x])
    y = np.concatenate([star_y, gal_y])
    ra, dec = nominal.pixel_to_world_values(x, y)
    nan = np.full(n_stars, np.nan)
    return pd.DataFrame(
        {
            "source_id": [f"{field}-S{i + 1:04d}" for i in range(n_stars)]
            + [f"{field}-G{i + 1:04d}" for i in range(n_galaxies)],
            "kind": ["star"] * n_stars + ["galaxy"] * n_galaxies,
            "ra": ra,
            "dec": dec,
            "mag": np.concatenate([star_mag, gal_mag]),
            "r_eff": np.concatenate([nan, r_eff]),
            "axis_ratio": np.concatenate([nan, axis_ratio]),
            "pa_deg": np.concatenate([nan, pa]),
            "sersic_n": np.concatenate([nan, sersic_n]),
        }
    )


def sky_catalogue(field: str, config: SurveyConfig = _DEFAULT_CONFIG) -> pd.DataFrame:
    """The static sky of a field (stars and galaxies), deterministic from (seed, field).

    Columns: ``source_id, kind, ra, dec`` (deg), ``mag``, and for galaxies ``r_eff``
    (arcsec, half-light semi-major axis), ``axis_ratio`` (b/a), ``pa_deg`` (major axis,
    counter-clockwise from +x of the unrotated frame) and ``sersic_n``.  Sources extend 20
    pixels beyond the detector so that light from outside spills in.

    Parameters
    ----------
    field : str
        Field name.
    config : SurveyConfig, default SurveyConfig()
        The survey.

    Returns
    -------
    pandas.DataFrame
        A copy of the cached catalogue; shape columns NaN for stars.
    """
    return _sky_catalogue(field, config).copy()


def point_sources(x: Sequence[float], y: Sequence[float], flux: Sequence[float], kind: str = "star") -> pd.DataFrame:
    """A custom source list for :func:`simulate_frame`: point sources at 0-based pixel
    positions with fluxes in e- (per exposure, unit response).

    Parameters
    ----------
    x, y : sequence of float
        Positions, px (0-based, pixel centres at integers).
    flux : sequence of float
        Fluxes, e- per exposure at unit response.
    kind : str, default "star"
        Source kind (a :data:`SOURCE_KINDS` entry), also the ``source_id`` prefix.

    Returns
    -------
    pandas.DataFrame
        Columns ``source_id``, ``kind``, ``x``, ``y``, ``flux``.
    """
    x = np.atleast_1d(np.asarray(x, dtype=float))
    return pd.DataFrame(
        {
            "source_id": [f"{kind}-{i + 1:04d}" for i in range(x.size)],
            "kind": kind,
            "x": x,
            "y": np.atleast_1d(np.asarray(y, dtype=float)),
            "flux": np.atleast_1d(np.asarray(flux, dtype=float)),
        }
    )


def _place(sources: pd.DataFrame, wcs: WCS, trail_px: tuple[float, float], config: SurveyConfig) -> pd.DataFrame:
    """Add frame pixel positions, trail vectors (pixels) and defaults to a source list."""
    table = sources.copy()
    if "x" not in table or "y" not in table:
        table["x"], table["y"] = wcs.world_to_pixel_values(table.ra.to_numpy(), table.dec.to_numpy())
    if "ra" not in table or "dec" not in table:
        table["ra"], table["dec"] = wcs.pixel_to_world_values(table.x.to_numpy(), table.y.to_numpy())
    table["trail_dx"], table["trail_dy"] = trail_px
    if "ra_end" in table:
        moving = table.ra_end.notna().to_numpy()
        if moving.any():
            xs, ys = wcs.world_to_pixel_values(table.ra_start[moving].to_numpy(), table.dec_start[moving].to_numpy())
            xe, ye = wcs.world_to_pixel_values(table.ra_end[moving].to_numpy(), table.dec_end[moving].to_numpy())
            table.loc[moving, "trail_dx"] = xe - xs + trail_px[0]
            table.loc[moving, "trail_dy"] = ye - ys + trail_px[1]
    if "kind" not in table:
        table["kind"] = "star"
    if "flux_baseline" not in table:
        table["flux_baseline"] = table["flux"]
    for column in ("r_eff", "axis_ratio", "pa_deg", "sersic_n"):
        if column not in table:
            table[column] = np.nan
    if "source_id" not in table:
        table["source_id"] = [f"src-{i + 1:04d}" for i in range(len(table))]
    return table
