"""What the detector and the data are, from headers and pixels: saturation, gain, read noise and
the data's state (raw, reduced, sky-subtracted).

* Saturation from the header (``SATURATE``…, :mod:`~astrid_assets.science.frames.files`), else the plateau of saturated
stars
  in the pixels, else the ADC ceiling of the pixel type (:func:`estimate_saturation`).
* Gain and read noise by photon transfer — the variance-mean relation
  ``σ²(ADU) = S(ADU)/g + (RN/g)²``: Janesick 2007, *Photon Transfer* (SPIE Press), ch. 3-5;
  Howell 2006, *Handbook of CCD Astronomy*, 2nd ed., §4.3 (a pair of flats and a pair of biases,
  :func:`photon_transfer`), or from the sky's variance against its level (:func:`estimate_gain`).
* The data's state (:func:`classify_data_state`): see :mod:`~astrid_assets.science.calibration.calibrate`.
* The wings of saturated stars (:func:`bright_star_mask`): the saturated footprint grown to where
  a Moffat profile through its edge falls to the sky noise.

Raw frames are ADU with the bias included; arrays ``[y, x]``, 0-based.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from astropy.stats import mad_std
from scipy.ndimage import binary_dilation, distance_transform_edt, find_objects, label

from astrid_assets.science.frames.files import original_pixel_type
from astrid_assets.science.frames.headers import HeaderValue
from astrid_assets.science.sources import background_maps

__all__ = [
    "BLEED_GROWTH",
    "SKY_ZERO_SIGMA",
    "PEDESTAL_FACTOR",
    "SATURATION_PILEUP_MIN",
    "SATURATION_PILEUP_CONTRAST",
    "SATURATION_BANDS",
    "ADC_CEILING",
    "BRIGHT_STAR_BETA",
    "BRIGHT_STAR_NSIGMA",
    "BRIGHT_STAR_MAX_RADIUS",
    "CALIBRATION_HISTORY_KEYS",
    "DataState",
    "photon_transfer",
    "saturation_mask",
    "bright_star_radius",
    "bright_star_mask",
    "estimate_saturation",
    "sky_statistics",
    "estimate_gain",
    "classify_data_state",
    "MASTERS_APPLIED",
]

#: SATURATED is grown by this many pixels along columns (bleed tails) and one across.
BLEED_GROWTH = 2
#: The reason :func:`classify_data_state` gives for a frame the night's calibration frames were applied to.
MASTERS_APPLIED = "the night's bias, dark and flat frames were applied"
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
#: Moffat index assumed for the wings of saturated stars (:func:`bright_star_mask`); smaller than
#: the β ≈ 3-5 of seeing-limited cores (Trujillo et al. 2001, MNRAS 328, 977), so the wings it
#: implies are wider: the far wings of real stars fall more slowly than their cores suggest.
BRIGHT_STAR_BETA = 2.5
#: The wings are masked out to where they fall to this many sky rms per pixel.
BRIGHT_STAR_NSIGMA = 1.0
#: Largest bright-star radius, px (a saturated blob that is no star must not mask the frame).
BRIGHT_STAR_MAX_RADIUS = 200.0
#: Header cards that say a frame was already calibrated (MaxIm DL ``CALSTAT``, IRAF ``ccdproc``).
CALIBRATION_HISTORY_KEYS = ("CALSTAT", "ZEROCOR", "BIASCOR", "DARKCOR", "FLATCOR", "CCDPROC", "BIASSUB")


@dataclass(frozen=True)
class DataState:
    """What a frame's pixels are: ``state`` (``raw``, ``reduced`` or ``sky-subtracted``), with the
    evidence: ``sky`` and ``sky_rms`` (robust, in the units of the image examined),
    ``negative_fraction`` of the usable pixels, and ``reason`` (a sentence).

    Attributes
    ----------
    state : str
        ``"raw"``, ``"reduced"`` or ``"sky-subtracted"``.
    sky : float
        Sky level (median of the SEP background over usable pixels), image units (ADU before
        the gain).
    sky_rms : float
        Robust sky noise, image units; NaN when the measured variance is not positive.
    negative_fraction : float
        Fraction (0–1) of usable pixels below zero.
    reason : str
        The evidence, as a sentence.
    """

    state: str
    sky: float
    sky_rms: float
    negative_fraction: float
    reason: str


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

    Parameters
    ----------
    bias : sequence of numpy.ndarray
        Raw bias frames, ADU, in order; the median variance of consecutive differences is used.
    flats : sequence of numpy.ndarray
        Raw flat frames, ADU with the bias in, in order; consecutive pairs are used (pairs
        whose level above the bias is not positive, or whose difference variance does not
        exceed the bias's, are skipped).

    Returns
    -------
    gain : float or None
        e-/ADU.
    read_noise : float or None
        e- rms.
    """
    if len(bias) < 2:
        return None, None
    biases = [_central(np.asarray(frame)).astype(np.float64) for frame in bias]
    bias_var = [float(mad_std(a - b)) ** 2 for a, b in zip(biases[:-1], biases[1:], strict=True)]
    bias_var_median = float(np.median(bias_var))
    bias_level = float(np.median([np.median(frame) for frame in biases]))
    gains = []
    flats_c = [_central(np.asarray(frame)).astype(np.float64) for frame in flats]
    levels = [np.median(frame) - bias_level for frame in flats_c]
    for first, second, level_1, level_2 in zip(flats_c[:-1], flats_c[1:], levels[:-1], levels[1:], strict=True):
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


