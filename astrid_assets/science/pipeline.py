"""One frame through differencing and detection: the science the nightly assets run.

Composes the core steps — WCS registration (:mod:`.register`), PSF estimation (:mod:`.psf`),
ZOGY proper image subtraction (Zackay, Ofek & Gal-Yam 2016, ApJ 830, 27; :mod:`.zogy`) or the
classic PSF-matched subtraction, SEP extraction on S_corr (:mod:`.detect`) — and the nightly
injection–recovery test (:mod:`.inject`). Images are in electrons, pixel coordinates 0-based
``[y, x]``; every array lives on the reference's pixel grid once registered.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS

from astrid_assets.science import masks
from astrid_assets.science.align import (
    PLACEHOLDER_CARD,
    AlignmentError,
    align_to_reference,
    is_placeholder,
    placeholder_wcs,
)
from astrid_assets.science.coadd import coadd, select_best_frames
from astrid_assets.science.detect import cut_stamps, detect_candidates
from astrid_assets.science.inject import completeness, inject_sources, match_catalogues
from astrid_assets.science.psf import PSFError, PSFModel, estimate_psf, measure_fwhm
from astrid_assets.science.register import (
    RegistrationError,
    measure_registration_residuals,
    register_to_reference,
)
from astrid_assets.science.zogy import classic_subtraction, zogy

STAMP_SIZE = 63
#: PSF stars: S/N ≥ 15 and at least 3 isolated unsaturated ones. A 512² frame of a sparse field
#: at high latitude holds only a handful of stars above the estimator's stricter defaults.
PSF_STAR_LIMITS = {"min_snr": 15.0, "min_stars": 3}
STAMP_CHANNELS = ("science", "reference", "difference")


def celestial_wcs(header: fits.Header) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        return WCS(header).celestial


@dataclass
class CalibratedImage:
    """A calibrated frame as stored by ``calibrated_frames`` (all maps in e- or e-²)."""

    science: np.ndarray
    mask: np.ndarray
    variance: np.ndarray
    background: np.ndarray
    background_rms: np.ndarray
    header: fits.Header

    @classmethod
    def from_extensions(cls, extensions: dict) -> CalibratedImage:
        science, header = extensions["SCI"]
        return cls(
            science=science.astype(np.float32), mask=extensions["MASK"][0].astype(np.uint16),
            variance=extensions["VARIANCE"][0].astype(np.float32),
            background=extensions["BKG"][0].astype(np.float32),
            background_rms=extensions["BKGRMS"][0].astype(np.float32), header=header,
        )

    @property
    def wcs(self) -> WCS:
        return celestial_wcs(self.header)

    @property
    def has_wcs(self) -> bool:
        """Whether the header holds a celestial WCS (its own, or one borrowed by star patterns)."""
        try:
            return bool(self.wcs.has_celestial)
        except Exception:  # a malformed WCS counts as none
            return False

    @property
    def sky_sigma(self) -> float:
        """Median background noise per pixel, e-."""
        return float(np.median(self.background_rms))

    def with_wcs(self, wcs: WCS, how: str) -> CalibratedImage:
        """A copy whose header carries ``wcs`` (celestial cards replaced) and ``WCSALIGN = how``."""
        header = self.header.copy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            for key in list(WCS(header).celestial.to_header(relax=True)) + ["CD1_1", "CD1_2", "CD2_1", "CD2_2"]:
                header.remove(key, ignore_missing=True, remove_all=True)
        header.update(wcs.to_header(relax=True))
        header["WCSALIGN"] = (how, "how this frame's WCS was obtained")
        return CalibratedImage(self.science, self.mask, self.variance, self.background, self.background_rms, header)


def on_reference_sky(frame: CalibratedImage, reference: Reference) -> tuple[CalibratedImage, str]:
    """The frame with a WCS on the reference's grid, and how it was registered (``wcs`` or ``star-pattern``).

    A frame without a WCS, or any frame when the reference's grid is a placeholder (a field whose
    frames have no WCS), is matched to the reference by star patterns (:mod:`.align`).
    """
    if frame.has_wcs and (not is_placeholder(reference.header) or frame.header.get("WCSALIGN")):
        return frame, str(frame.header.get("WCSALIGN", "wcs"))
    try:
        wcs, _ = align_to_reference(frame.science, frame.background, frame.background_rms, frame.mask,
                                    reference.image, reference.sky_sigma, reference.mask, reference.wcs)
    except AlignmentError as error:
        raise RegistrationError(f"frame has no WCS and {error}") from None
    return frame.with_wcs(wcs, "star-pattern"), "star-pattern"


@dataclass
class Reference:
    """A field's deep reference: background-subtracted co-add (e-), variance, mask and PSF."""

    image: np.ndarray
    variance: np.ndarray
    mask: np.ndarray
    psf: np.ndarray
    header: fits.Header  #: carries the reference grid's WCS

    @property
    def wcs(self) -> WCS:
        return celestial_wcs(self.header)

    @property
    def sky_sigma(self) -> float:
        usable = (self.mask & masks.UNUSABLE) == 0
        return float(np.sqrt(np.nanmedian(self.variance[usable])))

    def to_hdus(self) -> list:
        primary = fits.PrimaryHDU(self.image.astype(np.float32), self.header)
        primary.name = "REF"
        return [
            primary,
            fits.ImageHDU(self.variance.astype(np.float32), name="VARIANCE"),
            fits.ImageHDU(self.mask.astype(np.uint16), name="MASK"),
            fits.ImageHDU(self.psf.astype(np.float32), name="PSF"),
        ]

    @classmethod
    def from_extensions(cls, extensions: dict) -> Reference:
        image, header = extensions["REF"]
        return cls(
            image=image.astype(np.float32), variance=extensions["VARIANCE"][0].astype(np.float32),
            mask=extensions["MASK"][0].astype(np.uint16), psf=extensions["PSF"][0].astype(np.float32),
            header=header,
        )


