"""Candidate flags: what makes a detection on S_corr suspect, as documented rules.

Each flag is a bit of the ``flags`` column, set by one small rule (:data:`FLAG_RULES`) from a
candidate's :class:`Measurement`, its frame (:class:`FrameContext`) and the cuts of
:class:`CandidateRules`, whose fields give each threshold with its unit and reason. Positions are
0-based pixels of the reference grid, ``[y, x]`` indexing; fluxes in new-frame e-.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from astrid_assets.science.cutouts import cutout_window
from astrid_assets.science.psf.model import ShiftablePSF

__all__ = [
    "FLAG_MASKED",
    "FLAG_EDGE",
    "FLAG_DIPOLE",
    "FLAG_SHAPE",
    "FLAG_BRIGHT_STAR",
    "FLAG_BRIGHT_SOURCE",
    "FLAG_UNCONFIRMED",
    "FLAG_NAMES",
    "CandidateRules",
    "Measurement",
    "FrameContext",
    "FLAG_RULES",
    "edge_flag",
    "masked_flag",
    "bright_star_flag",
    "bright_source_flag",
    "dipole_flag",
    "shape_flag",
    "candidate_flags",
    "describe_flags",
    "near_flagged",
    "opposite_lobe",
    "psf_sharpness",
]

#: Candidate flag bits (column ``flags``); a new flag takes a new bit, existing bits keep their meaning.
FLAG_MASKED = 1  #: an UNUSABLE pixel in the footprint or within the kernel half-size (see detect_candidates)
FLAG_EDGE = 2  #: within ``edge`` px (at least the kernel half-size) of the image border or of NO_DATA pixels
FLAG_DIPOLE = 4  #: an opposite-sign lobe of comparable significance is adjacent
FLAG_SHAPE = 8  #: size, elongation or sharpness far from the PSF's (judged at S/N >= 20)
FLAG_BRIGHT_STAR = 16  #: on a ``masks.BRIGHT_STAR`` pixel: in the wings of a saturated star
#: a static source within the kernel's reach is ``bright_source_contrast`` times brighter than the candidate's change
FLAG_BRIGHT_SOURCE = 32
#: every other frame of the field that night covers the position and rules the candidate's flux out (a cosmic ray,
#: a glint, a noise excursion, a moving object): set night by night (:mod:`~astrid_assets.science.detection.confirm`)
FLAG_UNCONFIRMED = 64
FLAG_NAMES = {
    "MASKED": FLAG_MASKED,
    "EDGE": FLAG_EDGE,
    "DIPOLE": FLAG_DIPOLE,
    "SHAPE": FLAG_SHAPE,
    "BRIGHT_STAR": FLAG_BRIGHT_STAR,
    "BRIGHT_SOURCE": FLAG_BRIGHT_SOURCE,
    "UNCONFIRMED": FLAG_UNCONFIRMED,
}
def describe_flags(flags: int) -> list[str]:
    """Names of the candidate flags set in ``flags``, e.g. ``["EDGE", "DIPOLE"]``.

    Parameters
    ----------
    flags : int
        Value of a candidate's ``flags`` column (``FLAG_*`` bits).

    Returns
    -------
    list of str
        Names from :data:`FLAG_NAMES` whose bit is set, in its order.
    """
    return [name for name, bit in FLAG_NAMES.items() if int(flags) & bit]


def near_flagged(mask_bits: np.ndarray, x: float, y: float, radius: float) -> bool:
    """Any set pixel of ``mask_bits`` (bool) within ``radius`` px of ``(x, y)``."""
    window = cutout_window(mask_bits.shape, x, y, int(np.ceil(radius)))
    if window is None:
        return True
    yy, xx = np.mgrid[window.image]
    disc = (xx - x) ** 2 + (yy - y) ** 2 <= radius**2
    return bool(np.any(mask_bits[window.image] & disc))


def opposite_lobe(s_corr: np.ndarray, x: float, y: float, sign: int, radius: float) -> float:
    """Most significant value of the opposite sign (as a positive number) within ``radius``."""
    window = cutout_window(s_corr.shape, x, y, int(np.ceil(radius)))
    if window is None:
        return 0.0
    yy, xx = np.mgrid[window.image]
    disc = (xx - x) ** 2 + (yy - y) ** 2 <= radius**2
    values = -sign * s_corr[window.image][disc]
    return float(values.max()) if values.size else 0.0


def psf_sharpness(difference: np.ndarray, psf: ShiftablePSF, x: float, y: float, flux: float) -> float:
    """Central 3 × 3 flux of the data over that of the fitted PSF model (1 for a point source,
    > 1 for a cosmic-ray-like spike, < 1 for an extended source)."""
    ic, jc = int(np.rint(x)), int(np.rint(y))
    ny, nx = difference.shape
    if not (1 <= ic < nx - 1 and 1 <= jc < ny - 1) or not np.isfinite(flux) or flux == 0:
        return float("nan")
    model = psf.at(x - ic, y - jc)
    c = psf.size // 2
    model_core = flux * model[c - 1 : c + 2, c - 1 : c + 2].sum()
    data_core = difference[jc - 1 : jc + 2, ic - 1 : ic + 2].astype(np.float64).sum()
    return float(data_core / model_core) if model_core != 0 else float("nan")


@dataclass(frozen=True)
class CandidateRules:
    """The cuts that set each candidate flag, and the weights of the rule score.

    Every field is a number a survey may want to tune; the defaults are the ones AstrID runs with.
    Widths are in units of the difference image's PSF FWHM (``psf_fwhm``) where they follow the
    PSF, in pixels where they follow the pixel grid; significances are in units of S_corr's
    standard deviation (σ).
    """

    #: EDGE: the border strip is at least this many px wide, whatever the PSF (a floor for the
    #: sharpest PSFs, where a few FWHMs are only a few pixels).
    edge_min_px: int = 10
    #: EDGE: ... and at least this many PSF FWHMs wide, so that the measurements (moments window out
    #: to 3 σ ≈ 1.3 FWHM, aperture of 1 FWHM) and the candidate's wings stay clear of the border.
    #: The kernel half-size is a floor too (see ``detect_candidates``).
    edge_psf_fwhms: float = 3.0
    #: MASKED: an UNUSABLE pixel within this many PSF FWHMs of the candidate (and at least the kernel
    #: half-size) flags it: ZOGY's filters spread whatever stands in for a masked pixel over that distance.
    masked_psf_fwhms: float = 1.0
    #: DIPOLE: the opposite-sign lobe is searched for within this many PSF FWHMs of the candidate
    #: (a misregistered static star, or a PSF mismatch, leaves its opposite lobe within about one FWHM).
    dipole_radius_psf_fwhms: float = 2.0
    #: DIPOLE: the lobe must reach this fraction (0–1) of the candidate's ``|s_corr_peak|`` ...
    dipole_fraction: float = 0.3
    #: DIPOLE: ... and at least this many σ, so that the noise next to a faint candidate is no lobe.
    dipole_min_lobe_sigma: float = 3.0
    #: BRIGHT_SOURCE: the brightest static pixel (new image or flux-scaled reference) within the kernel half-size
    #: of the candidate is at least this many times the candidate's significant peak (its PSF peak at the flux
    #: S_corr stands for, ``|s_corr_peak| × flux_err``): a model error of ``1 / contrast`` of that source — PSF,
    #: flux ratio, registration, a non-linear or saturated core the mask missed — anywhere within ZOGY's reach
    #: leaves a residual as significant as the candidate. Measured on generated frames: real transients, some on
    #: their host galaxy's core, up to 22; residuals around saturated stars that no SATURATED mask covered (a
    #: drizzled mosaic's smoothed cores), 450–1100.
    bright_source_contrast: float = 100.0
    #: SHAPE: judged only at a PSF-fit S/N at least this (below it the moments and the sharpness are
    #: too noisy to tell a point source from an artefact).
    shape_min_snr: float = 20.0
    #: SHAPE: moments FWHM over the PSF's below this: narrower than the PSF (a cosmic ray, a hot pixel).
    shape_min_fwhm_ratio: float = 0.6
    #: SHAPE: moments FWHM over the PSF's above this: wider than the PSF (a galaxy's residual, a ghost).
    shape_max_fwhm_ratio: float = 1.6
    #: SHAPE: moments axis ratio a/b (≥ 1) above this: a trail, a diffraction spike, a blend.
    shape_max_elongation: float = 1.8
    #: SHAPE: 3 × 3 core of the data over that of the fitted PSF above this: a spike (cosmic ray).
    shape_max_sharpness: float = 2.0
    #: SHAPE: ... below this: flatter than a point source.
    shape_min_sharpness: float = 0.4
    #: UNCONFIRMED: another frame of the night refutes a candidate when its forced flux there falls this many
    #: combined σ short of the candidate's (carried to its flux scale); the flag needs every covering frame to
    #: refute. A steady transient is wrongly refuted by one frame with probability Φ(−3) = 0.13 %.
    unconfirmed_sigma: float = 3.0
    #: UNCONFIRMED: fractional flux error of two frames' forced photometry beyond their noise (PSF-model and
    #: flux-ratio errors), added in quadrature: two drizzled frames of one night measured a transient of S/N 70–80
    #: 6 % apart, 3.6 times their noise.
    unconfirmed_flux_systematic: float = 0.1
    #: Rule score: significance term ``1 − 2^-((|S_corr|/threshold)^power)`` with this power
    #: (0.5 at the threshold, 0.94 at twice it).
    rule_score_significance_power: float = 4.0
    #: Rule score: the size term is ``exp(−½)`` at a moments FWHM this factor off the PSF's (either way).
    rule_score_size_tolerance: float = 1.5
    #: Rule score: the elongation term is ``exp(−½)`` at an axis ratio this much above 1.
    rule_score_elongation_width: float = 0.6
    #: Rule score: factor for each flag set (bit, factor), applied in this order; DIPOLE, the
    #: signature of misregistration or PSF mismatch at a static source, costs the most.
    rule_score_flag_factors: tuple[tuple[int, float], ...] = (
        (FLAG_MASKED, 0.5),
        (FLAG_EDGE, 0.5),
        (FLAG_SHAPE, 0.5),
        (FLAG_BRIGHT_STAR, 0.5),
        (FLAG_BRIGHT_SOURCE, 0.5),
        (FLAG_DIPOLE, 0.3),
        (FLAG_UNCONFIRMED, 0.3),
    )

    def edge_width(self, psf_fwhm: float, kernel_half: int) -> int:
        """Default EDGE strip width, px: ``max(edge_min_px, edge_psf_fwhms × psf_fwhm, kernel_half)``."""
        return int(max(self.edge_min_px, round(self.edge_psf_fwhms * psf_fwhm), kernel_half))


@dataclass(frozen=True)
class Measurement:
    """What the flag rules read of one candidate (measured on the difference by ``detect_candidates``)."""

    x: float  #: px, sub-pixel maximum of ``|S_corr|``
    y: float  #: px
    sign: int  #: +1 brightening, −1 fading
    s_corr_peak: float  #: signed extreme of S_corr in the footprint, σ
    footprint_masked: bool  #: an UNUSABLE pixel inside the footprint SEP extracted
    snr: float  #: ``|flux| / flux_err`` of the PSF fit
    fwhm: float  #: px, from weighted second moments (NaN: unmeasurable)
    elongation: float  #: a/b from the same moments (NaN: unmeasurable)
    sharpness: float  #: 3 × 3 core of the data over that of the fitted PSF (NaN: unmeasurable)
    flux_err: float = float("nan")  #: e-, error of the PSF-fit flux (NaN: unmeasured; BRIGHT_SOURCE not judged)


@dataclass(frozen=True, eq=False)
class FrameContext:
    """The difference a candidate was found on, as its measurements and the flag rules read it."""

    s_corr: np.ndarray  #: S_corr, σ (NaN read as 0)
    difference: np.ndarray  #: D, e- (NaN read as 0)
    difference_var: np.ndarray  #: variance of D, e-² (NaN read as 0)
    mask: np.ndarray  #: uint16 ``masks`` bits
    no_data: np.ndarray  #: bool, ``masks.NO_DATA`` pixels
    unusable: np.ndarray  #: bool, ``masks.UNUSABLE`` pixels
    bright_star: np.ndarray  #: bool, ``masks.BRIGHT_STAR`` pixels
    psf: ShiftablePSF  #: the difference image's PSF ``P_D``
    psf_tiles: np.ndarray | None  #: ``(n, n, s, s)`` P_D at the nodes of a tiled ZOGY, or None
    psf_fwhm: float  #: px, FWHM of the difference image's PSF
    kernel_half: int  #: px, half the side of the difference PSF stamp (the ZOGY kernel's reach)
    edge: int  #: px, width of the EDGE strip (``CandidateRules.edge_width`` unless given)
    threshold: float  #: σ, the extraction threshold on ``|S_corr|``
    #: e-, the static sky per pixel: the larger of the new image and the flux-scaled reference (None: unknown,
    #: BRIGHT_SOURCE not judged)
    static: np.ndarray | None = None

    @cached_property
    def psf_peak(self) -> float:
        """Peak of the unit-flux difference PSF centred on a pixel (computed once per frame)."""
        return float(self.psf.at(0.0, 0.0).max())


def edge_flag(m: Measurement, frame: FrameContext, rules: CandidateRules) -> int:
    """EDGE: within ``frame.edge`` px of the image border or of a NO_DATA pixel (the periodic FFT
    convolutions wrap a source near one border onto the opposite one and truncate its kernel)."""
    ny, nx = frame.s_corr.shape
    near_border = min(m.x, m.y, nx - 1 - m.x, ny - 1 - m.y) < frame.edge
    return FLAG_EDGE if near_border or near_flagged(frame.no_data, m.x, m.y, frame.edge) else 0


def masked_flag(m: Measurement, frame: FrameContext, rules: CandidateRules) -> int:
    """MASKED: an UNUSABLE pixel in the footprint, or within ``max(masked_psf_fwhms × psf_fwhm,
    kernel_half)`` px of the candidate."""
    radius = max(float(rules.masked_psf_fwhms * frame.psf_fwhm), float(frame.kernel_half))
    return FLAG_MASKED if m.footprint_masked or near_flagged(frame.unusable, m.x, m.y, radius) else 0


def bright_star_flag(m: Measurement, frame: FrameContext, rules: CandidateRules) -> int:
    """BRIGHT_STAR: the candidate's pixel (clipped to the image) is a BRIGHT_STAR pixel."""
    ny, nx = frame.bright_star.shape
    j, i = min(max(int(np.rint(m.y)), 0), ny - 1), min(max(int(np.rint(m.x)), 0), nx - 1)
    return FLAG_BRIGHT_STAR if frame.bright_star[j, i] else 0


