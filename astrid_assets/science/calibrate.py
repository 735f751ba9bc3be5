"""CCD reduction: master calibrations, bias/dark/flat correction, the data's state, gain, masks,
noise maps.

Conventions
-----------
* Raw frames are ADU with the bias included; pixel arrays are indexed ``[y, x]`` (0-based).
* Master bias: ADU.  Master dark: ADU/s, bias-subtracted.  Master flat: dimensionless,
  normalised to median 1.
* Calibrated science frames are electrons (e-) per pixel with the sky **not** subtracted::

      science = (raw - pedestal - bias - dark * EXPTIME) * GAIN / flat

  so a flux in e- refers to a pixel of unit (median) response.  ``GAIN`` is the header's, else
  measured (photon transfer of the night's flats and biases, else the sky's variance), else 1
  for sky-subtracted data whose gain cannot be measured (the frame is then in its own units);
  :attr:`CalibratedFrame.info` says which.  Variance is e-², background and its rms are e-.
* Masks are ``uint16`` bit-planes from :mod:`astrid_assets.science.masks`.

The data's state
----------------
Frames arrive in one of three states (:func:`classify_data_state`), and the noise model and the
cosmic-ray search follow it:

* ``raw`` — detector counts with the bias pedestal in: the night has calibration frames, or the
  header gain shows a sky level far above what its noise allows for a Poisson sky (a pedestal),
  or the pixels are integers with no calibration history in the header.  With a known gain and
  read noise the variance is the Poisson model of sky + sources + dark + read noise; otherwise
  it is measured.
* ``reduced`` — calibrated, sky included: the variance is the measured sky variance plus the
  sources' Poisson noise.
* ``sky-subtracted`` — the background is ≈ 0 (its median within :data:`SKY_ZERO_SIGMA` rms of
  zero, many negative pixels): the sky's Poisson level is unknown, so the variance is the
  measured background variance plus the sources' Poisson noise through the gain (left out when
  the gain is unknown), never the pixel values read as photons.

References
----------
* L.A.Cosmic: van Dokkum 2001, PASP 113, 1420 (through ``astroscrappy``, McCully et al.,
  Zenodo 1482019); its object-contrast limit for undersampled PSFs is set from the measured
  FWHM (§3 of the paper), and candidates consistent with a scaled PSF are returned to the image
  (:func:`spare_psf_like`).
* Gain and read noise by photon transfer — the variance-mean relation
  ``σ²(ADU) = S(ADU)/g + (RN/g)²``: Janesick 2007, *Photon Transfer* (SPIE Press), ch. 3-5;
  Howell 2006, *Handbook of CCD Astronomy*, 2nd ed., §4.3 (gain from a pair of flats and a pair
  of biases).
* Background mesh estimation as in SExtractor, Bertin & Arnouts 1996, A&AS 117, 393, through SEP
  (Barbary 2016, JOSS 1, 58).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import astroscrappy
import numpy as np
import sep
from astropy.io import fits
from astropy.stats import mad_std, sigma_clip
from scipy import ndimage
from scipy.ndimage import binary_dilation, median_filter
from scipy.special import erf

from astrid_assets.science import masks
from astrid_assets.science.frames import (
    HeaderValue,
    exposure_time,
    header_gain,
    header_read_noise,
    header_saturation,
    original_pixel_type,
)

#: A master-flat pixel more than this fraction away from its row neighbourhood is bad.
FLAT_DEVIATION = 0.1
#: Master-flat values outside this range are bad whatever their neighbours.
FLAT_RANGE = (0.5, 1.5)
#: Flat values below this are not divided by (the pixel is flagged and left uncorrected).
MIN_FLAT = 0.01
#: A master-dark pixel this many robust sigmas above the median dark rate is hot.
HOT_SIGMA = 10.0
#: Width (pixels) of the running median along rows that a flat pixel is compared to; wider
#: than any bad-column group, narrower than the vignetting scale.
FLAT_REFERENCE_WIDTH = 15
#: SATURATED is grown by this many pixels along columns (bleed tails) and one across.
BLEED_GROWTH = 2
#: Pixels mirrored around the frame before L.A.Cosmic so that its filters reach the edges.
COSMIC_PAD = 8
#: SEP background mesh (pixels) and median-filter size (meshes).
BACKGROUND_MESH = 64
BACKGROUND_FILTER = 3

#: A sky whose median is below this many sky rms is taken as subtracted.
SKY_ZERO_SIGMA = 2.0
#: With a known gain, a sky level whose Poisson variance would exceed the measured variance by
#: this factor carries a bias pedestal.
PEDESTAL_FACTOR = 2.0
#: At least this many pixels at exactly the frame's maximum value are a saturation pile-up...
SATURATION_PILEUP_MIN = 4
#: ...when they outnumber by this factor the pixels within 2 % below that value.
SATURATION_PILEUP_CONTRAST = 2.0
#: Widths of the band below the maximum searched for a saturation plateau, as fractions of
#: (maximum − median): a full well read out with noise and bias structure is not one value.
SATURATION_BANDS = (0.0025, 0.005, 0.01, 0.02)
#: Largest value of an integer pixel type (the ADC ceiling of a raw frame).
ADC_CEILING = {"uint8": 255, "int16": 32767, "uint16": 65535, "int32": 2**31 - 1, "uint32": 2**32 - 1}
#: Header cards that say a frame was already calibrated (MaxIm DL ``CALSTAT``, IRAF ``ccdproc``).
CALIBRATION_HISTORY_KEYS = ("CALSTAT", "ZEROCOR", "BIASCOR", "DARKCOR", "FLATCOR", "CCDPROC", "BIASSUB")

#: L.A.Cosmic parameters (van Dokkum 2001): Laplacian-to-noise limit, its fraction for the
#: neighbours of a hit, and the object-contrast limit for well-sampled PSFs.
COSMIC_SIGCLIP = 4.5
COSMIC_SIGFRAC = 0.3
COSMIC_OBJLIM = 5.0
COSMIC_NITER = 4
#: Below this FWHM (pixels) the PSF is undersampled: star cores look like hits to the
#: Laplacian, and the object-contrast limit rises (:func:`lacosmic_objlim`).
UNDERSAMPLED_FWHM = 2.5
#: ``(FWHM px, objlim)`` nodes of :func:`lacosmic_objlim`, interpolated linearly.
OBJLIM_NODES = ((1.0, 20.0), (1.5, 15.0), (UNDERSAMPLED_FWHM, COSMIC_OBJLIM))
#: PSF test of cosmic-ray candidates (:func:`spare_psf_like`): a candidate whose 3×3 pixels around
#: its peak fit a scaled, pixel-integrated PSF (plus a linear gradient from neighbours) with χ²
#: at most this (≈ the 99.5 % point of χ² for the ≈ 4 degrees of freedom left) is a star.
PSF_TEST_CHI2 = 15.0
#: Fractional error allowed to the PSF model in that test (shape of the true PSF vs the model).
PSF_TEST_TOLERANCE = 0.15
#: FWHMs tried in that test, relative to the measured one (the PSF varies over the field).
PSF_TEST_SCALES = (0.8, 0.9, 1.0, 1.12, 1.25)
#: Sub-pixel centre offsets (pixels) tried in the PSF fits.
PSF_OFFSET_STEP = 0.125
#: Quick FWHM: detections at this S/N, at most this many, fitted over this grid (pixels).
FWHM_DETECT_SIGMA = 10.0
FWHM_MAX_STARS = 80
FWHM_MIN_STARS = 3
FWHM_GRID = tuple(np.round(np.geomspace(0.6, 8.0, 45), 4))

_SIGMA_PER_FWHM = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
_SEP_REJECT = sep.OBJ_MERGED | sep.OBJ_TRUNC


@dataclass
class MasterCalibrations:
    """Master calibration frames of one night.

    ``bias`` ADU; ``dark`` ADU/s (bias-subtracted); ``flat`` normalised to median 1;
    ``bad_pixels`` True for dead, low-response or hot pixels found in the masters.  ``gain``
    (e-/ADU) and ``read_noise`` (e-) by photon transfer of the night's flat and bias pairs
    (:func:`photon_transfer`), None where there were not two of each.
    """

    bias: np.ndarray
    dark: np.ndarray
    flat: np.ndarray
    bad_pixels: np.ndarray
    gain: float | None = None
    read_noise: float | None = None

    @property
    def identity(self) -> bool:
        """True for the identity calibrations of frames reduced elsewhere (no calibration frames)."""
        return bool(not np.any(self.bias) and not np.any(self.dark) and np.all(self.flat == 1)
                    and not np.any(self.bad_pixels))


@dataclass
class CalibratedFrame:
    """A reduced science frame: ``science`` e- (sky included), ``mask`` uint16 flags,
    ``variance`` e-², ``background`` and ``background_rms`` e- (SEP mesh maps).

    ``info`` says what the reduction found and assumed (keys of the ``calibrated_frames`` row):
    ``data_state``, ``gain`` (e-/ADU applied), ``gain_source``, ``read_noise`` (e-),
    ``read_noise_source``, ``saturation`` (ADU), ``saturation_source``, ``pedestal`` (ADU
    subtracted without a master bias), ``noise_model``, ``cr_fwhm_px`` (the quick FWHM the
    cosmic-ray search used), ``cr_objlim``, ``cr_pixels``, ``cr_spared`` (candidates returned as
    PSF-like) and ``assumptions`` (list of sentences).
    """

    science: np.ndarray
    mask: np.ndarray
    variance: np.ndarray
    background: np.ndarray
    background_rms: np.ndarray
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DataState:
    """What a frame's pixels are: ``state`` (``raw``, ``reduced`` or ``sky-subtracted``), with the
    evidence: ``sky`` and ``sky_rms`` (robust, in the units of the image examined),
    ``negative_fraction`` of the usable pixels, and ``reason`` (a sentence)."""

    state: str
    sky: float
    sky_rms: float
    negative_fraction: float
    reason: str


# --------------------------------------------------------------------------- masters


def sigma_clipped_combine(frames: Sequence[np.ndarray], sigma: float = 3.0) -> np.ndarray:
    """Pixel-wise mean of a stack after ``sigma`` clipping along the stack (axis 0).

    Clipping is about the median with the MAD-based standard deviation (robust for the
    small stacks of calibration frames, where one cosmic ray inflates a plain standard
    deviation so much that it is never clipped).  Pixels where every value was clipped
    take the median.  Returns float32.
    """
    stack = np.asarray(np.stack([np.asarray(frame, dtype=np.float64) for frame in frames]))
    if stack.shape[0] == 0:
        raise ValueError("sigma_clipped_combine needs at least one frame")
    clipped = sigma_clip(stack, sigma=sigma, axis=0, cenfunc="median", stdfunc="mad_std", maxiters=3)
    mean = np.ma.mean(clipped, axis=0)
    return np.ma.filled(mean, np.median(stack, axis=0)).astype(np.float32)


def _check_shapes(named: dict[str, Sequence[np.ndarray]]) -> tuple[int, int]:
    shapes = {name: {np.shape(frame) for frame in frames} for name, frames in named.items()}
    distinct = set().union(*shapes.values())
    if len(distinct) != 1:
        described = ", ".join(f"{name}: {sorted(found)}" for name, found in shapes.items())
        raise ValueError(f"calibration frames differ in shape ({described})")
    return distinct.pop()


def flat_defects(flat: np.ndarray) -> np.ndarray:
    """Dead or low/high-response pixels of a normalised master flat.

    A pixel is bad if outside :data:`FLAT_RANGE` or more than :data:`FLAT_DEVIATION` away
    from the running median of its row over :data:`FLAT_REFERENCE_WIDTH` pixels (which
    follows vignetting but not a bad column).
    """
    reference = median_filter(flat, size=(1, FLAT_REFERENCE_WIDTH), mode="reflect")
    with np.errstate(divide="ignore", invalid="ignore"):
        deviation = np.abs(flat / reference - 1.0)
    outside = (flat < FLAT_RANGE[0]) | (flat > FLAT_RANGE[1])
    return outside | ~(deviation <= FLAT_DEVIATION)


def hot_pixels(dark: np.ndarray) -> np.ndarray:
    """Pixels whose dark rate is more than :data:`HOT_SIGMA` robust sigmas (MAD) above the
    median rate.  A master dark of all zeros (no darks) has no hot pixels."""
    spread = mad_std(dark)
    if not np.isfinite(spread) or spread == 0:
        return np.zeros(dark.shape, dtype=bool)
    return dark - np.median(dark) > HOT_SIGMA * spread


def _central(array: np.ndarray) -> np.ndarray:
    """The central half (in each axis) of an image: away from vignetting and edge defects."""
    ny, nx = array.shape
    return array[ny // 4 : ny - ny // 4 or ny, nx // 4 : nx - nx // 4 or nx]


def photon_transfer(bias: Sequence[np.ndarray], flats: Sequence[np.ndarray]) -> tuple[float | None, float | None]:
    """Gain (e-/ADU) and read noise (e-) from pairs of bias and flat frames.

    For consecutive pairs (Howell 2006, §4.3; Janesick 2007, ch. 4)::

        g  = ((F1 + F2) - (B1 + B2)) / (σ²(F1 - F2) - σ²(B1 - B2))
        RN = g · σ(B1 - B2) / √2

    with means and (MAD-based, so robust to cosmic rays and defects) variances over the central
    half of the frame; differencing cancels the fixed pattern (flat-field structure, bias
    structure).  The second flat is scaled to the first one's level so that a change of lamp
    brightness between them does not enter.  The median over pairs is returned; ``(None,
    None)`` without two bias and two flat frames, or if the numbers are not physical.
    """
    if len(bias) < 2:
        return None, None
    biases = [np.asarray(_central(np.asarray(frame, dtype=np.float64))) for frame in bias]
    bias_var = [float(mad_std(a - b)) ** 2 for a, b in zip(biases[:-1], biases[1:], strict=True)]
    bias_var_median = float(np.median(bias_var))
    bias_level = float(np.median([np.median(frame) for frame in biases]))
    gains = []
    flats_c = [np.asarray(_central(np.asarray(frame, dtype=np.float64))) for frame in flats]
    for first, second in zip(flats_c[:-1], flats_c[1:], strict=True):
        level_1, level_2 = np.median(first) - bias_level, np.median(second) - bias_level
        if not (level_1 > 0 and level_2 > 0):
            continue
        scaled = (second - bias_level) * (level_1 / level_2) + bias_level
        flat_var = float(mad_std(first - scaled)) ** 2
        if flat_var > bias_var_median:
            gains.append(2.0 * level_1 / (flat_var - bias_var_median))
    if not gains:
        return None, None
    gain = float(np.median(gains))
    read_noise = gain * math.sqrt(bias_var_median / 2.0)
    if not (np.isfinite(gain) and gain > 0 and np.isfinite(read_noise)):
        return None, None
    return gain, read_noise


def build_masters(
    bias: Sequence[np.ndarray],
    darks: Sequence[tuple[np.ndarray, float]],
    flats: Sequence[np.ndarray],
) -> MasterCalibrations:
    """Master bias (ADU), dark (ADU/s) and flat (median 1) with their bad-pixel map.

    ``darks`` are ``(raw frame, exposure time in s)``; an empty sequence gives a zero dark.
    Each dark is bias-subtracted and divided by its exposure time before combining.  Each
    flat is bias-subtracted and scaled to median 1 before combining (dark current in the
    short flat exposures is neglected); the combined flat is scaled to median 1 again.
    ``bad_pixels`` marks :func:`flat_defects` and :func:`hot_pixels`; ``gain`` and
    ``read_noise`` come from :func:`photon_transfer`.
    """
    if not bias or not flats:
        raise ValueError("build_masters needs at least one bias and one flat frame")
    shape = _check_shapes({"bias": bias, "dark": [frame for frame, _ in darks], "flat": flats})
    master_bias = sigma_clipped_combine(bias)
    if darks:
        if any(exptime is None or not np.isfinite(exptime) or exptime <= 0 for _, exptime in darks):
            raise ValueError("dark frames need a positive exposure time")
        rates = [(np.asarray(frame, dtype=np.float64) - master_bias) / exptime for frame, exptime in darks]
        master_dark = sigma_clipped_combine(rates)
    else:
        master_dark = np.zeros(shape, dtype=np.float32)
    normalised = []
    for frame in flats:
        signal = np.asarray(frame, dtype=np.float64) - master_bias
        level = np.median(signal)
        if not level > 0:
            raise ValueError("a flat frame has no signal above the bias (median <= 0)")
        normalised.append(signal / level)
    master_flat = sigma_clipped_combine(normalised)
    master_flat = (master_flat / np.median(master_flat)).astype(np.float32)
    bad = flat_defects(master_flat) | hot_pixels(master_dark)
    gain, read_noise = photon_transfer(bias, flats)
    return MasterCalibrations(bias=master_bias, dark=master_dark, flat=master_flat, bad_pixels=bad,
                              gain=gain, read_noise=read_noise)


def edge_mask(shape: tuple[int, int], edge: int) -> np.ndarray:
    """True within ``edge`` pixels of the detector border."""
    inside = np.zeros(shape, dtype=bool)
    if edge > 0:
        inside[edge:-edge, edge:-edge] = True
    else:
        inside[:] = True
    return ~inside


def saturation_mask(raw_adu: np.ndarray, saturate: float | None) -> np.ndarray:
    """Pixels at or above ``saturate`` ADU, grown by :data:`BLEED_GROWTH` pixels along
    columns and 1 pixel across to cover partially filled bleed-trail ends."""
    if saturate is None:
        return np.zeros(raw_adu.shape, dtype=bool)
    saturated = raw_adu >= saturate
    if not saturated.any():
        return saturated
    structure = np.ones((2 * BLEED_GROWTH + 1, 3), dtype=bool)
    return binary_dilation(saturated, structure=structure)


# --------------------------------------------------------------------------- detector from the pixels


def estimate_saturation(raw_adu: np.ndarray, pixel_type: str) -> HeaderValue:
    """Saturation level (ADU) of a frame without a saturation card, from its pixels.

    A saturated star is a plateau: many pixels within a narrow band below the frame's maximum,
    where an unsaturated profile has only its peak pixel. Bands of width ``w`` =
    :data:`SATURATION_BANDS` × (maximum − median) are tried from the narrowest (``w = 0``: an
    ADC clip, every pixel at one value); a pile-up is at least :data:`SATURATION_PILEUP_MIN`
    pixels in ``[max − w, max]``, :data:`SATURATION_PILEUP_CONTRAST` times denser than the band
    ``[max − 3w, max − w)`` below it (for ``w = 0``, than the pixels within 2 % below the
    maximum). Its lower edge ``max − w`` is the saturation level: a full well reached with read
    noise and bias structure scatters by a few ADU, and so does the plateau. Otherwise an
    integer frame saturates at the ceiling of its type (65535 for 16-bit unsigned: the ADC
    ceiling, which the full well may not reach); floating-point data without a pile-up have no
    known level (``value`` None). The frame's brightest pixels are then masked needlessly only if
    a flat-topped source that is not saturated happens to be the brightest thing in the frame.
    """
    finite = raw_adu[np.isfinite(raw_adu)]
    if finite.size:
        top, floor = float(finite.max()), float(np.median(finite))
        bright = finite[finite >= top - 0.06 * max(top - floor, 0.0)]
        at_top = int(np.count_nonzero(bright == top))
        below = int(np.count_nonzero((finite < top) & (finite >= top - 0.02 * abs(top))))
        if at_top >= SATURATION_PILEUP_MIN and at_top > SATURATION_PILEUP_CONTRAST * below:
            return HeaderValue(top, f"estimated: {at_top} pixels piled up at the maximum value {top:g}")
        for fraction in SATURATION_BANDS:
            width = fraction * (top - floor)
            n_band = int(np.count_nonzero(bright >= top - width))
            n_next = int(np.count_nonzero((bright < top - width) & (bright >= top - 3 * width)))
            if n_band >= SATURATION_PILEUP_MIN and n_band > SATURATION_PILEUP_CONTRAST * n_next / 2:
                level = top - width
                return HeaderValue(level, f"estimated: {n_band} pixels piled up within {width:.3g} of the "
                                          f"maximum {top:g} (plateau of saturated stars)")
    ceiling = ADC_CEILING.get(pixel_type)
    if ceiling is not None:
        return HeaderValue(float(ceiling), f"assumed ADC ceiling {ceiling} ({pixel_type} data, no saturation card)")
    return HeaderValue(None, f"unknown (no saturation card, {pixel_type} data without a pile-up)")


def sky_statistics(image: np.ndarray, unusable: np.ndarray) -> tuple[float, float, float]:
    """``(level, variance, negative_fraction)`` of the sky of ``image``.

    ``level`` is the median of the SEP mesh background over usable pixels; ``variance`` the
    square of the MAD-based standard deviation of ``image - background`` over usable pixels
    away from sources (pixels above 3 rms, grown by 2 pixels, are left out), so that stars,
    cosmic rays and a large-scale gradient do not enter; ``negative_fraction`` the fraction of
    usable pixels below zero.
    """
    background, rms = background_maps(image, unusable)
    residual = image - background
    sources = binary_dilation(residual > 3.0 * rms, iterations=2)
    good = ~unusable & ~sources & np.isfinite(residual)
    if good.sum() < 100:
        good = ~unusable & np.isfinite(residual)
    level = float(np.median(background[~unusable])) if (~unusable).any() else float(np.median(background))
    variance = float(mad_std(residual[good])) ** 2 if good.any() else float("nan")
    finite = ~unusable & np.isfinite(image)
    negative = float(np.mean(image[finite] < 0)) if finite.any() else float("nan")
    return level, variance, negative


def estimate_gain(sky_level: float, sky_variance: float, read_noise: float | None = None) -> float | None:
    """Gain (e-/ADU) from the sky: the photon-transfer (variance-mean) relation.

    A Poisson sky of ``S`` ADU (bias removed) has variance ``σ² = S/g + (RN/g)²`` ADU² (Janesick
    2007, ch. 4; Howell 2006, §4.3), so ``g = (S + √(S² + 4 σ² RN²)) / (2 σ²)``, and ``S/σ²``
    when the read noise ``RN`` (e-) is unknown.

    Limits: the bias level must be removed first (a pedestal left in ``S`` overestimates ``g``
    in proportion); an unknown read noise overestimates it by ``1 + RN²/(g S)``; noise
    correlated between pixels by resampling (registered or drizzled images) lowers ``σ²`` and
    overestimates it; flat-field structure left in (not flat-fielded) raises ``σ²`` and
    underestimates it; for non-linear data (photographic plates) the result is only an
    effective scale of the noise.  None if the numbers do not give a positive gain.
    """
    if not (np.isfinite(sky_level) and np.isfinite(sky_variance)) or sky_level <= 0 or sky_variance <= 0:
        return None
    rn2 = float(read_noise) ** 2 if read_noise else 0.0
    gain = (sky_level + math.sqrt(sky_level**2 + 4.0 * sky_variance * rn2)) / (2.0 * sky_variance)
    return gain if np.isfinite(gain) and gain > 0 else None


def _calibration_history(header: fits.Header) -> str | None:
    for key in CALIBRATION_HISTORY_KEYS:
        value = header.get(key)
        if value not in (None, "", False):
            return f"{key} = {value!r}"
    unit = str(header.get("BUNIT", "")).strip().lower()
    if unit and unit not in {"adu", "count", "counts", "dn", "adu/pixel"}:
        return f"BUNIT = {header['BUNIT']!r}"
    return None


def classify_data_state(
    image_adu: np.ndarray,
    header: fits.Header,
    calibrated_with_masters: bool,
    unusable: np.ndarray | None = None,
    gain: float | None = None,
    read_noise: float | None = None,
) -> DataState:
    """The state of a frame's pixels: ``raw``, ``reduced`` or ``sky-subtracted``.

    ``image_adu`` is the frame after the night's master calibrations (if any), before the gain.
    In order:

    1. calibration frames applied that night → ``raw``;
    2. sky median below :data:`SKY_ZERO_SIGMA` sky rms (so negative pixels are common) →
       ``sky-subtracted``;
    3. a known ``gain`` (e-/ADU; ``read_noise`` e-) under which the sky level ``S`` would have
       a Poisson variance ``S/g`` more than :data:`PEDESTAL_FACTOR` times the measured one →
       ``raw`` (a bias pedestal is in the sky level);
    4. a calibration history in the header (MaxIm DL ``CALSTAT``, IRAF ``ZEROCOR``/``FLATCOR``/
       ``CCDPROC``, a physical ``BUNIT``) → ``reduced``;
    5. integer pixels in the original file → ``raw`` (detector counts nobody calibrated; the
       night has no calibration frames, so the pedestal cannot be measured);
    6. otherwise → ``reduced``.
    """
    unusable = np.zeros(image_adu.shape, bool) if unusable is None else unusable
    sky, variance, negative = sky_statistics(np.asarray(image_adu, np.float32), unusable)
    rms = math.sqrt(variance) if variance > 0 else float("nan")
    if calibrated_with_masters:
        return DataState("raw", sky, rms, negative, "the night's bias, dark and flat frames were applied")
    if not sky > SKY_ZERO_SIGMA * rms:
        return DataState("sky-subtracted", sky, rms, negative,
                         f"sky median {sky:.4g} is within {SKY_ZERO_SIGMA:g} rms ({rms:.4g}) of zero; "
                         f"{negative:.0%} of the pixels are negative")
    if gain:
        poisson = sky / gain
        if poisson > PEDESTAL_FACTOR * variance:
            return DataState("raw", sky, rms, negative,
                             f"sky level {sky:.1f} ADU would have a Poisson variance {poisson:.1f} ADU² at "
                             f"gain {gain:g}, measured {variance:.1f}: a bias pedestal is in")
    history = _calibration_history(header)
    if history:
        return DataState("reduced", sky, rms, negative, f"calibrated, sky included ({history})")
    pixel_type = original_pixel_type(header, image_adu)
    if pixel_type.startswith(("uint", "int")):
        return DataState("raw", sky, rms, negative,
                         f"{pixel_type} detector counts with no calibration history and no calibration "
                         f"frames that night")
    return DataState("reduced", sky, rms, negative, f"{pixel_type} data, sky included (level {sky:.4g})")


# --------------------------------------------------------------------------- PSF for the cosmic-ray search


def _pixel_gaussian(offsets: np.ndarray, fwhms: np.ndarray, half: int) -> np.ndarray:
    """``[fwhm, offset, pixel]`` fractions of a 1-D Gaussian of unit flux integrated over the
    pixels ``-half..half`` (centre at ``offset``)."""
    sigma = np.asarray(fwhms, float)[:, None, None] * _SIGMA_PER_FWHM
    edges = np.arange(-half, half + 2) - 0.5
    scaled = (edges[None, None, :] - np.asarray(offsets, float)[None, :, None]) / (math.sqrt(2.0) * sigma)
    return np.diff(0.5 * erf(scaled), axis=2)


@lru_cache(maxsize=32)
def _template_bank(fwhms: tuple[float, ...], half: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pixel-integrated circular Gaussians on a ``(2 half + 1)²`` stamp, for every FWHM and
    sub-pixel centre offset: ``(templates [K, N], fwhm [K], dy [K], dx [K])``."""
    offsets = np.arange(-0.5, 0.5 + 1e-9, PSF_OFFSET_STEP)
    profile = _pixel_gaussian(offsets, np.asarray(fwhms), half)
    bank = profile[:, :, None, :, None] * profile[:, None, :, None, :]
    n_f, n_o = len(fwhms), len(offsets)
    templates = bank.reshape(n_f * n_o * n_o, (2 * half + 1) ** 2)
    fwhm = np.repeat(np.asarray(fwhms, float), n_o * n_o)
    dy = np.tile(np.repeat(offsets, n_o), n_f)
    dx = np.tile(offsets, n_f * n_o)
    return templates, fwhm, dy, dx