def build_reference(
    frames: list[CalibratedImage], fwhm: list[float], depth: list[float], max_frames: int = 10
) -> tuple[Reference, list[int]]:
    """Co-add the best frames (by FWHM and depth) onto the best frame's grid.

    Parameters
    ----------
    frames : calibrated frames of one field (e-).
    fwhm : PSF FWHM per frame, px.
    depth : depth per frame, magnitudes or any logarithmic measure where larger is deeper (e.g.
        ``-2.5 log10(limiting flux / exposure time)`` when no zero point is known): only its
        order matters.
    max_frames : most frames co-added.

    Flux scales come from the photometric zero points when every chosen frame has ``MAGZP``
    (magnitude of 1 e-/s): frame ``i`` collects ``10**(0.4 (MAGZP_i − MAGZP_a)) · t_i / t_a``
    e- per anchor e- (``t`` = ``EXPTIME``, left out unless every frame has one); otherwise
    they are fitted from the stars the frames have in common — no zero point is needed. The
    reference header carries the anchor's ``MAGZP`` (if any) and ``EXPTIME``: the co-add is in
    e- of the anchor exposure.

    The anchor (the grid) is the best chosen frame with a WCS. Frames without a WCS are put on
    it by star patterns (:mod:`.align`); when no chosen frame has a WCS the grid is a
    placeholder (``WCSPLACE = T``: pixel positions, no sky coordinates).

    Returns the reference and the indices of the frames used. Raises :class:`PSFError` when
    the co-add's PSF cannot be estimated, ``ValueError`` when no frame has a finite FWHM and depth.
    """
    chosen = [int(i) for i in select_best_frames(fwhm, depth, max_frames=max_frames)]
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
        anchor_wcs, anchor.science.shape, zero_points=zero_points,
    )
    if stack.psf is None:
        raise PSFError(f"the co-add's PSF could not be estimated: {stack.psf_error}")
    header = anchor_wcs.to_header(relax=True)
    if placeholder:
        header[PLACEHOLDER_CARD] = (True, "placeholder WCS: pixel grid only, no sky position")
    header["NFRAMES"] = (len(chosen), "frames co-added")
    header["FWHM"] = (float(stack.psf.fwhm), "PSF FWHM of the co-add, px")
    header["BUNIT"] = ("electron", "background-subtracted, e- of the anchor frame")
    if stack.zero_point is not None:
        header["MAGZP"] = (float(anchor.header["MAGZP"]), "zero point, mag for 1 e-/s")
    if "EXPTIME" in anchor.header:
        header["EXPTIME"] = anchor.header["EXPTIME"]
    image = np.nan_to_num(stack.image, nan=0.0).astype(np.float32)
    variance = np.where(np.isfinite(stack.variance), stack.variance, np.nanmax(stack.variance)).astype(np.float32)
    return Reference(image, variance, stack.mask, stack.psf.image, header), chosen