def bright_source_flag(m: Measurement, frame: FrameContext, rules: CandidateRules) -> int:
    """BRIGHT_SOURCE: within ``frame.kernel_half`` px of the candidate, a static pixel (``frame.static``) at least
    ``bright_source_contrast`` times the candidate's significant peak ``|s_corr_peak| × flux_err × max(P_D)``.

    The significant peak, not the fitted flux: at the core of a bright star the difference's PSF fit can be
    large while S_corr, whose variance holds the star's noise terms, is barely above threshold."""
    if frame.static is None or not (np.isfinite(m.flux_err) and m.flux_err > 0):
        return 0
    window = cutout_window(frame.static.shape, m.x, m.y, int(frame.kernel_half))
    if window is None:
        return 0
    brightest = np.nanmax(frame.static[window.image]) if frame.static[window.image].size else np.nan
    peak = abs(m.s_corr_peak) * m.flux_err * frame.psf_peak
    return FLAG_BRIGHT_SOURCE if np.isfinite(brightest) and brightest >= rules.bright_source_contrast * peak else 0


def dipole_flag(m: Measurement, frame: FrameContext, rules: CandidateRules) -> int:
    """DIPOLE: an opposite-sign lobe within ``dipole_radius_psf_fwhms`` FWHMs reaching
    ``max(dipole_min_lobe_sigma, dipole_fraction × |s_corr_peak|)``."""
    lobe = opposite_lobe(frame.s_corr, m.x, m.y, m.sign, rules.dipole_radius_psf_fwhms * frame.psf_fwhm)
    return FLAG_DIPOLE if lobe >= max(rules.dipole_min_lobe_sigma, rules.dipole_fraction * abs(m.s_corr_peak)) else 0


