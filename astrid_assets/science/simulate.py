"""A deterministic simulated imaging survey: raw CCD frames with known truth.

Every number here is reproducible from ``SurveyConfig.seed`` and names: the static sky of a
field depends on ``(seed, field)`` only, the detector (bias structure, flat-field response,
bad columns, hot pixels) on ``seed`` only, and everything that changes from exposure to
exposure (seeing, pointing, sky level, photon and read noise, cosmic rays) on
``(seed, night, field, frame index)``.  Random numbers come from
:func:`numpy.random.default_rng` seeded through :class:`numpy.random.SeedSequence`; there is
no global random state.

Conventions
-----------
* Pixel coordinates are 0-based numpy coordinates: ``data[y, x]``; pixel ``(x, y)`` covers
  ``[x - 0.5, x + 0.5) x [y - 0.5, y + 0.5)``.  This is astropy's ``world_to_pixel``
  convention (FITS ``CRPIX`` is 1-based and is written accordingly).
* Fluxes are electrons (e-) collected in one exposure by a pixel of unit response, i.e.
  *before* the flat-field response (vignetting x PRNU) is applied; the response is
  normalised to a median of 1 over the detector, as a master flat is, so a flux measured on
  a flat-fielded frame is directly comparable.  Raw data are ADU.
* Magnitudes: ``m = MAGZP - 2.5 log10(flux / EXPTIME)``, i.e. ``MAGZP`` is the magnitude of
  a source giving 1 e-/s in total (summed over its whole PSF) at unit response.  There is
  no atmospheric extinction or colour term.  The sky brightness is in mag / arcsec^2 on
  the same scale.
* Angles on the sky are arcsec unless named ``_deg``; seeing is the FWHM in arcsec.

Physics
-------
* PSF: circular Moffat (Moffat 1969, A&A 3, 455), ``I(r) ∝ (1 + r²/α²)^-β`` with
  ``FWHM = 2α sqrt(2^(1/β) - 1)``; seeing drawn per frame.  Sources are rendered on
  postage stamps by sub-pixel integration (the profile is averaged over an oversampled
  grid inside every pixel), not sampled at pixel centres.
* Galaxies: elliptical Sérsic profiles (n between ~0.7 and 2.5, b_n from Ciotti & Bertin
  1999) sampled on an oversampled grid, FFT-convolved with the oversampled PSF and binned.
* Detector: bias level with fixed column and row structure; dark current (with a hot
  column and hot pixels); flat-field response = radial vignetting x ~1 % pixel response
  non-uniformity (PRNU) x bad-column response (one dead and one low-response column);
  photon noise (Poisson, in electrons), read noise (Gaussian, in electrons), gain
  (e-/ADU), integer ADU and an ADC ceiling at ``SATURATE``.  Charge above the full well
  bleeds up and down the column.  The defects are the same in every frame of the survey,
  including the calibration frames, so master calibrations can find them.
* Cosmic rays: single-pixel hits and short straight tracks, sharp (no charge diffusion),
  deposited directly in the silicon and therefore *not* multiplied by the flat-field
  response; added after the photon noise (their own charge statistics are not modelled).
* WCS: gnomonic (TAN) projection, pointing jitter of a few arcsec and rotation of at most
  ``max_rotation_deg`` per frame.
* Transients: supernovae offset from host galaxies (zero flux before explosion, rise of
  ~2 weeks, linear-in-magnitude decline), periodic variable stars (sinusoidal in
  magnitude), and each night from ``transient_start`` one asteroid per field moving
  linearly in time (trailed during the exposure).
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from functools import lru_cache

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS
from scipy.ndimage import label
from scipy.signal import fftconvolve
from scipy.special import i0

from astrid_assets.science.profiles import moffat_alpha, moffat_fwhm, moffat_noise_area, moffat_profile  # noqa: F401

TRUTH_COLUMNS = ("source_id", "kind", "ra", "dec", "x", "y", "flux", "flux_baseline", "mag", "snr")
SOURCE_KINDS = ("star", "galaxy", "supernova", "variable", "asteroid")

_MIN_PER_DAY = 1440.0
_STAMP_CHUNK_ELEMENTS = 3_000_000  # float64 elements per rendering chunk (memory bound)
_GALAXY_CHUNK = 16  # galaxies per FFT-convolution batch


@dataclass(frozen=True)
class SurveyConfig:
    """Everything that defines the simulated survey.  Units are in the comments."""

    seed: int = 2024
    fields: tuple[str, ...] = ("F01", "F02")
    frames_per_night: int = 3  # science frames per field per night
    shape: tuple[int, int] = (512, 512)  # (ny, nx)
    pixel_scale: float = 1.0  # arcsec / pixel
    exptime: float = 60.0  # s, science exposures
    filter_name: str = "r"
    gain: float = 1.6  # e- / ADU
    read_noise: float = 5.0  # e- rms
    bias_level: float = 1000.0  # ADU
    bias_column_rms: float = 2.0  # ADU, fixed column-to-column bias pattern
    bias_column_ramp: float = 4.0  # ADU, linear bias ramp from first to last column
    bias_row_amplitude: float = 1.0  # ADU, slow sinusoidal row pattern
    dark_current: float = 0.05  # e- / s / pixel
    sky_mag: float = 21.0  # mag / arcsec^2, median sky brightness
    sky_mag_scatter: float = 0.2  # mag, per-frame sky brightness varies uniformly by +- this
    zero_point: float = 25.0  # mag giving 1 e-/s (see module docstring)
    saturate: float = 40000.0  # ADU, ADC ceiling of raw frames (bias included) = SATURATE
    full_well: float = 65000.0  # e-, charge above this bleeds along the column
    seeing_range: tuple[float, float] = (2.5, 3.5)  # arcsec FWHM, uniform per frame
    moffat_beta: float = 3.0
    pointing_jitter: float = 3.0  # arcsec rms per axis
    max_rotation_deg: float = 0.2  # frame rotation uniform in +- this
    vignetting: float = 0.15  # fractional response loss at the detector corners
    prnu: float = 0.01  # pixel response non-uniformity, rms
    dead_column_response: float = 0.02
    low_column_response: float = 0.7
    hot_column_dark: float = 2.0  # e- / s / pixel added along the hot column
    n_dead_columns: int = 1
    n_low_columns: int = 1
    n_hot_columns: int = 1
    n_hot_pixels: int = 20
    cosmic_ray_rate: float = 5e-6  # events / pixel / s
    cosmic_ray_charge: float = 1500.0  # e- per pixel, median of a log-normal
    n_bias: int = 5
    n_dark: int = 5
    dark_exptime: float = 300.0  # s
    n_flat: int = 5
    flat_level: float = 30000.0  # e- per pixel at unit response (twilight flats)
    flat_exptime: float = 5.0  # s
    star_density: float = 5.5  # stars per arcmin^2 (400 on the default 512" x 512" field)
    star_mag_range: tuple[float, float] = (13.5, 23.0)
    star_count_slope: float = 0.3  # d log10 N / d m
    galaxy_density: float = 1.1  # galaxies per arcmin^2 (80 on the default field)
    galaxy_mag_range: tuple[float, float] = (17.0, 22.5)
    galaxy_count_slope: float = 0.4
    galaxy_r_eff_range: tuple[float, float] = (1.0, 4.0)  # arcsec, log-uniform
    n_supernovae: int = 6
    supernova_peak_snr: tuple[float, float] = (5.0, 200.0)  # log-uniform, at median seeing
    supernova_rise_days: tuple[float, float] = (12.0, 18.0)
    supernova_decline: tuple[float, float] = (0.02, 0.05)  # mag / day after peak
    n_variables: int = 5
    variable_mag_range: tuple[float, float] = (16.5, 19.5)  # mag at zero phase (m0)
    variable_amplitude: tuple[float, float] = (0.2, 1.0)  # mag, peak to peak
    variable_period_days: tuple[float, float] = (0.2, 20.0)  # log-uniform
    asteroid_rate: tuple[float, float] = (1.0, 4.0)  # arcsec / min
    asteroid_mag_range: tuple[float, float] = (17.5, 19.5)
    transient_start: str = "2024-01-06"  # first night with supernovae / asteroids
    transient_end: str = "2024-03-31"  # last possible supernova explosion date (inclusive)
    night_start_utc_hours: float = 1.0  # first science exposure, hours after 00:00 UTC
    frame_interval_min: float = 8.0  # between science frames of one field
    slew_min: float = 6.0  # between the last frame of one field and the first of the next


@dataclass
class SimulatedFrame:
    """One simulated raw frame and what was put into it.

    ``data`` is raw ADU (bias included, integer-valued, float32).  ``truth`` lists the
    sources whose centres fall on the detector (see :data:`TRUTH_COLUMNS`): ``flux`` is the
    electrons delivered in this exposure at unit response, ``flux_baseline`` the quiescent
    flux (0 for supernovae and asteroids, the cycle-mean flux for variable stars, ``flux``
    for static sources), ``mag`` the magnitude of ``flux`` (NaN when 0), ``snr`` the
    expected PSF-optimal S/N of ``flux`` against sky, dark, read noise and the source's own
    photon noise, at the flat-field response of its position.  Calibration frames have an
    empty ``truth``.  ``cosmic_rays`` and ``saturated`` are pixel truth masks;
    ``cosmic_ray_electrons`` is the charge each cosmic ray deposited (e-).
    """

    frame_id: str
    field: str
    header: fits.Header
    data: np.ndarray
    truth: pd.DataFrame
    cosmic_rays: np.ndarray
    saturated: np.ndarray
    cosmic_ray_electrons: np.ndarray | None = dataclass_field(default=None, repr=False)

    def to_hdulist(self) -> fits.HDUList:
        """The raw frame as a FITS file: one primary HDU with ``data`` and ``header``."""
        return fits.HDUList([fits.PrimaryHDU(data=self.data, header=self.header)])


@dataclass(frozen=True)
class Detector:
    """The fixed detector signature (same for every frame of a survey seed).

    ``bias`` ADU; ``flat`` response (vignetting x PRNU x column response) normalised to a
    median of 1, which defines "unit response" for fluxes and ``MAGZP``; ``dark``
    e-/s/pixel; ``bad_columns`` maps ``'dead'``, ``'low'``, ``'hot'`` to column indices
    (the hot column runs from row ``hot_column_start`` to the top);
    ``defects`` is the boolean map of all defective pixels (bad columns and hot pixels).
    """

    bias: np.ndarray
    flat: np.ndarray
    dark: np.ndarray
    bad_columns: dict[str, tuple[int, ...]]
    hot_column_start: int
    hot_pixels: tuple[np.ndarray, np.ndarray]
    defects: np.ndarray


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
    """The observing night as a date (the UTC date on which its exposures start)."""
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
    ``frame_interval_min``.
    """
    order = config.fields.index(field) if field in config.fields else 0
    block = config.frames_per_night * config.frame_interval_min + config.slew_min
    minutes = 60.0 * config.night_start_utc_hours + order * block + index * config.frame_interval_min
    return _midnight(night_date(night)) + dt.timedelta(minutes=minutes)