@dataclass
class Difference:
    """A frame differenced against its reference, on the reference grid."""

    new: np.ndarray  #: registered, background-subtracted science frame, e-
    reference: np.ndarray  #: the reference co-add, e- (scaled to the new frame's flux by flux_ratio)
    difference: np.ndarray  #: difference in new-frame e- (ZOGY: D · F_n / F_D)
    variance: np.ndarray  #: variance of ``difference``, e-²
    s_corr: np.ndarray  #: ZOGY's corrected score (classic: difference / its noise), unit variance
    mask: np.ndarray
    psf: np.ndarray  #: PSF of ``difference``
    psf_fwhm: float  #: px
    new_fwhm: float
    flux_ratio: float
    s_corr_std: float
    registration_rms: float  #: px, bright-star residuals after registration
    method: str
    registration: str = "wcs"  #: ``wcs`` or ``star-pattern`` (frame without a WCS, matched by its stars)

    def to_hdus(self, header: fits.Header) -> list:
        header = header.copy()
        for key, value, comment in [
            ("METHOD", self.method, "subtraction method"), ("FLUXRAT", self.flux_ratio, "F_new / F_ref"),
            ("PSFFWHM", self.psf_fwhm, "FWHM of the difference PSF, px"),
            ("SCORRSTD", self.s_corr_std, "robust std of S_corr"),
            ("REGRMS", self.registration_rms, "registration residual rms, px"),
            ("REGISTER", self.registration, "wcs or star-pattern"),
        ]:
            header[key] = (value, comment)
        primary = fits.PrimaryHDU(self.difference.astype(np.float32), header)
        primary.name = "DIFF"
        return [
            primary,
            fits.ImageHDU(self.s_corr.astype(np.float32), name="SCORR"),
            fits.ImageHDU(self.variance.astype(np.float32), name="VARIANCE"),
            fits.ImageHDU(self.mask.astype(np.uint16), name="MASK"),
            fits.ImageHDU(self.new.astype(np.float32), name="NEW"),
            fits.ImageHDU(self.psf.astype(np.float32), name="PSF"),
        ]

    @classmethod
    def from_extensions(cls, extensions: dict, reference: np.ndarray) -> Difference:
        difference, header = extensions["DIFF"]
        return cls(
            new=extensions["NEW"][0], reference=reference, difference=difference,
            variance=extensions["VARIANCE"][0], s_corr=extensions["SCORR"][0],
            mask=extensions["MASK"][0].astype(np.uint16), psf=extensions["PSF"][0],
            psf_fwhm=float(header["PSFFWHM"]), new_fwhm=float(header.get("NEWFWHM", header["PSFFWHM"])),
            flux_ratio=float(header["FLUXRAT"]), s_corr_std=float(header["SCORRSTD"]),
            registration_rms=float(header["REGRMS"]), method=str(header["METHOD"]),
            registration=str(header.get("REGISTER", "wcs")),
        )


#: Star S/N thresholds tried in turn for the registration check: bright stars first; a sparse or
#: shallow frame falls back to fainter ones rather than failing.
RESIDUAL_STAR_SNR = (50.0, 20.0, 10.0)


def star_residuals(registered, new_sigma: float, reference: Reference, ref_sigma: float, min_stars: int):
    """Registration residuals from the brightest stars that give at least ``min_stars`` matches.

    Raises :class:`RegistrationError` naming the last threshold tried when none does.
    """
    problem = ""
    for min_snr in RESIDUAL_STAR_SNR:
        try:
            residuals = measure_registration_residuals(
                registered.image, new_sigma, reference.image, ref_sigma, registered.mask, reference.mask,
                min_snr=min_snr)
        except RegistrationError as error:
            problem = str(error)
            continue
        if residuals.n_stars >= min_stars:
            return residuals
        problem = f"only {residuals.n_stars} stars with S/N >= {min_snr:g} matched the reference (need {min_stars})"
    raise RegistrationError(problem)


