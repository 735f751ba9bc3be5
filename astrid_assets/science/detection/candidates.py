"""Candidate extraction on ZOGY's S_corr, measurements on the difference image, cut-outs.

Sources are extracted with SEP (Barbary 2016, JOSS 1, 58; the library form of SExtractor,
Bertin & Arnouts 1996) on ``S_corr`` and on ``-S_corr``: a candidate is a connected group
of pixels with ``|S_corr| >= threshold`` (S_corr is already a matched-filter statistic in
units of its standard deviation, so SEP runs with no filter and an absolute threshold).
Positions are the sub-pixel maxima of ``|S_corr|``; fluxes are PSF fits on the difference
image (``D`` in new-image electrons) with its PSF ``P_D``.

Each candidate is then measured once (:class:`Measurement`) and its flags set by the rules of
:data:`FLAG_RULES`, one small function per flag, whose cuts are the documented fields of
:class:`CandidateRules`; the ``rule_score`` in [0, 1] combines its significance, shape and flags
(the U-Net's real probability, in ``scored_detections``, is a different quantity).

Conventions: arrays ``[y, x]``, 0-based pixel coordinates (pixel ``[j, i]`` centred at
``(x, y) = (i, j)``); ``ra``, ``dec`` in degrees from ``wcs.pixel_to_world_values``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import sep
from astropy.wcs import WCS

from astrid_assets.science import masks
from astrid_assets.science.detection.confirm import look_at
from astrid_assets.science.detection.flags import (
    CandidateRules,
    FrameContext,
    Measurement,
    candidate_flags,
    psf_sharpness,
)
from astrid_assets.science.psf.model import ShiftablePSF, as_psf_image
from astrid_assets.science.psf.profiles import GAUSSIAN_FWHM_PER_SIGMA, render_psf
from astrid_assets.science.psf.stars import moments_shape

__all__ = ["COLUMNS", "DEFAULT_RULES", "false_detection_expectation", "detect_candidates"]

#: The documented cuts every night uses unless a caller passes others.
DEFAULT_RULES = CandidateRules()

COLUMNS = [
    "id",
    "x",
    "y",
    "ra",
    "dec",
    "sign",
    "s_corr_peak",
    "flux",
    "flux_err",
    "snr",
    "flux_aper",
    "flux_aper_err",
    "fwhm",
    "elongation",
    "sharpness",
    "npix",
    "flags",
    "rule_score",
]


def false_detection_expectation(
    n_pixels: float, difference_psf: np.ndarray, threshold: float = 5.0, perimeter: float = 0.0
) -> dict[str, float]:
    """Expected number of |S_corr| >= threshold excursions (both signs) on pure noise.

    ``naive``: independent resolution elements × 2 P(z > threshold), with one element per
    noise-equivalent area ``1 / Σ P_D²`` of the difference PSF.
    ``euler``: the expected Euler characteristic of the excursion set of a smooth Gaussian
    random field (Adler 1981, *The Geometry of Random Fields*; Worsley et al. 1996, Hum. Brain
    Mapp. 4, 58), which at high thresholds counts the excursions (blobs):
    ``2 [A ρ₂(u) + (L/2) ρ₁(u) + P(z > u)]`` with ``ρ₂ = sqrt(det Λ) u e^{-u²/2} / (2π)^{3/2}``,
    ``ρ₁ = sqrt(λ) e^{-u²/2} / (2π)``, area ``A`` (px), perimeter ``L`` (px) and ``Λ`` the
    covariance of the field's gradient. On blank sky S's correlation is the autocorrelation
    of ``P_D`` (D is white), so ``Λ_ij = Σ_f (2π f_i)(2π f_j) |P̂_D|² / Σ_f |P̂_D|²``.
    The naive count is several times smaller (≈ 20× at u = 5 for P_D FWHM ≈ 3.5 px): a
    smooth field has more chances to exceed a high threshold than one test per element.

    Parameters
    ----------
    n_pixels : float
        Area searched ``A``, px.
    difference_psf : numpy.ndarray
        PSF stamp of the difference image ``P_D`` (any positive sum; normalised here).
    threshold : float, default 5.0
        Threshold ``u`` on ``|S_corr|``, in units of its standard deviation.
    perimeter : float, default 0.0
        Boundary length ``L`` of the searched area, px (0 ignores the boundary term).

    Returns
    -------
    dict of str to float
        ``naive`` and ``euler`` expected counts (both signs together) and ``p_tail`` =
        ``P(z > threshold)`` for one sign.
    """
    from scipy.stats import norm

    psf = as_psf_image(difference_psf)
    tail = float(norm.sf(threshold))
    naive = 2.0 * n_pixels * float((psf**2).sum()) * tail
    side = 4 * psf.shape[0]
    power = np.abs(np.fft.fft2(psf, s=(side, side))) ** 2
    freq = 2.0 * np.pi * np.fft.fftfreq(side)
    fy, fx = np.meshgrid(freq, freq, indexing="ij")
    total = power.sum()
    lam = (
        np.array(
            [
                [(fx * fx * power).sum(), (fx * fy * power).sum()],
                [(fx * fy * power).sum(), (fy * fy * power).sum()],
            ]
        )
        / total
    )
    u = threshold
    rho2 = np.sqrt(np.linalg.det(lam)) * u * np.exp(-u * u / 2.0) / (2.0 * np.pi) ** 1.5
    rho1 = np.sqrt(np.sqrt(np.linalg.det(lam))) * np.exp(-u * u / 2.0) / (2.0 * np.pi)
    euler = 2.0 * (n_pixels * rho2 + 0.5 * perimeter * rho1 + tail)
    return {"naive": naive, "euler": float(euler), "p_tail": tail}


def _extract(statistic: np.ndarray, threshold: float, no_data: np.ndarray, min_area: int) -> tuple:
    """SEP extraction of pixels >= threshold (absolute), with its segmentation map."""
    npix = statistic.size
    if sep.get_extract_pixstack() < min(npix, 20_000_000):
        sep.set_extract_pixstack(min(npix, 20_000_000))
    if sep.get_sub_object_limit() < 4096:
        sep.set_sub_object_limit(4096)
    return sep.extract(
        statistic,
        threshold,
        mask=no_data,
        minarea=min_area,
        filter_kernel=None,
        deblend_cont=0.005,
        segmentation_map=True,
    )


def _peak_positions(
    statistic: np.ndarray, x_peak: np.ndarray, y_peak: np.ndarray, x_bary: np.ndarray, y_bary: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel maximum of the statistic: a quadratic surface fitted to the 3 × 3 pixels
    around the brightest pixel (the maximum-likelihood position, since S is the PSF-matched
    filter output). Falls back to SEP's barycentre where the surface has no maximum."""
    ny, nx = statistic.shape
    x_out, y_out = x_bary.astype(float).copy(), y_bary.astype(float).copy()
    for k, (ic, jc) in enumerate(zip(x_peak.astype(int), y_peak.astype(int), strict=True)):
        if not (1 <= ic < nx - 1 and 1 <= jc < ny - 1):
            continue
        w = statistic[jc - 1 : jc + 2, ic - 1 : ic + 2].astype(np.float64)
        gradient = np.array([w[1, 2] - w[1, 0], w[2, 1] - w[0, 1]]) / 2.0
        d_xx = w[1, 2] - 2.0 * w[1, 1] + w[1, 0]
        d_yy = w[2, 1] - 2.0 * w[1, 1] + w[0, 1]
        d_xy = (w[2, 2] - w[2, 0] - w[0, 2] + w[0, 0]) / 4.0
        hessian = np.array([[d_xx, d_xy], [d_xy, d_yy]])
        if d_xx >= 0 or np.linalg.det(hessian) <= 0:
            continue
        offset = -np.linalg.solve(hessian, gradient)
        if np.all(np.abs(offset) <= 1.0):
            x_out[k], y_out[k] = ic + offset[0], jc + offset[1]
    return x_out, y_out


