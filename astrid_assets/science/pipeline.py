"""One frame through differencing and detection: the science the nightly assets run.

Composes the stages: each image's stars and PSF measured once (:func:`measure_frame`,
:func:`measure_reference`), star-pattern alignment of frames without a WCS (``astrometry.align``),
resampling onto the reference grid (``astrometry.register``), the reference co-add
(``reference.coadd``), ZOGY proper image subtraction (Zackay, Ofek & Gal-Yam 2016, ApJ 830, 27;
``subtraction.zogy`` and ``subtraction.tiles``) or the classic PSF-matched subtraction, and SEP
extraction on S_corr (``detection.candidates``). The image products are in
:mod:`~astrid_assets.science.products`; the nightly injection–recovery test in ``injection.fakes``.
Images are in electrons, pixel coordinates 0-based ``[y, x]``; every array lives on the
reference's pixel grid once registered.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
from astropy.wcs import WCS

from astrid_assets.science.astrometry.align import (
    PLACEHOLDER_CARD,
    AlignmentError,
    align_frame,
    is_placeholder,
    placeholder_wcs,
    wcs_through,
)
from astrid_assets.science.astrometry.register import (
    PixelMap,
    RegistrationError,
    check_overlap,
    register_to_reference,
)
from astrid_assets.science.astrometry.residuals import near_any, star_residuals
from astrid_assets.science.detection.candidates import detect_candidates
from astrid_assets.science.detection.stamps import cut_stamps
from astrid_assets.science.measurements import measure_reference
from astrid_assets.science.photometry.star_check import StarCheck, check_stars
from astrid_assets.science.products import STAMP_SIZE, CalibratedFrame, Difference, Reference
from astrid_assets.science.psf.analytic import analytic_psf, estimate_frame_psf
from astrid_assets.science.psf.field import PSFField, estimate_psf_field
from astrid_assets.science.psf.model import PSFError, PSFModel
from astrid_assets.science.psf.stars import PSF_STAR_LIMITS
from astrid_assets.science.reference.coadd import coadd, select_best_frames
from astrid_assets.science.sources import Sources
from astrid_assets.science.subtraction.classic import classic_subtraction
from astrid_assets.science.subtraction.crowded import crowded_retry
from astrid_assets.science.subtraction.inputs import ClassicOptions, SubtractionImage, ZogyOptions
from astrid_assets.science.subtraction.tiles import zogy_field

__all__ = ["pointing_offset", "on_reference_sky", "build_reference", "difference_frame", "find_candidates"]


def on_reference_sky(frame: CalibratedFrame, reference: Reference) -> tuple[CalibratedFrame, str]:
    """The frame with a WCS on the reference's grid, and how it was registered (``wcs`` or ``star-pattern``).

    A frame without a WCS, or any frame when the reference's grid is a placeholder (a field whose
    frames have no WCS), is matched to the reference by star patterns (:mod:`~astrid_assets.science.astrometry.align`).
    A frame
    whose header has ``WCSALIGN`` (already aligned) is returned as it is.

    Parameters
    ----------
    frame : CalibratedFrame
        The calibrated frame (e-, sky included).
    reference : Reference
        The field's reference.

    Returns
    -------
    frame : CalibratedFrame
        The frame, or a copy carrying the borrowed WCS
        (:meth:`~astrid_assets.science.products.CalibratedFrame.with_wcs`).
    registration : str
        ``"wcs"``, ``"star-pattern"`` or the frame's ``WCSALIGN`` value.

    Raises
    ------
    RegistrationError
        If the star patterns do not match.
    """
    if frame.has_wcs and (not is_placeholder(reference.header) or frame.header.get("WCSALIGN")):
        return frame, str(frame.header.get("WCSALIGN", "wcs"))
    try:  # star pattern, sparse stars or cross-correlation: the method is recorded (astrometry.align)
        alignment = align_frame(frame.sources, reference.sources)
    except AlignmentError as error:
        raise RegistrationError(f"frame has no WCS and {error}") from None
    return frame.with_wcs(wcs_through(reference.wcs, alignment.matrix), alignment.method), alignment.method


def build_reference(
    frames: list[CalibratedFrame], fwhm: list[float], depth: list[float], max_frames: int = 10,
    coadd_method: str = "mean", max_fwhm_ratio: float = 1.3,
) -> tuple[Reference, list[int]]:
    """Co-add the best frames (by FWHM and depth) onto the best frame's grid.

    Flux scales come from the photometric zero points when every chosen frame has ``MAGZP``
    (magnitude of 1 e-/s): frame ``i`` collects ``10**(0.4 (MAGZP_i − MAGZP_a)) · t_i / t_a``
    e- per anchor e- (``t`` = ``EXPTIME``, left out unless every frame has one); otherwise
    they are fitted from the stars the frames have in common — no zero point is needed. The
    reference header carries the anchor's ``MAGZP`` (if any) and ``EXPTIME``: the co-add is in
    e- of the anchor exposure.

    The anchor (the grid) is the best chosen frame with a WCS. Frames without a WCS are put on
    it by star patterns (:mod:`~astrid_assets.science.astrometry.align`); when no chosen frame has a WCS the grid is a
    placeholder (``WCSPLACE = T``: pixel positions, no sky coordinates).

    Returns the reference and the indices of the frames used. Raises :class:`PSFError` when
    the co-add's PSF cannot be estimated, ``ValueError`` when no frame has a finite FWHM and depth.

    Parameters
    ----------
    frames : list of CalibratedFrame
        Calibrated frames of one field (e-).
    fwhm : list of float
        PSF FWHM per frame, px.
    depth : list of float
        Depth per frame, magnitudes or any logarithmic measure where larger is deeper (e.g.
        ``-2.5 log10(limiting flux / exposure time)`` when no zero point is known): only its
        order matters.
    max_frames : int, default 10
        Most frames co-added.
    coadd_method : {"mean", "proper"}, default "mean"
        :func:`~astrid_assets.science.reference.coadd.coadd`'s ``method``: clipped weighted mean, or the proper co-add
        of Zackay &
        Ofek (2017, :mod:`~astrid_assets.science.reference.proper_coadd`), whose PSF stays well defined (and depth
        optimal) when
        frames of different seeing are combined. Recorded in the header (``COADD``).
    max_fwhm_ratio : float, default 1.3
        Frames with a FWHM above this multiple of the best are left out
        (:func:`~astrid_assets.science.reference.coadd.select_best_frames`); the proper co-add can take a wider range.

    Returns
    -------
    reference : Reference
        Background-subtracted co-add (e- of the anchor; NaN replaced by 0, variance NaN by its
        maximum), mask, PSF stamp and header (WCS, ``NFRAMES``, ``FWHM`` px, ``BUNIT``, ``MAGZP``,
        ``EXPTIME``).
    chosen : list of int
        Indices into ``frames`` of the frames used, anchor first.

    Raises
    ------
    PSFError
        The co-add's PSF cannot be estimated.
    ValueError
        No frame has a finite FWHM and depth (or a frame cannot be registered or scaled,
        :func:`~astrid_assets.science.reference.coadd.coadd`).
    RegistrationError
        A frame without a WCS cannot be matched by star patterns.
    """
    chosen = [int(i) for i in select_best_frames(fwhm, depth, max_frames=max_frames, max_fwhm_ratio=max_fwhm_ratio)]
    if not chosen:
        raise ValueError(f"none of {len(frames)} frame(s) has a measured FWHM and depth to build a reference from")
    with_wcs = [i for i in chosen if frames[i].has_wcs]
    if with_wcs:
        chosen.remove(with_wcs[0])
        chosen.insert(0, with_wcs[0])
    anchor = frames[chosen[0]]
    placeholder = not anchor.has_wcs
    anchor_wcs = anchor.wcs if not placeholder else placeholder_wcs(
        anchor.science.shape, float(anchor.header.get("PIXSCALE", 1.0)))
    grid = Reference(anchor.science - anchor.background, anchor.variance, anchor.mask, np.zeros((1, 1)),
                     anchor_wcs.to_header(relax=True))
    if placeholder:
        grid.header[PLACEHOLDER_CARD] = True
    on_grid = [anchor] + [frames[i] if frames[i].has_wcs and not placeholder else on_reference_sky(frames[i], grid)[0]
                          for i in chosen[1:]]
    zero_points = None
    if all("MAGZP" in frame.header for frame in on_grid):
        # per-exposure zero points (mag of 1 e- in the exposure), so unequal EXPTIMEs scale too
        with_time = all("EXPTIME" in frame.header for frame in on_grid)
        zero_points = [float(frame.header["MAGZP"]) + (
            2.5 * np.log10(float(frame.header["EXPTIME"])) if with_time else 0.0) for frame in on_grid]
    stack = coadd(
        [(frame.science, frame.variance, frame.mask, anchor_wcs if frame is anchor else frame.wcs, frame.background)
         for frame in on_grid],
        anchor_wcs, anchor.science.shape, zero_points=zero_points, method=coadd_method,
    )
    if stack.psf is None:
        raise PSFError(f"the co-add's PSF could not be estimated: {stack.psf_error}")
    header = anchor_wcs.to_header(relax=True)
    if placeholder:
        header[PLACEHOLDER_CARD] = (True, "placeholder WCS: pixel grid only, no sky position")
    header["NFRAMES"] = (len(chosen), "frames co-added")
    header["COADD"] = (coadd_method, "co-add: mean (clipped weighted) or proper (Zackay & Ofek 2017)")
    header["FWHM"] = (float(stack.psf.fwhm), "PSF FWHM of the co-add, px")
    header["BUNIT"] = ("electron", "background-subtracted, e- of the anchor frame")
    if stack.zero_point is not None:
        header["MAGZP"] = (float(anchor.header["MAGZP"]), "zero point, mag for 1 e-/s")
    if "EXPTIME" in anchor.header:
        header["EXPTIME"] = anchor.header["EXPTIME"]
    image = np.nan_to_num(stack.image, nan=0.0).astype(np.float32)
    variance = np.where(np.isfinite(stack.variance), stack.variance, np.nanmax(stack.variance)).astype(np.float32)
    return measure_reference(Reference(image, variance, stack.mask, stack.psf.image, header)), chosen

def pointing_offset(frame: CalibratedFrame, reference: Reference, reference_sources: Sources,
                    min_stars: int) -> tuple[float, float]:
    """The frame's WCS error on the reference grid, ``(dx, dy)`` px, from its stored stars.

    The frame's bright-star centroids, measured on its own pixels from its stored catalogue
    (:func:`measure_frame`), are mapped through the two WCS onto the reference grid and matched with
    the reference's; their median offset is what resampling with the WCS alone would leave.

    Raises
    ------
    RegistrationError
        Too few stars matched (:func:`star_residuals`).
    """
    def to_grid(xy: np.ndarray) -> np.ndarray:
        x, y = reference.wcs.world_to_pixel(frame.wcs.pixel_to_world(xy[:, 0], xy[:, 1]))
        return np.column_stack([x, y])

    residuals = star_residuals(frame.sources, reference_sources, min_stars, to_grid)
    return residuals.dx, residuals.dy


#: Fewest constant stars the PSF-model error ε is calibrated at
#: (:func:`~astrid_assets.science.psf.field.calibrate_psf_error` needs three).
MIN_PSF_ERROR_STARS = 3


def _psf_error_options(options: ZogyOptions, check: StarCheck, new_field: PSFField, ref_field: PSFField,
                       fit_ratio: bool) -> ZogyOptions:
    """``options`` with the flux ratio of ``check`` and its error (where ``fit_ratio`` and neither PSF varies: the
    tiles fit theirs by aperture photometry) and the PSF-model error calibrated at constant stars only.

    The stars are those the subtraction would take (the reference's PSF stars, else the new image's, with at
    least three) that ``check`` found constant; the constant stars themselves where fewer than three of those are
    left; and no ε term at all where fewer than :data:`MIN_PSF_ERROR_STARS` stars are known constant (ε would
    otherwise be calibrated at every detection of the reference, transients and galaxies included).
    """
    if fit_ratio and check.ratio is not None and not (new_field.varies or ref_field.varies):
        options = replace(options, flux_ratio=check.ratio, flux_ratio_err=check.ratio_err)
    constant = check.constant_xy
    if len(constant) < MIN_PSF_ERROR_STARS:
        return replace(options, psf_error=0.0, psf_error_stars=None)
    stars = next((np.asarray(f.star_xy, np.float64).reshape(-1, 2) for f in (ref_field, new_field)
                  if len(f.star_xy) >= 3), np.empty((0, 2)))
    stars = stars[near_any(stars, constant, 1.5)]
    return replace(options, psf_error_stars=stars if len(stars) >= MIN_PSF_ERROR_STARS else constant)


def difference_frame(
    frame: CalibratedFrame, reference: Reference, method: str = "zogy", min_matched_stars: int = 5,
    *, like: Difference | None = None,
) -> Difference:
    """Register ``frame`` onto the reference grid, estimate its PSF and subtract.

    The flux ratio ``F_n / F_r`` is fitted from PSF photometry of the stars in both images
    (:func:`~astrid_assets.science.photometry.flux_ratio.fit_flux_ratio`), not taken from ``MAGZP`` /
    ``EXTIME``: the fit follows transparency changes that nominal header zero points miss, and it uses
    the same PSF models as the subtraction, so a static star cancels even where a model's
    normalisation is off by a per cent.

    Measured once: the reference's stars and PSF field come with it (:func:`measure_reference`);
    the frame's stored stars (:func:`measure_frame`) give its WCS error on the grid
    (:func:`pointing_offset`), removed when it exceeds 0.1 px as the frame is resampled (above 5 px
    the registration is refused); the resampled frame is extracted once, and those detections serve
    the registration check, its PSF field and, with the reference's stored ones, the flux ratio.

    ZOGY: whether either PSF varies over the frame is measured
    (:func:`~astrid_assets.science.psf.field.estimate_psf_field`, a plane of FWHM in x, y through the
    stars); if one does, the frame is differenced on blended
    tiles with PSFEx-like spatial PSF models (:func:`~astrid_assets.science.subtraction.tiles.zogy_field`), otherwise
    in one pass with the frame PSFs. The PSF-model error ``ε`` is calibrated at bright stars known to be
    constant (:func:`check_stars`: point sources whose flux ratio agrees with the others'; no ε term with fewer
    than three) and enters the variance of ``S_corr`` (``PSFERR``); the flux ratio comes from the same point
    sources (:func:`check_stars`; the subtraction's own fit where they give none, or a PSF varies);
    ``varying_psf`` (``VARPSF``) records the choice. A crowded frame this first pass subtracts poorly is differenced
    with a kernel fitted to its pixels instead (:func:`~astrid_assets.science.subtraction.crowded.crowded_retry`). The
    noise autocorrelation of the difference, measured on pixels away from the sources of both images, scales
    the variance of ``S_corr`` and of the difference (:mod:`~astrid_assets.science.subtraction.noise_power`):
    resampled, drizzled and co-added inputs keep a unit-variance ``S_corr`` (``NOISECOR``, ``SCORNORM``).

    Parameters
    ----------
    frame : CalibratedFrame
        The calibrated frame (e-, sky included).
    reference : Reference
        Its field's reference.
    method : {"zogy", "classic"}, default "zogy"
        Subtraction: ZOGY (:func:`~astrid_assets.science.subtraction.zogy.zogy`) or PSF-matched
        (:func:`~astrid_assets.science.subtraction.classic.classic_subtraction`).
    min_matched_stars : int, default 5
        Fewest stars matched for the registration check.
    like : Difference or None, default None
        A difference of the same frame (before fakes were injected into it): its registration offset
        and scatter, the new frame's PSF field and the flux ratio are reused instead of measured
        again (the injection check: :func:`~astrid_assets.science.injection.fakes.injection_recovery`).

    Returns
    -------
    Difference
        On the reference grid; ``registration_rms`` is ``hypot(rms_x, rms_y)`` of the star
        residuals, px.

    Raises
    ------
    RegistrationError
        No overlap, WCS off by more than the field, too few matched stars, a median star offset above 5 px.
    PSFError
        The frame has no usable star (``"no star: …"``): its PSF comes from the ladder
        (:func:`~astrid_assets.science.psf.analytic.estimate_frame_psf`: the empirical stack, else a Moffat or
        Gaussian fitted to one to ten stars; the rung is ``new_psf_field.constant.psf_source``, stored as
        ``PSFSRC`` in the ``NEWPSF`` header).
    ValueError
        Unknown ``method``, or a flux ratio that cannot be fitted (``FluxRatioError``).
    """
    if method not in ("zogy", "classic"):
        raise ValueError(f"unknown subtraction method {method!r} (zogy or classic)")
    reference = measure_reference(reference)
    frame, registration = on_reference_sky(frame, reference)

    def register(pixel_offset=(0.0, 0.0)):
        return register_to_reference(frame.science - frame.background, frame.variance, frame.mask, frame.wcs,
                                     reference.wcs, reference.image.shape, pixel_offset=pixel_offset)

    ref_sigma = reference.sky_sigma
    ref_sources = reference.sources
    if like is not None and like.new_psf_field is not None:
        registered = register(like.pixel_offset)
        new_sigma = _sigma_on_grid(frame, registered)
        pixel_offset, astrometric_sigma, new_field = like.pixel_offset, like.astrometric_sigma, like.new_psf_field
        flux_ratio = like.flux_ratio
    else:
        check_overlap(PixelMap(frame.wcs, reference.wcs, reference.image.shape), frame.science.shape)
        dx, dy = pointing_offset(frame, reference, ref_sources, min_matched_stars)
        if max(abs(dx), abs(dy)) > 5:
            raise RegistrationError(f"WCS off by ({dx:.1f}, {dy:.1f}) px from the reference")
        # an offset above 0.1 px is removed when resampling
        pixel_offset = (dx, dy) if max(abs(dx), abs(dy)) > 0.1 else (0.0, 0.0)
        registered = register(pixel_offset)
        new_sigma = _sigma_on_grid(frame, registered)
        new_sources = Sources.extract(registered.image, 0.0, new_sigma, registered.mask)  # its one extraction
        residuals = star_residuals(new_sources, ref_sources, min_matched_stars)
        astrometric_sigma = (residuals.rms_x, residuals.rms_y)
        flux_ratio = None
        if method == "zogy":
            new_field = estimate_psf_field(registered.image, 0.0, new_sigma, registered.mask, sources=new_sources,
                                           **PSF_STAR_LIMITS)
            # a bare stamp: the flux ratio is fitted at the reference's stored stars (flux_ratio_stars)
            new_field = replace(new_field, constant=PSFModel(new_field.constant.image, new_field.constant.fwhm,
                                                             new_field.constant.n_stars,
                                                             psf_source=new_field.constant.psf_source))
        else:
            new_psf = estimate_frame_psf(registered.image, 0.0, new_sigma, registered.mask,
                                         objects=new_sources.objects, **PSF_STAR_LIMITS)
            new_field = PSFField(new_psf, registered.image.shape, (new_psf.fwhm, 0.0, 0.0), (np.inf,) * 3)
    new = SubtractionImage(registered.image, new_field, new_sigma, registered.variance, registered.mask, reference.wcs)
    ref = SubtractionImage(reference.image, reference.psf_field, ref_sigma, reference.variance, reference.mask,
                           reference.wcs)
    common = {"new": registered.image, "reference": reference.image, "new_fwhm": new_field.constant.fwhm,
              "registration_rms": float(np.hypot(*astrometric_sigma)), "registration": registration,
              "pixel_offset": pixel_offset, "astrometric_sigma": astrometric_sigma, "new_psf_field": new_field}
    if method == "zogy":
        # the noise correlation of drizzled, resampled, co-added inputs, measured in D: subtraction.noise_power
        options = ZogyOptions(flux_ratio=flux_ratio, flux_ratio_stars=ref_sources.unflagged_xy(),
                              astrometric_sigma=astrometric_sigma, psf_error="auto", noise_correlation="difference")

        def with_checked_stars(new_psf: PSFField, ref_psf: PSFField) -> ZogyOptions:
            check = check_stars(registered.image, registered.variance, new_psf.constant, reference,
                                ref_psf.constant, registered.mask | reference.mask, flux_ratio)
            return _psf_error_options(options, check, new_psf, ref_psf, fit_ratio=flux_ratio is None)

        result = zogy_field(new, ref, with_checked_stars(new_field, reference.psf_field))
        # a crowded frame the first pass subtracts poorly: a kernel fitted to the pixels (subtraction.crowded)
        crowded = crowded_retry(result, new, ref, new_field, options, PROFILE_RETRY_PSF_ERROR,
                                PROFILE_RETRY_SCORR_OFFSET)
        result, new_field = crowded or _with_profile_psfs(result, new, ref, with_checked_stars, new_field, reference,
                                                          new_sources.objects if like is None else None)
        common["new_psf_field"], common["new_fwhm"] = new_field, new_field.constant.fwhm
        return Difference(
            difference=result.difference, variance=result.difference_var, s_corr=result.S_corr, mask=result.mask,
            psf=result.P_D, psf_fwhm=result.psf_fwhm, flux_ratio=result.flux_ratio, s_corr_std=result.s_corr_std,
            method="zogy", varying_psf=result.varying_psf, psf_error=result.psf_error,
            psf_tiles=result.parts["P_D_tiles"] if result.varying_psf else None,
            noise_correlation=result.noise_correlation, s_corr_norm=result.s_corr_norm,
            noise_factors=result.noise_factors, fft_backend=result.backend, **common,
        )
    result = classic_subtraction(replace(new, psf=new_field.constant), replace(ref, psf=reference.psf),
                                 ClassicOptions(flux_ratio=flux_ratio))
    return Difference(
        difference=result.difference, variance=result.difference_var, s_corr=result.significance, mask=result.mask,
        psf=result.psf, psf_fwhm=result.psf_fwhm, flux_ratio=result.flux_ratio,
        s_corr_std=result.significance_std, method="classic", **common,
    )


#: A difference whose PSF-model error ``ε`` at the stars (``PSFERR``) exceeds this, or whose robust std(S_corr)
#: is further than ``PROFILE_RETRY_SCORR_OFFSET`` from 1, is tried again with both PSFs from the analytic rung
#: (:func:`_with_profile_psfs`).
PROFILE_RETRY_PSF_ERROR = 0.05
PROFILE_RETRY_SCORR_OFFSET = 0.1


def _with_profile_psfs(result, new: SubtractionImage, ref: SubtractionImage, options_for,
                       new_field: PSFField, reference: Reference, new_objects: np.ndarray | None):
    """ZOGY again with pixel-integrated Moffat/Gaussian PSFs fitted to both images' stars, kept when it leaves
    less PSF-model error at the stars than the empirical PSFs did.

    Empirical PSF stacks of a crowded field hold the light of faint, undetected neighbours (the confusion
    a bulge field is made of), which no isolation cut removes; ZOGY then leaves residuals at every star and
    calibrates a large ``ε`` (0.08–0.15 measured on generated bulge-like frames, 6000 stars per 512², FWHM
    6 px), which buries transients near stars. The analytic rung fits the profile with every detected
    neighbour's pixels weighted 0 and stars chosen by their fit residual
    (:func:`~astrid_assets.science.psf.analytic.fit_analytic_psf`). The choice is made as the tiles' is
    (:func:`~astrid_assets.science.subtraction.tiles.zogy_field`): by ``ε``, the PSF error the data show (then by
    how far std(S_corr) is from 1), only where ``ε`` exceeds :data:`PROFILE_RETRY_PSF_ERROR` or std(S_corr) is
    off by more than :data:`PROFILE_RETRY_SCORR_OFFSET`. On those frames: ε 0.04–0.14 → 0.0, std(S_corr)
    1.38 / 0.95 → 1.04 / 1.19, unflagged candidates 1 / 9 → 1 / 2 per 512² frame.

    The injection check (``like``) passes no ``new_objects``: the image with its fakes is extracted here, and
    the same choice is made again. ``options_for(new_field, ref_field)`` gives the ZOGY options for a pair of
    PSF fields (the flux ratio and the PSF-error stars checked with those PSFs, :func:`check_stars`).

    Returns
    -------
    result, new_field
        The kept ZOGY result and the new image's PSF field (``psf_source`` says which rung).
    """
    off = abs(result.s_corr_std - 1.0) if np.isfinite(result.s_corr_std) else np.inf
    if not (result.psf_error > PROFILE_RETRY_PSF_ERROR or off > PROFILE_RETRY_SCORR_OFFSET):
        return result, new_field
    try:
        new_psf = analytic_psf(new.image, 0.0, new.sigma, new.mask, new_field.constant.size, objects=new_objects)
        ref_psf = _reference_profile(reference)
    except PSFError:
        return result, new_field
    profile_new = PSFField(new_psf, new.image.shape, (new_psf.fwhm, 0.0, 0.0), (np.inf,) * 3)
    profile_ref = PSFField(ref_psf, ref.image.shape, (ref_psf.fwhm, 0.0, 0.0), (np.inf,) * 3)
    retried = zogy_field(replace(new, psf=profile_new), replace(ref, psf=profile_ref),
                         options_for(profile_new, profile_ref))
    retried_off = abs(retried.s_corr_std - 1.0) if np.isfinite(retried.s_corr_std) else np.inf
    if retried.psf_error < result.psf_error or (retried.psf_error <= result.psf_error and retried_off < off):
        return retried, profile_new
    return result, new_field


_REFERENCE_PROFILES: dict[int, tuple[Reference, PSFModel]] = {}


def _reference_profile(reference: Reference) -> PSFModel:
    """The reference's fitted-profile PSF, fitted once per reference in this process (every frame of its field
    that needs it reuses it; the entry holds the reference, so its ``id`` stays its own)."""
    cached = _REFERENCE_PROFILES.get(id(reference))
    if cached is not None and cached[0] is reference:
        return cached[1]
    psf = analytic_psf(reference.image, 0.0, reference.sky_sigma, reference.mask,
                       reference.psf_field.constant.size, objects=reference.sources.objects)
    if len(_REFERENCE_PROFILES) >= 4:
        _REFERENCE_PROFILES.clear()
    _REFERENCE_PROFILES[id(reference)] = (reference, psf)
    return psf


def _sigma_on_grid(frame: CalibratedFrame, registered) -> float:
    """The frame's sky noise per reference pixel, e-: resampling scales the noise power by the area ratio."""
    area = float(np.nanmedian(registered.variance) / np.nanmedian(frame.variance))
    return frame.sky_sigma * np.sqrt(area if np.isfinite(area) and area > 0 else 1.0)