def difference_frame(
    frame: CalibratedImage, reference: Reference, method: str = "zogy", min_matched_stars: int = 5
) -> Difference:
    """Register ``frame`` onto the reference grid, estimate its PSF and subtract.

    The flux ratio ``F_n / F_r`` is fitted from PSF photometry of the stars in both images
    (:func:`astrid_assets.science.zogy.fit_flux_ratio`), not taken from ``MAGZP`` / ``EXPTIME``:
    the fit follows transparency changes that nominal header zero points miss, and it uses the
    same PSF models as the subtraction, so a static star cancels even where a model's
    normalisation is off by a per cent. On the simulated survey (exact, equal zero points) the
    fitted ratios lie within 1.1 % of 1.

    Raises :class:`RegistrationError` (no overlap, WCS off by more than the field, too few
    matched stars, residuals above 1 px) or :class:`PSFError` (PSF cannot be estimated).
    """
    frame, registration = on_reference_sky(frame, reference)
    registered = register_to_reference(
        frame.science - frame.background, frame.variance, frame.mask, frame.wcs, reference.wcs,
        reference.image.shape,
    )
    new_sigma, ref_sigma = frame.sky_sigma, reference.sky_sigma
    combined_mask = registered.mask | reference.mask
    residuals = star_residuals(registered, new_sigma, reference, ref_sigma, min_matched_stars)
    if max(abs(residuals.dx), abs(residuals.dy)) > 0.1:  # WCS pointing error: re-register with the measured offset
        if max(abs(residuals.dx), abs(residuals.dy)) > 5:
            raise RegistrationError(f"WCS off by ({residuals.dx:.1f}, {residuals.dy:.1f}) px from the reference")
        registered = register_to_reference(
            frame.science - frame.background, frame.variance, frame.mask, frame.wcs, reference.wcs,
            reference.image.shape, pixel_offset=(residuals.dx, residuals.dy),
        )
        combined_mask = registered.mask | reference.mask
        residuals = star_residuals(registered, new_sigma, reference, ref_sigma, min_matched_stars)
    new_psf: PSFModel = estimate_psf(registered.image, 0.0, new_sigma, registered.mask, **PSF_STAR_LIMITS)
    registration_rms = float(np.hypot(residuals.rms_x, residuals.rms_y))
    if method == "zogy":
        result = zogy(
            registered.image, reference.image, new_psf.image, reference.psf, new_sigma, ref_sigma,
            new_var=registered.variance, ref_var=reference.variance,
            astrometric_sigma=(residuals.rms_x, residuals.rms_y), mask=combined_mask,
        )
        return Difference(
            new=registered.image, reference=reference.image, difference=result.difference,
            variance=result.difference_var, s_corr=result.S_corr, mask=result.mask, psf=result.P_D,
            psf_fwhm=result.psf_fwhm, new_fwhm=new_psf.fwhm, flux_ratio=result.flux_ratio,
            s_corr_std=result.s_corr_std, registration_rms=registration_rms, method="zogy",
            registration=registration,
        )
    if method == "classic":
        result = classic_subtraction(
            registered.image, reference.image, new_psf, reference.psf, registered.variance,
            reference.variance, mask=combined_mask,
        )
        return Difference(
            new=registered.image, reference=reference.image, difference=result.difference,
            variance=result.difference_var, s_corr=result.score, mask=result.mask, psf=result.psf,
            psf_fwhm=result.psf_fwhm, new_fwhm=new_psf.fwhm, flux_ratio=result.flux_ratio,
            s_corr_std=result.score_std, registration_rms=registration_rms, method="classic",
            registration=registration,
        )
    raise ValueError(f"unknown subtraction method {method!r} (zogy or classic)")


def find_candidates(
    difference: Difference, wcs: WCS, threshold: float = 5.0
) -> tuple[pd.DataFrame, np.ndarray]:
    """Candidates with ``|S_corr| >= threshold`` and their science / reference / difference stamps.

    Stamps are ``(N, 3, 63, 63)`` float32 in e-, NaN beyond the image edge.
    """
    candidates = detect_candidates(
        difference.s_corr, difference.difference, difference.variance, difference.mask, wcs,
        difference.psf_fwhm, threshold, difference_psf=difference.psf,
    )
    reference_scaled = difference.reference * np.float32(difference.flux_ratio)
    stamps = cut_stamps(
        {"science": difference.new, "reference": reference_scaled, "difference": difference.difference},
        candidates.x.to_numpy(), candidates.y.to_numpy(), size=STAMP_SIZE,
    ).astype(np.float32)
    return candidates, stamps


@dataclass
class InjectionRecovery:
    """Outcome of injecting fake point sources into one frame and searching for them."""

    snr: np.ndarray  #: expected PSF-optimal S/N of each fake
    recovered: np.ndarray  #: bool per fake
    position_error: np.ndarray  #: px, NaN where not recovered
    false_detections: int  #: detections matching neither a fake nor a detection of the untouched frame