# --------------------------------------------------------------------------- photometry


def flux_to_mag(flux: np.ndarray | float, exptime: float, zero_point: float) -> np.ndarray:
    """``MAGZP - 2.5 log10(flux / exptime)``; NaN where ``flux <= 0``.  flux in e-."""
    flux = np.asarray(flux, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flux > 0, zero_point - 2.5 * np.log10(flux / exptime), np.nan)


def mag_to_rate(mag: np.ndarray | float, zero_point: float) -> np.ndarray:
    """Electrons per second at unit response for a magnitude."""
    return 10.0 ** (-0.4 * (np.asarray(mag, dtype=float) - zero_point))


def sky_rate(sky_mag: float, config: SurveyConfig) -> float:
    """Sky background in e- / s / pixel for a brightness in mag / arcsec^2."""
    return float(mag_to_rate(sky_mag, config.zero_point)) * config.pixel_scale**2


def peak_snr_to_flux(snr: np.ndarray, background: float, noise_area: float) -> np.ndarray:
    """Flux (e-) with PSF-optimal ``S/N = F / sqrt(F + B·NEA)``, B in e-²/pixel."""
    snr2 = np.asarray(snr, dtype=float) ** 2
    return 0.5 * (snr2 + np.sqrt(snr2**2 + 4.0 * snr2 * background * noise_area))