def _stamps(image: np.ndarray, ys: np.ndarray, xs: np.ndarray, half: int) -> np.ndarray:
    dy, dx = np.mgrid[-half : half + 1, -half : half + 1]
    return image[ys[:, None] + dy.ravel()[None, :], xs[:, None] + dx.ravel()[None, :]]


def quick_fwhm(signal: np.ndarray, rms: np.ndarray, unusable: np.ndarray) -> float | None:
    """A quick FWHM (pixels, before pixelisation) of the frame's point sources.

    The :data:`FWHM_MAX_STARS` brightest SEP detections at :data:`FWHM_DETECT_SIGMA` (not
    blended or truncated, no unusable pixel in their 7×7 stamp) are each fitted by a
    pixel-integrated circular Gaussian (exact, through ``erf``) over :data:`FWHM_GRID` and
    sub-pixel centres, amplitude free, on the background-subtracted ``signal``; the median of
    the best FWHMs is returned, leaving out fits at the grid's lower end (cosmic rays).  It
    measures the core, which is what separates stars from cosmic rays.  None with fewer than
    :data:`FWHM_MIN_STARS` such stars.
    """
    image = np.ascontiguousarray(signal, dtype=np.float32)
    try:
        objects = sep.extract(image, FWHM_DETECT_SIGMA, err=np.ascontiguousarray(rms, dtype=np.float32),
                              mask=np.ascontiguousarray(unusable), minarea=5)
    except Exception:  # SEP refuses pathological frames (too many pixels above threshold)
        return None
    half = 3
    ny, nx = image.shape
    xs, ys = objects["xpeak"].astype(int), objects["ypeak"].astype(int)
    keep = ((objects["flag"] & _SEP_REJECT) == 0) & (xs >= half) & (xs < nx - half) & (ys >= half) & (ys < ny - half)
    order = np.flatnonzero(keep)[np.argsort(-objects["peak"][keep])]
    if len(order) == 0:
        return None
    xs, ys = xs[order], ys[order]
    clean = ~_stamps(unusable, ys, xs, half).any(axis=1)
    xs, ys = xs[clean][:FWHM_MAX_STARS], ys[clean][:FWHM_MAX_STARS]
    if len(xs) < FWHM_MIN_STARS:
        return None
    stamps = _stamps(image, ys, xs, half).astype(np.float64)
    templates, fwhm, _, _ = _template_bank(FWHM_GRID, half)
    projection = stamps @ templates.T  # [stars, templates]
    chi2 = (stamps**2).sum(axis=1)[:, None] - projection**2 / (templates**2).sum(axis=1)[None, :]
    chi2 = np.where(projection > 0, chi2, np.inf)
    best = fwhm[np.argmin(chi2, axis=1)]
    stars = best > FWHM_GRID[1]
    if stars.sum() < FWHM_MIN_STARS:
        return None
    return float(np.median(best[stars]))


