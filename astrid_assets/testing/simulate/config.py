"""What defines the simulated survey and what it produces.

:class:`SurveyConfig` (every survey parameter, units in its comments), the per-exposure
observing conditions drawn from it (seeing in arcsec FWHM, sky in mag / arcsec^2, pointing
jitter in arcsec, rotation in degrees), :class:`SimulatedFrame` (one raw frame in ADU with
its truth) and the truth-table columns :data:`TRUTH_COLUMNS` and source kinds
:data:`SOURCE_KINDS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dataclass_field

import numpy as np
import pandas as pd
from astropy.io import fits

TRUTH_COLUMNS = ("source_id", "kind", "ra", "dec", "x", "y", "flux", "flux_baseline", "mag", "snr")
SOURCE_KINDS = ("star", "galaxy", "supernova", "variable", "asteroid")


@dataclass(frozen=True)
class SurveyConfig:
    """Everything that defines the simulated survey.  Units are in the comments."""

    seed: int = 2024
    fields: tuple[str, ...] = ("F01", "F02")
    frames_per_night: int = 3  # science frames per field per night
    shape: tuple[int, int] = (512, 512)  # (ny, nx)
    pixel_scale: float = 1.0  # arcsec / pixel
    exptime: float = 60.0  # s, science exposures
    filter_name: str = "r"  # FILTER card
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
    seeing_range: tuple[float, float] = (2.5, 3.5)  # arcsec FWHM (before pixelisation), uniform per frame
    moffat_beta: float = 3.0  # Moffat β of the true PSF (dimensionless)
    pointing_jitter: float = 3.0  # arcsec rms per axis
    max_rotation_deg: float = 0.2  # deg, frame rotation uniform in +- this
    vignetting: float = 0.15  # fractional response loss at the detector corners
    prnu: float = 0.01  # pixel response non-uniformity, rms
    dead_column_response: float = 0.02  # flat response factor of a dead column
    low_column_response: float = 0.7  # flat response factor of a low-response column
    hot_column_dark: float = 2.0  # e- / s / pixel added along the hot column
    n_dead_columns: int = 1  # count
    n_low_columns: int = 1  # count
    n_hot_columns: int = 1  # count
    n_hot_pixels: int = 20  # count, dark rate 1-20 e- / s each
    cosmic_ray_rate: float = 5e-6  # events / pixel / s
    cosmic_ray_charge: float = 1500.0  # e- per pixel, median of a log-normal
    n_bias: int = 5  # frames per night
    n_dark: int = 5  # frames per night
    dark_exptime: float = 300.0  # s
    n_flat: int = 5  # frames per night
    flat_level: float = 30000.0  # e- per pixel at unit response (twilight flats)
    flat_exptime: float = 5.0  # s
    star_density: float = 5.5  # stars per arcmin^2 (400 on the default 512" x 512" field)
    star_mag_range: tuple[float, float] = (13.5, 23.0)  # mag
    star_count_slope: float = 0.3  # d log10 N / d m
    galaxy_density: float = 1.1  # galaxies per arcmin^2 (80 on the default field)
    galaxy_mag_range: tuple[float, float] = (17.0, 22.5)  # mag
    galaxy_count_slope: float = 0.4  # d log10 N / d m
    galaxy_r_eff_range: tuple[float, float] = (1.0, 4.0)  # arcsec, log-uniform
    n_supernovae: int = 6  # per field (at most the interior galaxies)
    supernova_peak_snr: tuple[float, float] = (5.0, 200.0)  # log-uniform, at median seeing
    supernova_rise_days: tuple[float, float] = (12.0, 18.0)  # days, explosion to peak, uniform
    supernova_decline: tuple[float, float] = (0.02, 0.05)  # mag / day after peak
    n_variables: int = 5  # per field
    variable_mag_range: tuple[float, float] = (16.5, 19.5)  # mag at zero phase (m0)
    variable_amplitude: tuple[float, float] = (0.2, 1.0)  # mag, peak to peak
    variable_period_days: tuple[float, float] = (0.2, 20.0)  # log-uniform
    asteroid_rate: tuple[float, float] = (1.0, 4.0)  # arcsec / min
    asteroid_mag_range: tuple[float, float] = (17.5, 19.5)  # mag, uniform
    transient_start: str = "2024-01-06"  # first night with supernovae / asteroids
    transient_end: str = "2024-03-31"  # last possible supernova explosion date (inclusive)
    night_start_utc_hours: float = 1.0  # first science exposure, hours after 00:00 UTC
    frame_interval_min: float = 8.0  # min, between science frames of one field
    slew_min: float = 6.0  # min, between the last frame of one field and the first of the next


#: The default survey: the default ``config`` of the public functions (frozen, so one shared
#: instance is a safe argument default).
_DEFAULT_CONFIG = SurveyConfig()


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

    Attributes
    ----------
    frame_id : str
        Unique identifier (``FRAMEID`` card), e.g. ``"F01-20240101-s001"``.
    field : str
        Field name, ``"CAL"`` for calibration frames.
    header : astropy.io.fits.Header
        Raw-frame header (:mod:`.headers`).
    data : numpy.ndarray
        Raw frame, ADU (bias included, integer-valued, float32), ``[y, x]``.
    truth : pandas.DataFrame
        :data:`TRUTH_COLUMNS` per source on the detector: ``x``, ``y`` 0-based px, ``ra``,
        ``dec`` deg, ``flux`` and ``flux_baseline`` e-, ``mag``, ``snr``.
    cosmic_rays : numpy.ndarray of bool
        Pixels hit by cosmic rays.
    saturated : numpy.ndarray of bool
        Pixels at the ADC ceiling ``SATURATE`` or capped at / bled from the full well.
    cosmic_ray_electrons : numpy.ndarray or None
        float32 map of the cosmic-ray charge per pixel, e- (summed over the hits on a pixel).
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
        """The raw frame as a FITS file: one primary HDU with ``data`` and ``header``.

        Returns
        -------
        astropy.io.fits.HDUList
            A single ``PrimaryHDU`` (float32 ADU data).
        """
        return fits.HDUList([fits.PrimaryHDU(data=self.data, header=self.header)])


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
