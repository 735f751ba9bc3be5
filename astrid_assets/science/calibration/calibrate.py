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
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from astrid_assets.science import masks
from astrid_assets.science.calibration.cosmics import cosmic_ray_mask, quick_fwhm
from astrid_assets.science.calibration.detector import (
    MASTERS_APPLIED,
    DataState,
    bright_star_mask,
    classify_data_state,
    estimate_gain,
    estimate_saturation,
    saturation_mask,
    sky_statistics,
)
from astrid_assets.science.calibration.masters import (
    MIN_FLAT,
    MasterCalibrations,
)
from astrid_assets.science.calibration.noise import NoiseModel
from astrid_assets.science.frames.files import original_pixel_type
from astrid_assets.science.frames.headers import (
    HeaderValue,
    exposure_time,
    header_gain,
    header_read_noise,
    header_saturation,
)
from astrid_assets.science.products import CalibratedFrame
from astrid_assets.science.sources import background_maps

__all__ = ["BRIGHT_STAR_DEFAULT_FWHM", "edge_mask", "calibrate_frame"]

#: FWHM (px) assumed for the wings of saturated stars when the frame gives no quick FWHM.
BRIGHT_STAR_DEFAULT_FWHM = 3.0


def edge_mask(shape: tuple[int, int], edge: int) -> np.ndarray:
    """True within ``edge`` pixels of the detector border.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` of the detector, px.
    edge : int
        Border width, px; 0 or less marks nothing.

    Returns
    -------
    numpy.ndarray of bool
        True in the outer ``edge`` rows and columns.
    """
    inside = np.zeros(shape, dtype=bool)
    if edge > 0:
        inside[edge:-edge, edge:-edge] = True
    else:
        inside[:] = True
    return ~inside


@dataclass(frozen=True)
class _Detector:
    """What is known of the detector for one frame, each number with its source.

    Attributes
    ----------
    gain : HeaderValue
        e-/ADU from the header, else the night's photon transfer; value None when neither gives it.
    read_noise : HeaderValue
        e- rms, from the same sources; value None when unknown.
    saturation : HeaderValue
        ADU of the stored pixels, from the header, else estimated from the pixels; value None when
        neither finds one.
    exptime : float
        Exposure time, s; 0 when the header has none (the dark is then not subtracted).
    """

    gain: HeaderValue
    read_noise: HeaderValue
    saturation: HeaderValue
    exptime: float


def _read_detector(
    raw: np.ndarray, header: fits.Header, masters: MasterCalibrations, assumptions: list[str]
) -> _Detector:
    """Gain, read noise, saturation and exposure time of the frame.

    Header cards first (:mod:`astrid_assets.science.frames.headers`); gain and read noise from the
    night's flat and bias pairs (:func:`~astrid_assets.science.calibration.detector.photon_transfer`,
    carried by ``masters``) where the header has none; saturation estimated from the stored pixels
    (:func:`~astrid_assets.science.calibration.detector.estimate_saturation`) without a card.  Every
    caveat is appended to ``assumptions``.
    """
    gain, read_noise = header_gain(header), header_read_noise(header)
    if gain.value is None and masters.gain is not None:
        gain = HeaderValue(masters.gain, "photon transfer of the night's flat and bias pairs", gain.note)
    if read_noise.value is None and masters.read_noise is not None:
        read_noise = HeaderValue(masters.read_noise, "the night's bias pairs (photon transfer)", read_noise.note)
    assumptions.extend(card.note for card in (gain, read_noise) if card.note)
    exptime = exposure_time(header)
    if exptime is None:
        exptime = 0.0
        if not masters.identity and np.any(masters.dark):
            assumptions.append("no exposure time in the header: dark current not subtracted")
    saturation = header_saturation(header)
    if saturation.note:
        assumptions.append(saturation.note)
    if saturation.value is None:
        saturation = estimate_saturation(raw, original_pixel_type(header, raw))
        assumptions.append(f"saturation {saturation.source}")
    return _Detector(gain, read_noise, saturation, exptime)