def lacosmic_objlim(fwhm: float | None) -> float:
    """L.A.Cosmic's object-contrast limit for a PSF of ``fwhm`` pixels.

    The fine-structure contrast ``L⁺/F`` of a star grows as its PSF becomes undersampled (van
    Dokkum 2001, §3 and Fig. 4: the default limit suits FWHM ≳ 2-2.5 pixels), so below
    :data:`UNDERSAMPLED_FWHM` the limit rises along :data:`OBJLIM_NODES` (20 at 1 pixel); the
    default :data:`COSMIC_OBJLIM` otherwise, and when the FWHM is unknown.
    """
    if fwhm is None or not np.isfinite(fwhm) or fwhm >= UNDERSAMPLED_FWHM:
        return COSMIC_OBJLIM
    nodes = np.array(OBJLIM_NODES)
    return float(np.interp(fwhm, nodes[:, 0], nodes[:, 1]))


def _fit_psf_3x3(stamps: np.ndarray, variance: np.ndarray, templates: np.ndarray) -> tuple[np.ndarray, ...]:
    """Weighted least squares of ``a · T_k + g_x · dx + g_y · dy`` to 3×3 stamps for every
    template ``k`` (the gradient takes light of neighbours; no constant: the background is
    known).  Returns the best χ², the index of the best template and its amplitude per stamp;
    fits with ``a <= 0`` are not taken."""
    dy, dx = (grid.ravel().astype(float) for grid in np.mgrid[-1:2, -1:2])
    best_chi2, best_k, best_a = [], [], []
    for start in range(0, len(stamps), 512):
        data, weight = stamps[start : start + 512], 1.0 / variance[start : start + 512]
        wd = weight * data
        s_tt = weight @ (templates.T**2)
        s_tx, s_ty = weight @ (templates.T * dx[:, None]), weight @ (templates.T * dy[:, None])
        s_td = wd @ templates.T
        s_xx, s_yy, s_xy = (weight * dx * dx).sum(1), (weight * dy * dy).sum(1), (weight * dx * dy).sum(1)
        s_xd, s_yd = (wd * dx).sum(1), (wd * dy).sum(1)
        normal = np.empty((*s_tt.shape, 3, 3))
        normal[..., 0, 0], normal[..., 1, 1], normal[..., 2, 2] = s_tt, s_xx[:, None], s_yy[:, None]
        normal[..., 0, 1] = normal[..., 1, 0] = s_tx
        normal[..., 0, 2] = normal[..., 2, 0] = s_ty
        normal[..., 1, 2] = normal[..., 2, 1] = s_xy[:, None]
        rhs = np.stack([s_td, np.broadcast_to(s_xd[:, None], s_td.shape), np.broadcast_to(s_yd[:, None], s_td.shape)],
                       axis=-1)
        params = np.linalg.solve(normal, rhs[..., None])[..., 0]
        model = params[..., 0:1] * templates[None] + params[..., 1:2] * dx + params[..., 2:3] * dy
        chi2 = (weight[:, None, :] * (data[:, None, :] - model) ** 2).sum(axis=-1)
        chi2 = np.where(params[..., 0] > 0, chi2, np.inf)
        k = np.argmin(chi2, axis=1)
        rows = np.arange(len(data))
        best_chi2.append(chi2[rows, k])
        best_k.append(k)
        best_a.append(params[rows, k, 0])
    return np.concatenate(best_chi2), np.concatenate(best_k), np.concatenate(best_a)


