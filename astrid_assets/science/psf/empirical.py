"""Point-spread function (PSF): estimation from stars, rendering, and forced PSF photometry.

Conventions
-----------
* Pixel arrays are ``float32`` in electrons (e-), indexed ``[y, x]``, 0-based; the centre of
  pixel ``[j, i]`` is at ``(x, y) = (i, j)``.
* A PSF stamp is an odd-sized square array whose light centroid lies on the central pixel
  ``[size // 2, size // 2]`` and whose pixels sum to 1 (the flux of a star is the flux inside
  the stamp footprint; wings beyond it are not modelled).
* Stars are found with :mod:`~astrid_assets.science.sources` (SEP).

The empirical PSF is the inverse-variance weighted, clipped mean of sub-pixel re-centred,
flux-normalised stamps of isolated, unsaturated, unmasked stars whose width agrees with the
others, with a Moffat profile fitted to it for the wings (:func:`estimate_psf`); it is constant
over the frame. A PSF that varies over the frame is measured and modelled in :mod:`~astrid_assets.science.psf.field`.

Weights
-------
The per-pixel variance that weights the stack, its clipping and the width test of each star is
a model, ``σ_sky² + f · P`` (e-²: the sky + read-noise variance at the star plus its flux ``f``
times the current stack estimate ``P``; :func:`_model_variance`), never the stamp's own counts.
With ``σ² + counts`` a pixel that fluctuated low gets a smaller variance and a larger weight,
so an inverse-variance mean comes out low by about one count per pixel and star, and the width
fit of a bright star is tilted the same way. Relative to the star that is ``1 / (f P)``: small
in the core, but ~1 % in the wings, and largest where the sky is faint against the stars. On a
deep, Poisson-dominated reference (sky variance 30× below the new image's) the wings beyond
2 FWHM came out 1–5 % too faint, bright stars were dropped as too narrow, and bright static
stars left rings of false candidates in the ZOGY difference
(``astrid_assets_tests/science/test_deep_reference_psf.py``).
"""

from __future__ import annotations

import numpy as np

from astrid_assets.science.psf.model import PSFError, PSFModel, ShiftablePSF, _centroid, measure_fwhm
from astrid_assets.science.psf.profile_fit import levenberg_marquardt
from astrid_assets.science.psf.profiles import (
    moffat_alpha,
    profile_image,
    profile_images_jacobians,
)
from astrid_assets.science.psf.stars import cut_centred_stamps, select_psf_stars, shape_cut
from astrid_assets.science.sources import find_sources, frame_for_sep, noise_for_sep, unusable_pixels

__all__ = ["estimate_psf"]

#: SEP object flags that disqualify a PSF star: merged with a neighbour, truncated at the edge.
def _stack(stamps: np.ndarray, fluxes: np.ndarray) -> np.ndarray:
    usable = np.isfinite(fluxes) & (fluxes > 0)
    normalised = stamps[usable] / fluxes[usable, None, None]
    stacked = np.median(normalised, axis=0)
    return stacked / stacked.sum()


