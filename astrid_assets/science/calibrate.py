"""CCD reduction: master calibrations, bias/dark/flat correction, masks, noise maps.

Conventions
-----------
* Raw frames are ADU with the bias included; pixel arrays are indexed ``[y, x]`` (0-based).
* Master bias: ADU.  Master dark: ADU/s, bias-subtracted.  Master flat: dimensionless,
  normalised to median 1.
* Calibrated science frames are electrons (e-) per pixel with the sky **not** subtracted::

      science = (raw - bias - dark * EXPTIME) * GAIN / flat

  so a flux in e- refers to a pixel of unit (median) response.  Variance is e-², background
  and its rms are e-.
* Masks are ``uint16`` bit-planes from :mod:`astrid_assets.science.masks`.

References: L.A.Cosmic, van Dokkum 2001, PASP 113, 1420 (through ``astroscrappy``);
background mesh estimation as in SExtractor, Bertin & Arnouts 1996, A&AS 117, 393, through SEP
(Barbary 2016, JOSS 1, 58).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import astroscrappy
import numpy as np
import sep
from astropy.io import fits
from astropy.stats import mad_std, sigma_clip
from scipy.ndimage import binary_dilation, median_filter

from astrid_assets.science import masks

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


@dataclass
class MasterCalibrations:
    """Master calibration frames of one night.

    ``bias`` ADU; ``dark`` ADU/s (bias-subtracted); ``flat`` normalised to median 1;
    ``bad_pixels`` True for dead, low-response or hot pixels found in the masters.
    """

    bias: np.ndarray
    dark: np.ndarray
    flat: np.ndarray
    bad_pixels: np.ndarray


@dataclass
class CalibratedFrame:
    """A reduced science frame: ``science`` e- (sky included), ``mask`` uint16 flags,
    ``variance`` e-², ``background`` and ``background_rms`` e- (SEP mesh maps)."""

    science: np.ndarray
    mask: np.ndarray
    variance: np.ndarray
    background: np.ndarray
    background_rms: np.ndarray


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
    ``bad_pixels`` marks :func:`flat_defects` and :func:`hot_pixels`.
    """
    if not bias or not flats:
        raise ValueError("build_masters needs at least one bias and one flat frame")
    shape = _check_shapes({"bias": bias, "dark": [frame for frame, _ in darks], "flat": flats})
    master_bias = sigma_clipped_combine(bias)
    if darks:
        rates = [(np.asarray(frame, dtype=np.float64) - master_bias) / exptime for frame, exptime in darks]
        if any(exptime <= 0 for _, exptime in darks):
            raise ValueError("dark frames need a positive exposure time")
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
    return MasterCalibrations(bias=master_bias, dark=master_dark, flat=master_flat, bad_pixels=bad)


def _header_float(header: fits.Header, key: str, default: float | None) -> float | None:
    value = header.get(key, default)
    return default if value is None else float(value)


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


def cosmic_ray_mask(
    science: np.ndarray,
    bad: np.ndarray,
    saturated: np.ndarray,
    read_noise: float,
    satlevel: float,
    variance: np.ndarray | None = None,
) -> np.ndarray:
    """L.A.Cosmic (van Dokkum 2001) on a frame in electrons with its sky (gain 1).

    ``bad`` pixels are first filled with the median of their row neighbours (so that a bad
    column does not hide cosmic rays beside it) and ``saturated`` pixels are passed to
    astroscrappy as ignored; the frame is mirrored by :data:`COSMIC_PAD` pixels at its
    borders so that hits near the edges are found.  Neither bad nor saturated pixels are
    returned as cosmic rays.  The noise model is Poisson in electrons plus ``read_noise``
    unless a ``variance`` image is given.  Parameters: ``sigclip=4.5``, ``sigfrac=0.3``,
    ``objlim=5`` (astroscrappy's defaults, suited to PSFs of FWHM >~ 2 pixels), 4 iterations.
    """
    filled = np.where(bad, median_filter(science, size=(1, 5), mode="nearest"), science)
    pad = COSMIC_PAD

    def mirrored(array: np.ndarray, dtype: type) -> np.ndarray:
        return np.ascontiguousarray(np.pad(array, pad, mode="reflect"), dtype=dtype)

    crmask, _ = astroscrappy.detect_cosmics(
        mirrored(filled, np.float32),
        inmask=mirrored(saturated, bool),
        invar=None if variance is None else mirrored(variance, np.float32),
        sigclip=4.5,
        sigfrac=0.3,
        objlim=5.0,
        gain=1.0,
        readnoise=float(read_noise),
        satlevel=float(satlevel),
        niter=4,
        verbose=False,
    )
    return np.asarray(crmask, dtype=bool)[pad:-pad, pad:-pad] & ~(bad | saturated)


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
    """Per-pixel variance (e-²) of the calibrated frame.

    ``(read_noise² + dark + flat · S) / flat²`` with ``S = background + max(science -
    background, 0)``: photon noise of sky (from the smooth background map, so the noise does
    not follow its own fluctuations) plus sources, dark-current shot noise and read noise,
    propagated through the flat-field division.  Noise of the master calibrations is neglected.
    """
    signal = background + np.clip(science - background, 0.0, None)
    raw_variance = read_noise**2 + np.clip(dark_electrons, 0.0, None) + np.clip(flat * signal, 0.0, None)
    return (raw_variance / flat**2).astype(np.float32)


