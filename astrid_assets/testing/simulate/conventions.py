"""The simulator's shared conventions: named random streams, the observing schedule and the magnitude scale.

Random numbers come from :func:`numpy.random.default_rng` seeded through
:class:`numpy.random.SeedSequence` keyed by ``(seed, *names)``.  Nights are UTC dates and
exposure starts UTC datetimes (MJD in UTC).  Fluxes are e- at unit response and
``m = MAGZP - 2.5 log10(flux / EXPTIME)``; the sky is in mag / arcsec^2.
"""

from __future__ import annotations

import datetime as dt
import zlib

import numpy as np
from astropy.time import Time

from astrid_assets.testing.simulate.config import SurveyConfig

# --------------------------------------------------------------------------- random streams


def _key(value: str | int) -> int:
    """A stable 32-bit integer for a name (Python's ``hash`` is salted per process)."""
    return int(value) if isinstance(value, int) else zlib.crc32(value.encode())


def _seed_sequence(seed: int, *names: str | int) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, *(_key(name) for name in names)])


def _rng(seed: int, *names: str | int) -> np.random.Generator:
    return np.random.default_rng(_seed_sequence(seed, *names))


# --------------------------------------------------------------------------- dates and times


def night_date(night: str | dt.date) -> dt.date:
    """The observing night as a date (the UTC date on which its exposures start).

    Parameters
    ----------
    night : str or datetime.date
        ISO date ``"YYYY-MM-DD"``, a date, or a datetime (its date is taken).

    Returns
    -------
    datetime.date
        The night's UTC date.
    """
    if isinstance(night, dt.datetime):
        return night.date()
    if isinstance(night, dt.date):
        return night
    return dt.date.fromisoformat(night)


def _mjd(moment: dt.datetime) -> float:
    return float(Time(moment, scale="utc").mjd)


def _midnight(date: dt.date) -> dt.datetime:
    return dt.datetime(date.year, date.month, date.day)


def exposure_start(field: str, night: str | dt.date, index: int, config: SurveyConfig) -> dt.datetime:
    """UTC start of science frame ``index`` (0-based) of ``field`` on ``night``.

    Fields are observed one after the other in ``config.fields`` order (a field not listed
    is scheduled first), each as a block of ``frames_per_night`` exposures separated by
    ``frame_interval_min``.  The first block starts ``night_start_utc_hours`` after 00:00 UTC;
    blocks are ``frames_per_night × frame_interval_min + slew_min`` minutes apart.

    Parameters
    ----------
    field : str
        Field name.
    night : str or datetime.date
        Observing night (:func:`night_date`).
    index : int
        0-based frame index within the night's block of the field.
    config : SurveyConfig
        The survey.

    Returns
    -------
    datetime.datetime
        Naive datetime, UTC.
    """
    order = config.fields.index(field) if field in config.fields else 0
    block = config.frames_per_night * config.frame_interval_min + config.slew_min
    minutes = 60.0 * config.night_start_utc_hours + order * block + index * config.frame_interval_min
    return _midnight(night_date(night)) + dt.timedelta(minutes=minutes)


# --------------------------------------------------------------------------- photometry


def flux_to_mag(flux: np.ndarray | float, exptime: float, zero_point: float) -> np.ndarray:
    """``MAGZP - 2.5 log10(flux / exptime)``; NaN where ``flux <= 0``.  flux in e-.

    Parameters
    ----------
    flux : numpy.ndarray or float
        Flux, e- in the exposure at unit response.
    exptime : float
        Exposure time, s.
    zero_point : float
        ``MAGZP``, mag of a source giving 1 e-/s.

    Returns
    -------
    numpy.ndarray
        Magnitudes (a 0-d array for a scalar ``flux``).
    """
    flux = np.asarray(flux, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flux > 0, zero_point - 2.5 * np.log10(flux / exptime), np.nan)


def mag_to_rate(mag: np.ndarray | float, zero_point: float) -> np.ndarray:
    """Electrons per second at unit response for a magnitude: ``10^(-0.4 (mag − MAGZP))``.

    Parameters
    ----------
    mag : numpy.ndarray or float
        Magnitude (or surface brightness in mag / arcsec^2, giving e- / s / arcsec^2).
    zero_point : float
        ``MAGZP``, mag of a source giving 1 e-/s.

    Returns
    -------
    numpy.ndarray
        Rate, e-/s (total over the PSF).
    """
    return 10.0 ** (-0.4 * (np.asarray(mag, dtype=float) - zero_point))


def sky_rate(sky_mag: float, config: SurveyConfig) -> float:
    """Sky background in e- / s / pixel for a brightness in mag / arcsec^2.

    Parameters
    ----------
    sky_mag : float
        Sky brightness, mag / arcsec^2.
    config : SurveyConfig
        Supplies ``zero_point`` (mag) and ``pixel_scale`` (arcsec / pixel).

    Returns
    -------
    float
        Sky rate, e- / s / pixel at unit response.
    """
    return float(mag_to_rate(sky_mag, config.zero_point)) * config.pixel_scale**2


def peak_snr_to_flux(snr: np.ndarray, background: float, noise_area: float) -> np.ndarray:
    """Flux (e-) with PSF-optimal ``S/N = F / sqrt(F + B·NEA)``, B in e-²/pixel.

    The positive root ``F = (S² + sqrt(S⁴ + 4 S² B NEA)) / 2``.

    Parameters
    ----------
    snr : numpy.ndarray
        Target PSF-optimal S/N.
    background : float
        Noise variance per pixel ``B``, e-² (sky, dark and read noise).
    noise_area : float
        Noise-equivalent area ``NEA`` of the PSF, px².

    Returns
    -------
    numpy.ndarray
        Flux, e-.
    """
    snr2 = np.asarray(snr, dtype=float) ** 2
    return 0.5 * (snr2 + np.sqrt(snr2**2 + 4.0 * snr2 * background * noise_area))
