"""Proper image subtraction (ZOGY). The classic PSF-matched subtraction is in
:mod:`~astrid_assets.science.subtraction.classic`, the
flux-ratio fit in :mod:`~astrid_assets.science.photometry.flux_ratio`, the FFT back ends in
:mod:`~astrid_assets.science.subtraction.fft_backends`.

References
----------
* Zackay, Ofek & Gal-Yam 2016, ApJ 830, 27 ("ZOGY"): the proper difference image ``D``
  (eq. 13), its PSF ``P_D`` (eq. 14) and flux zero point ``F_D`` (eq. 15), the proper
  detection statistic ``S`` (eq. 12, in Fourier space; equivalently ``S = F_D · D ⋆ P_D``), the
  corrected statistic ``S_corr = S / sqrt(V(S_N) + V(S_R) + V_ast(S_N) + V_ast(S_R))``
  (eq. 25) with the source-noise terms ``V(S_N) = V(ε_n) ⊗ k_n²``, ``V(S_R) = V(ε_r) ⊗ k_r²``
  (eqs. 26–27) and kernels ``k_n``, ``k_r`` (eqs. 28–29), the astrometric-noise terms
  ``V_ast(S_N) = σ_x² (∂S_N/∂x)² + σ_y² (∂S_N/∂y)²`` and likewise for ``S_R`` (eqs. 30–33),
  and the PSF-photometry normalisation ``F_S`` (eq. 42; flux ``α = S / F_S``).

Conventions
-----------
* ``new`` and ``ref`` are :class:`~astrid_assets.science.subtraction.inputs.SubtractionImage`: background-subtracted
  images in electrons (e-) on the same pixel grid (see :mod:`astrid_assets.science.astrometry.register`), indexed
  ``[y, x]``, 0-based, each with its PSF, noise, variance and mask; the knobs are a
  :class:`~astrid_assets.science.subtraction.inputs.ZogyOptions`.
* PSFs are odd-sized stamps centred on their central pixel (any sum; they are normalised).
* ``flux_ratio`` is ``F_n / F_r``: the counts a source gives in the new image per count in
  the reference (``10**(0.4 (zp_new − zp_ref))`` for photometric zero points ``zp``). We set
  ``F_r = 1`` and ``F_n = flux_ratio``.
* ``new.sigma`` / ``ref.sigma`` are the background noise (e- rms per pixel) used in the
  filters; the variance maps (e-², background + source Poisson + read noise) enter only
  the ``S_corr`` normalisation and the difference-image noise map.
* ``difference`` is ``D`` rescaled to new-image electrons: a transient of ``c`` e- in the
  new image appears as ``c · P_D`` in it.

FFT convolutions are periodic: a source within a kernel radius of one edge leaks into the
opposite edge band, so detections within ``edge`` pixels of the border must be flagged (as
:func:`astrid_assets.science.detection.candidates.detect_candidates` does). Pixels that are non-finite or
flagged ``UNUSABLE`` in the pair's mask (``new.mask | ref.mask``) are filled from their usable neighbours in
both images and their variance maps (:func:`sanitise_pair`), and reported as 0 in the outputs.

Beyond the paper
----------------
* A differential background: whatever sky offset or gradient the background subtraction left
  between the images passes into ``D`` as a plane (a plane convolved with a unit-sum, symmetric
  kernel is the same plane), and into ``S`` as ``F_D`` times it. A plane fitted to ``D`` on
  source-free pixels (``|S_corr| < 3``, iteratively clipped, weighted by ``1 / var(D)``) is
  removed from both, as the background term of Alard & Lupton (1998, ApJ 503, 325) does for
  kernel-matched differences (``background="plane"``; ``"constant"`` fits an offset only).
* The flux-ratio uncertainty: an error ``σ_β`` in ``β = F_n / F_r`` scales the reference's part of
  the score, ``δS = (δβ / β) S_R``, so ``(σ_β / β)² S_R²`` joins the variance of ``S`` next to the
  astrometric terms (eqs. 30–33): bright static stars are not scored as changes for a ratio known
  to a per cent.
* The PSF-model error (``psf_error``): a PSF wrong by a fraction ``ε`` leaves ``≈ ε S_N`` at a
  source in both images, so ``ε² max(S_N S_R, 0)`` joins the variance of ``S``, with ``ε``
  calibrated at bright stars (:mod:`~astrid_assets.science.psf.field`). PSFs that vary over the frame are differenced
  on blended tiles by :mod:`~astrid_assets.science.subtraction.tiles`.
* Correlated noise (``ZogyOptions.noise_correlation="measured"``, or an image's ``noise``): the noise power
  spectrum of each image, ``Φ(k) = σ² Â(k)`` with ``Â`` the Fourier transform of its noise autocorrelation
  measured on source-free pixels relative to its variance map
  (:mod:`~astrid_assets.science.subtraction.noise_power`), replaces ``σ²`` in the filters' denominator
  (eqs. 12–15 with ``σ_n² → Φ_n(k)``, ``σ_r² → Φ_r(k)``; ``F_D`` from ``Φ(0)``), so ``D`` is white again; and
  each variance-map term of ``S`` and ``D`` (eqs. 26–27) is multiplied by the variance its kernel ``k`` really
  sees over what independent pixels give, ``c(k) = Σ_τ A(τ)(k ⋆ k)(τ) / Σ k²``. White noise that its map
  describes has ``Â ≡ 1``, ``c = 1``: nothing changes. ``ZogyResult.s_corr_norm`` is the factor by which the
  noise of ``S`` exceeds what the maps alone say (the std that ``S_corr`` would have had without this).
  ``noise_correlation="difference"`` (the pipeline's) measures instead the autocorrelation of ``D`` itself on
  pixels away from every source of either input and divides ``S_corr`` by ``sqrt(c)`` for ``k = P_D``
  (``S = F_D D ⋆ P_D``), and multiplies the difference's variance by ``c``: faint static sky, which reads as
  correlated noise in each input, cancels in ``D``. A ``sqrt(c)`` within :data:`DIFFERENCE_NOISE_TOLERANCE` of 1
  is taken as white noise its maps describe, and nothing is rescaled.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from astrid_assets.science.astrometry.residuals import near_any
from astrid_assets.science.photometry.flux_ratio import fit_flux_ratio, psf_star_positions
from astrid_assets.science.psf.field import calibrate_psf_error, with_psf_error
from astrid_assets.science.psf.model import as_psf_image, measure_fwhm
from astrid_assets.science.sources import unusable_pixels
from astrid_assets.science.subtraction.fft_backends import (
    NumpyBackend,
    TorchBackend,
    filtered_variance,
    select_backend,
)
from astrid_assets.science.subtraction.image_pair import (
    background_plane,
    robust_std,
    sanitise_pair,
)
from astrid_assets.science.subtraction.inputs import SubtractionImage, ZogyOptions, pair_mask
from astrid_assets.science.subtraction.noise_power import (
    correlation_method,
    difference_noise,
    measure_noise_correlation,
)
from astrid_assets.science.subtraction.zogy_kernels import ZogyKernels, zogy_kernels

__all__ = ["ZogyResult", "zogy", "with_noise_correlation", "difference_noise_factor", "scaled_by_noise_factor",
           "DIFFERENCE_NOISE_TOLERANCE"]

#: ``noise_correlation="difference"`` rescales S_corr only when the measured noise of ``D`` differs from what the
#: variance maps say by more than this (relative rms): white-noise inputs whose maps are right measure
#: ``sqrt(c)`` ≈ 0.95–1.05 (source-free pixels are a biased sample), and rescaling them by that moved std(S_corr)
#: of the simulated survey to 1.053; drizzled mosaics measure 2.3, resampled undersampled frames 1.4.
DIFFERENCE_NOISE_TOLERANCE = 0.1


@dataclass(frozen=True)
class ZogyResult:
    """Outputs of :func:`zogy` (float32 images on the input grid).

    Attributes
    ----------
    D : numpy.ndarray
        Proper difference image (eq. 13), in units of its noise (white, unit variance on
        blank sky). Unusable pixels are 0.
    S : numpy.ndarray
        Proper detection statistic (eq. 12). Unusable pixels are 0.
    S_corr : numpy.ndarray
        ``S`` normalised by its source- and astrometric-noise-corrected standard
        deviation (eq. 25); on blank sky it is N(0, 1). Unusable pixels are 0.
    difference : numpy.ndarray
        ``D`` in new-image electrons (``D · F_n / F_D``), PSF ``P_D``.
    difference_var : numpy.ndarray
        Variance map of ``difference``, e-².
    P_D : numpy.ndarray
        PSF of ``D`` (eq. 14), unit-sum odd stamp, centred on its central pixel.
    F_D : float
        Flux zero point of ``D`` (eq. 15), with ``F_r = 1``, ``F_n = flux_ratio``; e-⁻¹.
    F_S : float
        Flux normalisation of ``S`` (eq. 42); ``S · F_n / F_S`` is the PSF flux in new e-.
    flux_ratio, flux_ratio_err : float
        ``F_n / F_r`` used and its error (the fit's; for a given ratio ``ZogyOptions.flux_ratio_err`` or 0).
    psf_fwhm : float
        FWHM of ``P_D``, px (of the pixelised stamp, :func:`~astrid_assets.science.psf.empirical.measure_fwhm`).
    s_corr_std : float
        Robust (1.4826 × MAD) standard deviation of ``S_corr`` over usable pixels,
        measured before any renormalisation.
    s_corr_scale : float
        Factor ``S_corr`` was divided by (1.0 unless ``ZogyOptions.renormalise``).
    mask : numpy.ndarray
        uint16 mask on the output grid (``new.mask | ref.mask``; non-finite input → ``NO_DATA``).
    backend : str
        ``"numpy"`` or ``"torch-cuda"`` / ``"torch-cpu"``.
    psf_error : float
        Relative PSF-model error ``ε`` whose term ``ε² max(S_N S_R, 0)`` joins the variance of
        ``S`` (0: no such term; see :func:`~astrid_assets.science.psf.field.calibrate_psf_error`).
    varying_psf : bool
        Whether the PSFs varied over the frame and tiles were differenced
        (:mod:`~astrid_assets.science.subtraction.tiles`).
    parts : dict or None
        With ``ZogyOptions.keep_parts``: float32 ``S_new`` (``S_N``), ``S_ref`` (``S_R``), ``V_S`` and its noise
        part ``V_noise`` (the variance maps' terms, eqs. 26–27)
        (the variance of ``S`` before the PSF-error term, e-⁻² units of ``S²``); else None.
    noise_correlation : str
        ``"white"`` (the variance maps taken to describe the noise) or ``"measured"`` (either image's noise
        correlation measured and used; module docstring, Beyond the paper).
    noise_factors : tuple of float
        ``(c_n, c_r)``: the variance the new / reference part of ``S`` sees over what the image's variance map
        gives as independent pixels (1, 1 for white noise).
    s_corr_norm : float
        ``sqrt(V(S) / V_maps(S))`` on uniform sky: how much the measured noise correlation widened ``S``'s noise
        beyond the maps' (1 for white noise).
    """

    D: np.ndarray
    S: np.ndarray
    S_corr: np.ndarray
    difference: np.ndarray
    difference_var: np.ndarray
    P_D: np.ndarray
    F_D: float
    F_S: float
    flux_ratio: float
    flux_ratio_err: float
    psf_fwhm: float
    s_corr_std: float
    s_corr_scale: float
    mask: np.ndarray
    backend: str
    psf_error: float = 0.0
    varying_psf: bool = False
    parts: dict | None = field(default=None, repr=False, compare=False)
    noise_correlation: str = "white"
    noise_factors: tuple[float, float] = (1.0, 1.0)
    s_corr_norm: float = 1.0


def zogy(new: SubtractionImage, ref: SubtractionImage, options: ZogyOptions = ZogyOptions(),
         sanitised: tuple | None = None) -> ZogyResult:
    """Proper image subtraction of Zackay, Ofek & Gal-Yam (2016, ApJ 830, 27).

    Parameters
    ----------
    new, ref : SubtractionImage
        The new image and the reference on one pixel grid: background-subtracted pixels (e-), a
        :class:`~astrid_assets.science.psf.model.PSFModel` or odd centred stamp each (normalised to unit
        sum here), the background noise ``sigma`` (e-, in the filters), optional variance maps (e-²,
        with source Poisson noise: the source-noise terms V(S_N), V(S_R) of eqs. 26–27 and the
        difference noise map; without them the variance is uniform ``sigma²``) and masks. The mask used
        is ``new.mask | ref.mask``: ``UNUSABLE`` pixels are filled from their neighbours before
        filtering and are 0 in the outputs.
    options : ZogyOptions, default ZogyOptions()
        Flux ratio (fitted with :func:`fit_flux_ratio` when None), astrometric noise, back end,
        differential background, PSF-model error, renormalisation (:class:`ZogyOptions`).
    sanitised : tuple, optional
        What :func:`~astrid_assets.science.subtraction.image_pair.sanitise_pair` returned for this pair, when the
        caller has it (:func:`~astrid_assets.science.subtraction.tiles.zogy_field` fills once for all passes).

    Returns
    -------
    ZogyResult
        Float32 images on the input grid and the scalars of the subtraction.

    Raises
    ------
    ValueError
        Images of different shapes, a fitted flux ratio that is not positive and finite, or even-sided PSFs.
    FluxRatioError
        When ``options.flux_ratio`` is None and cannot be fitted.
    """
    new_image, ref_image, new_var, ref_var, bad, out_mask = sanitised or sanitise_pair(
        new.image, ref.image, new.variance, ref.variance, pair_mask(new, ref))
    new, ref = with_noise_correlation(new, ref, options, bad)
    if options.flux_ratio is None:
        stars = options.flux_ratio_stars
        fit = fit_flux_ratio(
            new_image,
            ref_image,
            new.psf,
            ref.psf,
            new.sigma**2 if new_var is None else np.where(bad, np.inf, new_var),
            ref.sigma**2 if ref_var is None else np.where(bad, np.inf, ref_var),
            mask=None,
            star_xy=stars if stars is not None else psf_star_positions(ref.psf, new.psf),
        )
        options = replace(options, flux_ratio=fit.ratio, flux_ratio_err=fit.ratio_err)
        if options.psf_error == "auto" and len(fit.varying_xy):
            # the PSF-model error is calibrated at stars that did not change (not at variables, nor at
            # transients that a reference built from later frames holds)
            eps_xy = options.psf_error_stars
            eps_xy = psf_star_positions(ref.psf, new.psf) if eps_xy is None else eps_xy
            if eps_xy is not None and len(eps_xy):
                eps_xy = np.asarray(eps_xy, dtype=np.float64).reshape(-1, 2)
                options = replace(options, psf_error_stars=eps_xy[~near_any(eps_xy, fit.varying_xy, 1.5)])
    return _zogy_sanitised(replace(new, image=new_image, variance=new_var),
                           replace(ref, image=ref_image, variance=ref_var), options, bad, out_mask)


def _psf_fwhm(psf: Any) -> float:
    """FWHM (px) of a PSFModel, PSFField or bare stamp."""
    model = getattr(psf, "constant", psf)
    return float(model.fwhm) if hasattr(model, "fwhm") else measure_fwhm(as_psf_image(model))


def with_noise_correlation(new: SubtractionImage, ref: SubtractionImage, options: ZogyOptions,
                           bad: np.ndarray | None = None) -> tuple[SubtractionImage, SubtractionImage]:
    """The pair with each image's noise correlation measured where ``options.noise_correlation`` is
    ``"measured"`` and the image carries none
    (:func:`~astrid_assets.science.subtraction.noise_power.measure_noise_correlation` on its source-free pixels,
    leaving out ``bad``, else the pair's unusable and non-finite pixels); otherwise the pair unchanged.
    """
    if options.noise_correlation != "measured" or (new.noise is not None and ref.noise is not None):
        return new, ref
    if bad is None:
        bad = unusable_pixels(pair_mask(new, ref), new.image.shape) | ~np.isfinite(new.image) | ~np.isfinite(
            ref.image)
    measured = [image if image.noise is not None else replace(image, noise=measure_noise_correlation(
        image.image, image.variance, image.sigma, bad, _psf_fwhm(image.psf))) for image in (new, ref)]
    return measured[0], measured[1]


def _zogy_sanitised(
    new: SubtractionImage,
    ref: SubtractionImage,
    options: ZogyOptions,
    bad: np.ndarray,
    out_mask: np.ndarray,
    score_std: bool = True,
) -> ZogyResult:
    """:func:`zogy` on a pair already through :func:`sanitise_pair`, with a given flux ratio.

    ``new.image``, ``ref.image`` and their variances are the filled float32 arrays, ``bad`` and
    ``out_mask`` the unusable pixels and output mask :func:`sanitise_pair` returned for them (or
    cut-outs of all six on one box, as :func:`~astrid_assets.science.subtraction.tiles.zogy_tiled`
    passes); the images' masks are not read. ``options.flux_ratio`` must be given.
    ``score_std=False`` leaves the robust standard deviation of ``S_corr`` unmeasured (``s_corr_std``
    NaN; ``renormalise`` then does nothing). The result is :func:`zogy`'s.
    """
    flux_ratio, psf_error = options.flux_ratio, options.psf_error
    if flux_ratio is None:
        raise ValueError("options.flux_ratio must be given for a sanitised pair")
    flux_ratio_err = float(options.flux_ratio_err or 0.0)
    new_sigma, ref_sigma = float(new.sigma), float(ref.sigma)
    engine = select_backend(options.backend)
    kernels = zogy_kernels(engine, as_psf_image(new.psf), as_psf_image(ref.psf), new.image.shape, new_sigma,
                            ref_sigma, float(flux_ratio), new.noise, ref.noise)
    with_parts = options.keep_parts or (psf_error is not None and psf_error != 0)
    outputs = _zogy_images(
        engine, kernels, new.image, ref.image, new.variance, ref.variance, new_sigma, ref_sigma,
        options.astrometric_sigma, flux_ratio_err / float(flux_ratio), options.background, bad, with_parts,
    )
    D, S, S_corr, d_var = (engine.to_numpy(outputs[key]) for key in ("D", "S", "S_corr", "D_var"))
    parts = ({key: engine.to_numpy(outputs[key]) for key in ("S_new", "S_ref", "V_S", "V_noise")} if with_parts
             else None)
    difference_factor = 1.0
    if options.noise_correlation == "difference":
        difference_factor = difference_noise_factor(new, ref, D, d_var, kernels.psf_d, bad)
        if abs(np.sqrt(difference_factor) - 1.0) <= DIFFERENCE_NOISE_TOLERANCE:
            difference_factor = 1.0  # the maps describe the noise within what the measurement can tell
        if difference_factor != 1.0:
            V_S, V_noise = (parts["V_S"], parts["V_noise"]) if parts else (
                engine.to_numpy(outputs["V_S"]), engine.to_numpy(outputs["V_noise"]))
            S_corr, V_S, d_var = scaled_by_noise_factor(difference_factor, S, V_S, V_noise, d_var)
            if parts:
                parts["V_S"] = V_S
    epsilon = 0.0
    if with_parts and psf_error is not None and psf_error != 0:
        if psf_error == "auto":
            star_xy = options.psf_error_stars
            if star_xy is None:
                star_xy = psf_star_positions(ref.psf, new.psf)
            epsilon = calibrate_psf_error(S, parts["V_S"], parts["S_new"], parts["S_ref"], ref.image, ref.sigma, bad,
                                          star_xy, measure_fwhm(kernels.psf_d))
        else:
            epsilon = float(psf_error)
        if epsilon > 0:
            S_corr = with_psf_error(S, parts["V_S"], parts["S_new"], parts["S_ref"], epsilon)
    for image in (D, S, S_corr):
        image[bad] = 0.0
    s_corr_std = robust_std(S_corr, ~bad) if score_std else float("nan")
    scale = s_corr_std if options.renormalise and np.isfinite(s_corr_std) and s_corr_std > 0 else 1.0
    if scale != 1.0:
        S_corr /= np.float32(scale)
    to_electrons = np.float32(flux_ratio / kernels.f_d)
    return ZogyResult(
        D=D,
        S=S,
        S_corr=S_corr,
        difference=D * to_electrons,
        difference_var=d_var * to_electrons**2,
        P_D=kernels.psf_d.astype(np.float32),
        F_D=kernels.f_d,
        F_S=kernels.f_s,
        flux_ratio=float(flux_ratio),
        flux_ratio_err=flux_ratio_err,
        psf_fwhm=measure_fwhm(kernels.psf_d),
        s_corr_std=s_corr_std,
        s_corr_scale=float(scale),
        mask=out_mask,
        backend=engine.name,
        psf_error=float(epsilon),
        parts=parts if options.keep_parts else None,
        noise_correlation="difference" if options.noise_correlation == "difference" else correlation_method(
            new.noise, ref.noise),
        noise_factors=(float(kernels.factors[0]), float(kernels.factors[1])),
        s_corr_norm=float(kernels.s_corr_norm * np.sqrt(difference_factor)),
    )


def difference_noise_factor(new: SubtractionImage, ref: SubtractionImage, D: np.ndarray, D_var: np.ndarray,
                            psf_d: np.ndarray, bad: np.ndarray) -> float:
    """The variance factor ``c`` of ``S`` from the noise correlation of ``D`` on pixels away from the sources of
    either input (:func:`~astrid_assets.science.subtraction.noise_power.difference_noise`)."""
    inputs = tuple((image.image, image.variance, image.sigma, _psf_fwhm(image.psf)) for image in (new, ref))
    _, factor = difference_noise(D, D_var, psf_d, ~bad, inputs, measure_fwhm(psf_d))
    return factor


def scaled_by_noise_factor(factor: float, S: np.ndarray, V_S: np.ndarray, V_noise: np.ndarray,
                           D_var: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The matched filter's measured noise: ``S_corr = S / sqrt(V_S + (c − 1) V_noise)``, that variance, and
    ``c · var(D)``.

    Only the noise part of the variance of ``S`` (``V_noise``, from the variance maps, eqs. 26–27) is what the
    measured correlation ``c`` widens; the registration (eqs. 30–33) and flux-ratio terms are errors of the
    subtraction, not noise, and stay as they are (scaled with the rest, they hid a transient on a drizzled galaxy's
    core at S_corr 4.4 for an S/N of 11). ``var(D)`` becomes the per-pixel noise that a PSF-matched measurement on
    ``D`` integrates, the convention of :mod:`~astrid_assets.science.astrometry.register`'s variance maps.
    """
    V_S = np.clip(V_S + np.float32(factor - 1.0) * V_noise, 1e-30, None).astype(np.float32)
    return (S / np.sqrt(V_S)).astype(np.float32), V_S, D_var * np.float32(factor)



def _zogy_images(
    engine: NumpyBackend | TorchBackend,
    kernels: ZogyKernels,
    new: np.ndarray,
    ref: np.ndarray,
    new_var: np.ndarray | None,
    ref_var: np.ndarray | None,
    new_sigma: float,
    ref_sigma: float,
    astrometric_sigma: tuple[float, float],
    relative_ratio_err: float = 0.0,
    background: str = "none",
    bad: np.ndarray | None = None,
    keep_parts: bool = False,
) -> dict[str, Any]:
    """D, S, S_corr and var(D) on the chosen backend (see :func:`zogy`)."""
    shape = new.shape
    new_hat = engine.rfft2(engine.asarray(new))
    ref_hat = engine.rfft2(engine.asarray(ref))
    D = engine.irfft2(kernels.d_new * new_hat - kernels.d_ref * ref_hat, shape)  # eq. 13
    sigma_x, sigma_y = (float(s) for s in astrometric_sigma)
    astrometric = sigma_x > 0 or sigma_y > 0
    if astrometric or relative_ratio_err > 0 or keep_parts:
        S_new = engine.irfft2(kernels.s_new * new_hat, shape)
        S_ref = engine.irfft2(kernels.s_ref * ref_hat, shape)
        S = S_new - S_ref
    else:
        S = engine.irfft2(kernels.s_new * new_hat - kernels.s_ref * ref_hat, shape)  # eq. 12
    del new_hat, ref_hat
    if new_var is not None or ref_var is not None:
        new_var_hat = engine.rfft2(
            engine.asarray(new_sigma**2 * np.ones(shape, np.float32) if new_var is None else new_var)
        )
        ref_var_hat = engine.rfft2(
            engine.asarray(ref_sigma**2 * np.ones(shape, np.float32) if ref_var is None else ref_var)
        )
        # correlated noise: each map term times c(k), the variance its kernel sees over independent pixels
        scaled = [kernel * np.sqrt(factor) for kernel, factor in zip(
            (kernels.k_new, kernels.k_ref, kernels.kd_new, kernels.kd_ref), kernels.factors, strict=True)]
        V_S = filtered_variance(engine, new_var_hat, ref_var_hat, scaled[0], scaled[1], shape)
        D_var = filtered_variance(engine, new_var_hat, ref_var_hat, scaled[2], scaled[3], shape)
        del new_var_hat, ref_var_hat
    else:  # uniform noise: the variances are constants (eqs. 26-27 with V(ε) = σ², times c(k))
        c_n, c_r, c_dn, c_dr = kernels.factors
        V_S = (c_n * new_sigma**2 * float((kernels.k_new**2).sum())
               + c_r * ref_sigma**2 * float((kernels.k_ref**2).sum()))
        D_var = (c_dn * new_sigma**2 * float((kernels.kd_new**2).sum())
                 + c_dr * ref_sigma**2 * float((kernels.kd_ref**2).sum()))
        V_S = engine.asarray(np.full(shape, V_S, np.float32))
        D_var = engine.asarray(np.full(shape, D_var, np.float32))
    V_noise = V_S  # the variance maps' part: what correlated noise widens (scaled_by_noise_factor)
    if astrometric:  # eqs. 30-33
        grad_new_y, grad_new_x = engine.gradient(S_new)
        grad_ref_y, grad_ref_x = engine.gradient(S_ref)
        V_S = V_S + sigma_x**2 * (grad_new_x**2 + grad_ref_x**2) + sigma_y**2 * (grad_new_y**2 + grad_ref_y**2)
    if relative_ratio_err > 0:  # an error in F_n / F_r scales the reference's part of S
        V_S = V_S + relative_ratio_err**2 * S_ref**2
    floor = 1e-12 * float(kernels.f_d) ** 2
    V_S = V_S.clip(min=floor)
    sigma_S = engine.sqrt(V_S)
    S_corr = S / sigma_S  # eq. 25
    D_var = D_var.clip(min=0)
    for _ in range(2 if background != "none" else 0):  # twice: the first fit's offset biases which pixels are clean
        plane = background_plane(engine.to_numpy(D), engine.to_numpy(D_var), engine.to_numpy(S_corr), bad,
                                 background)
        if plane is None:
            break
        plane = engine.asarray(plane)
        D = D - plane
        S = S - float(kernels.f_d) * plane
        S_corr = S / sigma_S
    outputs = {"D": D, "S": S, "S_corr": S_corr, "D_var": D_var, "V_S": V_S, "V_noise": V_noise}
    if keep_parts:
        outputs.update(S_new=S_new, S_ref=S_ref)
    return outputs