# --------------------------------------------------------------------------- rendering


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
    4 FWHM and normalised to unit sum (the ~0.3 % of the light beyond is folded in)."""
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
    """Sérsic b_n such that r_eff encloses half the light (Ciotti & Bertin 1999, A&A 352, 447)."""
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
    """Add ``flux[k] * stamps[k]`` into ``image`` in place, clipping at the image edges."""
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


# --------------------------------------------------------------------------- detector


@lru_cache(maxsize=8)
def detector(config: SurveyConfig, defects: bool = True) -> Detector:
    """The detector of the survey (deterministic from ``config.seed``).  Arrays are read-only.

    With ``defects=False`` the bad columns and hot pixels are left out (bias, vignetting and
    PRNU stay the same).
    """
    ny, nx = config.shape
    bias_rng, flat_rng, defect_rng = (
        np.random.default_rng(s) for s in _seed_sequence(config.seed, "detector").spawn(3)
    )
    columns = np.arange(nx)
    rows = np.arange(ny)
    bias = (
        config.bias_level
        + config.bias_column_rms * bias_rng.standard_normal(nx)[None, :]
        + config.bias_column_ramp * (columns / max(nx - 1, 1))[None, :]
        + config.bias_row_amplitude * np.sin(2 * np.pi * rows / ny * 1.5 + bias_rng.uniform(0, 2 * np.pi))[:, None]
    )
    radius2 = ((rows[:, None] - (ny - 1) / 2) ** 2 + (columns[None, :] - (nx - 1) / 2) ** 2) / (
        ((ny - 1) / 2) ** 2 + ((nx - 1) / 2) ** 2
    )
    flat = (1.0 - config.vignetting * radius2) * (1.0 + config.prnu * flat_rng.standard_normal((ny, nx)))
    dark = np.full((ny, nx), config.dark_current)

    n_bad = config.n_dead_columns + config.n_low_columns + config.n_hot_columns
    chosen = defect_rng.choice(np.arange(16, nx - 16), size=n_bad, replace=False)
    dead = chosen[: config.n_dead_columns]
    low = chosen[config.n_dead_columns : config.n_dead_columns + config.n_low_columns]
    hot = chosen[config.n_dead_columns + config.n_low_columns :]
    hot_start = int(defect_rng.integers(0, ny // 2))
    hot_y = defect_rng.integers(0, ny, config.n_hot_pixels)
    hot_x = defect_rng.integers(0, nx, config.n_hot_pixels)
    hot_rate = 10 ** defect_rng.uniform(0.0, 1.3, config.n_hot_pixels)  # 1-20 e-/s
    defect_map = np.zeros((ny, nx), dtype=bool)
    if defects:
        flat[:, dead] *= config.dead_column_response
        flat[:, low] *= config.low_column_response
        dark[hot_start:, hot] += config.hot_column_dark
        dark[hot_y, hot_x] += hot_rate
        defect_map[:, dead] = True
        defect_map[:, low] = True
        defect_map[hot_start:, hot] = True
        defect_map[hot_y, hot_x] = True
    flat /= np.median(flat)  # "unit response" = the median pixel, as a master flat is normalised
    for array in (bias, flat, dark, defect_map):
        array.setflags(write=False)
    return Detector(
        bias=bias,
        flat=flat,
        dark=dark,
        bad_columns={"dead": tuple(map(int, dead)), "low": tuple(map(int, low)), "hot": tuple(map(int, hot))},
        hot_column_start=hot_start,
        hot_pixels=(hot_y, hot_x),
        defects=defect_map,
    )


# --------------------------------------------------------------------------- sky


def field_center(field: str, config: SurveyConfig = SurveyConfig()) -> tuple[float, float]:
    """Nominal pointing (RA, Dec) in degrees of a field, deterministic from (seed, field).

    Fields are spread uniformly on the sphere within |Dec| < 30 deg.
    """
    rng = _rng(config.seed, "pointing", field)
    ra = rng.uniform(0.0, 360.0)
    dec = np.rad2deg(np.arcsin(rng.uniform(-0.5, 0.5)))
    return float(ra), float(dec)


def make_wcs(center: tuple[float, float], config: SurveyConfig, rotation_deg: float = 0.0) -> WCS:
    """TAN WCS with the reference pixel at the detector centre and North up, East left
    (before a counter-clockwise ``rotation_deg``).  CDELT in deg/pixel."""
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


def sky_catalogue(field: str, config: SurveyConfig = SurveyConfig()) -> pd.DataFrame:
    """The static sky of a field (stars and galaxies), deterministic from (seed, field).

    Columns: ``source_id, kind, ra, dec`` (deg), ``mag``, and for galaxies ``r_eff``
    (arcsec, half-light semi-major axis), ``axis_ratio`` (b/a), ``pa_deg`` (major axis,
    counter-clockwise from +x of the unrotated frame) and ``sersic_n``.  Sources extend 20
    pixels beyond the detector so that light from outside spills in.
    """
    return _sky_catalogue(field, config).copy()


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


def transient_catalogue(field: str, config: SurveyConfig = SurveyConfig()) -> pd.DataFrame:
    """Supernovae and variable stars of a field, deterministic from (seed, field).

    Supernovae: ``host_id``, ``t_explosion`` (MJD, uniform from the start of
    ``transient_start`` to the end of ``transient_end``), ``t_rise`` (days to peak),
    ``decline_rate`` (mag/day after peak), ``peak_mag`` and ``peak_snr`` (PSF-optimal S/N
    at peak, at median seeing and sky).
    Variables: ``mag0``, ``amplitude`` (mag, peak to peak), ``period`` (days), ``phase``;
    ``m(t) = mag0 + amplitude/2 · sin(2π (t/period + phase))``, t in MJD.
    """
    return _transient_catalogue(field, config).copy()


def supernova_flux(t_mjd: float, supernovae: pd.DataFrame, exptime: float, zero_point: float) -> np.ndarray:
    """Supernova flux (e- in ``exptime``) at ``t_mjd``: 0 before explosion, ``(τ/t_rise)²``
    times the peak while rising, then declining by ``decline_rate`` mag/day."""
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
    """
    half_amplitude = variables.amplitude.to_numpy() / 2.0
    phase = 2 * np.pi * (t_mjd / variables.period.to_numpy() + variables.phase.to_numpy())
    base = mag_to_rate(variables.mag0.to_numpy(), zero_point) * exptime
    flux = base * 10 ** (-0.4 * half_amplitude * np.sin(phase))
    return flux, base * i0(0.4 * np.log(10) * half_amplitude)