def shape_flag(m: Measurement, frame: FrameContext, rules: CandidateRules) -> int:
    """SHAPE: at S/N ≥ ``shape_min_snr``, a moments FWHM (over the PSF's), elongation or sharpness
    outside its ``shape_*`` bounds (an unmeasured, NaN, value is never out of bounds)."""
    if not m.snr >= rules.shape_min_snr:
        return 0
    fwhm_ratio = m.fwhm / frame.psf_fwhm
    odd = (
        fwhm_ratio < rules.shape_min_fwhm_ratio
        or fwhm_ratio > rules.shape_max_fwhm_ratio
        or m.elongation > rules.shape_max_elongation
        or m.sharpness > rules.shape_max_sharpness
        or m.sharpness < rules.shape_min_sharpness
    )
    return FLAG_SHAPE if odd else 0


#: The flag rules, one per flag: each takes a :class:`Measurement`, the :class:`FrameContext` and the
#: :class:`CandidateRules` and returns its bit or 0.
FLAG_RULES = (edge_flag, masked_flag, bright_star_flag, bright_source_flag, dipole_flag, shape_flag)


def candidate_flags(m: Measurement, frame: FrameContext, rules: CandidateRules) -> int:
    """The ``FLAG_*`` bits :data:`FLAG_RULES` set for one candidate."""
    flags = 0
    for rule in FLAG_RULES:
        flags |= rule(m, frame, rules)
    return flags