def _correct_bias_dark_flat(
    raw: np.ndarray, masters: MasterCalibrations, exptime: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bias, dark and flat correction: ``(raw - bias - dark · exptime) / flat``, ADU of a pixel of unit response.

    Flat values below :data:`~astrid_assets.science.calibration.masters.MIN_FLAT` (or non-finite)
    are left undivided (flat taken as 1 there).

    Returns
    -------
    image_adu, flat, dark_adu, undivided : numpy.ndarray
        The corrected frame (ADU, float64), the flat it was divided by, the dark subtracted (ADU)
        and the undivided pixels (bool).
    """
    flat = np.asarray(masters.flat, dtype=np.float64)
    undivided = ~(flat >= MIN_FLAT)
    flat = np.where(undivided, 1.0, flat)
    dark_adu = np.asarray(masters.dark, dtype=np.float64) * exptime
    return (raw - masters.bias - dark_adu) / flat, flat, dark_adu, undivided


def _mask_defects(
    raw: np.ndarray,
    image_adu: np.ndarray,
    bad_pixels: np.ndarray,
    saturation: float | None,
    edge: int,
    assumptions: list[str],
) -> tuple[np.ndarray, np.ndarray]:
    """The masks known before any measurement, and the non-finite pixels filled.

    SATURATED from the stored pixels (grown along columns,
    :func:`~astrid_assets.science.calibration.detector.saturation_mask`); BAD_PIXEL where
    ``bad_pixels`` (the masters' defects and the undivided flat); EDGE within ``edge`` px of the
    border (:func:`edge_mask`); NO_DATA at non-finite pixels of ``image_adu``, which are set to the
    median of the others (said in ``assumptions``).

    Returns
    -------
    mask, image_adu : numpy.ndarray
        The ``uint16`` mask and the frame with its non-finite pixels filled (ADU).
    """
    mask = np.zeros(raw.shape, dtype=np.uint16)
    mask[saturation_mask(raw, saturation)] |= masks.SATURATED
    mask[bad_pixels] |= masks.BAD_PIXEL
    mask[edge_mask(raw.shape, edge)] |= masks.EDGE
    no_data = ~np.isfinite(image_adu)
    if no_data.any():
        mask[no_data] |= masks.NO_DATA
        image_adu = np.where(no_data, np.median(image_adu[~no_data]), image_adu)
        assumptions.append(f"{int(no_data.sum())} non-finite pixels flagged NO_DATA and filled with the median")
    return mask, image_adu


def _data_state(
    image_adu: np.ndarray,
    header: fits.Header,
    with_masters: bool,
    unusable: np.ndarray,
    detector: _Detector,
    assumptions: list[str],
) -> tuple[DataState, float | None, np.ndarray]:
    """The data's state (:func:`~astrid_assets.science.calibration.detector.classify_data_state`),
    and the bias pedestal of a raw frame without calibration frames.

    With a known gain ``g`` the pedestal is the sky level minus the Poisson level its noise implies,
    ``S - g (σ² - (RN/g)²)`` (ADU, floored at 0), and is subtracted; without a gain it cannot be told
    from the sky and is left in.  Either way it is said in ``assumptions``.

    Returns
    -------
    state, pedestal, image_adu
        The state, the pedestal subtracted (ADU; None when none was) and the frame after it (ADU).
    """
    gain, read_noise = detector.gain.value, detector.read_noise.value
    if with_masters:  # classify_data_state's first rule; the sky statistics it would add are not used for these
        state = DataState("raw", math.nan, math.nan, math.nan, MASTERS_APPLIED)
    else:
        state = classify_data_state(image_adu, header, with_masters, unusable, gain, read_noise)
    pedestal = None
    if state.state == "raw" and not with_masters:
        if gain is not None:
            rn_adu2 = (read_noise / gain) ** 2 if read_noise else 0.0
            pedestal = max(state.sky - gain * max(state.sky_rms**2 - rn_adu2, 0.0), 0.0)
            image_adu = image_adu - pedestal
            assumptions.append(f"no calibration frames: a constant pedestal of {pedestal:.1f} ADU (sky level minus "
                               f"the Poisson level its noise implies at the header gain) was subtracted")
        else:
            assumptions.append("raw frame without calibration frames: bias pedestal unknown and left in (sky level "
                               "and gain estimate include it)")
    return state, pedestal, image_adu


def _resolve_gain(
    image_adu: np.ndarray,
    state: DataState,
    detector: _Detector,
    unknown_pedestal: bool,
    unusable: np.ndarray,
    assumptions: list[str],
) -> tuple[HeaderValue, bool]:
    """The gain that turns the frame into electrons.

    The known one (header or photon transfer); else, for a sky-subtracted frame, 1 (the frame stays
    in its own units and the sources' Poisson noise is left out of the variance); else estimated
    from the sky's variance against its level
    (:func:`~astrid_assets.science.calibration.detector.estimate_gain`; an upper limit when
    ``unknown_pedestal``), 1 when that fails.  Caveats are appended to ``assumptions``.

    Returns
    -------
    gain, gain_unknown
        The gain (e-/ADU) with its source, and True when it is an assumed 1 on sky-subtracted data.
    """
    if detector.gain.value is not None:
        return detector.gain, False
    if state.state == "sky-subtracted":
        assumptions.append("gain unknown and not measurable on a sky-subtracted frame: pixels left in their own "
                           "units, source Poisson noise left out of the variance")
        return HeaderValue(1.0, "assumed 1 (sky-subtracted, cannot estimate)"), True
    read_noise = detector.read_noise.value
    sky_level, sky_variance, _ = sky_statistics(image_adu.astype(np.float32), unusable)
    estimated = estimate_gain(sky_level, sky_variance, read_noise)
    if estimated is None:
        assumptions.append("gain could not be estimated from the sky: 1 assumed")
        return HeaderValue(1.0, "assumed 1 (sky variance gives no gain)"), False
    caveats = []
    if read_noise is None:
        caveats.append("read noise unknown, neglected")
    if unknown_pedestal:
        caveats.append("assuming no bias pedestal: an upper limit if there is one")
    detail = f" ({'; '.join(caveats)})" if caveats else ""
    assumptions.append(f"gain {estimated:.3g} e-/ADU estimated from the sky's variance against its level "
                       f"(photon transfer)" + (f": {'; '.join(caveats)}" if caveats else ""))
    return HeaderValue(estimated, f"estimated from sky variance{detail}"), False


def _mask_bright_stars_and_cosmic_rays(
    raw: np.ndarray,
    science: np.ndarray,
    mask: np.ndarray,
    saturation: float | None,
    noise: NoiseModel,
    gain: float,
    assumptions: list[str],
) -> tuple[float | None, np.ndarray, dict, NoiseModel]:
    """BRIGHT_STAR and COSMIC_RAY (set in ``mask``) on a first background.

    A first SEP background and rms with SATURATED, BAD_PIXEL and NO_DATA left out, and the variance
    of ``noise`` on them; the quick FWHM (:func:`~astrid_assets.science.calibration.cosmics.quick_fwhm`);
    BRIGHT_STAR (not unusable) around each saturated star out to where its wings fall to the sky rms
    (:func:`~astrid_assets.science.calibration.detector.bright_star_mask`: a Moffat of the quick FWHM,
    else :data:`BRIGHT_STAR_DEFAULT_FWHM`, and β = 2.5 through the saturation level in e-, above the
    sky); COSMIC_RAY from :func:`~astrid_assets.science.calibration.cosmics.cosmic_ray_mask` with the
    noise model of the state (read noise for the Poisson model, else the measured variance).

    The Poisson model is first checked against the measured sky noise
    (:meth:`~astrid_assets.science.calibration.noise.NoiseModel.matched_to_sky`), so the cosmic-ray
    search and the variance map use the noise the frame has.

    Returns
    -------
    fwhm, cosmic, details, noise
        The quick FWHM (px; None with too few stars), the cosmic-ray pixels, the search's details
        (``objlim``, ``spared``) and the noise model, checked.
    """
    saturated = (mask & masks.SATURATED) != 0
    bad = (mask & (masks.BAD_PIXEL | masks.NO_DATA)) != 0
    raw_saturated = raw >= saturation if saturation is not None else np.zeros(raw.shape, bool)
    satlevel = float(np.min(science[raw_saturated])) if raw_saturated.any() else 1e30  # e-
    background, background_rms = background_maps(science, saturated | bad)
    noise, note = noise.matched_to_sky(background, background_rms, ~(saturated | bad), gain)
    if note:
        assumptions.append(note)
    first_variance = noise.variance(background, background_rms)
    fwhm = quick_fwhm(science - background, background_rms, saturated | bad | ~np.isfinite(first_variance))
    if raw_saturated.any():
        wing_fwhm = fwhm if fwhm is not None else BRIGHT_STAR_DEFAULT_FWHM
        sky, sky_rms = float(np.median(background)), float(np.median(background_rms))
        mask[bright_star_mask(raw_saturated, satlevel - sky, sky_rms, wing_fwhm)] |= masks.BRIGHT_STAR
        if fwhm is None:
            assumptions.append(f"bright-star wings masked for a FWHM of {wing_fwhm:g} px (no quick FWHM)")
    details: dict = {}
    cosmic = cosmic_ray_mask(
        science,
        bad,
        saturated,
        noise.read_noise if noise.poisson else float(np.median(background_rms)),
        satlevel,
        None if noise.poisson and noise.photon_scale == 1.0 else first_variance,
        fwhm=fwhm,
        background=background,
        details=details,
    )
    mask[cosmic] |= masks.COSMIC_RAY
    if fwhm is None:
        assumptions.append("too few stars for a quick FWHM: L.A.Cosmic with its default object limit, no PSF test")
    return fwhm, cosmic, details, noise


def calibrate_frame(
    raw_adu: np.ndarray, header: fits.Header, masters: MasterCalibrations, edge: int = 8
) -> CalibratedFrame:
    """Reduce one science frame (ADU) into electrons with masks and noise maps, for its state.

    Steps:

    1. Header (:mod:`astrid_assets.science.frames.files`): gain (``GAIN``/``EGAIN``/``CCDGAIN``,
       mean of ``GAINA``...), read noise (``RDNOISE``/``READNOIS``/``RON``..., mean of
       ``RDNOISEA``...), saturation (``SATURATE``/``DATAMAX``/``SATLEVEL``, min of ``SATURATA``...;
       else :func:`estimate_saturation`), exposure (``EXPTIME``/``EXPOSURE``...); gain and read
       noise from the night's flats and biases (:func:`photon_transfer`) where the header has none
       (:func:`_read_detector`).
    2. Bias, dark and flat correction with ``masters`` (identity for frames reduced elsewhere;
       :func:`_correct_bias_dark_flat`), then the masks known before any measurement
       (:func:`_mask_defects`): SATURATED from the stored pixels (grown along columns); BAD_PIXEL
       from the masters and flat values below :data:`MIN_FLAT` (left undivided); EDGE within
       ``edge`` pixels of the border; NO_DATA.
    3. The data's state (:func:`classify_data_state`; :func:`_data_state`).  A raw frame without
       calibration frames but with a known gain has its pedestal ``S - g (σ² - (RN/g)²)``
       subtracted; without a gain the pedestal cannot be told from the sky and is left in (said in
       ``assumptions``).
    4. Gain still unknown (:func:`_resolve_gain`): raw or reduced → estimated from the sky
       (:func:`estimate_gain`); sky-subtracted → 1 (the frame stays in its own units) and the
       sources' Poisson noise is left out of the variance.
    5. On a first background (:func:`_mask_bright_stars_and_cosmic_rays`): COSMIC_RAY from
       :func:`cosmic_ray_mask` with the noise model of the state and the quick FWHM
       (:func:`quick_fwhm`); BRIGHT_STAR (not unusable) around each saturated star, out to where
       its wings fall to the sky rms
       (:func:`~astrid_assets.science.calibration.detector.bright_star_mask`: a Moffat
       of the quick FWHM and β = 2.5 through the saturation level, above the sky, at the radius
       of the saturated area; px, e-).
    6. SEP background and rms with every unusable pixel left out; variance
       (:class:`~astrid_assets.science.calibration.noise.NoiseModel`): the Poisson model
       (:func:`~astrid_assets.science.calibration.noise.variance_map`) for raw frames calibrated
       with the night's masters with a known gain and read noise, else
       :func:`~astrid_assets.science.calibration.noise.empirical_variance` (measured sky variance
       plus source Poisson noise).

    Pixel values of masked pixels are kept as computed (not interpolated), except non-finite
    input pixels: flagged NO_DATA and set to the frame's median.  ``info`` of the
    result records state, gain, read noise, saturation, their sources and every assumption.

    Parameters
    ----------
    raw_adu : numpy.ndarray
        Raw science frame, ADU with the bias in (or reduced data in its own units), ``[y, x]``.
    header : astropy.io.fits.Header
        Its FITS header.
    masters : MasterCalibrations
        The night's masters (the identity calibrations for data reduced elsewhere).
    edge : int, default 8
        Width of the EDGE border, px.

    Returns
    -------
    CalibratedFrame
        float32 science (e-, sky included), mask, variance (e-²), background and rms (e-), info.

    Raises
    ------
    ValueError
        If the frame and the masters differ in shape.
    """
    raw = np.asarray(raw_adu, dtype=np.float64)
    shapes = {name: np.shape(getattr(masters, name)) for name in ("bias", "dark", "flat", "bad_pixels")}
    if any(shape != raw.shape for shape in shapes.values()):
        raise ValueError(f"raw frame shape {raw.shape} does not match the master calibrations {shapes}")
    assumptions: list[str] = []
    with_masters = not masters.identity
    detector = _read_detector(raw, header, masters, assumptions)
    image_adu, flat, dark_adu, undivided = _correct_bias_dark_flat(raw, masters, detector.exptime)
    bad_pixels = np.asarray(masters.bad_pixels, dtype=bool) | undivided
    mask, image_adu = _mask_defects(raw, image_adu, bad_pixels, detector.saturation.value, edge, assumptions)
    unusable = (mask & (masks.SATURATED | masks.BAD_PIXEL | masks.NO_DATA)) != 0
    state, pedestal, image_adu = _data_state(image_adu, header, with_masters, unusable, detector, assumptions)
    unknown_pedestal = state.state == "raw" and not with_masters and pedestal is None
    gain, gain_unknown = _resolve_gain(image_adu, state, detector, unknown_pedestal, unusable, assumptions)
    read_noise = detector.read_noise.value
    if read_noise is None:
        assumptions.append("read noise unknown: variance from the measured sky noise")
    science = image_adu * gain.value
    noise = NoiseModel(
        science=science,
        flat=flat,
        dark_electrons=dark_adu * gain.value,
        read_noise=read_noise,
        poisson=with_masters and detector.gain.value is not None and read_noise is not None,
        source_gain=math.inf if gain_unknown else 1.0,
    )
    fwhm, cosmic, details, noise = _mask_bright_stars_and_cosmic_rays(
        raw, science, mask, detector.saturation.value, noise, float(gain.value), assumptions
    )
    background, background_rms = background_maps(science, (mask & masks.UNUSABLE) != 0)
    info = {
        "data_state": state.state,
        "data_state_reason": state.reason,
        "gain": float(gain.value),
        "gain_source": gain.source,
        "read_noise": None if read_noise is None else float(read_noise),
        "read_noise_source": detector.read_noise.source,
        "saturation": None if detector.saturation.value is None else float(detector.saturation.value),
        "saturation_source": detector.saturation.source,
        "pedestal": pedestal,
        "noise_model": noise.description,
        "cr_fwhm_px": fwhm,
        "cr_objlim": details.get("objlim"),
        "cr_pixels": int(cosmic.sum()),
        "cr_spared": details.get("spared", 0),
        "assumptions": assumptions,
    }
    return CalibratedFrame(
        science=science.astype(np.float32),
        mask=mask,
        variance=noise.variance(background, background_rms),
        background=background,
        background_rms=background_rms,
        info=info,
    )