def asteroid_track(field: str, night: str | dt.date, config: SurveyConfig = SurveyConfig()) -> dict[str, float] | None:
    """The asteroid crossing ``field`` on ``night`` (None before ``transient_start``).

    Returns ``source_id``, ``mag``, ``t_ref`` (MJD, the middle of the field's block of
    exposures), ``ra``/``dec`` at ``t_ref`` (deg) and ``rate_ra``/``rate_dec`` (arcsec/min
    on the sky, RA component already multiplied by cos Dec).  Position is linear in time.
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
    field: str, night: str | dt.date, start: dt.datetime, config: SurveyConfig = SurveyConfig()
) -> pd.DataFrame:
    """Everything on the sky of ``field`` during the exposure starting at ``start`` (UTC).

    Columns: ``source_id, kind, ra, dec, flux, flux_baseline`` (e- in ``config.exptime``,
    evaluated at mid-exposure), galaxy shape columns, and ``ra_end, dec_end`` for moving
    objects (start/end of exposure for the asteroid; NaN otherwise, with ``ra/dec`` then
    the position at mid-exposure).
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


def point_sources(x: Sequence[float], y: Sequence[float], flux: Sequence[float], kind: str = "star") -> pd.DataFrame:
    """A custom source list for :func:`simulate_frame`: point sources at 0-based pixel
    positions with fluxes in e- (per exposure, unit response)."""
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