def fake_positions(frame: CalibratedImage, reference: Reference, n: int, rng: np.random.Generator,
                   margin: int = 40, min_separation: float = 20.0) -> np.ndarray:
    """Up to ``n`` positions (frame pixels, ``(x, y)``) on clean pixels inside the reference's overlap."""
    ny, nx = frame.science.shape
    world = frame.wcs.pixel_to_world
    positions: list[tuple[float, float]] = []
    for _ in range(n * 20):
        if len(positions) == n:
            break
        x, y = rng.uniform(margin, nx - margin), rng.uniform(margin, ny - margin)
        iy, ix = int(round(y)), int(round(x))
        if (frame.mask[iy - 3: iy + 4, ix - 3: ix + 4] & masks.UNUSABLE).any():
            continue
        rx, ry = reference.wcs.world_to_pixel(world(x, y))
        if not (margin <= rx < reference.image.shape[1] - margin and margin <= ry < reference.image.shape[0] - margin):
            continue
        if positions and np.min(np.hypot(*(np.array(positions) - (x, y)).T)) < min_separation:
            continue
        positions.append((x, y))
    return np.array(positions).reshape(-1, 2)


def injection_recovery(
    frame: CalibratedImage, reference: Reference, original: pd.DataFrame, rng: np.random.Generator,
    n_fakes: int = 60, snr_range: tuple[float, float] = (3.0, 30.0), match_radius: float = 1.5,
    threshold: float = 5.0, method: str = "zogy",
) -> InjectionRecovery:
    """Inject fakes with the frame's measured PSF into a copy of it, difference, detect, match.

    Fakes get S/N uniform in ``snr_range`` (PSF-optimal against the frame's variance) on clean
    pixels; a fake is recovered when a positive candidate lies within ``match_radius`` px of its
    position on the reference grid. False detections are candidates matching neither a fake nor
    a candidate of the untouched frame (``original``).
    """
    frame, _ = on_reference_sky(frame, reference)
    psf = estimate_psf(frame.science, frame.background, frame.background_rms, frame.mask, **PSF_STAR_LIMITS)
    xy = fake_positions(frame, reference, n_fakes, rng)
    snr = rng.uniform(*snr_range, size=len(xy))
    injected = inject_sources(frame.science, frame.variance, psf, xy[:, 0], xy[:, 1], snr=snr, rng=rng)
    fake_frame = CalibratedImage(injected.image, frame.mask, injected.variance, frame.background,
                                 frame.background_rms, frame.header)
    difference = difference_frame(fake_frame, reference, method=method)
    candidates, _ = find_candidates(difference, reference.wcs, threshold)
    ref_x, ref_y = reference.wcs.world_to_pixel(frame.wcs.pixel_to_world(xy[:, 0], xy[:, 1]))
    truth_xy = np.column_stack([ref_x, ref_y])
    positive = candidates[candidates.sign > 0]
    match = match_catalogues(truth_xy, positive[["x", "y"]].to_numpy(), radius=match_radius)
    recovered = match >= 0
    error = np.full(len(xy), np.nan)
    if recovered.any():
        found = positive.iloc[match[recovered]]
        error[recovered] = np.hypot(found.x.to_numpy() - ref_x[recovered], found.y.to_numpy() - ref_y[recovered])
    matched_fakes = set(positive.index[match[recovered]])
    others = candidates.drop(index=list(matched_fakes))
    if len(others) and len(original):
        known = match_catalogues(others[["x", "y"]].to_numpy(), original[["x", "y"]].to_numpy(), radius=match_radius)
        false_detections = int((known < 0).sum())
    else:
        false_detections = len(others)
    return InjectionRecovery(snr=injected.snr, recovered=recovered, position_error=error,
                             false_detections=false_detections)


SNR_BINS = np.arange(3, 33, 3)


def summarise_completeness(snr: np.ndarray, recovered: np.ndarray, bins: np.ndarray = SNR_BINS) -> dict:
    """Completeness per S/N bin, the S/N of 50 % completeness and completeness at S/N ≥ 10."""
    curve = completeness(snr, recovered, bins)
    bright = snr >= 10
    return {
        "bin_centres": curve.bin_centres.tolist(),
        "fraction": np.nan_to_num(curve.fraction, nan=-1).tolist(),
        "n_injected": curve.n_injected.tolist(),
        "snr_50": float(curve.snr_50),
        "completeness_snr_ge_10": float(recovered[bright].mean()) if bright.any() else float("nan"),
    }


__all__ = [
    "CalibratedImage", "Difference", "InjectionRecovery", "Reference", "RegistrationError", "PSFError",
    "build_reference", "difference_frame", "find_candidates", "injection_recovery", "measure_fwhm",
    "summarise_completeness", "STAMP_CHANNELS",
]