def _masked_counts(segmentation: np.ndarray, unusable: np.ndarray, n: int) -> np.ndarray:
    """Number of unusable pixels inside each segment (labels 1..n)."""
    counts = np.bincount(segmentation.ravel(), weights=unusable.ravel(), minlength=n + 1)
    return counts[1 : n + 1]


def _rule_score(
    abs_peak: np.ndarray,
    threshold: float,
    fwhm_ratio: np.ndarray,
    elongation: np.ndarray,
    flags: np.ndarray,
    rules: CandidateRules,
) -> np.ndarray:
    """Rule-based real/bogus score in [0, 1], from the measurements and flags alone (the learned
    classifier's real probability is a different quantity, in ``scored_detections``).

    ``rule_score = significance × shape × flag_penalty`` with significance
    ``1 − 2^-((|S_corr|/threshold)^p)``, shape ``exp(−½ (ln(fwhm/psf_fwhm)/ln t)²) ×
    exp(−½ ((elongation − 1)/w)²)`` (1 where unmeasured) and the product of
    ``rule_score_flag_factors`` over the flags set; ``p``, ``t`` and ``w`` are the
    ``rule_score_*`` fields of :class:`CandidateRules`.
    """
    significance = 1.0 - np.power(2.0, -((abs_peak / threshold) ** rules.rule_score_significance_power))
    with np.errstate(invalid="ignore", divide="ignore"):
        size_term = np.exp(-0.5 * (np.log(fwhm_ratio) / np.log(rules.rule_score_size_tolerance)) ** 2)
        shape_term = size_term * np.exp(-0.5 * ((elongation - 1.0) / rules.rule_score_elongation_width) ** 2)
    shape_term = np.where(np.isfinite(shape_term), shape_term, 1.0)
    penalty = np.ones(flags.shape)
    for bit, factor in rules.rule_score_flag_factors:
        penalty = np.where(flags & bit, penalty * factor, penalty)
    return np.clip(significance * shape_term * penalty, 0.0, 1.0)