# --------------------------------------------------------------------------- frame assembly


@dataclass(frozen=True)
class _Conditions:
    seeing: float  # arcsec FWHM
    sky_mag: float  # mag / arcsec^2
    jitter: tuple[float, float]  # arcsec on the sky (east, north)
    rotation_deg: float


def _draw_conditions(rng: np.random.Generator, config: SurveyConfig) -> _Conditions:
    seeing = rng.uniform(*config.seeing_range)
    sky_mag = config.sky_mag + rng.uniform(-config.sky_mag_scatter, config.sky_mag_scatter)
    jitter = tuple(rng.normal(0.0, config.pointing_jitter, 2))
    rotation = rng.uniform(-config.max_rotation_deg, config.max_rotation_deg)
    return _Conditions(float(seeing), float(sky_mag), (float(jitter[0]), float(jitter[1])), float(rotation))


def _frame_wcs(field: str, conditions: _Conditions, config: SurveyConfig) -> WCS:
    ra, dec = field_center(field, config)
    ra += conditions.jitter[0] / 3600.0 / np.cos(np.deg2rad(dec))
    dec += conditions.jitter[1] / 3600.0
    return make_wcs((ra, dec), config, conditions.rotation_deg)


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


def _cosmic_ray_charge(
    rng: np.random.Generator, shape: tuple[int, int], exptime: float, config: SurveyConfig
) -> np.ndarray:
    """Charge (e-) deposited by cosmic rays: 40 % single-pixel hits, the rest straight
    tracks 2-12 pixels long at random angles; log-normal charge per pixel (median
    ``cosmic_ray_charge``, σ_ln = 0.5, at least 1/4 of the median)."""
    ny, nx = shape
    n_events = rng.poisson(config.cosmic_ray_rate * ny * nx * exptime)
    charge = np.zeros(ny * nx)
    if n_events == 0:
        return charge.reshape(shape)
    start_x = rng.uniform(-0.5, nx - 0.5, n_events)
    start_y = rng.uniform(-0.5, ny - 0.5, n_events)
    length = np.where(rng.uniform(size=n_events) < 0.4, 0.0, rng.uniform(2.0, 12.0, n_events))
    angle = rng.uniform(0, np.pi, n_events)
    steps = np.linspace(0.0, 1.0, 49)[None, :]
    xs = np.floor(start_x[:, None] + steps * length[:, None] * np.cos(angle)[:, None] + 0.5).astype(np.int64)
    ys = np.floor(start_y[:, None] + steps * length[:, None] * np.sin(angle)[:, None] + 0.5).astype(np.int64)
    inside = (xs >= 0) & (xs < nx) & (ys >= 0) & (ys < ny)
    event = np.broadcast_to(np.arange(n_events)[:, None], xs.shape)
    hits = np.unique(np.stack([event[inside], ys[inside] * nx + xs[inside]]), axis=1)
    deposit = np.maximum(
        config.cosmic_ray_charge * np.exp(0.5 * rng.standard_normal(hits.shape[1])),
        config.cosmic_ray_charge / 4,
    )
    charge += np.bincount(hits[1], weights=deposit, minlength=ny * nx)
    return charge.reshape(shape)


