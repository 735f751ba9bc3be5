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

Modules
-------
``config``
    :class:`SurveyConfig`, :class:`SimulatedFrame`, the truth columns and the per-frame
    observing conditions.
``conventions``
    Named random streams, the observing schedule (UTC, MJD) and the magnitude scale.
``ccd``
    The fixed detector signature: :class:`Detector` and :func:`detector`.
``catalogues``
    Field pointings and WCS, the static sky (stars, galaxies) and custom source lists.
``transients``
    Supernovae, variable stars, the nightly asteroid and the sky at one epoch.
``rendering``
    Moffat and Sérsic stamps and their rendering into an image.
``readout``
    Cosmic rays, full-well bleeding, read noise, gain and the ADC.
``headers``
    FITS header cards of raw frames.
``assembly``
    The entry points :func:`simulate_frame`, :func:`simulate_calibrations` and
    :func:`simulate_night`.
"""

from astrid_assets.science.psf.profiles import moffat_alpha, moffat_fwhm, moffat_noise_area, moffat_profile
from astrid_assets.testing.simulate.assembly import simulate_calibrations, simulate_frame, simulate_night
from astrid_assets.testing.simulate.catalogues import field_center, make_wcs, point_sources, sky_catalogue
from astrid_assets.testing.simulate.ccd import Detector, detector
from astrid_assets.testing.simulate.config import SOURCE_KINDS, TRUTH_COLUMNS, SimulatedFrame, SurveyConfig
from astrid_assets.testing.simulate.conventions import (
    exposure_start,
    flux_to_mag,
    mag_to_rate,
    night_date,
    peak_snr_to_flux,
    sky_rate,
)
from astrid_assets.testing.simulate.readout import bleed
from astrid_assets.testing.simulate.rendering import add_stamps, galaxy_stamps, moffat_stamps, psf_kernel, sersic_b
from astrid_assets.testing.simulate.transients import (
    asteroid_track,
    sources_at,
    supernova_flux,
    transient_catalogue,
    variable_flux,
)

__all__ = [
    "SOURCE_KINDS",
    "TRUTH_COLUMNS",
    "Detector",
    "SimulatedFrame",
    "SurveyConfig",
    "add_stamps",
    "asteroid_track",
    "bleed",
    "detector",
    "exposure_start",
    "field_center",
    "flux_to_mag",
    "galaxy_stamps",
    "mag_to_rate",
    "make_wcs",
    "moffat_alpha",
    "moffat_fwhm",
    "moffat_noise_area",
    "moffat_profile",
    "moffat_stamps",
    "night_date",
    "peak_snr_to_flux",
    "point_sources",
    "psf_kernel",
    "sersic_b",
    "simulate_calibrations",
    "simulate_frame",
    "simulate_night",
    "sky_catalogue",
    "sky_rate",
    "sources_at",
    "supernova_flux",
    "transient_catalogue",
    "variable_flux",
]
