"""Deep reference images: register, scale to a common zero point, clip and average frames.

Method
------
1. Each frame's background is subtracted and the frame is resampled onto the reference grid
   (:func:`astrid_assets.science.astrometry.register.register_to_reference`).
2. Flux scales ``s_i`` (counts in frame ``i`` per count in the anchor frame) come from the
   caller (``flux_scales`` or photometric ``zero_points``: ``s_i = 10**(0.4 (zp_i − zp_a))``)
   or from forced PSF photometry of the anchor frame's PSF stars in every frame, each with its
   own PSF (:func:`~astrid_assets.science.photometry.flux_ratio.fit_flux_ratio`, the subtractions' fit).
   Frames are divided by ``s_i``
   (variances by ``s_i²``), so the co-add is in the anchor frame's electrons and carries its
   zero point.
3. Per pixel, values further than ``clip_sigma × σ_i + clip_ampfrac × |median|`` from the
   median over frames are rejected — the clipping rule of SWarp's CLIPPED combine
   (Gruen et al. 2014, PASP 126, 158): the amplitude term protects star cores whose values
   differ between frames of different seeing, the σ term rejects cosmic rays and satellites.
   At most ``max(1, n // 4)`` of a pixel's ``n`` values are rejected; a pixel with more
   outliers holds a source that changed between epochs and is averaged unclipped, and so are
   its neighbours within :data:`CHANGED_GROWTH` px.
4. The co-add is the weighted mean with one weight per frame, ``w_i = 1 / σ²_sky,i`` (median
   of the scaled variance map). Per-frame weights avoid the bias that per-pixel inverse
   variances (which include the source's own Poisson noise) give to bright stars. The
   variance is ``Σ w_i² V_i / (Σ w_i)²`` over the frames kept at each pixel.
5. The PSF is estimated on the co-add (:func:`astrid_assets.science.psf.analytic.estimate_frame_psf`:
   the empirical stack, or a fitted profile where stars are too few); it is a weighted mixture of the
   frames' PSFs, which is why frames of poor seeing should be left out (:func:`select_best_frames`).

``method="proper"`` replaces steps 3–5 by the proper co-add of Zackay & Ofek (2017)
(:mod:`~astrid_assets.science.reference.proper_coadd`): each frame's PSF is estimated, outliers on blank sky are
rejected
(:func:`~astrid_assets.science.reference.proper_coadd.reject_outliers`, sources protected) and filled, and the frames
are
combined in Fourier space with their PSFs as matched filters; the co-add's PSF is the analytic
``P_R`` and its noise stays white on blank sky.

Images in e- (``float32``), variances in e-², masks ``uint16``; arrays ``[y, x]``, 0-based.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from astropy.wcs import WCS
from scipy.ndimage import binary_dilation

from astrid_assets.science import masks
from astrid_assets.science.astrometry.register import Registered, register_to_reference
from astrid_assets.science.photometry.flux_ratio import FluxRatioError, fit_flux_ratio
from astrid_assets.science.psf.analytic import estimate_frame_psf
from astrid_assets.science.psf.model import PSFError, PSFModel, measure_fwhm
from astrid_assets.science.reference.proper_coadd import proper_combine, reject_outliers

__all__ = ["CHANGED_GROWTH", "COADD_METHODS", "Coadd", "Frame", "select_best_frames", "coadd"]

#: Pixels (4-connected steps) around a pixel with many outliers (a changed source) kept unclipped.
CHANGED_GROWTH = 3
#: Ways of combining the registered, flux-scaled frames (:func:`coadd`'s ``method``).
COADD_METHODS = ("mean", "proper")


@dataclass(frozen=True)
class Coadd:
    """A co-added reference image on the reference grid.

    Attributes
    ----------
    image : numpy.ndarray
        float32 background-subtracted co-add, e- of the anchor frame; NaN where no frame is usable.
    variance : numpy.ndarray
        float32, e-²; NaN where no frame is usable.
    mask : numpy.ndarray
        uint16; ``NO_DATA`` where no frame is usable, else the bits set in every covering frame
        (a frame covers a pixel where it is not ``NO_DATA``).
    n_frames : numpy.ndarray
        uint16 map of the number of frames averaged at each pixel (after clipping).
    psf : PSFModel or None
        PSF of the co-add (None if it could not be estimated, see ``psf_error``).
    flux_scales : numpy.ndarray
        ``s_i`` per input frame (counts per anchor count).
    weights : numpy.ndarray
        Per-frame weights ``1 / σ²_sky`` after scaling, (anchor e-)⁻².
    zero_point : float or None
        The anchor frame's zero point (mag) when ``zero_points`` were given, else None.
    clipped_fraction : float
        Fraction of usable (frame, pixel) values rejected by clipping.
    psf_error : str
        Why the PSF could not be estimated, or ``""``.
    """

    image: np.ndarray
    variance: np.ndarray
    mask: np.ndarray
    n_frames: np.ndarray
    psf: PSFModel | None
    flux_scales: np.ndarray
    weights: np.ndarray
    zero_point: float | None
    clipped_fraction: float
    psf_error: str = ""


Frame = tuple[np.ndarray, np.ndarray, np.ndarray | None, WCS, np.ndarray | float]


def select_best_frames(
    fwhm: Sequence[float],
    depth: Sequence[float],
    max_frames: int = 10,
    max_fwhm_ratio: float = 1.3,
) -> np.ndarray:
    """Indices of the frames for a reference: sharp first, then deep.

    Frames with ``fwhm <= max_fwhm_ratio × (best FWHM)`` are kept and the ``max_frames``
    deepest of them are returned (deepest first).

    Frames with a non-finite or non-positive FWHM or a non-finite depth are never selected.

    Parameters
    ----------
    fwhm : sequence of float
        Seeing FWHM per frame, px (or arcsec; only ratios matter).
    depth : sequence of float
        5σ point-source limiting magnitude per frame (larger is deeper).
    max_frames : int, default 10
        Most frames returned.
    max_fwhm_ratio : float, default 1.3
        Largest FWHM accepted, as a multiple of the best (smallest) FWHM.

    Returns
    -------
    numpy.ndarray
        Integer indices into ``fwhm`` / ``depth``, deepest first (stable on ties); empty if
        no frame is usable.

    Raises
    ------
    ValueError
        If ``fwhm`` and ``depth`` differ in shape.
    """
    fwhm = np.asarray(fwhm, dtype=float)
    depth = np.asarray(depth, dtype=float)
    if fwhm.shape != depth.shape:
        raise ValueError("fwhm and depth must have one value per frame")
    usable = np.isfinite(fwhm) & np.isfinite(depth) & (fwhm > 0)
    if not usable.any():
        return np.empty(0, dtype=int)
    sharp_enough = usable & (fwhm <= max_fwhm_ratio * fwhm[usable].min())
    candidates = np.flatnonzero(sharp_enough)
    return candidates[np.argsort(-depth[candidates], kind="stable")][:max_frames]


def _register_frames(frames: Sequence[Frame], ref_wcs: WCS, ref_shape: tuple[int, int]) -> list[Registered]:
    registered = []
    for index, (image, variance, mask, wcs, background) in enumerate(frames):
        science = np.asarray(image, np.float32) - np.asarray(background, np.float32)
        try:
            registered.append(register_to_reference(science, variance, mask, wcs, ref_wcs, ref_shape))
        except ValueError as error:
            raise type(error)(f"frame {index}: {error}") from error
    return registered


def _frame_psfs(registered: list[Registered], psf_size: int) -> list[PSFModel]:
    """The PSF of each registered frame (:func:`~astrid_assets.science.psf.analytic.estimate_frame_psf`: the
    empirical stack, or a fitted profile where too few stars make one)."""
    psfs = []
    for index, frame in enumerate(registered):
        rms = np.sqrt(np.where(np.isfinite(frame.variance), frame.variance, np.nan))
        try:
            psfs.append(estimate_frame_psf(frame.image, 0.0, np.nan_to_num(rms, nan=1.0), frame.mask, psf_size))
        except PSFError as error:
            raise PSFError(f"frame {index}: {error}") from None
    return psfs


def _fit_flux_scales(registered: list[Registered], anchor: int, psfs: list[PSFModel]) -> np.ndarray:
    """Flux scales (counts per anchor count) from forced PSF photometry of the anchor's PSF stars in
    every frame, each measured with its own PSF
    (:func:`~astrid_assets.science.photometry.flux_ratio.fit_flux_ratio`)."""
    reference = registered[anchor]
    scales = np.ones(len(registered))
    for index, frame in enumerate(registered):
        if index == anchor:
            continue
        try:
            fit = fit_flux_ratio(frame.image, reference.image, psfs[index], psfs[anchor], frame.variance,
                                 reference.variance, frame.mask | reference.mask, psfs[anchor].star_xy)
        except FluxRatioError as error:
            raise ValueError(f"frame {index}: cannot fit its flux scale: {error}") from None
        scales[index] = fit.ratio
    return scales


def _combine_block(
    images: np.ndarray,
    variances: np.ndarray,
    usable: np.ndarray,
    weights: np.ndarray,
    clip_sigma: float,
    clip_ampfrac: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Clipped weighted mean of a (n_frames, rows, nx) block; returns image, variance, count, n_clipped."""
    values = np.where(usable, images, np.nan)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: pixels no frame covers
        median = np.nanmedian(values, axis=0)
        tolerance = clip_sigma * np.sqrt(np.abs(variances)) + clip_ampfrac * np.abs(median)
        rejected = usable & (np.abs(images - median) > tolerance) & (usable.sum(axis=0) >= 3)
    # Clipping is for what hits one frame (cosmic rays, satellites). A source that changed between
    # the frames (a transient bright on some nights, absent on others) puts several values, or all,
    # far from their median: rejecting them would leave the pixel empty (NO_DATA at the source's
    # core) or keep only some epochs. Where more than a quarter of a pixel's values (at least one)
    # would go, and within CHANGED_GROWTH px of such a pixel (where the same source's wings cross the
    # tolerance in some frames only, by noise), none is rejected: the plain weighted mean.
    changed = rejected.sum(axis=0) > np.maximum(1, usable.sum(axis=0) // 4)
    if changed.any():
        rejected &= ~binary_dilation(changed, iterations=CHANGED_GROWTH)[None]
    kept = usable & ~rejected
    w = np.where(kept, weights[:, None, None], 0.0)
    total = w.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        image = np.where(kept, images, 0.0)
        mean = (w * image).sum(axis=0) / total
        variance = (w**2 * np.where(kept, variances, 0.0)).sum(axis=0) / total**2
    return mean, variance, kept.sum(axis=0), int(rejected.sum())


def coadd(
    frames: Sequence[Frame],
    ref_wcs: WCS,
    ref_shape: tuple[int, int],
    *,
    flux_scales: Sequence[float] | None = None,
    zero_points: Sequence[float] | None = None,
    anchor: int = 0,
    clip_sigma: float = 4.0,
    clip_ampfrac: float = 0.3,
    psf_size: int = 25,
    block_rows: int = 256,
    method: str = "mean",
) -> Coadd:
    """Co-add frames into a deep reference on the grid ``(ref_wcs, ref_shape)``.

    Parameters
    ----------
    frames : sequence of tuple
        ``(image, variance, mask, wcs, background)`` per frame: image in e- with sky,
        variance e-², uint16 mask (or None), celestial WCS, background map or level (e-).
    ref_wcs : astropy.wcs.WCS
        Celestial WCS of the output grid.
    ref_shape : tuple of int
        ``(ny, nx)`` of the output grid, px.
    flux_scales : sequence of float or None, default None
        Counts per anchor count for each frame; or
    zero_points : sequence of float or None, default None
        Photometric zero points (mag) of the exposures as given, i.e. the magnitude
        of a source giving 1 e- in that exposure (for a ``MAGZP`` per e-/s add
        ``2.5 log10(EXPTIME)``); if neither is given the scales are fitted (a single frame
        gets scale 1).
    anchor : int, default 0
        Index of the frame that sets the photometric scale.
    clip_sigma, clip_ampfrac : float, default 4.0, 0.3
        Clipping rule (see the module docstring): σ multiple and fraction of ``|median|``;
        clipping needs at least 3 usable values at a pixel.
    psf_size : int, default 25
        Odd PSF stamp side, px, for the co-add's PSF and the flux-scale fits.
    block_rows : int, default 256
        Rows combined at a time (memory only; no effect on the result; ``"mean"`` only).
    method : {"mean", "proper"}, default "mean"
        ``"mean"``: clipped weighted mean, PSF estimated on the co-add (module docstring);
        ``"proper"``: proper co-add (Zackay & Ofek 2017, :mod:`~astrid_assets.science.reference.proper_coadd`), PSF
        ``P_R``
        from the frames' PSFs, mask bits ``SATURATED`` and ``BRIGHT_STAR`` of any covering frame
        kept (their filled cores enter every pixel of the kernel).

    Returns
    -------
    Coadd
        The co-add on ``(ref_wcs, ref_shape)``.

    Raises
    ------
    ValueError
        No frames, inconsistent options, or a frame that cannot be registered
        (``RegistrationError``) or scaled.
    PSFError
        ``method="proper"`` and a frame's PSF cannot be estimated.
    """
    if method not in COADD_METHODS:
        raise ValueError(f"unknown co-add method {method!r} ({' or '.join(COADD_METHODS)})")
    if not frames:
        raise ValueError("coadd needs at least one frame")
    if flux_scales is not None and zero_points is not None:
        raise ValueError("give flux_scales or zero_points, not both")
    ref_shape = (int(ref_shape[0]), int(ref_shape[1]))
    registered = _register_frames(frames, ref_wcs, ref_shape)
    zero_point = None
    fitted = flux_scales is None and zero_points is None and len(registered) > 1
    psfs = _frame_psfs(registered, psf_size) if fitted or method == "proper" else []
    if zero_points is not None:
        zp = np.asarray(zero_points, dtype=float)
        scales = 10.0 ** (0.4 * (zp - zp[anchor]))
        zero_point = float(zp[anchor])
    elif flux_scales is not None:
        scales = np.asarray(flux_scales, dtype=float)
    elif len(registered) == 1:
        scales = np.ones(1)
    else:
        scales = _fit_flux_scales(registered, anchor, psfs)
    if scales.shape != (len(registered),) or not np.all(np.isfinite(scales) & (scales > 0)):
        raise ValueError(f"flux scales must be positive, one per frame; got {scales}")
    sky_variance = np.array([np.nanmedian(frame.variance) / s**2 for frame, s in zip(registered, scales, strict=True)])
    weights = 1.0 / sky_variance
    if method == "proper":
        return _proper(registered, scales, weights, psfs, anchor, zero_point, clip_sigma, psf_size)
    image = np.full(ref_shape, np.nan, np.float32)
    variance = np.full(ref_shape, np.nan, np.float32)
    n_frames = np.zeros(ref_shape, np.uint16)
    n_clipped = 0
    n_covered = 0
    for y0 in range(0, ref_shape[0], block_rows):
        y1 = min(y0 + block_rows, ref_shape[0])
        images = np.stack([f.image[y0:y1] / np.float32(s) for f, s in zip(registered, scales, strict=True)])
        variances = np.stack([f.variance[y0:y1] / np.float32(s**2) for f, s in zip(registered, scales, strict=True)])
        usable = np.stack([(f.mask[y0:y1] & masks.UNUSABLE) == 0 for f in registered]) & np.isfinite(images)
        usable &= np.isfinite(variances)
        mean, var, count, clipped = _combine_block(images, variances, usable, weights, clip_sigma, clip_ampfrac)
        covered = count > 0
        image[y0:y1] = np.where(covered, mean, np.nan)
        variance[y0:y1] = np.where(covered, var, np.nan)
        n_frames[y0:y1] = count
        n_clipped += clipped
        n_covered += int(usable.sum())
    mask = _coadd_mask(registered, n_frames)
    psf: PSFModel | None = None
    psf_error = ""
    try:
        rms = np.sqrt(np.nan_to_num(variance, nan=np.nanmax(variance)))
        psf = estimate_frame_psf(image, 0.0, rms, mask, psf_size)
    except PSFError as error:
        psf_error = str(error)
    return Coadd(
        image=image,
        variance=variance,
        mask=mask,
        n_frames=n_frames,
        psf=psf,
        flux_scales=scales,
        weights=weights,
        zero_point=zero_point,
        clipped_fraction=n_clipped / max(n_covered, 1),
        psf_error=psf_error,
    )


def _coadd_mask(registered: list[Registered], n_frames: np.ndarray) -> np.ndarray:
    """Bits set in every frame that covers a pixel; NO_DATA where no frame is usable."""
    combined = np.full(n_frames.shape, np.iinfo(np.uint16).max, np.uint16)
    any_cover = np.zeros(n_frames.shape, bool)
    for frame in registered:
        covers = (frame.mask & masks.NO_DATA) == 0
        combined = np.where(covers, combined & frame.mask, combined)
        any_cover |= covers
    combined = np.where(any_cover, combined, np.uint16(0)).astype(np.uint16)
    combined[n_frames == 0] |= masks.NO_DATA
    return combined


def _proper(
    registered: list[Registered],
    scales: np.ndarray,
    weights: np.ndarray,
    psfs: list[PSFModel],
    anchor: int,
    zero_point: float | None,
    clip_sigma: float,
    psf_size: int,
) -> Coadd:
    """The proper co-add (:func:`~astrid_assets.science.reference.proper_coadd.proper_combine`) of registered frames as
    a :class:`Coadd`."""
    images = np.stack([f.image / np.float32(s) for f, s in zip(registered, scales, strict=True)])
    variances = np.stack([f.variance / np.float32(s**2) for f, s in zip(registered, scales, strict=True)])
    finite = np.isfinite(images) & np.isfinite(variances)
    covered = np.stack([(f.mask & masks.NO_DATA) == 0 for f in registered]) & finite
    usable = np.stack([(f.mask & masks.UNUSABLE) == 0 for f in registered]) & finite
    rejected = reject_outliers(images, variances, usable, clip_sigma)
    kept = usable & ~rejected
    stack = proper_combine(images, variances, kept, covered, [p.image for p in psfs], 1.0 / np.sqrt(weights), psf_size)
    n_frames = np.where(np.isfinite(stack.image), kept.sum(axis=0), 0).astype(np.uint16)
    mask = _coadd_mask(registered, n_frames)
    for frame, cover in zip(registered, covered, strict=True):  # filled cores reach the whole kernel
        mask |= np.where(cover, frame.mask & (masks.SATURATED | masks.BRIGHT_STAR), 0).astype(np.uint16)
    psf = PSFModel(stack.psf, measure_fwhm(stack.psf), int(sum(p.n_stars for p in psfs)),
                   psfs[anchor].star_xy, psfs[anchor].star_flux)
    return Coadd(image=stack.image, variance=stack.variance, mask=mask, n_frames=n_frames, psf=psf,
                 flux_scales=scales, weights=weights, zero_point=zero_point,
                 clipped_fraction=int(rejected.sum()) / max(int(usable.sum()), 1))