def _bleed_column(column: np.ndarray, full_well: float) -> np.ndarray:
    """Cap one column at ``full_well`` (in place), spilling each saturated run's excess
    charge half up and half down the column; returns the mask of pixels that were capped
    or received spilled charge.  Charge spilled off the detector is lost."""
    runs, n_runs = label(column > full_well)
    touched = np.zeros(column.size, dtype=bool)
    for run in range(1, n_runs + 1):
        members = np.flatnonzero(runs == run)
        excess = float(np.sum(column[members] - full_well))
        column[members] = full_well
        touched[members] = True
        for direction, start in ((-1, members[0] - 1), (1, members[-1] + 1)):
            path = np.arange(start, -1 if direction < 0 else column.size, direction)
            if path.size == 0:
                continue
            room = np.clip(full_well - column[path], 0, None)
            filled = np.cumsum(room)
            spill = excess / 2
            full = filled <= spill
            partial = np.flatnonzero(~full)[:1]
            column[path[full]] = np.maximum(column[path[full]], full_well)  # another run keeps its excess
            touched[path[full]] = True
            if partial.size:
                left = spill - (filled[partial[0] - 1] if partial[0] > 0 else 0.0)
                column[path[partial]] += left
                touched[path[partial]] = left > 0
    return touched


def bleed(electrons: np.ndarray, full_well: float) -> np.ndarray:
    """Apply full-well saturation with charge bleeding along columns (axis 0) in place;
    returns the boolean mask of saturated or bled pixels."""
    touched = np.zeros(electrons.shape, dtype=bool)
    for col in np.unique(np.nonzero(electrons > full_well)[1]):
        touched[:, col] = _bleed_column(electrons[:, col], full_well)
    return touched


def _readout(electrons: np.ndarray, rng: np.random.Generator, det: Detector, config: SurveyConfig) -> np.ndarray:
    """Add read noise, convert to integer ADU with the bias, clip at the ADC ceiling."""
    electrons = electrons + rng.normal(0.0, config.read_noise, electrons.shape)
    adu = np.floor(electrons / config.gain + det.bias + 0.5)
    return np.clip(adu, 0.0, config.saturate).astype(np.float32)


def _base_header(config: SurveyConfig, start: dt.datetime, exptime: float, imagetyp: str, field: str) -> fits.Header:
    header = fits.Header()
    header["IMAGETYP"] = (imagetyp, "object, bias, dark or flat")
    header["FIELD"] = (field, "survey field, CAL for calibration frames")
    header["DATE-OBS"] = (Time(start, scale="utc").isot, "UTC start of exposure")
    header["MJD-OBS"] = (_mjd(start), "MJD (UTC) at start of exposure")
    header["EXPTIME"] = (float(exptime), "[s] exposure time")
    header["FILTER"] = (config.filter_name, "filter")
    header["GAIN"] = (config.gain, "[e-/ADU] detector gain")
    header["RDNOISE"] = (config.read_noise, "[e-] read noise rms")
    header["SATURATE"] = (config.saturate, "[ADU] saturation level of raw data")
    header["PIXSCALE"] = (config.pixel_scale, "[arcsec/pixel] nominal pixel scale")
    header["BUNIT"] = ("adu", "raw counts including bias")
    header["TELESCOP"] = ("AstrID-sim", "simulated survey")
    header["SIMSEED"] = (config.seed, "survey seed")
    return header


def _night_label(night: str | dt.date) -> str:
    return f"{night_date(night):%Y%m%d}"


def _empty_truth() -> pd.DataFrame:
    return pd.DataFrame(
        {column: pd.Series(dtype="object" if column in ("source_id", "kind") else float) for column in TRUTH_COLUMNS}
    )