def _radius_grid(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    half = size // 2
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    return xx, yy, np.hypot(xx, yy)


def _model_variance(model: np.ndarray, fluxes: np.ndarray, star_rms: np.ndarray) -> np.ndarray:
    """Expected per-pixel variance of star stamps, e-²: ``σ_sky² + f · max(P, 0)``.

    Parameters
    ----------
    model : numpy.ndarray
        ``(size, size)`` current PSF estimate ``P`` (flux-normalised stack; sums to ~1).
    fluxes : numpy.ndarray
        ``(n,)`` PSF-fit fluxes ``f`` of the stars, e-.
    star_rms : numpy.ndarray
        ``(n,)`` background noise ``σ_sky`` (sky Poisson + read noise) at each star, e-.

    Returns
    -------
    numpy.ndarray
        ``(n, size, size)`` variances, e-²: sky variance plus the star's expected Poisson counts.

    Notes
    -----
    The variance comes from a model, never from the stamp's own (noisy) pixel: with weights
    ``1 / (σ² + counts)`` a pixel that fluctuated low gets a higher weight, which biases an
    inverse-variance mean low by about one count per pixel and star. On a deep, Poisson-dominated
    image that makes the wings of the stack ~1 % too faint (see the module docstring).
    """
    expected = fluxes[:, None, None] * np.clip(model, 0.0, None)[None, :, :]
    return star_rms[:, None, None] ** 2 + expected


def _shape_outliers(
    stamps: np.ndarray,
    fluxes: np.ndarray,
    star_rms: np.ndarray,
    psf_image: np.ndarray,
    fwhm: float,
    clip: float,
) -> np.ndarray:
    """Boolean flags of the stars whose profile is wider or narrower than the PSF ``psf_image``.

    Each stamp (e-) is fitted inside ``2 × fwhm`` with ``a·P + b·W + c_x ∂P/∂x + c_y ∂P/∂y``
    where ``W = −(2P + x ∂P/∂x + y ∂P/∂y)`` is the change of ``P`` under a small stretch:
    ``b/a`` is the star's fractional width excess. The weights are ``1 / (σ_sky² + f·P)``
    (:func:`_model_variance`, with the star's flux ``fluxes`` in e- and ``star_rms`` in e-),
    not the stamp's own counts, which would favour pixels that fluctuated low and tilt the
    fit. Stars whose excess lies more than ``clip`` of its own error from the median are
    outliers — a faint galaxy or star blended into the core, a supernova on its host, a star
    whose core is flattened near saturation or partly rejected in a co-add. Such
    contaminations are at the noise level of single pixels but bias a stack of a dozen stars
    by a few per cent.
    """
    xx, yy, rr = _radius_grid(psf_image.shape[0])
    grad_y, grad_x = np.gradient(psf_image)
    stretch = -(2.0 * psf_image + xx * grad_x + yy * grad_y)
    core = rr <= max(2.0 * fwhm, 3.0)
    design = np.stack([psf_image[core], stretch[core], grad_x[core], grad_y[core]], axis=1)
    variance = np.maximum(_model_variance(psf_image, fluxes, star_rms)[:, core], 1e-12)
    data = stamps[:, core]
    n = stamps.shape[0]
    width, width_err = np.full(n, np.nan), np.full(n, np.inf)
    for k in range(n):
        weight = 1.0 / np.sqrt(variance[k])
        weighted = design * weight[:, None]
        normal = weighted.T @ weighted
        try:
            cov = np.linalg.inv(normal)
        except np.linalg.LinAlgError:
            continue
        coef = cov @ (weighted.T @ (data[k] * weight))
        if coef[0] <= 0:
            continue
        width[k] = coef[1] / coef[0]
        width_err[k] = np.sqrt(max(cov[1, 1], 0.0)) / coef[0]
    finite = np.isfinite(width)
    if not finite.any():
        return ~finite
    centre = np.median(width[finite])
    return ~finite | (np.abs(width - centre) > clip * width_err)


def _weighted_stack(
    stamps: np.ndarray,
    fluxes: np.ndarray,
    star_rms: np.ndarray,
    start: np.ndarray,
    clip: float = 4.0,
    iterations: int = 4,
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse-variance weighted, per-pixel ``clip``-σ clipped mean of flux-normalised stamps.

    A median gives a faint star the weight of a bright one, so the wings of a stack of a dozen
    stars carry the sky noise of the faintest (a few per cent of the flux summed over the
    stamp, which ZOGY and PSF photometry turn into a flux-scale error). The weights are
    ``f² / (σ_sky² + f·P)`` per pixel (:func:`_model_variance`), where ``P`` is the current
    stack (``start``, e.g. the median stack, then each iteration's mean): the expected counts,
    never the stamp's own noisy counts, which would give a pixel that fluctuated low a higher
    weight and make the wings of a Poisson-dominated stack too faint. The clipping uses the
    same model variance, so a low fluctuation is not easier to reject than a high one.

    Parameters
    ----------
    stamps : numpy.ndarray
        ``(n, size, size)`` sky-subtracted star stamps, e-.
    fluxes : numpy.ndarray
        ``(n,)`` PSF-fit fluxes of the stars, e- (positive).
    star_rms : numpy.ndarray
        ``(n,)`` background noise at each star, e-.
    start : numpy.ndarray
        ``(size, size)`` first PSF estimate (unit sum); it seeds the weights and the clipping.
    clip : float, default 4.0
        Per-pixel clip, in units of the model standard deviation.
    iterations : int, default 4
        Rounds of re-weighting and clipping about the updated stack.

    Returns
    -------
    stack, stack_variance : numpy.ndarray
        The stack (flux-normalised, not renormalised to unit sum; dimensionless) and its
        variance per pixel (same units squared; ``inf`` where no star is kept).
    """
    normalised = stamps / fluxes[:, None, None]
    current = start
    weights = np.zeros_like(normalised)
    for _ in range(iterations):
        variance = np.maximum(_model_variance(current, fluxes, star_rms), 1e-12) / fluxes[:, None, None] ** 2
        kept = np.abs(normalised - current) <= clip * np.sqrt(variance)
        weights = np.where(kept, 1.0 / variance, 0.0)
        total = weights.sum(axis=0)
        current = np.where(total > 0, (weights * normalised).sum(axis=0) / np.where(total > 0, total, 1.0), start)
    total = weights.sum(axis=0)
    stack_variance = np.where(total > 0, 1.0 / np.where(total > 0, total, 1.0), np.inf)
    return current, stack_variance


def _moffat_stamp(size: int, alpha: float, beta: float) -> np.ndarray:
    """Centred unit-flux Moffat (:func:`~astrid_assets.science.psf.profiles.profile_image`), 3² points per pixel."""
    return profile_image((size, size), size // 2, size // 2, 1.0, alpha, beta, oversample=3)


def _moffat_wings(stack: np.ndarray, variance: np.ndarray, fwhm: float, inner: float, outer: float) -> np.ndarray:
    """The stack inside ``inner × fwhm``, a Moffat (1969) fitted to it beyond ``outer × fwhm``.

    Between the two radii the empirical stack fades into the model with a cosine taper. The
    Moffat (amplitude, core width α, power index β free; circular, centred) is fitted to the
    whole stack with weights ``1 / variance``
    (:func:`~astrid_assets.science.psf.profile_fit.levenberg_marquardt`, analytic Jacobian). Returns the
    stack unchanged if the fit fails.
    """
    return _moffat_wings_many(stack[None], variance[None], np.array([fwhm]), inner, outer)[0]


def _moffat_wings_many(stacks: np.ndarray, variances: np.ndarray, fwhms: np.ndarray, inner: float,
                       outer: float) -> np.ndarray:
    """:func:`_moffat_wings` for ``(K, size, size)`` stacks with their variances and ``(K,)`` FWHMs (px), the
    ``K`` Moffat fits run together (each as it would alone); returns ``(K, size, size)``."""
    stacks = np.asarray(stacks, dtype=np.float64)
    size = stacks.shape[1]
    out = stacks.copy()
    usable = np.isfinite(variances) & (variances > 0)
    weights = np.where(usable, 1.0 / np.sqrt(np.where(usable, variances, 1.0)), 0.0)
    fwhms = np.asarray(fwhms, dtype=np.float64)
    beta0 = 3.0
    alpha0 = np.array([moffat_alpha(max(fwhm, 1.0), beta0) for fwhm in fwhms])
    amplitude0 = np.array([stack.max() / _moffat_stamp(size, alpha, beta0).max()
                           for stack, alpha in zip(stacks, alpha0, strict=True)])
    start = np.column_stack([amplitude0, alpha0, np.full(len(stacks), beta0)])
    lower, upper = np.array([0.0, 0.3, 1.1]), np.array([np.inf, float(size), 50.0])
    # a stack with under 10 usable pixels, or non-finite or negative, is returned unchanged
    fit = np.flatnonzero((usable.sum(axis=(1, 2)) >= 10) & np.all((start >= lower) & (start <= upper), axis=1))
    if fit.size == 0:
        return out
    half = size // 2
    mirror = np.abs(np.arange(size) - half)  # the centred profile is symmetric: one quadrant, mirrored

    def evaluate(params: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Residuals ``(stack − A M(α, β)) · weight`` and their Jacobian for ``(A, α, β)``."""
        amplitude, alpha, beta = params.T
        origin = np.zeros(len(rows))
        quadrant, derivatives = profile_images_jacobians((half + 1, half + 1), origin, origin, np.ones(len(rows)),
                                                         alpha, beta, 3)
        unit = quadrant[:, mirror][:, :, mirror]
        jacobian = np.stack([unit, amplitude[:, None, None] * derivatives[:, 3][:, mirror][:, :, mirror],
                             amplitude[:, None, None] * derivatives[:, 4][:, mirror][:, :, mirror]], axis=1)
        weight = weights[fit[rows]]
        residuals = (stacks[fit[rows]] - amplitude[:, None, None] * unit) * weight
        jacobian = -(jacobian * weight[:, None]).reshape(len(rows), 3, -1).transpose(0, 2, 1)
        return residuals.reshape(len(rows), -1), jacobian

    params, converged = levenberg_marquardt(evaluate, start[fit], lower, upper, max_iterations=100)
    _, _, rr = _radius_grid(size)
    for k, (amplitude, alpha, beta), ok in zip(fit, params, converged, strict=True):
        if not (ok and np.isfinite([amplitude, alpha, beta]).all() and amplitude > 0):
            continue
        model = amplitude * _moffat_stamp(size, alpha, beta)
        r_in, r_out = inner * fwhms[k], outer * fwhms[k]
        taper = np.clip((r_out - rr) / (r_out - r_in), 0.0, 1.0)
        taper = 0.5 - 0.5 * np.cos(np.pi * taper)
        out[k] = model + taper * (stacks[k] - model)
    return out


def _recentre(psf_image: np.ndarray, radius: float) -> np.ndarray:
    """Shift the stack so its first-moment centroid is on the central pixel (< 0.005 px)."""
    for _ in range(3):
        dx, dy = _centroid(psf_image, radius)
        if max(abs(dx), abs(dy)) < 0.005:
            break
        psf_image = ShiftablePSF(psf_image).at(-dx, -dy)
    return psf_image / psf_image.sum()


def estimate_psf(
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
    neighbour_flux_fraction: float = 0.02,
    shape_clip: float = 3.0,
    wings: tuple[float, float] | None = (2.0, 3.5),
    objects: np.ndarray | None = None,
    stars: dict[str, np.ndarray] | None = None,
) -> PSFModel:
    """Estimate the PSF from isolated, unsaturated, unmasked stars found with SEP.

    Star selection: SEP detections (``detect_threshold`` × ``background_rms``) that are
    neither merged nor truncated, have aperture S/N ≥ ``min_snr``, no ``UNUSABLE`` pixel
    (e.g. ``SATURATED``) inside their stamp, no neighbour brighter than
    ``neighbour_flux_fraction`` of them within the stamp half-diagonal, and a half-light
    radius within 25 % of the median and an elongation ``a/b`` at most 0.3 above the median
    (rejecting galaxies, blends and cosmic rays). Each stamp
    is moved onto its windowed centroid by a Fourier shift and normalised by its PSF-fit flux
    against a first median stack. Stars whose width differs from that stack by more than
    ``shape_clip`` of its error are dropped (:func:`_shape_outliers`: blends with faint
    galaxies or stars that SEP does not separate, near-saturated cores). The others are
    combined in an inverse-variance weighted, clipped mean (:func:`_weighted_stack`). Both
    steps weight each pixel by a model variance, ``σ_sky² + f · P`` in e-² (sky variance plus
    the star's flux times the current, iterated stack), not by the stamp's own noisy counts,
    which would favour pixels that fluctuated low and make the wings of a Poisson-dominated
    stack ~1–5 % too faint (see the module docstring).

    Beyond ``wings[0] × FWHM`` the stack fades into a Moffat profile fitted to it, which it
    equals beyond ``wings[1] × FWHM`` (DAOPHOT's analytic profile + empirical core, Stetson
    1987, PASP 99, 191). Sky noise in the wings of a stack of a handful of stars sums to a few
    per cent of the flux over the stamp and moves the normalisation of the core by as much;
    every flux measured with the PSF (photometry, the ZOGY flux ratio, S_corr of static
    stars) inherits it. ``wings=None`` keeps the empirical stack everywhere.

    Parameters
    ----------
    image : numpy.ndarray
        Frame in e-, sky not subtracted, indexed ``[y, x]``.
    background, background_rms : numpy.ndarray or float
        Sky level and its per-pixel noise (standard deviation), e- (maps or scalars).
    mask : numpy.ndarray or None, default None
        uint16 bit mask (``astrid_assets.science.masks``); None: no pixel masked (non-finite
        pixels are always excluded).
    size : int, default 25
        Odd PSF stamp side, pixels.
    min_snr : float, default 30.0
        Minimum aperture S/N of a PSF star (circular aperture of radius 1.5 × a first FWHM
        guess from the median half-light radius).
    min_stars : int, default 5
        Fewest stars accepted.
    max_stars : int, default 150
        Most stars stacked (the brightest that pass).
    detect_threshold : float, default 5.0
        SEP detection threshold, in units of ``background_rms``.
    neighbour_flux_fraction : float, default 0.02
        A neighbour brighter than this fraction of the star within the stamp half-diagonal
        rejects it; any neighbour within 2 × the FWHM guess rejects it too.
    shape_clip : float, default 3.0
        Clip on the width excess, in units of its error.
    wings : tuple of float or None, default (2.0, 3.5)
        Inner and outer radii of the taper to the fitted Moffat wings, in units of the FWHM;
        None keeps the empirical stack everywhere.
    objects : numpy.ndarray or None, default None
        SEP catalogue of this frame at ``detect_threshold`` (:func:`~astrid_assets.science.sources.find_sources`) to
        reuse; None detects.
    stars : dict or None, default None
        This frame's star measurement (:func:`_select_psf_stars` with the same ``objects``,
        ``size``, ``min_snr``, ``neighbour_flux_fraction`` and ``max_stars``) to reuse; None measures.

    Returns
    -------
    PSFModel
        The PSF stamp (float32, unit sum, centroid on the central pixel), its FWHM (px, after
        pixelisation) and the stars used.

    Raises
    ------
    PSFError
        When fewer than ``min_stars`` stars pass the selection.
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
    if objects.size < min_stars:
        raise PSFError(
            f"only {objects.size} sources above {detect_threshold} sigma; "
            f"need at least {min_stars} stars to estimate the PSF"
        )
    if stars is None:
        stars = select_psf_stars(frame, rms, bad, objects, size, min_snr, neighbour_flux_fraction, max_stars)
    stars = shape_cut(stars, 0.25)
    if stars["x"].size < min_stars:
        raise PSFError(
            f"only {stars['x'].size} isolated unsaturated stars with S/N >= {min_snr:g} among "
            f"{objects.size} detections; need at least {min_stars} to estimate the PSF"
        )
    order = np.argsort(-stars["flux"])[:max_stars]
    x, y = stars["x"][order], stars["y"][order]
    if np.ndim(rms) == 0:
        star_rms = np.full(x.size, float(rms))
    else:
        star_rms = rms[np.clip(np.rint(y).astype(int), 0, frame.shape[0] - 1),
                       np.clip(np.rint(x).astype(int), 0, frame.shape[1] - 1)].astype(np.float64)
    stamps = cut_centred_stamps(frame, x, y, size)
    first = _stack(stamps, stamps.sum(axis=(1, 2)))
    fluxes = np.einsum("kij,ij->k", stamps, first) / (first**2).sum()
    keep = np.isfinite(fluxes) & (fluxes > 0)
    if keep.sum() < max(min_stars, 1):
        raise PSFError(f"only {int(keep.sum())} stars with a positive PSF flux; need at least {min_stars}")
    x, y, stamps, fluxes, star_rms = x[keep], y[keep], stamps[keep], fluxes[keep], star_rms[keep]
    median_stack = _stack(stamps, fluxes)
    fwhm = measure_fwhm(median_stack)
    outliers = _shape_outliers(stamps, fluxes, star_rms, median_stack, fwhm, shape_clip)
    if outliers.any() and (~outliers).sum() >= min_stars:
        keep = ~outliers
        x, y, stamps, fluxes, star_rms = x[keep], y[keep], stamps[keep], fluxes[keep], star_rms[keep]
        median_stack = _stack(stamps, fluxes)
    stacked, stack_variance = _weighted_stack(stamps, fluxes, star_rms, median_stack)
    scale = stacked.sum()
    stacked, stack_variance = stacked / scale, stack_variance / scale**2
    psf_image = _recentre(stacked, radius=max(2.0 * fwhm, 3.0))
    if wings is not None:
        psf_image = _moffat_wings(psf_image, stack_variance, fwhm, *wings)
        psf_image = _recentre(psf_image / psf_image.sum(), radius=max(2.0 * fwhm, 3.0))
    fwhm = measure_fwhm(psf_image)
    return PSFModel(
        image=psf_image.astype(np.float32),
        fwhm=fwhm,
        n_stars=int(x.size),
        star_xy=np.column_stack([x, y]),
        star_flux=fluxes,
    )