def empirical_variance(science: np.ndarray, background: np.ndarray, background_rms: np.ndarray) -> np.ndarray:
    """Variance for a frame without a noise model: the measured sky variance
    ``background_rms²`` plus source photon noise ``max(science - background, 0) / g``, where
    the effective gain ``g = median(background) / median(background_rms²)`` assumes the sky
    noise is Poisson.  When the sky level is not positive (a sky-subtracted image) the
    source term is left out (sky-limited approximation).
    """
    sky_variance = np.maximum(background_rms.astype(np.float64), 1e-12) ** 2
    sky_level = float(np.median(background))
    if sky_level <= 0:
        return sky_variance.astype(np.float32)
    effective_gain = sky_level / float(np.median(sky_variance))
    source = np.clip(science - background, 0.0, None)
    return (sky_variance + source / effective_gain).astype(np.float32)


def calibrate_frame(
    raw_adu: np.ndarray, header: fits.Header, masters: MasterCalibrations, edge: int = 8
) -> CalibratedFrame:
    """Reduce one raw science frame (ADU) into electrons with masks and noise maps.

    Uses header ``GAIN`` (e-/ADU, default 1), ``RDNOISE`` (e-; if absent, as for images
    already reduced by an archive, the variance is :func:`empirical_variance` and
    L.A.Cosmic uses it as its noise model),
    ``EXPTIME`` (s, default 0) and ``SATURATE`` (ADU, optional).  Steps: bias, dark and flat
    correction; SATURATED from the raw frame (grown along columns); BAD_PIXEL from the
    masters and flat values below :data:`MIN_FLAT` (left undivided); COSMIC_RAY from
    L.A.Cosmic; EDGE within ``edge`` pixels of the border; SEP background and rms; variance.
    Pixel values of masked pixels are kept as computed (not interpolated).

    Raises ValueError if the frame and the masters differ in shape.
    """
    raw = np.asarray(raw_adu, dtype=np.float64)
    shapes = {name: np.shape(getattr(masters, name)) for name in ("bias", "dark", "flat", "bad_pixels")}
    if any(shape != raw.shape for shape in shapes.values()):
        raise ValueError(f"raw frame shape {raw.shape} does not match the master calibrations {shapes}")
    gain = _header_float(header, "GAIN", 1.0)
    read_noise = _header_float(header, "RDNOISE", None)
    exptime = _header_float(header, "EXPTIME", 0.0)
    saturate = _header_float(header, "SATURATE", None)

    flat = np.asarray(masters.flat, dtype=np.float64)
    undivided = ~(flat >= MIN_FLAT)
    flat = np.where(undivided, 1.0, flat)
    dark_adu = np.asarray(masters.dark, dtype=np.float64) * exptime
    science = (raw - masters.bias - dark_adu) * gain / flat

    mask = np.zeros(raw.shape, dtype=np.uint16)
    mask[saturation_mask(raw, saturate)] |= masks.SATURATED
    mask[np.asarray(masters.bad_pixels, dtype=bool) | undivided] |= masks.BAD_PIXEL
    mask[edge_mask(raw.shape, edge)] |= masks.EDGE
    saturated = (mask & masks.SATURATED) != 0
    bad = (mask & masks.BAD_PIXEL) != 0

    raw_saturated = raw >= saturate if saturate is not None else np.zeros(raw.shape, dtype=bool)
    satlevel = float(np.min(science[raw_saturated])) if raw_saturated.any() else 1e30
    if read_noise is None:
        # No noise model in the header (e.g. an archive-reduced image): measure it.
        background, background_rms = background_maps(science, saturated | bad)
        cosmic = cosmic_ray_mask(
            science,
            bad,
            saturated,
            float(np.median(background_rms)),
            satlevel,
            empirical_variance(science, background, background_rms),
        )
    else:
        cosmic = cosmic_ray_mask(science, bad, saturated, read_noise, satlevel)
    mask[cosmic] |= masks.COSMIC_RAY

    background, background_rms = background_maps(science, (mask & masks.UNUSABLE) != 0)
    if read_noise is None:
        variance = empirical_variance(science, background, background_rms)
    else:
        variance = variance_map(science, background, flat, dark_adu * gain, read_noise)
    return CalibratedFrame(
        science=science.astype(np.float32),
        mask=mask,
        variance=variance,
        background=background,
        background_rms=background_rms,
    )