def simulate_frame(
    field: str = "F01",
    night: str | dt.date = "2024-01-01",
    index: int = 0,
    config: SurveyConfig = SurveyConfig(),
    *,
    seeing: float | None = None,
    sources: pd.DataFrame | None = None,
    flat_field: bool = True,
    cosmic_rays: bool = True,
    defects: bool = True,
    trail_arcsec: float = 0.0,
    trail_angle_deg: float = 0.0,
) -> SimulatedFrame:
    """Simulate science frame ``index`` (0-based) of ``field`` on ``night``.

    Switches for tests: ``seeing`` (arcsec FWHM, default drawn from ``seeing_range``);
    ``sources`` (default: the field's sky at this epoch; otherwise a table with ``x, y``
    in 0-based pixels — see :func:`point_sources` — or ``ra, dec`` in degrees, and
    ``flux`` in e-; rows of kind ``galaxy`` also need the shape columns of
    :func:`sky_catalogue`; an empty table gives blank sky); ``flat_field=False`` gives unit
    response; ``cosmic_rays=False``; ``defects=False`` removes bad columns and hot pixels;
    ``trail_arcsec``/``trail_angle_deg`` smear every source along a line (tracking error,
    angle counter-clockwise from +x).  Conditions (seeing, pointing, sky) and noise use
    separate random streams, so a switch does not change the other draws.
    """
    date = night_date(night)
    streams = _seed_sequence(config.seed, "frame", field, date.toordinal(), index).spawn(4)
    condition_rng, photon_rng, read_rng, cosmic_rng = (np.random.default_rng(s) for s in streams)
    conditions = _draw_conditions(condition_rng, config)
    if seeing is not None:
        conditions = _Conditions(float(seeing), conditions.sky_mag, conditions.jitter, conditions.rotation_deg)
    start = exposure_start(field, date, index, config)
    wcs = _frame_wcs(field, conditions, config)
    fwhm_px = conditions.seeing / config.pixel_scale
    trail_px = (
        trail_arcsec / config.pixel_scale * float(np.cos(np.deg2rad(trail_angle_deg))),
        trail_arcsec / config.pixel_scale * float(np.sin(np.deg2rad(trail_angle_deg))),
    )
    catalogue = sources_at(field, date, start, config) if sources is None else sources
    table = _place(catalogue, wcs, trail_px, config)
    ny, nx = config.shape
    reach = 60
    table = table[(table.x > -reach) & (table.x < nx + reach) & (table.y > -reach) & (table.y < ny + reach)]
    table = table.reset_index(drop=True)

    det = detector(config, defects)
    response = det.flat if flat_field else np.ones(config.shape)
    sky_electrons = sky_rate(conditions.sky_mag, config) * config.exptime
    col = np.clip(np.floor(table.x.to_numpy() + 0.5).astype(int), 0, nx - 1)
    row = np.clip(np.floor(table.y.to_numpy() + 0.5).astype(int), 0, ny - 1)
    local_response = response[row, col]
    local_background = local_response * sky_electrons + det.dark[row, col] * config.exptime + config.read_noise**2
    source_image = np.zeros(config.shape)
    is_galaxy = (table.kind == "galaxy").to_numpy()
    snr = np.zeros(len(table))
    snr[~is_galaxy] = _render_point_sources(
        source_image,
        table[~is_galaxy],
        fwhm_px,
        local_response[~is_galaxy],
        local_background[~is_galaxy],
        config,
    )
    snr[is_galaxy] = _render_galaxies(
        source_image,
        table[is_galaxy],
        fwhm_px,
        conditions.rotation_deg,
        trail_px,
        local_response[is_galaxy],
        local_background[is_galaxy],
        config,
    )

    expected = response * (sky_electrons + source_image) + det.dark * config.exptime
    electrons = photon_rng.poisson(expected).astype(float)
    cr_charge = (
        _cosmic_ray_charge(cosmic_rng, config.shape, config.exptime, config) if cosmic_rays else np.zeros(config.shape)
    )
    electrons += cr_charge
    bled = bleed(electrons, config.full_well)
    raw = _readout(electrons, read_rng, det, config)

    truth = _truth(table.assign(snr=snr), config)
    header = _science_header(config, start, field, conditions, wcs, sky_electrons, trail_arcsec)
    frame_id = f"{field}-{_night_label(date)}-s{index + 1:03d}"
    header["FRAMEID"] = (frame_id, "unique frame identifier")
    return SimulatedFrame(
        frame_id=frame_id,
        field=field,
        header=header,
        data=raw,
        truth=truth,
        cosmic_rays=cr_charge > 0,
        saturated=(raw >= config.saturate) | bled,
        cosmic_ray_electrons=cr_charge.astype(np.float32),
    )


