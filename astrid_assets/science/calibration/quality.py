"""Per-frame image quality: seeing, shape, sky, noise, depth, masking, and a usable/unusable verdict.

Conventions
-----------
* Input is a :class:`~astrid_assets.science.calibration.calibrate.CalibratedFrame` (electrons, sky not
  subtracted) and its FITS header; pixel coordinates are 0-based ``[y, x]``.
* ``fwhm_px`` is the FWHM of a circular Moffat profile (Moffat 1969, A&A 3, 455) with free
  core width α and index β — or of its Gaussian limit (β → ∞) when β runs to its bound —
  fitted to bright, unsaturated stars (neighbours' and masked
  pixels are left out of the fit; none allowed within 1 FWHM of the centre) **integrated over
  the pixels** (the model is averaged over an oversampled grid inside each pixel).  It is
  therefore the FWHM of the PSF before pixelisation, comparable with a seeing value in a
  header; the median over stars is reported.  Stars are found with SEP (Barbary 2016,
  JOSS 1, 58; the library form of SExtractor, Bertin & Arnouts 1996, A&AS 117, 393).
* ``depth_mag`` is the 5-sigma limiting magnitude of a point source measured with optimal
  PSF weighting in the sky-limited regime:
  ``F_lim = 5 · noise · sqrt(NEA)`` e-, ``NEA = π α² (2β - 1) / (β - 1)²`` (the noise-
  equivalent area of the fitted Moffat), ``depth = MAGZP - 2.5 log10(F_lim / EXPTIME)``,
  where ``MAGZP`` is the magnitude of a source giving 1 e-/s (flat-fielded electrons).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import sep
from astropy.io import fits
from astropy.stats import mad_std
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales
from scipy.ndimage import binary_dilation

from astrid_assets.science import masks
from astrid_assets.science.products import CalibratedFrame
from astrid_assets.science.psf.profile_fit import MoffatFit, fit_moffat
from astrid_assets.science.psf.profiles import GAUSSIAN_FWHM_PER_SIGMA
from astrid_assets.science.psf.stars import moments_shape

__all__ = [
    "DETECT_SIGMA",
    "DETECT_MIN_AREA",
    "PSF_STAR_MIN_PEAK_SIGMA",
    "PSF_STAR_MAX",
    "PSF_STAR_MIN",
    "REFERENCE_FWHM_ARCSEC",
    "QualityLimits",
    "pixel_scale_arcsec",
    "measure_psf",
    "quality_score",
    "measure_quality",
    "verdict",
    "seeing_outliers",
    "mark_seeing_outliers",
]

#: Detection threshold for counting sources and finding PSF stars, in units of the background rms.
DETECT_SIGMA = 5.0
DETECT_MIN_AREA = 5


#: A PSF star needs a peak at least this many background sigmas above the sky.
PSF_STAR_MIN_PEAK_SIGMA = 10.0
#: At most this many of the brightest candidate stars are fitted.
PSF_STAR_MAX = 40
#: Fewer fitted stars than this gives NaN FWHM: one star measures it (a sparse cut-out may hold only a few).
PSF_STAR_MIN = 1
#: Reference seeing (arcsec) for the seeing term of ``quality_score``.
REFERENCE_FWHM_ARCSEC = 2.0
_SEP_REJECT = sep.OBJ_MERGED | sep.OBJ_TRUNC


@dataclass(frozen=True)
class QualityLimits:
    """Limits a frame must meet to be usable for difference imaging."""

    #: No absolute seeing limit by default: a telescope's normal PSF may be 1 px or 10 px wide. A frame
    #: far worse than the rest of its night is caught by :func:`seeing_outliers`.
    max_fwhm_arcsec: float = float("inf")
    #: A frame whose FWHM exceeds this multiple of the median FWHM of its field's frames that night is unusable.
    max_fwhm_ratio: float = 2.0
    #: Largest median SEP axis ratio ``a/b`` of the PSF stars (dimensionless, ≥ 1).
    max_elongation: float = 1.5
    #: Fewest SEP detections at :data:`DETECT_SIGMA` for a usable frame: one. A survey cut-out of a sparse
    #: field holds a handful of stars; a frame is refused for its sources only when it has none (clouds, a
    #: closed shutter), and registration says so when a frame has too few to match its reference.
    min_sources: int = 1
    #: Largest fraction (0–1) of pixels carrying an ``UNUSABLE`` flag.
    max_masked_fraction: float = 0.1


def pixel_scale_arcsec(header: fits.Header) -> float:
    """Pixel scale in arcsec (geometric mean of the two axes) from the celestial WCS, else
    the ``PIXSCALE`` card, else NaN.

    Parameters
    ----------
    header : astropy.io.fits.Header
        FITS header; a malformed WCS is treated as absent. ``PIXSCALE`` is read as arcsec/px.

    Returns
    -------
    float
        Pixel scale, arcsec/px, or NaN.
    """
    try:
        wcs = WCS(header).celestial
        if wcs.naxis == 2 and wcs.has_celestial:
            scales = proj_plane_pixel_scales(wcs) * 3600.0
            return float(np.sqrt(scales[0] * scales[1]))
    except Exception:  # a malformed WCS is treated as absent
        pass
    return float(header.get("PIXSCALE", np.nan))


def _stamp(array: np.ndarray, x: int, y: int, half: int) -> np.ndarray:
    return array[y - half : y + half + 1, x - half : x + half + 1]


def _psf_candidates(
    objects: np.ndarray, unusable: np.ndarray, peak_floor: np.ndarray, half: int, core: int
) -> list[int]:
    """Indices of bright detections not flagged by SEP, with a full stamp of ``half`` and no
    unusable pixel within ``core`` pixels of the centre, brightest first."""
    ny, nx = unusable.shape
    x = np.round(objects["x"]).astype(int)
    y = np.round(objects["y"]).astype(int)
    inside = (x >= half) & (x < nx - half) & (y >= half) & (y < ny - half)
    usable = inside & (objects["peak"] > peak_floor) & ((objects["flag"] & _SEP_REJECT) == 0)
    chosen = []
    for k in np.flatnonzero(usable)[np.argsort(-objects["flux"][usable])]:
        if not _stamp(unusable, x[k], y[k], core).any():
            chosen.append(int(k))
        if len(chosen) == PSF_STAR_MAX:
            break
    return chosen


def _neighbour_pixels(segmentation: np.ndarray, label: int) -> np.ndarray:
    """Pixels of other detections in a stamp, grown by 2 pixels to cover their wings."""
    others = (segmentation != 0) & (segmentation != label)
    return binary_dilation(others, iterations=2) if others.any() else others


def _stellar_locus(values: np.ndarray) -> np.ndarray:
    """Boolean selection of the stars: iteratively reject values more than 3 robust sigma
    from the median (galaxies and blends lie above the stellar FWHM)."""
    keep = np.isfinite(values)
    for _ in range(5):
        centre, spread = np.median(values[keep]), mad_std(values[keep])
        new = keep & (np.abs(values - centre) <= 3.0 * max(spread, 0.02 * centre))
        if new.sum() < PSF_STAR_MIN or np.array_equal(new, keep):
            break
        keep = new
    return keep


def measure_psf(frame: CalibratedFrame) -> tuple[list[MoffatFit], np.ndarray, int]:
    """Detect sources and fit the PSF stars.

    Returns ``(fits, axis_ratios, n_sources)``: the Moffat fits of the stars on the stellar
    locus, their SEP ``a/b`` and the number of SEP detections above :data:`DETECT_SIGMA`
    (EDGE and unusable pixels masked).

    PSF stars: unflagged detections with a peak above :data:`PSF_STAR_MIN_PEAK_SIGMA` × rms,
    a full stamp inside the frame, no unusable pixel and no other detection within one first-guess
    FWHM of the centre (at most :data:`PSF_STAR_MAX`, brightest first); neighbours' pixels (grown
    by 2 px) and unusable ones are left out of each fit, and fits whose FWHM is more than 3
    robust σ from the median are dropped. The axis ratio is SEP's ``a/b`` for a star alone in its
    stamp; for a star with neighbours (a crowded field) it comes from Gaussian-weighted second moments
    with the neighbours' pixels left out (:func:`~astrid_assets.science.psf.stars.moments_shape`),
    since SEP's isophote takes in their light.

    Parameters
    ----------
    frame : CalibratedFrame
        Calibrated frame (e-, sky not subtracted) with its background, rms, variance and mask.

    Returns
    -------
    fits : list of ProfileFit
        Successful fits on the stellar locus (centres in stamp coordinates); empty when fewer
        than :data:`PSF_STAR_MIN` stars were fitted.
    axis_ratios : numpy.ndarray
        SEP ``a/b`` of those stars (dimensionless).
    n_sources : int
        SEP detections at :data:`DETECT_SIGMA`.
    """
    unusable = (frame.mask & (masks.UNUSABLE | masks.EDGE)) != 0
    image = np.ascontiguousarray(frame.science - frame.background, dtype=np.float32)
    rms = np.ascontiguousarray(frame.background_rms, dtype=np.float32)
    objects, segmentation = sep.extract(
        image,
        DETECT_SIGMA,
        err=rms,
        mask=np.ascontiguousarray(unusable),
        minarea=DETECT_MIN_AREA,
        segmentation_map=True,
    )
    if len(objects) == 0:
        return [], np.empty(0), 0
    peak_floor = (
        PSF_STAR_MIN_PEAK_SIGMA
        * rms[
            np.clip(np.round(objects["y"]).astype(int), 0, rms.shape[0] - 1),
            np.clip(np.round(objects["x"]).astype(int), 0, rms.shape[1] - 1),
        ]
    )
    compact = objects[(objects["peak"] > peak_floor) & ((objects["flag"] & _SEP_REJECT) == 0)]
    if len(compact) == 0:
        return [], np.empty(0), len(objects)
    first_fwhm = float(np.median(2.3548 * np.sqrt(compact["a"] * compact["b"])))
    half = int(np.clip(np.ceil(2.5 * first_fwhm), 6, 25))
    oversample = 5 if first_fwhm < 4 else 3
    fits_, ratios = [], []
    core = int(np.ceil(first_fwhm))
    for k in _psf_candidates(objects, unusable, peak_floor, half, core):
        x, y = int(round(objects["x"][k])), int(round(objects["y"][k]))
        neighbours = _neighbour_pixels(_stamp(segmentation, x, y, half), k + 1)
        if neighbours[half - core : half + core + 1, half - core : half + core + 1].any():
            continue
        ignored = neighbours | _stamp(unusable, x, y, half)
        variance = np.where(ignored, np.inf, _stamp(frame.variance, x, y, half).astype(np.float64))
        fit = fit_moffat(_stamp(image, x, y, half).astype(np.float64), variance, first_fwhm, oversample)
        if fit.success:
            fits_.append(fit)
            if neighbours.any():  # SEP's isophotal a/b of a star in a crowd includes its neighbours' light
                clean = np.where(ignored, 0.0, _stamp(image, x, y, half).astype(np.float64))
                ratios.append(moments_shape(clean, fit.x, fit.y, 1, max(fit.fwhm, 1.0) / GAUSSIAN_FWHM_PER_SIGMA)[1])
            else:
                ratios.append(objects["a"][k] / max(objects["b"][k], 1e-6))
    if len(fits_) < PSF_STAR_MIN:
        return [], np.empty(0), len(objects)
    locus = _stellar_locus(np.array([fit.fwhm for fit in fits_]))
    return [fit for fit, keep in zip(fits_, locus, strict=True) if keep], np.asarray(ratios)[locus], len(objects)


def quality_score(fwhm_arcsec: float, elongation: float, masked_fraction: float) -> float:
    """Heuristic in [0, 1] for ranking frames: ``min(1, (2"/FWHM)²)`` (relative point-source
    sensitivity, which scales as FWHM⁻² when sky-limited) × ``1/elongation`` ×
    ``(1 - masked_fraction)``; 0 when FWHM or elongation is unknown.

    Parameters
    ----------
    fwhm_arcsec : float
        Seeing FWHM, arcsec (compared with :data:`REFERENCE_FWHM_ARCSEC`).
    elongation : float
        Axis ratio ``a/b`` (``1/elongation`` capped at 1).
    masked_fraction : float
        Fraction (0–1) of unusable pixels.

    Returns
    -------
    float
        Score in [0, 1].
    """
    if not (np.isfinite(fwhm_arcsec) and np.isfinite(elongation) and fwhm_arcsec > 0 and elongation > 0):
        return 0.0
    seeing = min(1.0, (REFERENCE_FWHM_ARCSEC / fwhm_arcsec) ** 2)
    return float(np.clip(seeing * min(1.0, 1.0 / elongation) * (1.0 - masked_fraction), 0.0, 1.0))


def measure_quality(frame: CalibratedFrame, header: fits.Header) -> dict[str, float]:
    """Quality metrics of a calibrated frame.

    Keys: ``fwhm_px``, ``fwhm_arcsec`` (pixel scale from the WCS), ``elongation`` (median SEP
    ``a/b`` of the PSF stars), ``sky`` (median background, e-/pixel), ``noise`` (median
    background rms, e-/pixel), ``limiting_flux`` (5-sigma PSF-optimal point-source flux in this
    exposure, e-: the depth in the frame's own units, needing no zero point), ``depth_mag``
    (the same as a magnitude, see module docstring; needs ``MAGZP`` and an exposure time, else
    NaN), ``psf_model`` (``gaussian`` or ``moffat``, the majority of the PSF stars' fits) and
    ``psf_beta`` (median Moffat β, NaN for a Gaussian), ``pixel_scale`` (arcsec/px; 1 when
    neither a WCS nor ``PIXSCALE`` gives one, so ``fwhm_arcsec`` is then in pixels),
    ``n_sources`` (SEP detections at 5 sigma),
    ``n_psf_stars``, ``masked_fraction`` (pixels with any unusable flag), ``quality_score``
    (:func:`quality_score`).  Unmeasurable values are NaN (``psf_model`` is None).

    Parameters
    ----------
    frame : CalibratedFrame
        Calibrated frame, e-, sky not subtracted.
    header : astropy.io.fits.Header
        Its header: WCS or ``PIXSCALE`` (arcsec/px), ``MAGZP`` (mag of 1 e-/s) and ``EXPTIME``
        (or ``EXPOSURE``), s.

    Returns
    -------
    dict
        The metrics above (floats and ints; ``psf_model`` a str or None).
    """
    stars, ratios, n_sources = measure_psf(frame)
    unusable = (frame.mask & masks.UNUSABLE) != 0
    usable_background = frame.background[~unusable] if (~unusable).any() else frame.background.ravel()
    usable_rms = frame.background_rms[~unusable] if (~unusable).any() else frame.background_rms.ravel()
    sky = float(np.median(usable_background))
    noise = float(np.median(usable_rms))
    masked_fraction = float(unusable.mean())
    scale = pixel_scale_arcsec(header)
    if stars:
        fwhm_px = float(np.median([fit.fwhm for fit in stars]))
        noise_area = float(np.median([fit.noise_area for fit in stars]))
        elongation = float(np.median(ratios))
        gaussian = [fit.model == "gaussian" for fit in stars]
        psf_model = "gaussian" if np.mean(gaussian) > 0.5 else "moffat"
        psf_beta = float("nan") if psf_model == "gaussian" else float(
            np.median([fit.beta for fit in stars if fit.model == "moffat"]))
    else:
        fwhm_px = noise_area = elongation = psf_beta = float("nan")
        psf_model = None
    limiting_flux = 5.0 * noise * np.sqrt(noise_area) if np.isfinite(noise_area) and noise > 0 else float("nan")
    zero_point, exptime = header.get("MAGZP"), header.get("EXPTIME") or header.get("EXPOSURE")
    depth = float("nan")
    if zero_point is not None and exptime and np.isfinite(limiting_flux):
        depth = float(zero_point) - 2.5 * np.log10(limiting_flux / float(exptime))
    if not np.isfinite(scale):  # no WCS and no PIXSCALE: seeing is judged in pixels
        scale = 1.0
    fwhm_arcsec = fwhm_px * scale
    return {
        "fwhm_px": fwhm_px,
        "fwhm_arcsec": float(fwhm_arcsec),
        "pixel_scale": float(scale),
        "psf_model": psf_model,
        "psf_beta": psf_beta,
        "limiting_flux": float(limiting_flux),
        "elongation": elongation,
        "sky": sky,
        "noise": noise,
        "depth_mag": float(depth),
        "n_sources": int(n_sources),
        "n_psf_stars": len(stars),
        "masked_fraction": masked_fraction,
        "quality_score": quality_score(fwhm_arcsec, elongation, masked_fraction),
    }


def verdict(quality: dict, limits: QualityLimits = QualityLimits()) -> tuple[bool, list[str]]:
    """Whether a frame is usable, and human-readable reasons when it is not.

    Checks ``fwhm_arcsec`` (must be measured and at most ``max_fwhm_arcsec``), ``elongation``,
    ``n_sources`` and ``masked_fraction``; ``max_fwhm_ratio`` is applied by
    :func:`seeing_outliers`, not here.

    Parameters
    ----------
    quality : dict
        Metrics from :func:`measure_quality` (missing keys count as unmeasured).
    limits : QualityLimits, default QualityLimits()
        Limits to apply.

    Returns
    -------
    usable : bool
        True when no limit is broken.
    reasons : list of str
        Why the frame is unusable (empty when usable).
    """
    reasons = []
    fwhm = quality.get("fwhm_arcsec", float("nan"))
    if fwhm is None or not np.isfinite(fwhm):
        reasons.append("FWHM could not be measured (too few isolated, unsaturated stars)")
    elif fwhm > limits.max_fwhm_arcsec:
        reasons.append(f'FWHM {fwhm:.2f}" exceeds the limit of {limits.max_fwhm_arcsec:.2f}"')
    elongation = quality.get("elongation", float("nan"))
    if elongation is not None and np.isfinite(elongation) and elongation > limits.max_elongation:
        reasons.append(f"star elongation {elongation:.2f} exceeds the limit of {limits.max_elongation:.2f}")
    n_sources = quality.get("n_sources", 0) or 0
    if n_sources < limits.min_sources:
        reasons.append("no source detected" if n_sources == 0 else
                       f"only {n_sources} sources detected (minimum {limits.min_sources})")
    masked = quality.get("masked_fraction")
    masked = float("nan") if masked is None else float(masked)
    if not np.isfinite(masked) or masked > limits.max_masked_fraction:
        reasons.append(f"masked fraction {masked:.3f} exceeds the limit of {limits.max_masked_fraction:.3f}")
    return not reasons, reasons


def seeing_outliers(fields: Sequence[str], fwhm: Sequence[float], limits: QualityLimits = QualityLimits()) -> list[str]:
    """Per frame, the reason it is a seeing outlier among its field's frames of one night, or ``""``.

    A frame is an outlier when its FWHM exceeds ``limits.max_fwhm_ratio`` × the median FWHM of the
    frames of the same field (a relative limit: it needs no idea of what this telescope's seeing is).

    Parameters
    ----------
    fields : sequence of str
        Field name per frame (frames of one night).
    fwhm : sequence of float
        FWHM per frame, px (NaN: never an outlier, and left out of the median).
    limits : QualityLimits, default QualityLimits()
        Supplies ``max_fwhm_ratio``.

    Returns
    -------
    list of str
        One entry per frame, in input order: the reason, or ``""``.
    """
    frame = pd.DataFrame({"field": list(fields), "fwhm": np.asarray(fwhm, dtype=float)})
    median = frame.groupby("field").fwhm.transform("median")
    return [f"FWHM {f:.2f} px exceeds {limits.max_fwhm_ratio:g} x the night's median {m:.2f} px of its field"
            if np.isfinite(f) and np.isfinite(m) and f > limits.max_fwhm_ratio * m else ""
            for f, m in zip(frame.fwhm, median, strict=True)]


def mark_seeing_outliers(frames: pd.DataFrame, limits: QualityLimits = QualityLimits()) -> pd.DataFrame:
    """A night's frame rows (``field``, ``fwhm_px``, ``usable``, ``reasons``, ``status``) with the seeing
    outliers among the ``ok`` rows (:func:`seeing_outliers`) made unusable and the reason appended.

    Parameters
    ----------
    frames : pandas.DataFrame
        One row per frame with columns ``field``, ``fwhm_px`` (px), ``usable`` (bool),
        ``reasons`` (str, ``"; "``-separated) and ``status`` (only ``"ok"`` rows are judged).
    limits : QualityLimits, default QualityLimits()
        Supplies ``max_fwhm_ratio``.

    Returns
    -------
    pandas.DataFrame
        A copy of ``frames`` with outliers' ``usable`` set False and their reason appended.
    """
    frames = frames.copy()
    ok = frames.index[frames.status == "ok"]
    if len(ok) == 0:
        return frames
    for index, reason in zip(ok, seeing_outliers(frames.loc[ok, "field"], frames.loc[ok, "fwhm_px"], limits),
                             strict=True):
        if reason:
            frames.loc[index, "usable"] = False
            earlier = frames.loc[index, "reasons"]
            frames.loc[index, "reasons"] = f"{earlier}; {reason}" if isinstance(earlier, str) and earlier else reason
    return frames