def _spare_once(crmask: np.ndarray, signal: np.ndarray, variance: np.ndarray, fwhm: float) -> tuple[np.ndarray, int]:
    labels, n = ndimage.label(crmask, structure=np.ones((3, 3), bool))
    if n == 0:
        return crmask, 0
    index = np.arange(1, n + 1)
    peaks = np.array(ndimage.maximum_position(signal, labels, index), dtype=int).reshape(-1, 2)
    ys, xs = peaks[:, 0], peaks[:, 1]
    ny, nx = signal.shape
    for _ in range(2):  # a group beside a star's peak (an undersampled core's wing) is tested at that peak
        inside = np.flatnonzero((xs >= 1) & (xs < nx - 1) & (ys >= 1) & (ys < ny - 1))
        step = np.nan_to_num(_stamps(signal, ys[inside], xs[inside], 1), nan=-np.inf).argmax(axis=1)
        ys[inside] += step // 3 - 1
        xs[inside] += step % 3 - 1
    inside = np.flatnonzero((xs >= 1) & (xs < nx - 1) & (ys >= 1) & (ys < ny - 1))
    if len(inside) == 0:
        return crmask, 0
    stamps = _stamps(signal, ys[inside], xs[inside], 1).astype(np.float64)
    noise = _stamps(variance, ys[inside], xs[inside], 1).astype(np.float64)
    finite = np.isfinite(noise).all(axis=1) & (noise > 0).all(axis=1) & np.isfinite(stamps).all(axis=1)
    inside, stamps, noise = inside[finite], stamps[finite], noise[finite]
    if len(inside) == 0:
        return crmask, 0
    noise = noise + (PSF_TEST_TOLERANCE * np.clip(stamps, 0.0, None)) ** 2
    scales = tuple(round(fwhm * scale, 4) for scale in PSF_TEST_SCALES)
    templates, t_fwhm, t_dy, t_dx = _template_bank(scales, 1)
    chi2, best, amplitude = _fit_psf_3x3(stamps, noise, templates)
    star = (chi2 <= PSF_TEST_CHI2) & (stamps[:, 4] >= stamps.max(axis=1))
    if not star.any():
        return crmask, 0
    spared = crmask.copy()
    slices = ndimage.find_objects(labels)
    for j in np.flatnonzero(star):
        k = inside[j]
        cy, cx = ys[k] + t_dy[best[j]], xs[k] + t_dx[best[j]]
        box = slices[k]
        y0, y1 = max(box[0].start - 1, 0), min(box[0].stop + 1, ny)
        x0, x1 = max(box[1].start - 1, 0), min(box[1].stop + 1, nx)
        sigma = t_fwhm[best[j]] * _SIGMA_PER_FWHM
        py = np.diff(0.5 * erf((np.arange(y0, y1 + 1) - 0.5 - cy) / (math.sqrt(2.0) * sigma)))
        px = np.diff(0.5 * erf((np.arange(x0, x1 + 1) - 0.5 - cx) / (math.sqrt(2.0) * sigma)))
        model = amplitude[j] * np.outer(py, px)
        allowed = variance[y0:y1, x0:x1] + (PSF_TEST_TOLERANCE * model) ** 2
        excess = (signal[y0:y1, x0:x1] - model) > COSMIC_SIGCLIP * np.sqrt(allowed)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        excess &= np.hypot(yy - cy, xx - cx) > max(1.5, t_fwhm[best[j]])
        group = labels[y0:y1, x0:x1] == k + 1
        spared[y0:y1, x0:x1][group & ~excess] = False
    return spared, int(star.sum())