def _truth(table: pd.DataFrame, config: SurveyConfig) -> pd.DataFrame:
    """Truth rows for the sources whose centres fall on the detector."""
    ny, nx = config.shape
    x, y = table.x.to_numpy(), table.y.to_numpy()
    rows = table[(x >= -0.5) & (x < nx - 0.5) & (y >= -0.5) & (y < ny - 0.5)]
    if rows.empty:
        return _empty_truth()
    flux = rows.flux.to_numpy(dtype=float)
    return pd.DataFrame(
        {
            "source_id": rows.source_id.to_numpy(),
            "kind": rows.kind.to_numpy(),
            "ra": rows.ra.to_numpy(dtype=float),
            "dec": rows.dec.to_numpy(dtype=float),
            "x": rows.x.to_numpy(dtype=float),
            "y": rows.y.to_numpy(dtype=float),
            "flux": flux,
            "flux_baseline": rows.flux_baseline.to_numpy(dtype=float),
            "mag": flux_to_mag(flux, config.exptime, config.zero_point),
            "snr": rows.snr.to_numpy(dtype=float),
        }
    )


def _science_header(
    config: SurveyConfig,
    start: dt.datetime,
    field: str,
    conditions: _Conditions,
    wcs: WCS,
    sky_electrons: float,
    trail_arcsec: float,
) -> fits.Header:
    header = _base_header(config, start, config.exptime, "object", field)
    header["OBJECT"] = (field, "field name")
    header["MAGZP"] = (config.zero_point, "mag of 1 e-/s total at unit flat response")
    header["SEEING"] = (conditions.seeing, "[arcsec] true Moffat PSF FWHM")
    header["PSFBETA"] = (config.moffat_beta, "Moffat beta of the true PSF")
    header["SKYMAG"] = (conditions.sky_mag, "[mag/arcsec2] true sky brightness")
    header["SKYLEV"] = (sky_electrons, "[e-/pixel] true sky in exposure, unit response")
    header["TRAIL"] = (trail_arcsec, "[arcsec] injected tracking trail length")
    header.update(wcs.to_header())
    return header


def _calibration_frame(kind: str, number: int, date: dt.date, config: SurveyConfig, det: Detector) -> SimulatedFrame:
    exptime = {"bias": 0.0, "dark": config.dark_exptime, "flat": config.flat_exptime}[kind]
    streams = _seed_sequence(config.seed, "calibration", kind, date.toordinal(), number).spawn(4)
    level_rng, photon_rng, read_rng, cosmic_rng = (np.random.default_rng(s) for s in streams)
    expected = det.dark * exptime
    if kind == "flat":
        expected = expected + det.flat * config.flat_level * level_rng.uniform(0.8, 1.2)
    electrons = photon_rng.poisson(expected).astype(float)
    cr_charge = _cosmic_ray_charge(cosmic_rng, config.shape, exptime, config)
    electrons += cr_charge
    bled = bleed(electrons, config.full_well)
    raw = _readout(electrons, read_rng, det, config)
    offset = {"bias": 0, "dark": 10, "flat": 30}[kind]
    start = _midnight(date) + dt.timedelta(minutes=offset + 2 * number)
    header = _base_header(config, start, exptime, kind, "CAL")
    frame_id = f"CAL-{_night_label(date)}-{kind}{number + 1:02d}"
    header["FRAMEID"] = (frame_id, "unique frame identifier")
    return SimulatedFrame(
        frame_id=frame_id,
        field="CAL",
        header=header,
        data=raw,
        truth=_empty_truth(),
        cosmic_rays=cr_charge > 0,
        saturated=(raw >= config.saturate) | bled,
        cosmic_ray_electrons=cr_charge.astype(np.float32),
    )


def simulate_calibrations(night: str | dt.date, config: SurveyConfig = SurveyConfig()) -> list[SimulatedFrame]:
    """The night's ``n_bias`` biases, ``n_dark`` darks (``dark_exptime``) and ``n_flat``
    twilight flats (``flat_level`` e- x 0.8-1.2, with the detector's flat response)."""
    date = night_date(night)
    det = detector(config)
    counts = {"bias": config.n_bias, "dark": config.n_dark, "flat": config.n_flat}
    return [_calibration_frame(kind, number, date, config, det) for kind, n in counts.items() for number in range(n)]


def simulate_night(night: str | dt.date, config: SurveyConfig = SurveyConfig()) -> list[SimulatedFrame]:
    """All frames of one night: the shared calibration frames, then ``frames_per_night``
    science frames of every field in ``config.fields`` order."""
    frames = simulate_calibrations(night, config)
    for field in config.fields:
        frames.extend(simulate_frame(field, night, index, config) for index in range(config.frames_per_night))
    return frames
