"""A PSF for every frame that has a star: the PSF ladder (:func:`estimate_frame_psf`).

Rungs, tried in order, the one used recorded on the model (:attr:`PSFModel.psf_source`, the stars
in ``n_stars``, ``star_xy``, ``star_flux``):

1. ``"empirical"``: the stack of isolated, clean stars (:func:`~astrid_assets.science.psf.empirical.estimate_psf`,
   unchanged) where enough of them exist.
2. ``"moffat"``, else ``"gaussian"``: a pixel-integrated circular Moffat (Moffat 1969, A&A 3, 455), or
   its Gaussian limit, fitted jointly to the one to :data:`MAX_FIT_STARS` best stars — one width and
   β shared, a centre, flux and residual sky per star (:func:`fit_analytic_psf`) — and rendered as a
   stamp (:func:`~astrid_assets.science.psf.profiles.render_psf`).
3. Refused: a :class:`~astrid_assets.science.psf.model.PSFError` whose message starts ``"no star:"``
   when no detection is usable as a star at all.

Stars of the analytic rung (:func:`analytic_stars`)
---------------------------------------------------
SEP detections not truncated at the frame edge, by aperture S/N (≥ ``min_snr``), whose fit box
(half-side ``max(4, ⌈2.5 × FWHM guess⌉)`` px) lies inside the frame. Merged (deblended) detections
are kept: the field may be crowded.

* **Flagged pixels.** A star whose *core* — the pixels within ``max(½ FWHM guess, 1.5 px)`` of its
  centre — holds an unusable pixel (``masks.UNUSABLE``: saturated, bad, cosmic ray, bright-star
  mask; or non-finite) is not used: the core fixes the centre and the width, and the pixels next to
  a saturated one are not linear either. Flagged pixels further out get zero weight in the fit (they
  cost S/N, not accuracy); a star with more than a quarter of its fit box flagged is not used.
  The FWHM guess is twice the median SEP half-light radius (about 1.3 FWHM for a Moffat of β = 3,
  so the core is about 0.6 FWHM).
* **Extended sources.** A detection whose half-light radius exceeds ``1 + EXTENDED_TOLERANCE``
  (:data:`~astrid_assets.science.psf.stars.EXTENDED_TOLERANCE`) times the
  median of the candidates' (S/N ≥ ``min_snr``) is not used: a galaxy, or an unresolved blend. A sparse
  cut-out holds as many galaxies and transients as stars; its galaxies are its brightest sources, and a joint
  fit that takes them widens the profile (measured on a generated 256² cut-out of four stars and two
  galaxies: a Moffat of FWHM 2.7 px for Gaussian stars of 2.5 px, whose PSF photometry put the flux ratio
  at 1.54 for a true 1.02) before the fit-residual test below can drop them.
* **Neighbours.** A detection within one FWHM guess of the star (an unresolved blend), or one
  brighter than the star inside its fit box, rejects it. Fainter detections in the box are
  masked: pixels nearer to a neighbour than to the star get zero weight.
* **Fit residual.** After the joint fit, with three or more stars, a star whose reduced χ² exceeds
  both 2 and three times the median (an unmasked blend, a galaxy, a cosmic ray in the wings) is
  dropped and the rest refitted.

Pixel arrays are ``float32`` in e-, ``[y, x]``, 0-based, pixel ``[j, i]`` centred at ``(x, y) = (i, j)``;
variances e-²; widths and positions px.
"""

from __future__ import annotations

import numpy as np
import sep
from scipy.spatial import cKDTree

from astrid_assets.science.psf.empirical import estimate_psf
from astrid_assets.science.psf.model import PSFError, PSFModel, measure_fwhm
from astrid_assets.science.psf.profile_fit import levenberg_marquardt
from astrid_assets.science.psf.profiles import (
    GAUSSIAN_FWHM_PER_SIGMA,
    moffat_alpha,
    moffat_fwhm,
    profile_images_jacobians,
    render_psf,
)
from astrid_assets.science.psf.stars import EXTENDED_TOLERANCE
from astrid_assets.science.sources import find_sources, frame_for_sep, noise_for_sep, unusable_pixels

__all__ = ["MAX_FIT_STARS", "ANALYTIC_MIN_SNR", "UNDERSAMPLED_PSF_FWHM", "analytic_stars", "fit_analytic_psf",
           "analytic_psf", "estimate_frame_psf"]