def saturation_mask(raw_adu: np.ndarray, saturate: float | None) -> np.ndarray:
    """Pixels at or above ``saturate`` ADU, grown by :data:`BLEED_GROWTH` pixels along
    columns and 1 pixel across to cover partially filled bleed-trail ends.

    Parameters
    ----------
    raw_adu : numpy.ndarray
        Raw frame as stored, ADU, indexed ``[y, x]`` (columns run along ``y``).
    saturate : float or None
        Saturation level, ADU; None: nothing is saturated.

    Returns
    -------
    numpy.ndarray of bool
        Saturated pixels, grown by ``±BLEED_GROWTH`` rows and ``±1`` column.
    """
    if saturate is None:
        return np.zeros(raw_adu.shape, dtype=bool)
    saturated = raw_adu >= saturate
    if not saturated.any():
        return saturated
    structure = np.ones((2 * BLEED_GROWTH + 1, 3), dtype=bool)
    return binary_dilation(saturated, structure=structure)


def bright_star_radius(area: float, level: float, noise: float, fwhm: float,
                       beta: float = BRIGHT_STAR_BETA, nsigma: float = BRIGHT_STAR_NSIGMA) -> float:
    """Radius (px) out to which a saturated star's wings stay above ``nsigma`` sky rms per pixel.

    The star is taken as a Moffat profile ``I(r) = I₀ (1 + r²/α²)^-β`` with
    ``α = fwhm / (2 √(2^(1/β) − 1))`` (Moffat 1969, A&A 3, 455) that reaches the saturation
    level ``L`` (above the sky) at the radius of the saturated area, ``r_sat = √(area / π)``.
    It falls to ``n σ`` at ``r_wing`` with ``1 + r_wing²/α² = (1 + r_sat²/α²) (L / (n σ))^(1/β)``,
    so ``r_wing`` grows with the saturated area (the star's brightness) at a given PSF and sky.

    Parameters
    ----------
    area : float
        Saturated pixels of the star (before any growth), px².
    level : float
        Saturation level above the sky, e- (or the frame's units).
    noise : float
        Sky rms per pixel, units of ``level``.
    fwhm : float
        FWHM of the PSF core, px.
    beta, nsigma : float
        Moffat index and the wing level in sky rms (:data:`BRIGHT_STAR_BETA`, :data:`BRIGHT_STAR_NSIGMA`).

    Returns
    -------
    float
        ``r_wing`` in px, at least ``r_sat``, at most :data:`BRIGHT_STAR_MAX_RADIUS` (unless
        ``r_sat`` is larger: a saturated blob that big is not grown); ``r_sat`` when the level
        is not above ``nsigma`` rms or an input is not positive.
    """
    r_sat = math.sqrt(max(area, 0.0) / math.pi)
    if not (level > 0 and noise > 0 and fwhm > 0) or level <= nsigma * noise:
        return r_sat
    alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    contrast = (level / (nsigma * noise)) ** (1.0 / beta)
    r_wing = alpha * math.sqrt((1.0 + (r_sat / alpha) ** 2) * contrast - 1.0)
    return float(min(max(r_wing, r_sat), max(BRIGHT_STAR_MAX_RADIUS, r_sat)))