def find_candidates(
    difference: Difference, wcs: WCS, threshold: float = 5.0
) -> tuple[pd.DataFrame, np.ndarray]:
    """Candidates with ``|S_corr| >= threshold`` and their science / reference / difference stamps.

    Stamps are ``(N, 3, 63, 63)`` float32 in e-, NaN beyond the image edge.

    Parameters
    ----------
    difference : Difference
        A differenced frame.
    wcs : astropy.wcs.WCS
        Celestial WCS of the reference grid (for ``ra``, ``dec``).
    threshold : float, default 5.0
        Detection threshold on ``|S_corr|``.

    Returns
    -------
    candidates : pandas.DataFrame
        :func:`~astrid_assets.science.detection.candidates.detect_candidates` table.
    stamps : numpy.ndarray
        ``(N, 3, STAMP_SIZE, STAMP_SIZE)`` float32, channels :data:`~astrid_assets.science.products.STAMP_CHANNELS`
        (the reference multiplied by ``flux_ratio``, i.e. in new-frame e-).
    """
    reference_scaled = difference.reference * np.float32(difference.flux_ratio)
    candidates = detect_candidates(
        difference.s_corr, difference.difference, difference.variance, difference.mask, wcs,
        difference.psf_fwhm, threshold, difference_psf=difference.psf, difference_psf_tiles=difference.psf_tiles,
        static=np.fmax(difference.new, reference_scaled),
    )
    stamps = cut_stamps(
        {"science": difference.new, "reference": reference_scaled, "difference": difference.difference},
        candidates.x.to_numpy(), candidates.y.to_numpy(), size=STAMP_SIZE,
    ).astype(np.float32)
    return candidates, stamps