#: Most stars (highest S/N) fitted by the analytic rung.
MAX_FIT_STARS = 10
#: Lowest aperture S/N of a star of the analytic rung.
ANALYTIC_MIN_SNR = 10.0
#: Below this FWHM (px, after pixelisation) a PSF is undersampled (a Gaussian's σ under ~1 px): stacking its stars
#: needs sub-pixel shifts that ring (a Fourier shift of an aliased profile) or blur (any other interpolation), so
#: the ladder takes the pixel-integrated profile fitted to the stars instead of the stack.
UNDERSAMPLED_PSF_FWHM = 2.5
#: β bounds of the joint Moffat; at the upper bound the profile is taken as Gaussian.
_BETA_BOUNDS = (1.1, 20.0)
#: Sub-pixel points per axis in the pixel integration (enough for FWHM ≈ 1.5 px).
_OVERSAMPLE = 7


def _fit_oversample(fwhm: float) -> int:
    """Sub-pixel points per axis for the fits of a profile of ``fwhm`` px: about ten per FWHM (7 at 1.5 px, 2 at
    6 px), the sampling :data:`_OVERSAMPLE` gives an undersampled star, at a cost that does not grow as the
    square of 7 for a broad one (a crowded field's joint fit took 5.3 s per frame at 7)."""
    return int(np.clip(np.ceil(10.5 / max(float(fwhm), 1e-3)), 1, _OVERSAMPLE))


def analytic_stars(
    frame: np.ndarray,
    rms: np.ndarray | float,
    bad: np.ndarray,
    objects: np.ndarray,
    *,
    min_snr: float = ANALYTIC_MIN_SNR,
    max_stars: int = MAX_FIT_STARS,
) -> tuple[dict[str, np.ndarray], str]:
    """The stars the analytic rung fits, with their fit boxes and pixel weights (rules in the module docstring).

    Parameters
    ----------
    frame : numpy.ndarray
        Background-subtracted frame, e- (``float32``, ``[y, x]``).
    rms : numpy.ndarray or float
        Per-pixel background noise, e- (map or scalar).
    bad : numpy.ndarray
        Boolean map of unusable pixels.
    objects : numpy.ndarray
        SEP catalogue of ``frame``.
    min_snr : float, default 10.0
        Lowest aperture S/N (aperture radius 1.5 × FWHM guess).
    max_stars : int, default 10
        Most stars returned (highest S/N first).

    Returns
    -------
    stars : dict
        ``x``, ``y`` (SEP centres, px), ``snr``, ``stamps`` ``(n, B, B)`` e- (zero where flagged),
        ``masked`` ``(n, B, B)`` bool (flagged or a neighbour's), ``origin`` ``(n, 2)`` int frame
        ``(i, j)`` of each box's pixel ``[0, 0]``, ``fwhm_guess`` (px, a 0-d array).
    reason : str
        Why none is usable when ``stars["x"]`` is empty (else ``""``).
    """
    ny, nx = frame.shape
    empty = {"x": np.empty(0), "y": np.empty(0), "snr": np.empty(0), "stamps": np.empty((0, 1, 1)),
             "masked": np.empty((0, 1, 1), bool), "origin": np.empty((0, 2), int), "fwhm_guess": np.array(np.nan)}
    if objects.size == 0:
        return empty, "no source above the detection threshold"
    usable = np.flatnonzero((objects["flag"] & sep.OBJ_TRUNC) == 0)
    brightest = usable[np.argsort(-objects["flux"][usable])][: 40 * max_stars]
    if brightest.size == 0:
        return empty, f"all {objects.size} detections are truncated at the frame edge"
    x0, y0 = objects["x"][brightest].astype(np.float64), objects["y"][brightest].astype(np.float64)
    tree = cKDTree(np.column_stack([objects["x"], objects["y"]]))
    nearest = tree.query(np.column_stack([x0, y0]), k=2)[0][:, 1] if objects.size > 1 else np.full(x0.size, np.inf)
    # the half-light radius inside half the distance to the nearest detection (a neighbour's light out)
    r_half, _ = sep.flux_radius(frame, x0, y0, np.clip(0.5 * nearest, 3.0, 12.0), 0.5, mask=bad)
    fwhm_guess = float(np.clip(2.0 * np.nanmedian(r_half[: 4 * max_stars]), 1.0, 10.0)) if np.isfinite(
        r_half).any() else 2.0
    flux, flux_err, _ = sep.sum_circle(frame, x0, y0, 1.5 * fwhm_guess, err=rms, mask=bad)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.where(flux_err > 0, flux / flux_err, 0.0)
    half = max(4, int(np.ceil(2.5 * fwhm_guess)))
    core = max(0.5 * fwhm_guess, 1.5)
    offsets = np.arange(-half, half + 1)
    picked, counts = [], {"S/N": 0, "edge": 0, "core": 0, "flagged": 0, "extended": 0, "neighbour": 0}
    bright_enough = (snr >= min_snr) & np.isfinite(r_half)
    locus = float(np.median(r_half[bright_enough])) if bright_enough.any() else np.inf
    for k in np.argsort(-snr):
        if len(picked) >= max_stars:
            break
        if not snr[k] >= min_snr:
            counts["S/N"] += 1
            continue
        if r_half[k] > (1.0 + EXTENDED_TOLERANCE) * locus:
            counts["extended"] += 1
            continue
        ic, jc = int(np.rint(x0[k])), int(np.rint(y0[k]))
        if ic - half < 0 or jc - half < 0 or ic + half >= nx or jc + half >= ny:
            counts["edge"] += 1
            continue
        box = (slice(jc - half, jc + half + 1), slice(ic - half, ic + half + 1))
        dx = (ic + offsets)[None, :] - x0[k]
        dy = (jc + offsets)[:, None] - y0[k]
        flagged = bad[box]
        if np.any(flagged & (np.hypot(dx, dy) < core)):
            counts["core"] += 1
            continue
        if flagged.mean() > 0.25:
            counts["flagged"] += 1
            continue
        masked = _neighbour_mask(objects, tree, brightest[k], x0[k], y0[k], ic + offsets, jc + offsets, fwhm_guess)
        if masked is None:
            counts["neighbour"] += 1
            continue
        masked |= flagged
        picked.append((k, box, masked, (ic - half, jc - half)))
    if not picked:
        why = ", ".join(f"{n} {what}" for what, n in (
            (f"below S/N {min_snr:g}", counts["S/N"]), ("too near the edge", counts["edge"]),
            ("with a flagged pixel in the core", counts["core"]), ("mostly flagged", counts["flagged"]),
            ("extended", counts["extended"]), ("blended", counts["neighbour"])) if n)
        return empty, f"none of the {brightest.size} brightest of {objects.size} detections is usable ({why})"
    index = np.array([p[0] for p in picked])
    masked = np.stack([p[2] for p in picked])
    stamps = np.stack([np.where(m, 0.0, np.asarray(frame[p[1]], np.float64)) for p, m in zip(picked, masked,
                                                                                             strict=True)])
    return {"x": x0[index], "y": y0[index], "snr": snr[index], "stamps": stamps, "masked": masked,
            "origin": np.array([p[3] for p in picked], dtype=int), "fwhm_guess": np.array(fwhm_guess)}, ""