def detect_candidates(
    s_corr: np.ndarray,
    difference: np.ndarray,
    difference_var: np.ndarray,
    mask: np.ndarray | None,
    wcs: WCS | None,
    psf_fwhm: float,
    threshold: float = 5.0,
    edge: int | None = None,
    *,
    difference_psf: np.ndarray | None = None,
    min_area: int = 1,
    difference_psf_tiles: np.ndarray | None = None,
    rules: CandidateRules = DEFAULT_RULES,
    static: np.ndarray | None = None,
) -> pd.DataFrame:
    """Positive and negative candidates with ``|S_corr| >= threshold``, measured on ``D``.

    Parameters
    ----------
    s_corr : numpy.ndarray
        ZOGY's S_corr (eq. 25 of Zackay, Ofek & Gal-Yam 2016), unit variance on sky; NaN
        read as 0.
    difference, difference_var : numpy.ndarray
        Difference image in e- and its variance map, e-² (NaN read as 0).
    mask : numpy.ndarray or None
        uint16 mask on the same grid (``UNUSABLE`` → MASKED flag, ``NO_DATA`` → EDGE and
        excluded from extraction, ``BRIGHT_STAR`` under the candidate → BRIGHT_STAR flag); None:
        no mask. MASKED reaches ``max(masked_psf_fwhms × psf_fwhm, h)`` px (:class:`CandidateRules`)
        from unusable pixels, with ``h`` the kernel half-size (half the side of ``difference_psf``):
        the ZOGY filters spread whatever stands in for a masked pixel, and the unmodelled wings of
        a saturated star around it, over that distance.
    wcs : astropy.wcs.WCS or None
        Celestial WCS of the grid (``ra``/``dec`` NaN when None).
    psf_fwhm : float
        FWHM of the difference image's PSF (``ZogyResult.psf_fwhm``), px.
    threshold : float, default 5.0
        Detection threshold on ``|S_corr|``.
    edge : int or None, default None
        Border width (px) flagged EDGE; default :meth:`CandidateRules.edge_width`,
        ``max(10, 3 × psf_fwhm, h)`` with ``h`` the kernel half-size: the unpadded (periodic) FFT
        convolutions wrap a source within ``h`` of one border onto the opposite one, and truncate
        its own kernel. A given ``edge`` is used as is. Candidates within ``edge`` px of a
        ``NO_DATA`` pixel are flagged EDGE too.
    difference_psf : numpy.ndarray or None, default None
        PSF stamp of ``difference`` (``ZogyResult.P_D``, as large as the PSF stamps that went
        into the subtraction: its half-side is the kernel half-size ``h``); a Gaussian of
        ``psf_fwhm`` (side ``2 ⌈2 psf_fwhm⌉ + 7``) when None.
    min_area : int, default 1
        Minimum number of pixels above threshold (1: any pixel, the honest
        ``|S_corr| >= threshold`` criterion).
    difference_psf_tiles : numpy.ndarray or None, default None
        ``(n, n, s, s)`` difference PSFs at the nodes of a tiled ZOGY (:mod:`~astrid_assets.science.subtraction.tiles`,
        PSF varying
        over the frame): each candidate's PSF flux uses their tent blend at its position.
    rules : CandidateRules, default DEFAULT_RULES
        The cuts of the flag rules (:data:`FLAG_RULES`) and the weights of the rule score.
    static : numpy.ndarray or None, default None
        The static sky per pixel, e- of the new frame (the larger of the new image and the flux-scaled
        reference): BRIGHT_SOURCE is judged against it (not at all when None).

    Returns
    -------
    pandas.DataFrame
        One row per candidate, sorted by ``|s_corr_peak|`` (largest first), with columns
        :data:`COLUMNS`: ``id``; ``x``, ``y`` (px, sub-pixel
        maximum of |S_corr|); ``ra``, ``dec`` (deg); ``sign`` (+1 brightening, −1 fading);
        ``s_corr_peak`` (signed extreme of S_corr in the footprint); ``flux``, ``flux_err`` (PSF
        fit on the difference, e-, signed); ``snr`` (``|flux| / flux_err``); ``flux_aper``,
        ``flux_aper_err`` (circular aperture of radius ``psf_fwhm``, e-); ``fwhm`` (px),
        ``elongation`` (a/b) from weighted moments; ``sharpness`` (3 × 3 core data / PSF model);
        ``npix`` (pixels above threshold); ``flags`` (``FLAG_*`` bits, set by :data:`FLAG_RULES`);
        ``rule_score`` in [0, 1] (:func:`_rule_score`, not the learned classifier's real probability).
        Empty (with those columns) when nothing passes the threshold.
    """
    s_corr = np.ascontiguousarray(np.nan_to_num(s_corr, nan=0.0), dtype=np.float32)
    difference = np.ascontiguousarray(np.nan_to_num(difference, nan=0.0), dtype=np.float32)
    difference_var = np.ascontiguousarray(np.nan_to_num(difference_var, nan=0.0), dtype=np.float32)
    mask = np.zeros(s_corr.shape, np.uint16) if mask is None else np.asarray(mask, np.uint16)
    no_data = np.ascontiguousarray((mask & masks.NO_DATA) != 0)
    unusable = (mask & masks.UNUSABLE) != 0
    psf_image = (
        as_psf_image(difference_psf)
        if difference_psf is not None
        else render_psf(psf_fwhm, 2 * int(np.ceil(2 * psf_fwhm)) + 1 + 6, "gaussian")
    )
    kernel_half = max(psf_image.shape) // 2
    frame = FrameContext(
        s_corr=s_corr,
        difference=difference,
        difference_var=difference_var,
        mask=mask,
        no_data=no_data,
        unusable=unusable,
        bright_star=(mask & masks.BRIGHT_STAR) != 0,
        psf=ShiftablePSF(psf_image),
        psf_tiles=difference_psf_tiles,
        psf_fwhm=psf_fwhm,
        kernel_half=kernel_half,
        edge=rules.edge_width(psf_fwhm, kernel_half) if edge is None else int(edge),
        threshold=threshold,
        static=None if static is None else np.asarray(static, np.float32),
    )

    rows = []
    for sign in (1, -1):
        statistic = s_corr if sign == 1 else np.ascontiguousarray(-s_corr)
        objects, segmentation = _extract(statistic, threshold, no_data, min_area)
        if objects.size == 0:
            continue
        x, y = _peak_positions(statistic, objects["xpeak"], objects["ypeak"], objects["x"], objects["y"])
        masked = _masked_counts(segmentation, unusable, objects.size) > 0
        for k in range(objects.size):
            rows.append(
                {
                    "x": float(x[k]),
                    "y": float(y[k]),
                    "sign": sign,
                    "s_corr_peak": sign * float(objects["peak"][k]),
                    "npix": int(objects["npix"][k]),
                    "footprint_masked": bool(masked[k]),
                }
            )
    if not rows:
        return pd.DataFrame({name: pd.Series(dtype=float) for name in COLUMNS})
    return _measure(pd.DataFrame(rows), frame, wcs, rules)