def spare_psf_like(
    crmask: np.ndarray, signal: np.ndarray, variance: np.ndarray, fwhm: float, iterations: int = 3
) -> tuple[np.ndarray, int]:
    """Return to the image the cosmic-ray candidates whose pixels are a scaled PSF (star cores).

    Each connected candidate group is tested at the local maximum of ``signal`` reached from its
    brightest pixel (up to two steps uphill: L.A.Cosmic may flag a pixel beside an undersampled
    star's peak and not the peak itself): if that pixel is the maximum of its 3×3 neighbourhood
    and those 9 pixels of ``signal`` (background-subtracted)
    fit ``a · PSF + linear gradient`` — a pixel-integrated circular Gaussian of FWHM
    :data:`PSF_TEST_SCALES` × ``fwhm`` at any sub-pixel centre — with χ² ≤
    :data:`PSF_TEST_CHI2` (noise ``variance`` plus :data:`PSF_TEST_TOLERANCE` × the signal for
    the model's shape error), the group is a star: its pixels within ``max(1.5, FWHM)`` of the
    fitted centre are unflagged, and so are its farther pixels unless they exceed the PSF model
    by :data:`COSMIC_SIGCLIP` σ (a hit on the star's wing).  A cosmic ray fails the test because
    its neighbours do not carry the light a PSF of that width puts there (for a single-pixel hit
    of ``A`` the misfit grows as ``A²``, so hits of ≳ 10 σ are kept).  Repeated up to
    ``iterations`` times, as sparing one star splits groups that held two.

    Returns ``(mask, number of groups spared)``.
    """
    spared, total = crmask, 0
    for _ in range(iterations):
        updated, count = _spare_once(spared, signal, variance, fwhm)
        total += count
        if count == 0:
            break
        spared = updated
    return spared, total