def _neighbour_mask(objects, tree, index, x, y, columns, rows, fwhm_guess):
    """Pixels of a star's fit box (frame ``columns``, ``rows``) nearer to another detection than to the star
    at ``(x, y)`` px, or None when a detection within ``fwhm_guess`` px, or a brighter one in the box, blends
    with it."""
    half = (columns.size - 1) / 2.0
    masked = np.zeros((rows.size, columns.size), dtype=bool)
    own = np.hypot(columns[None, :] - x, rows[:, None] - y)
    for n in tree.query_ball_point((x, y), half * np.sqrt(2.0) + fwhm_guess):
        if n == index:
            continue
        other = objects[n]
        distance = np.hypot(other["x"] - x, other["y"] - y)
        if distance < fwhm_guess or (distance < half * np.sqrt(2.0) and other["flux"] > objects["flux"][index]):
            return None
        masked |= np.hypot(columns[None, :] - other["x"], rows[:, None] - other["y"]) < own
    return masked


def _joint_fit(stamps, weights, start, gaussian: bool, oversample: int = _OVERSAMPLE):
    """Joint least squares of one profile shape to ``n`` stamps: ``(params, converged)``.

    Parameters are ``[width, (β,) flux_1…n, x_1…n, y_1…n, sky_1…n]`` (width Moffat α or Gaussian σ,
    px; fluxes e-; centres in box pixels; sky e- per pixel); residuals ``(stamp − model − sky) · weight``.
    """
    n, side = stamps.shape[0], stamps.shape[1]
    shared = 1 if gaussian else 2

    def evaluate(params: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = params[0]
        flux, x, y, sky = (p[shared + m * n: shared + (m + 1) * n] for m in range(4))
        width = np.full(n, p[0])
        beta = None if gaussian else np.full(n, p[1])
        model, derivatives = profile_images_jacobians((side, side), x, y, flux, width, beta, oversample)
        residuals = (stamps - model - sky[:, None, None]) * weights
        jacobian = np.zeros((n, side, side, shared + 4 * n))
        stars = np.arange(n)
        jacobian[..., 0] = derivatives[:, 3]
        if not gaussian:
            jacobian[..., 1] = derivatives[:, 4]
        for m, derivative in enumerate((derivatives[:, 0], derivatives[:, 1], derivatives[:, 2], 1.0)):
            jacobian[stars, :, :, shared + m * n + stars] = derivative
        jacobian = -jacobian * weights[..., None]
        return residuals.reshape(1, -1), jacobian.reshape(1, -1, shared + 4 * n)

    lower = np.concatenate([[0.2 if gaussian else 0.3], [] if gaussian else [_BETA_BOUNDS[0]], np.zeros(n),
                            np.full(2 * n, 0.0), np.full(n, -np.inf)])
    upper = np.concatenate([[side], [] if gaussian else [_BETA_BOUNDS[1]], np.full(n, np.inf),
                            np.full(2 * n, side - 1.0), np.full(n, np.inf)])
    return levenberg_marquardt(evaluate, start[None], lower, upper, max_iterations=200)


def fit_analytic_psf(
    stars: dict[str, np.ndarray], rms: np.ndarray | float, size: int = 25
) -> PSFModel:
    """A Moffat (else Gaussian) PSF fitted jointly to the stars of :func:`analytic_stars`.

    One pixel-integrated circular profile (Moffat α and β, or Gaussian σ) shared by all stars, with a
    centre, total flux and residual sky per star, is fitted by
    :func:`~astrid_assets.science.psf.profile_fit.levenberg_marquardt` (analytic Jacobian) with weights
    ``1 / (σ_sky² + model)`` — first the star's own counts, then the first fit's model, so that a pixel
    that fluctuated low is not favoured — and zero weight on masked pixels. When β runs to its upper
    bound, or the Moffat fit fails, the Gaussian is fitted instead. With three or more stars those
    with a reduced χ² above ``max(2, 3 × median)`` are dropped and the rest refitted.

    Parameters
    ----------
    stars : dict
        :func:`analytic_stars`' stars (at least one).
    rms : numpy.ndarray or float
        Background noise of the frame, e- (map or scalar; sampled at each star).
    size : int, default 25
        Odd stamp side of the PSF, px.

    Returns
    -------
    PSFModel
        Unit-sum stamp of the fitted profile centred on the central pixel, its FWHM after
        pixelisation (:func:`~astrid_assets.science.psf.model.measure_fwhm`), the stars fitted
        (``star_xy`` fitted centres in frame px, ``star_flux`` their fluxes inside the stamp, e-), and
        ``psf_source`` ``"moffat"`` or ``"gaussian"``.

    Raises
    ------
    PSFError
        ``"no star: …"`` when no fit converges to a plausible profile (FWHM 0.5 px to ``size / 2``).
    """
    stamps, masked, origin = stars["stamps"], stars["masked"], stars["origin"]
    n, side = stamps.shape[0], stamps.shape[1]
    if np.ndim(rms) == 0:
        sky_var = np.full(n, float(rms) ** 2)
    else:
        centre = origin + side // 2
        sky_var = np.asarray(rms, np.float64)[centre[:, 1], centre[:, 0]] ** 2
    keep = np.ones(n, dtype=bool)
    fwhm0 = float(stars["fwhm_guess"]) / 1.26  # 2 r_half of a β = 3 Moffat is 1.26 FWHM
    best = None
    for _ in range(2):
        idx = np.flatnonzero(keep)
        data, bad, var = stamps[idx], masked[idx], sky_var[idx]
        variance = var[:, None, None] + np.clip(data, 0.0, None)
        best = _fit_family(data, bad, variance, fwhm0)
        if best is None:
            break
        gaussian, params, model = best
        variance = var[:, None, None] + np.clip(model, 0.0, None)  # model variance: no low-pixel bias
        best = _fit_family(data, bad, variance, fwhm0, start=(gaussian, params)) or best
        gaussian, params, model = best
        weights = np.where(bad, 0.0, 1.0 / np.sqrt(variance))
        chi2 = (((data - model) * weights) ** 2).sum(axis=(1, 2)) / np.maximum((~bad).sum(axis=(1, 2)) - 4, 1)
        outliers = (chi2 > 2.0) & (chi2 > 3.0 * np.median(chi2)) if idx.size >= 3 else np.zeros(idx.size, bool)
        if not outliers.any():
            break
        keep[idx[outliers]] = False
    if best is None:
        raise PSFError(f"no star: the profile fit did not converge on any of {n} candidate stars")
    gaussian, params, _ = best
    idx = np.flatnonzero(keep)
    shared = 1 if gaussian else 2
    k = idx.size
    flux, x, y = (params[shared + m * k: shared + (m + 1) * k] for m in range(3))
    if gaussian:
        stamp = render_psf(GAUSSIAN_FWHM_PER_SIGMA * params[0], size, "gaussian")
    else:
        stamp = render_psf(float(moffat_fwhm(params[0], params[1])), size, "moffat", beta=float(params[1]),
                           oversample=_OVERSAMPLE)
    inside = _inside_fraction(params, gaussian, size)
    fwhm = measure_fwhm(stamp)
    if not (np.isfinite(fwhm) and 0.5 <= fwhm <= size / 2):
        raise PSFError(f"no star: the profile fitted to {k} candidate stars has an implausible FWHM {fwhm:.2f} px")
    return PSFModel(image=stamp, fwhm=fwhm, n_stars=int(k),
                    star_xy=np.column_stack([origin[idx, 0] + x, origin[idx, 1] + y]),
                    star_flux=flux * inside, psf_source="gaussian" if gaussian else "moffat")


def _inside_fraction(params: np.ndarray, gaussian: bool, size: int) -> float:
    """Fraction of the continuous profile's flux inside a ``size`` px stamp."""
    shape = (size, size)
    beta = None if gaussian else np.array([params[1]])
    image, _ = profile_images_jacobians(shape, np.array([size // 2.0]), np.array([size // 2.0]), np.ones(1),
                                        np.array([params[0]]), beta, _OVERSAMPLE)
    return float(image.sum())


def _fit_family(data, bad, variance, fwhm0, start=None):
    """The joint Moffat fit, else the Gaussian: ``(gaussian, params, model)``, or None if neither converges.

    ``start`` is a previous ``(gaussian, params)`` to start from (its family first), or None. The pixel
    integration samples :func:`_fit_oversample` points per axis for the first guess ``fwhm0``.
    """
    oversample = _fit_oversample(fwhm0)
    n, side = data.shape[0], data.shape[1]
    weights = np.where(bad, 0.0, 1.0 / np.sqrt(np.clip(variance, 1e-12, None)))
    centre = np.full(n, (side - 1) / 2.0)
    per_star = np.concatenate([np.clip(data.sum(axis=(1, 2)), 1.0, None), centre, centre, np.zeros(n)])
    moffat0 = np.concatenate([[moffat_alpha(fwhm0, 3.0), 3.0], per_star])
    gaussian0 = np.concatenate([[fwhm0 / GAUSSIAN_FWHM_PER_SIGMA], per_star])
    if start is None:
        tries = [(False, moffat0), (True, gaussian0)]
    elif start[0]:
        tries = [(True, start[1])]
    else:
        tries = [(False, start[1]), (True, gaussian0)]
    for gaussian, p0 in tries:
        params, converged = _joint_fit(data, weights, p0, gaussian, oversample)
        params = params[0]
        if not (converged[0] and np.isfinite(params).all()):
            continue
        if not gaussian and not (_BETA_BOUNDS[0] * 1.001 < params[1] < _BETA_BOUNDS[1] * 0.999):
            continue
        shared = 1 if gaussian else 2
        flux, x, y, sky = (params[shared + m * n: shared + (m + 1) * n] for m in range(4))
        model, _ = profile_images_jacobians((side, side), x, y, flux, np.full(n, params[0]),
                                            None if gaussian else np.full(n, params[1]), oversample)
        return gaussian, params, model + sky[:, None, None]
    return None


def analytic_psf(
    image: np.ndarray,
    background: np.ndarray | float,
    background_rms: np.ndarray | float,
    mask: np.ndarray | None = None,
    size: int = 25,
    *,
    objects: np.ndarray | None = None,
    detect_threshold: float = 5.0,
    min_snr: float = ANALYTIC_MIN_SNR,
    max_fit_stars: int = MAX_FIT_STARS,
) -> PSFModel:
    """The analytic rung alone: a Moffat or Gaussian fitted jointly to the frame's best stars
    (:func:`analytic_stars`, :func:`fit_analytic_psf`; neighbours and flagged pixels weighted 0).

    Parameters and units as :func:`estimate_frame_psf`.

    Raises
    ------
    PSFError
        ``"no star: …"`` when no detection is usable, or the fit fails.
    """
    frame, nonfinite = frame_for_sep(image, background)
    bad = unusable_pixels(mask, frame.shape) | nonfinite
    rms = noise_for_sep(background_rms, frame.shape)
    if objects is None:
        objects = find_sources(frame, rms, bad, threshold=detect_threshold)
    found, why = analytic_stars(frame, rms, bad, objects, min_snr=min_snr, max_stars=max_fit_stars)
    if found["x"].size == 0:
        raise PSFError(f"no star: {why}")
    return fit_analytic_psf(found, rms, size)


def estimate_frame_psf(
    image: np.ndarray,
    background: np.ndarray | float,
    background_rms: np.ndarray | float,
    mask: np.ndarray | None = None,
    size: int = 25,
    *,
    min_snr: float = 30.0,
    min_stars: int = 5,
    max_stars: int = 150,
    detect_threshold: float = 5.0,
    objects: np.ndarray | None = None,
    stars: dict[str, np.ndarray] | None = None,
    analytic_min_snr: float = ANALYTIC_MIN_SNR,
    max_fit_stars: int = MAX_FIT_STARS,
) -> PSFModel:
    """The frame's PSF by the ladder: the empirical stack where enough stars exist, else a fitted profile.

    The empirical rung is :func:`~astrid_assets.science.psf.empirical.estimate_psf` with the same
    arguments, unchanged; when it raises :class:`~astrid_assets.science.psf.model.PSFError` (too few
    stars), the stars of :func:`analytic_stars` (S/N ≥ ``analytic_min_snr``, flagged pixels outside
    the core weighted 0, neighbours masked) get a joint Moffat or Gaussian (:func:`fit_analytic_psf`).

    An undersampled PSF (empirical FWHM below :data:`UNDERSAMPLED_PSF_FWHM`) also takes the fitted profile
    (the stack is kept if that fit fails): the stack's sub-pixel Fourier shifts of aliased stars ring out to
    several px, and ZOGY convolves the other image with that ringing, leaving rings of residuals around bright
    stars. Measured on generated frames of FWHM 1.3–1.6 px against a 1.8–2.0 px reference (512², 4 frames):
    6 of the 9 unflagged false candidates were such rings, 4–12 px from one bright star.

    Parameters
    ----------
    image, background, background_rms, mask, size, min_snr, min_stars, max_stars, detect_threshold, objects, stars
        As for :func:`~astrid_assets.science.psf.empirical.estimate_psf` (e-, px).
    analytic_min_snr : float, default 10.0
        Lowest aperture S/N of a star of the analytic rung.
    max_fit_stars : int, default 10
        Most stars in the analytic fit.

    Returns
    -------
    PSFModel
        With ``psf_source`` ``"empirical"``, ``"moffat"`` or ``"gaussian"`` and the stars used.

    Raises
    ------
    PSFError
        ``"no star: …"`` (with the empirical rung's reason) when no detection is usable as a star.
    ValueError
        When ``size`` is even.
    """
    if size % 2 != 1:
        raise ValueError(f"PSF size must be odd, got {size}")
    frame, nonfinite = frame_for_sep(image, background)
    bad = unusable_pixels(mask, frame.shape) | nonfinite
    rms = noise_for_sep(background_rms, frame.shape)
    if objects is None:
        objects = find_sources(frame, rms, bad, threshold=detect_threshold)
    empirical = None
    try:
        empirical = estimate_psf(image, background, background_rms, mask, size, min_snr=min_snr,
                                 min_stars=min_stars, max_stars=max_stars, detect_threshold=detect_threshold,
                                 objects=objects, stars=stars)
    except PSFError as empirical_error:
        reason = str(empirical_error)
    if empirical is not None and empirical.fwhm >= UNDERSAMPLED_PSF_FWHM:
        return empirical
    found, why = analytic_stars(frame, rms, bad, objects, min_snr=analytic_min_snr, max_stars=max_fit_stars)
    if found["x"].size == 0:
        if empirical is not None:
            return empirical
        raise PSFError(f"no star: {why}; the empirical PSF failed too ({reason})")
    try:
        return fit_analytic_psf(found, rms, size)
    except PSFError:
        if empirical is not None:
            return empirical
        raise