def bright_star_mask(saturated: np.ndarray, level: float, noise: float, fwhm: float) -> np.ndarray:
    """Pixels in the wings of saturated stars: each saturated footprint (8-connected group of
    ``saturated`` pixels) grown by ``r_wing − r_sat`` px (:func:`bright_star_radius`, from its
    area), so a round star is covered out to ``r_wing`` from its centre and a bleed trail along
    its length.

    Parameters
    ----------
    saturated : numpy.ndarray of bool
        Pixels at or above the saturation level as stored (not grown), ``[y, x]``.
    level : float
        Saturation level above the sky, e-.
    noise : float
        Sky rms per pixel, e-.
    fwhm : float
        FWHM of the PSF core, px.

    Returns
    -------
    numpy.ndarray of bool
        True within the grown footprints (the saturated pixels included).
    """
    out = np.zeros(saturated.shape, dtype=bool)
    labels, _ = label(saturated, structure=np.ones((3, 3), bool))
    ny, nx = saturated.shape
    for index, box in enumerate(find_objects(labels), start=1):
        if box is None:
            continue
        footprint = labels[box] == index
        area = float(footprint.sum())
        grow = bright_star_radius(area, level, noise, fwhm) - math.sqrt(area / math.pi)
        pad = int(math.ceil(max(grow, 0.0)))
        y0, y1 = max(box[0].start - pad, 0), min(box[0].stop + pad, ny)
        x0, x1 = max(box[1].start - pad, 0), min(box[1].stop + pad, nx)
        cut = labels[y0:y1, x0:x1] == index
        out[y0:y1, x0:x1] |= distance_transform_edt(~cut) <= max(grow, 0.0)
    return out


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

    Parameters
    ----------
    raw_adu : numpy.ndarray
        Raw frame as stored, ADU (non-finite pixels ignored).
    pixel_type : str
        numpy dtype name of the pixel type in the original file (e.g. ``"uint16"``,
        ``"float32"``; :func:`~astrid_assets.science.frames.files.original_pixel_type`); a key of :data:`ADC_CEILING`
        for
        integer data.

    Returns
    -------
    HeaderValue
        The level in ADU (or None) and a sentence saying how it was found.
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

    Parameters
    ----------
    image : numpy.ndarray
        Frame with sky, any units (ADU or e-), indexed ``[y, x]``.
    unusable : numpy.ndarray of bool
        Pixels left out (True).

    Returns
    -------
    level : float
        Sky level, image units.
    variance : float
        Sky variance, image units squared; NaN if no pixel is usable. Sources are not left out
        when fewer than 100 pixels would remain.
    negative_fraction : float
        Fraction (0–1) of usable finite pixels below zero; NaN if none.
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

    Parameters
    ----------
    sky_level : float
        Sky level ``S``, ADU, bias removed (:func:`sky_statistics`).
    sky_variance : float
        Sky variance ``σ²``, ADU².
    read_noise : float or None, default None
        Read noise ``RN``, e-; None or 0 neglects it.

    Returns
    -------
    float or None
        Gain, e-/ADU; None for a non-positive or non-finite level or variance.
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

    Parameters
    ----------
    image_adu : numpy.ndarray
        Frame after the masters (if any), before the gain: ADU, or the units of reduced data.
    header : astropy.io.fits.Header
        Its header (calibration history cards, ``BUNIT``, original pixel type).
    calibrated_with_masters : bool
        Whether the night's bias, dark and flat frames were applied.
    unusable : numpy.ndarray of bool or None, default None
        Pixels left out of the sky statistics; None: none.
    gain : float or None, default None
        Header gain, e-/ADU; None or 0 skips step 3.
    read_noise : float or None, default None
        Read noise, e- (accepted but not used by the tests above).

    Returns
    -------
    DataState
        The state and its evidence.
    """
    unusable = np.zeros(image_adu.shape, bool) if unusable is None else unusable
    sky, variance, negative = sky_statistics(np.asarray(image_adu, np.float32), unusable)
    rms = math.sqrt(variance) if variance > 0 else float("nan")
    if calibrated_with_masters:
        return DataState("raw", sky, rms, negative, MASTERS_APPLIED)
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
