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

import numpy as np
from astropy.io import fits

from astrid_assets.science import masks
from astrid_assets.science.calibration.cosmics import cosmic_ray_mask, quick_fwhm
from astrid_assets.science.calibration.detector import (
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

__all__ = ["BRIGHT_STAR_DEFAULT_FWHM", "edge_mask", "variance_map", "empirical_variance", "calibrate_frame"]

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

    Parameters
    ----------
    science : numpy.ndarray
        Calibrated frame, e- (flat-fielded, sky included).
    background : numpy.ndarray
        Its smooth sky background, e-.
    flat : numpy.ndarray
        Master flat the frame was divided by (dimensionless, median 1; positive).
    dark_electrons : numpy.ndarray
        Dark current subtracted from the frame, e- per pixel (before the flat division).
    read_noise : float
        Read noise, e- rms.

    Returns
    -------
    numpy.ndarray
        float32 variance map, e-².
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

    Parameters
    ----------
    science : numpy.ndarray
        Frame with sky, e- (or its own units).
    background, background_rms : numpy.ndarray
        Sky level and its per-pixel noise, units of ``science`` (rms floored at 1e-12).
    gain : float or None, default None
        Electrons per unit of ``science``; None estimates it from the sky; ``math.inf``,
        non-finite or non-positive values leave the source term out.

    Returns
    -------
    numpy.ndarray
        float32 variance map, units of ``science`` squared (e-²).
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

    1. Header (:mod:`astrid_assets.science.frames.files`): gain (``GAIN``/``EGAIN``/``CCDGAIN``,
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
       the quick FWHM (:func:`quick_fwhm`); BRIGHT_STAR (not unusable) around each saturated star,
       out to where its wings fall to the sky rms
       (:func:`~astrid_assets.science.calibration.detector.bright_star_mask`: a Moffat
       of the quick FWHM and β = 2.5 through the saturation level, above the sky, at the radius
       of the saturated area; px, e-).
    6. SEP background and rms; variance: the Poisson model (:func:`variance_map`) for raw frames
       calibrated with the night's masters with a known gain and read noise, else
       :func:`empirical_variance` (measured sky variance plus source Poisson noise).

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