def cosmic_ray_mask(
    science: np.ndarray,
    bad: np.ndarray,
    saturated: np.ndarray,
    read_noise: float,
    satlevel: float,
    variance: np.ndarray | None = None,
    fwhm: float | None = None,
    background: np.ndarray | None = None,
    details: dict | None = None,
) -> np.ndarray:
    """L.A.Cosmic (van Dokkum 2001) with a noise model and object limit for the data at hand.

    ``science`` is in electrons (gain 1) with or without its sky.  ``bad`` pixels are first
    filled with the median of their row neighbours (so that a bad column does not hide cosmic
    rays beside it) and ``saturated`` pixels are passed to astroscrappy as ignored; the frame is
    mirrored by :data:`COSMIC_PAD` pixels at its borders so that hits near the edges are found.
    Neither bad nor saturated pixels are returned as cosmic rays.

    Noise model: ``variance`` (e-², e.g. the measured sky variance plus source Poisson noise)
    when given — required for sky-subtracted data, whose values are not photon counts — else
    Poisson in electrons plus ``read_noise``.  Parameters: ``sigclip`` :data:`COSMIC_SIGCLIP`,
    ``sigfrac`` :data:`COSMIC_SIGFRAC`, ``objlim`` :func:`lacosmic_objlim` of ``fwhm`` (pixels;
    5 for a well-sampled or unknown PSF, up to 20 for an undersampled one), 4 iterations.  With
    a ``fwhm``, candidates consistent with a scaled PSF are returned to the image
    (:func:`spare_psf_like`, on ``science - background`` with ``variance``, or with the Poisson
    model's variance where none is given).  ``details``, if given, receives ``objlim`` and
    ``spared`` (groups returned).
    """
    filled = np.where(bad, median_filter(science, size=(1, 5), mode="nearest"), science)
    pad = COSMIC_PAD
    objlim = lacosmic_objlim(fwhm)

    def mirrored(array: np.ndarray, dtype: type) -> np.ndarray:
        return np.ascontiguousarray(np.pad(array, pad, mode="reflect"), dtype=dtype)

    crmask, _ = astroscrappy.detect_cosmics(
        mirrored(filled, np.float32),
        inmask=mirrored(saturated, bool),
        invar=None if variance is None else mirrored(variance, np.float32),
        sigclip=COSMIC_SIGCLIP,
        sigfrac=COSMIC_SIGFRAC,
        objlim=objlim,
        gain=1.0,
        readnoise=float(read_noise),
        satlevel=float(satlevel),
        niter=COSMIC_NITER,
        verbose=False,
    )
    cosmic = np.asarray(crmask, dtype=bool)[pad:-pad, pad:-pad] & ~(bad | saturated)
    spared = 0
    if fwhm is not None and np.isfinite(fwhm) and cosmic.any():
        sky = background if background is not None else median_filter(filled, size=31, mode="nearest")
        signal = np.asarray(filled, np.float64) - sky
        noise = variance if variance is not None else np.clip(filled, 0.0, None) + float(read_noise) ** 2
        cosmic, spared = spare_psf_like(cosmic, signal, np.asarray(noise, np.float64), float(fwhm))
    if details is not None:
        details.update(objlim=objlim, spared=spared)
    return cosmic


