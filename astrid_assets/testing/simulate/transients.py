"""What changes on the sky from night to night, and the sky of a field at one epoch.

Supernovae in host galaxies and periodic variable stars (times in MJD, periods and rise
times in days, declines in mag / day), their fluxes at a time (e- per exposure at unit
response), the nightly asteroid (rates in arcsec / min) and :func:`sources_at`, which
combines the static sky and the transients during one exposure.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy.special import i0

from astrid_assets.science.psf.profiles import moffat_alpha, moffat_noise_area
from astrid_assets.testing.simulate.catalogues import (
    _log_uniform,
    _sky_catalogue,
    _uniform_positions,
    field_center,
    make_wcs,
    sky_catalogue,
)
from astrid_assets.testing.simulate.config import _DEFAULT_CONFIG, SurveyConfig
from astrid_assets.testing.simulate.conventions import (
    _midnight,
    _mjd,
    _rng,
    _seed_sequence,
    exposure_start,
    flux_to_mag,
    mag_to_rate,
    night_date,
    peak_snr_to_flux,
    sky_rate,
)

_MIN_PER_DAY = 1440.0


def _reference_background(config: SurveyConfig) -> tuple[float, float]:
    """Per-pixel noise variance (e-²) and PSF noise area (pixels) at median conditions."""
    background = (
        sky_rate(config.sky_mag, config) * config.exptime + config.dark_current * config.exptime + config.read_noise**2
    )
    fwhm_px = float(np.mean(config.seeing_range)) / config.pixel_scale
    return background, moffat_noise_area(moffat_alpha(fwhm_px, config.moffat_beta), config.moffat_beta)


@lru_cache(maxsize=16)
def _transient_catalogue(field: str, config: SurveyConfig) -> pd.DataFrame:
    sn_rng, var_rng = (np.random.default_rng(s) for s in _seed_sequence(config.seed, "transients", field).spawn(2))
    sky = _sky_catalogue(field, config)
    nominal = make_wcs(field_center(field, config), config)
    ny, nx = config.shape
    galaxies = sky[sky.kind == "galaxy"]
    gx, gy = nominal.world_to_pixel_values(galaxies.ra.to_numpy(), galaxies.dec.to_numpy())
    interior = np.flatnonzero((gx > 32) & (gx < nx - 33) & (gy > 32) & (gy < ny - 33))
    n_sn = min(config.n_supernovae, interior.size)
    hosts = galaxies.iloc[sn_rng.choice(interior, size=n_sn, replace=False)]
    hx, hy = nominal.world_to_pixel_values(hosts.ra.to_numpy(), hosts.dec.to_numpy())
    offset = hosts.r_eff.to_numpy() / config.pixel_scale * sn_rng.uniform(0.3, 1.5, n_sn)
    angle = sn_rng.uniform(0, 2 * np.pi, n_sn)
    sn_ra, sn_dec = nominal.pixel_to_world_values(hx + offset * np.cos(angle), hy + offset * np.sin(angle))
    first = _mjd(_midnight(night_date(config.transient_start)))
    last = _mjd(_midnight(night_date(config.transient_end)) + dt.timedelta(days=1))
    peak_snr = _log_uniform(sn_rng, config.supernova_peak_snr, n_sn)
    background, noise_area = _reference_background(config)
    peak_flux = peak_snr_to_flux(peak_snr, background, noise_area)
    supernovae = pd.DataFrame(
        {
            "source_id": [f"{field}-SN{i + 1:03d}" for i in range(n_sn)],
            "kind": "supernova",
            "ra": sn_ra,
            "dec": sn_dec,
            "host_id": hosts.source_id.to_numpy(),
            "t_explosion": sn_rng.uniform(first, last, n_sn),
            "t_rise": sn_rng.uniform(*config.supernova_rise_days, n_sn),
            "decline_rate": sn_rng.uniform(*config.supernova_decline, n_sn),
            "peak_mag": flux_to_mag(peak_flux, config.exptime, config.zero_point),
            "peak_snr": peak_snr,
        }
    )
    vx, vy = _uniform_positions(var_rng, config, config.n_variables, margin=-32)
    var_ra, var_dec = nominal.pixel_to_world_values(vx, vy)
    variables = pd.DataFrame(
        {
            "source_id": [f"{field}-V{i + 1:03d}" for i in range(config.n_variables)],
            "kind": "variable",
            "ra": var_ra,
            "dec": var_dec,
            "mag0": var_rng.uniform(*config.variable_mag_range, config.n_variables),
            "amplitude": var_rng.uniform(*config.variable_amplitude, config.n_variables),
            "period": _log_uniform(var_rng, config.variable_period_days, config.n_variables),
            "phase": var_rng.uniform(0, 1, config.n_variables),
        }
    )
    return pd.concat([supernovae, variables], ignore_index=True)


def transient_catalogue(field: str, config: SurveyConfig = _DEFAULT_CONFIG) -> pd.DataFrame:
    """Supernovae and variable stars of a field, deterministic from (seed, field).

    Supernovae: ``host_id``, ``t_explosion`` (MJD, uniform from the start of
    ``transient_start`` to the end of ``transient_end``), ``t_rise`` (days to peak),
    ``decline_rate`` (mag/day after peak), ``peak_mag`` and ``peak_snr`` (PSF-optimal S/N
    at peak, at median seeing and sky).
    Variables: ``mag0``, ``amplitude`` (mag, peak to peak), ``period`` (days), ``phase``;
    ``m(t) = mag0 + amplitude/2 · sin(2π (t/period + phase))``, t in MJD.

    Both have ``source_id``, ``kind``, ``ra`` and ``dec`` (deg). Supernovae sit 0.3–1.5
    ``r_eff`` from hosts at least 32 px inside the nominal frame; variables are at least 32 px
    inside it.

    Parameters
    ----------
    field : str
        Field name.
    config : SurveyConfig, default SurveyConfig()
        The survey.

    Returns
    -------
    pandas.DataFrame
        Supernova rows then variable rows (columns of the other kind NaN); a copy of the cache.
    """
    return _transient_catalogue(field, config).copy()


def supernova_flux(t_mjd: float, supernovae: pd.DataFrame, exptime: float, zero_point: float) -> np.ndarray:
    """Supernova flux (e- in ``exptime``) at ``t_mjd``: 0 before explosion, ``(τ/t_rise)²``
    times the peak while rising, then declining by ``decline_rate`` mag/day.

    Parameters
    ----------
    t_mjd : float
        Time, MJD (UTC).
    supernovae : pandas.DataFrame
        Rows of :func:`transient_catalogue` with ``t_explosion`` (MJD), ``t_rise`` (days),
        ``decline_rate`` (mag/day) and ``peak_mag``.
    exptime : float
        Exposure time, s.
    zero_point : float
        ``MAGZP``, mag of 1 e-/s.

    Returns
    -------
    numpy.ndarray
        Flux per supernova, e- at unit response.
    """
    tau = t_mjd - supernovae.t_explosion.to_numpy()
    rise = supernovae.t_rise.to_numpy()
    peak = mag_to_rate(supernovae.peak_mag.to_numpy(), zero_point) * exptime
    shape = np.where(
        tau < 0,
        0.0,
        np.where(
            tau < rise,
            (np.clip(tau, 0, None) / rise) ** 2,
            10 ** (-0.4 * supernovae.decline_rate.to_numpy() * (tau - rise)),
        ),
    )
    return peak * shape


def variable_flux(
    t_mjd: float, variables: pd.DataFrame, exptime: float, zero_point: float
) -> tuple[np.ndarray, np.ndarray]:
    """Variable-star flux at ``t_mjd`` and its cycle mean (e- in ``exptime``).

    For ``m = m0 + (A/2) sin φ`` the mean flux is ``F(m0) I0(0.4 ln10 A/2)`` (modified
    Bessel function of the first kind).

    Parameters
    ----------
    t_mjd : float
        Time, MJD (UTC).
    variables : pandas.DataFrame
        Rows of :func:`transient_catalogue` with ``mag0``, ``amplitude`` (mag, peak to peak),
        ``period`` (days) and ``phase`` (cycles).
    exptime : float
        Exposure time, s.
    zero_point : float
        ``MAGZP``, mag of 1 e-/s.

    Returns
    -------
    flux, mean_flux : numpy.ndarray
        e- at unit response, per star.
    """
    half_amplitude = variables.amplitude.to_numpy() / 2.0
    phase = 2 * np.pi * (t_mjd / variables.period.to_numpy() + variables.phase.to_numpy())
    base = mag_to_rate(variables.mag0.to_numpy(), zero_point) * exptime
    flux = base * 10 ** (-0.4 * half_amplitude * np.sin(phase))
    return flux, base * i0(0.4 * np.log(10) * half_amplitude)


def asteroid_track(field: str, night: str | dt.date, config: SurveyConfig = _DEFAULT_CONFIG) -> dict[str, float] | None:
    """The asteroid crossing ``field`` on ``night`` (None before ``transient_start``).

    Returns ``source_id``, ``mag``, ``t_ref`` (MJD, the middle of the field's block of
    exposures), ``ra``/``dec`` at ``t_ref`` (deg) and ``rate_ra``/``rate_dec`` (arcsec/min
    on the sky, RA component already multiplied by cos Dec).  Position is linear in time.

    The position at ``t_ref`` is uniform in the central half of the nominal frame (each axis);
    the rate is uniform in ``asteroid_rate`` in a uniform direction.

    Parameters
    ----------
    field : str
        Field name.
    night : str or datetime.date
        Observing night (UTC date).
    config : SurveyConfig, default SurveyConfig()
        The survey.

    Returns
    -------
    dict or None
        The keys above, or None before ``transient_start``.
    """
    date = night_date(night)
    if date < night_date(config.transient_start):
        return None
    rng = _rng(config.seed, "asteroid", field, date.toordinal())
    ny, nx = config.shape
    first = exposure_start(field, date, 0, config)
    last = exposure_start(field, date, config.frames_per_night - 1, config) + dt.timedelta(seconds=config.exptime)
    t_ref = _mjd(first + (last - first) / 2)
    x = rng.uniform(0.25 * nx, 0.75 * nx)
    y = rng.uniform(0.25 * ny, 0.75 * ny)
    ra, dec = make_wcs(field_center(field, config), config).pixel_to_world_values(x, y)
    rate = rng.uniform(*config.asteroid_rate)
    direction = rng.uniform(0, 2 * np.pi)
    return {
        "source_id": f"{field}-AST-{date:%Y%m%d}",
        "mag": float(rng.uniform(*config.asteroid_mag_range)),
        "t_ref": t_ref,
        "ra": float(ra),
        "dec": float(dec),
        "rate_ra": float(rate * np.cos(direction)),
        "rate_dec": float(rate * np.sin(direction)),
    }


def _asteroid_position(track: dict[str, float], t_mjd: float) -> tuple[float, float]:
    minutes = (t_mjd - track["t_ref"]) * _MIN_PER_DAY
    dec = track["dec"] + track["rate_dec"] * minutes / 3600.0
    ra = track["ra"] + track["rate_ra"] * minutes / 3600.0 / np.cos(np.deg2rad(track["dec"]))
    return ra, dec


def sources_at(
    field: str, night: str | dt.date, start: dt.datetime, config: SurveyConfig = _DEFAULT_CONFIG
) -> pd.DataFrame:
    """Everything on the sky of ``field`` during the exposure starting at ``start`` (UTC).

    Columns: ``source_id, kind, ra, dec, flux, flux_baseline`` (e- in ``config.exptime``,
    evaluated at mid-exposure), galaxy shape columns, and ``ra_end, dec_end`` for moving
    objects (start/end of exposure for the asteroid; NaN otherwise, with ``ra/dec`` then
    the position at mid-exposure).

    Parameters
    ----------
    field : str
        Field name.
    night : str or datetime.date
        Observing night, for the asteroid.
    start : datetime.datetime
        Start of the exposure, UTC (naive).
    config : SurveyConfig, default SurveyConfig()
        The survey.

    Returns
    -------
    pandas.DataFrame
        Static sky, supernovae, variables and the asteroid (if any), with the columns above plus
        ``ra_start``, ``dec_start`` (deg).
    """
    t_start = _mjd(start)
    t_mid = t_start + config.exptime / 2 / 86400.0
    sky = sky_catalogue(field, config)
    sky["flux"] = mag_to_rate(sky.mag.to_numpy(), config.zero_point) * config.exptime
    sky["flux_baseline"] = sky["flux"]
    transients = transient_catalogue(field, config)
    supernovae = transients[transients.kind == "supernova"].copy()
    supernovae["flux"] = supernova_flux(t_mid, supernovae, config.exptime, config.zero_point)
    supernovae["flux_baseline"] = 0.0
    variables = transients[transients.kind == "variable"].copy()
    variables["flux"], variables["flux_baseline"] = variable_flux(t_mid, variables, config.exptime, config.zero_point)
    parts = [sky, supernovae, variables]
    track = asteroid_track(field, night, config)
    if track is not None:
        ra_start, dec_start = _asteroid_position(track, t_start)
        ra_end, dec_end = _asteroid_position(track, t_start + config.exptime / 86400.0)
        ra_mid, dec_mid = _asteroid_position(track, t_mid)
        flux = float(mag_to_rate(track["mag"], config.zero_point)) * config.exptime
        parts.append(
            pd.DataFrame(
                {
                    "source_id": [track["source_id"]],
                    "kind": ["asteroid"],
                    "ra": [ra_mid],
                    "dec": [dec_mid],
                    "ra_start": [ra_start],
                    "dec_start": [dec_start],
                    "ra_end": [ra_end],
                    "dec_end": [dec_end],
                    "flux": [flux],
                    "flux_baseline": [0.0],
                }
            )
        )
    columns = [
        "source_id",
        "kind",
        "ra",
        "dec",
        "flux",
        "flux_baseline",
        "r_eff",
        "axis_ratio",
        "pa_deg",
        "sersic_n",
    ]
    table = pd.concat(parts, ignore_index=True)
    for extra in ("ra_start", "dec_start", "ra_end", "dec_end"):
        if extra not in table:
            table[extra] = np.nan
    return table[columns + ["ra_start", "dec_start", "ra_end", "dec_end"]]