def _measure(table: pd.DataFrame, frame: FrameContext, wcs: WCS | None, rules: CandidateRules) -> pd.DataFrame:
    """Photometry, shape, flags and rule score of the extracted candidates (``x``, ``y``, ``sign``,
    ``s_corr_peak``, ``npix``, ``footprint_masked``); the table of :func:`detect_candidates`."""
    x, y = table["x"].to_numpy(), table["y"].to_numpy()
    sign = table["sign"].to_numpy()
    difference, difference_var, mask, psf = frame.difference, frame.difference_var, frame.mask, frame.psf
    # PSF fits on D (with a PSF varying over the frame, the tiles' P_D blended at each candidate)
    flux, flux_err = look_at(difference, difference_var, psf.at(0.0, 0.0), mask, x, y, frame.psf_tiles)
    flux_aper, flux_aper_err, _ = sep.sum_circle(
        difference, x, y, float(frame.psf_fwhm), var=difference_var, mask=frame.unusable
    )
    window_sigma = frame.psf_fwhm / GAUSSIAN_FWHM_PER_SIGMA
    fwhm = np.full(x.size, np.nan)
    elongation = np.full(x.size, np.nan)
    sharpness = np.full(x.size, np.nan)
    for k in range(x.size):
        fwhm[k], elongation[k] = moments_shape(difference, x[k], y[k], int(sign[k]), window_sigma)
        sharpness[k] = psf_sharpness(difference, psf, x[k], y[k], flux[k])
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = np.abs(flux) / flux_err
        fwhm_ratio = fwhm / frame.psf_fwhm
    measurements = [
        Measurement(
            x=float(x[k]),
            y=float(y[k]),
            sign=int(sign[k]),
            s_corr_peak=float(table["s_corr_peak"].iat[k]),
            footprint_masked=bool(table["footprint_masked"].iat[k]),
            snr=float(snr[k]),
            fwhm=float(fwhm[k]),
            elongation=float(elongation[k]),
            sharpness=float(sharpness[k]),
            flux_err=float(flux_err[k]),
        )
        for k in range(x.size)
    ]
    flags = np.array([candidate_flags(m, frame, rules) for m in measurements], dtype=np.int64)
    if wcs is not None and x.size:
        ra, dec = wcs.pixel_to_world_values(x, y)
    else:
        ra = dec = np.full(x.size, np.nan)
    table = table.assign(
        ra=np.asarray(ra, float),
        dec=np.asarray(dec, float),
        flux=flux,
        flux_err=flux_err,
        snr=snr,
        flux_aper=flux_aper,
        flux_aper_err=flux_aper_err,
        fwhm=fwhm,
        elongation=elongation,
        sharpness=sharpness,
        flags=flags,
    )
    abs_peak = np.abs(table["s_corr_peak"].to_numpy())
    table["rule_score"] = _rule_score(abs_peak, frame.threshold, fwhm_ratio, elongation, flags, rules)
    table = table.sort_values("s_corr_peak", key=np.abs, ascending=False, ignore_index=True)
    table["id"] = np.arange(len(table))
    return table[COLUMNS]