# --------------------------------------------------------------------------- noise maps


def background_maps(science: np.ndarray, unusable: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SEP mesh background and rms (same units as ``science``), masking ``unusable``."""
    image = np.ascontiguousarray(science, dtype=np.float32)
    mesh = int(min(BACKGROUND_MESH, max(8, min(image.shape) // 4)))
    background = sep.Background(
        image,
        mask=np.ascontiguousarray(unusable),
        bw=mesh,
        bh=mesh,
        fw=BACKGROUND_FILTER,
        fh=BACKGROUND_FILTER,
    )
    return background.back().astype(np.float32), background.rms().astype(np.float32)


def variance_map(
    science: np.ndarray,
    background: np.ndarray,
    flat: np.ndarray,
    dark_electrons: np.ndarray,
    read_noise: float,
) -> np.ndarray:
    """Per-pixel variance (e-²) of a calibrated raw frame (Poisson model).

    ``(read_noise² + dark + flat · S) / flat²`` with ``S = background + max(science -
    background, 0)``: photon noise of sky (from the smooth background map, so the noise does
    not follow its own fluctuations) plus sources, dark-current shot noise and read noise,
    propagated through the flat-field division.  Noise of the master calibrations is neglected.
    """
    signal = background + np.clip(science - background, 0.0, None)
    raw_variance = read_noise**2 + np.clip(dark_electrons, 0.0, None) + np.clip(flat * signal, 0.0, None)
    return (raw_variance / flat**2).astype(np.float32)


def empirical_variance(
    science: np.ndarray, background: np.ndarray, background_rms: np.ndarray, gain: float | None = None
) -> np.ndarray:
    """Variance from the measured noise: the sky variance ``background_rms²`` plus the sources'
    Poisson noise ``max(science - background, 0) / gain``.

    ``gain`` is in electrons per unit of ``science`` (1 for a frame in electrons; ``math.inf``
    leaves the source term out, as for sky-subtracted data of unknown gain: sky-limited
    approximation).  Without ``gain`` the effective gain ``median(background) /
    median(background_rms²)`` is used, which assumes the sky noise is Poisson; when the sky
    level is not positive (a sky-subtracted image) the source term is then left out.
    """
    sky_variance = np.maximum(background_rms.astype(np.float64), 1e-12) ** 2
    if gain is None:
        sky_level = float(np.median(background))
        if sky_level <= 0:
            return sky_variance.astype(np.float32)
        gain = sky_level / float(np.median(sky_variance))
    if not np.isfinite(gain) or gain <= 0:
        return sky_variance.astype(np.float32)
    source = np.clip(science - background, 0.0, None)
    return (sky_variance + source / gain).astype(np.float32)


# --------------------------------------------------------------------------- calibrate


def _detector(header: fits.Header, masters: MasterCalibrations) -> tuple[HeaderValue, HeaderValue]:
    gain, read_noise = header_gain(header), header_read_noise(header)
    if gain.value is None and masters.gain is not None:
        gain = HeaderValue(masters.gain, "photon transfer of the night's flat and bias pairs", gain.note)
    if read_noise.value is None and masters.read_noise is not None:
        read_noise = HeaderValue(masters.read_noise, "the night's bias pairs (photon transfer)", read_noise.note)
    return gain, read_noise


def calibrate_frame(
    raw_adu: np.ndarray, header: fits.Header, masters: MasterCalibrations, edge: int = 8
) -> CalibratedFrame:
    """Reduce one science frame (ADU) into electrons with masks and noise maps, for its state.

    Steps:

    1. Header (:mod:`astrid_assets.science.frames`): gain (``GAIN``/``EGAIN``/``CCDGAIN``,
       mean of ``GAINA``...), read noise (``RDNOISE``/``READNOIS``/``RON``..., mean of
       ``RDNOISEA``...), saturation (``SATURATE``/``DATAMAX``/``SATLEVEL``, min of ``SATURATA``...;
       else :func:`estimate_saturation`), exposure (``EXPTIME``/``EXPOSURE``...); gain and read
       noise from the night's flats and biases (:func:`photon_transfer`) where the header has none.
    2. Bias, dark and flat correction with ``masters`` (identity for frames reduced elsewhere).
    3. The data's state (:func:`classify_data_state`).  A raw frame without calibration frames
       but with a known gain has its pedestal ``S - g (σ² - (RN/g)²)`` subtracted; without a
       gain the pedestal cannot be told from the sky and is left in (said in ``assumptions``).
    4. Gain still unknown: raw or reduced → estimated from the sky (:func:`estimate_gain`);
       sky-subtracted → 1 (the frame stays in its own units) and the sources' Poisson noise is
       left out of the variance.
    5. Masks: SATURATED from the stored pixels (grown along columns); BAD_PIXEL from the masters
       and flat values below :data:`MIN_FLAT` (left undivided); EDGE within ``edge`` pixels of
       the border; COSMIC_RAY from :func:`cosmic_ray_mask` with the noise model of the state and
       the quick FWHM (:func:`quick_fwhm`).
    6. SEP background and rms; variance: the Poisson model (:func:`variance_map`) for raw frames
       calibrated with the night's masters with a known gain and read noise, else
       :func:`empirical_variance` (measured sky variance plus source Poisson noise).

    Pixel values of masked pixels are kept as computed (not interpolated), except non-finite
    input pixels: flagged NO_DATA and set to the frame's median.  ``info`` of the
    result records state, gain, read noise, saturation, their sources and every assumption.

    Raises ValueError if the frame and the masters differ in shape.
    """
    raw = np.asarray(raw_adu, dtype=np.float64)
    shapes = {name: np.shape(getattr(masters, name)) for name in ("bias", "dark", "flat", "bad_pixels")}
    if any(shape != raw.shape for shape in shapes.values()):
        raise ValueError(f"raw frame shape {raw.shape} does not match the master calibrations {shapes}")
    assumptions: list[str] = []
    with_masters = not masters.identity
    gain_card, read_noise_card = _detector(header, masters)
    for card in (gain_card, read_noise_card):
        if card.note:
            assumptions.append(card.note)
    exptime = exposure_time(header)
    if exptime is None:
        exptime = 0.0
        if with_masters and np.any(masters.dark):
            assumptions.append("no exposure time in the header: dark current not subtracted")
    saturation = header_saturation(header)
    if saturation.note:
        assumptions.append(saturation.note)
    if saturation.value is None:
        saturation = estimate_saturation(raw, original_pixel_type(header, raw))
        assumptions.append(f"saturation {saturation.source}")

    flat = np.asarray(masters.flat, dtype=np.float64)
    undivided = ~(flat >= MIN_FLAT)
    flat = np.where(undivided, 1.0, flat)
    dark_adu = np.asarray(masters.dark, dtype=np.float64) * exptime
    image_adu = (raw - masters.bias - dark_adu) / flat

    mask = np.zeros(raw.shape, dtype=np.uint16)
    mask[saturation_mask(raw, saturation.value)] |= masks.SATURATED
    mask[np.asarray(masters.bad_pixels, dtype=bool) | undivided] |= masks.BAD_PIXEL
    mask[edge_mask(raw.shape, edge)] |= masks.EDGE
    no_data = ~np.isfinite(image_adu)
    if no_data.any():
        mask[no_data] |= masks.NO_DATA
        image_adu = np.where(no_data, np.median(image_adu[~no_data]), image_adu)
        assumptions.append(f"{int(no_data.sum())} non-finite pixels flagged NO_DATA and filled with the median")
    saturated = (mask & masks.SATURATED) != 0
    bad = ((mask & masks.BAD_PIXEL) != 0) | no_data

    read_noise = read_noise_card.value
    state = classify_data_state(image_adu, header, with_masters, saturated | bad, gain_card.value, read_noise)
    pedestal = None
    if state.state == "raw" and not with_masters:
        if gain_card.value is not None:
            rn_adu2 = (read_noise / gain_card.value) ** 2 if read_noise else 0.0
            pedestal = max(state.sky - gain_card.value * max(state.sky_rms**2 - rn_adu2, 0.0), 0.0)
            image_adu = image_adu - pedestal
            assumptions.append(f"no calibration frames: a constant pedestal of {pedestal:.1f} ADU (sky level minus "
                               f"the Poisson level its noise implies at the header gain) was subtracted")
        else:
            assumptions.append("raw frame without calibration frames: bias pedestal unknown and left in (sky level "
                               "and gain estimate include it)")

    gain_unknown = False
    if gain_card.value is not None:
        gain = gain_card
    elif state.state == "sky-subtracted":
        gain_unknown = True
        gain = HeaderValue(1.0, "assumed 1 (sky-subtracted, cannot estimate)")
        assumptions.append("gain unknown and not measurable on a sky-subtracted frame: pixels left in their own "
                           "units, source Poisson noise left out of the variance")
    else:
        sky_level, sky_variance, _ = sky_statistics(image_adu.astype(np.float32), saturated | bad)
        estimated = estimate_gain(sky_level, sky_variance, read_noise)
        if estimated is None:
            gain = HeaderValue(1.0, "assumed 1 (sky variance gives no gain)")
            assumptions.append("gain could not be estimated from the sky: 1 assumed")
        else:
            caveats = []
            if read_noise is None:
                caveats.append("read noise unknown, neglected")
            if state.state == "raw" and not with_masters and pedestal is None:
                caveats.append("assuming no bias pedestal: an upper limit if there is one")
            detail = f" ({'; '.join(caveats)})" if caveats else ""
            gain = HeaderValue(estimated, f"estimated from sky variance{detail}")
            assumptions.append(f"gain {estimated:.3g} e-/ADU estimated from the sky's variance against its level "
                               f"(photon transfer)" + (f": {'; '.join(caveats)}" if caveats else ""))
    if read_noise is None:
        assumptions.append("read noise unknown: variance from the measured sky noise")
    science = image_adu * gain.value

    raw_saturated = raw >= saturation.value if saturation.value is not None else np.zeros(raw.shape, bool)
    satlevel = float(np.min(science[raw_saturated])) if raw_saturated.any() else 1e30
    poisson_model = with_masters and gain_card.value is not None and read_noise is not None
    source_gain = math.inf if gain_unknown else 1.0

    def noise(background: np.ndarray, background_rms: np.ndarray) -> np.ndarray:
        if poisson_model:
            return variance_map(science, background, flat, dark_adu * gain.value, read_noise)
        return empirical_variance(science, background, background_rms, source_gain)

    background, background_rms = background_maps(science, saturated | bad)
    first_variance = noise(background, background_rms)
    fwhm = quick_fwhm(science - background, background_rms, saturated | bad | ~np.isfinite(first_variance))
    details: dict = {}
    cosmic = cosmic_ray_mask(
        science,
        bad,
        saturated,
        read_noise if poisson_model else float(np.median(background_rms)),
        satlevel,
        None if poisson_model else first_variance,
        fwhm=fwhm,
        background=background,
        details=details,
    )
    mask[cosmic] |= masks.COSMIC_RAY

    background, background_rms = background_maps(science, (mask & masks.UNUSABLE) != 0)
    variance = noise(background, background_rms)
    if poisson_model:
        noise_model = "Poisson model: sky + sources + dark + read noise (header or photon-transfer gain)"
    elif math.isinf(source_gain):
        noise_model = "measured background variance (source Poisson noise left out: gain unknown)"
    else:
        noise_model = "measured sky variance + source Poisson noise"
    if fwhm is None:
        assumptions.append("too few stars for a quick FWHM: L.A.Cosmic with its default object limit, no PSF test")
    info = {
        "data_state": state.state,
        "data_state_reason": state.reason,
        "gain": float(gain.value),
        "gain_source": gain.source,
        "read_noise": None if read_noise is None else float(read_noise),
        "read_noise_source": read_noise_card.source,
        "saturation": None if saturation.value is None else float(saturation.value),
        "saturation_source": saturation.source,
        "pedestal": pedestal,
        "noise_model": noise_model,
        "cr_fwhm_px": fwhm,
        "cr_objlim": details.get("objlim"),
        "cr_pixels": int(cosmic.sum()),
        "cr_spared": details.get("spared", 0),
        "assumptions": assumptions,
    }
    return CalibratedFrame(
        science=science.astype(np.float32),
        mask=mask,
        variance=variance,
        background=background,
        background_rms=background_rms,
        info=info,
    )
