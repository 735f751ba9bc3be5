"""A PSF that varies over the frame, and the PSF-model error in the ZOGY score.

Spatial model (:func:`estimate_psf_field`, :class:`PSFField`): a weighted plane of per-star FWHM
in ``(x, y)`` says whether the PSF varies (by :data:`VARY_FRACTION` of the FWHM or more over the
frame, at :data:`VARY_SIGNIFICANCE` σ). Only then is each pixel of the flux-normalised,
sub-pixel-centred star stamps fitted with a polynomial in ``(x, y)`` (degree 2 by default), as
PSFEx does (Bertin 2011, ASPC 442, 435); elsewhere the frame PSF of
:func:`~astrid_assets.science.psf.empirical.estimate_psf`
is used unchanged. On a 512² frame whose FWHM runs from 3 to 4.5 px the model is within 0.4–4 %
of the true PSF's peak at the tile nodes, and the FWHM plane's slope comes out 1.48–1.51 px per
frame width (true 1.5).

PSF-model error: a PSF model that is wrong by a fraction ``ε`` leaves, at a source present in
both images, a residual in ``S = S_N − S_R`` (Zackay, Ofek & Gal-Yam 2016, ApJ 830, 27, eq. 12)
of about ``ε S_N``; it is zero for a new source (``S_R ≈ 0``) and for a vanished one
(``S_N ≈ 0``). As the paper does for registration noise (``V_ast``, eqs. 30–31), the term
``V_psf = ε² max(S_N S_R, 0)`` joins the variance of ``S`` (:func:`with_psf_error`), and ``ε`` is
calibrated on the data: at bright stars in both images ``S_corr`` should have unit variance
(:func:`calibrate_psf_error`). With a constant PSF on that varying frame ``ε`` comes out 0.065
and the false candidates at stars drop from 101 to 1; with good models it is 0–0.002.

Conventions: images ``[y, x]``, 0-based; e- for images, px for positions and widths; ``S``,
``S_N``, ``S_R`` in the units of ZOGY's ``S`` and ``V_S`` in their square; star positions ``(x, y)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from astrid_assets.science.psf.analytic import estimate_frame_psf
from astrid_assets.science.psf.empirical import (
    _model_variance,
    _moffat_wings_many,
    _radius_grid,
    _recentre,
)
from astrid_assets.science.psf.model import PSFModel, as_psf_image, measure_fwhm
from astrid_assets.science.psf.profile_fit import fit_moffats
from astrid_assets.science.psf.stars import cut_centred_stamps, select_psf_stars, shape_cut
from astrid_assets.science.sources import Sources, star_catalogue

__all__ = [
    "CALIBRATION_MIN_RATIO",
    "with_psf_error",
    "calibrate_psf_error",
    "psf_error_disc",
    "star_psf_error_ratio",
    "psf_error_from_ratios",
    "MAX_FIELD_STARS",
    "PSFField",
    "estimate_psf_field",
]

#: Bright stars for the calibration: peak ``S_N S_R`` at least this many times ``V(S)``.
CALIBRATION_MIN_RATIO = 100.0


def with_psf_error(
    S: np.ndarray, V_S: np.ndarray, S_new: np.ndarray, S_ref: np.ndarray, epsilon: float
) -> np.ndarray:
    """``S_corr = S / sqrt(V_S + ε² max(S_N S_R, 0))`` (float32).

    Parameters
    ----------
    S, V_S : numpy.ndarray
        ZOGY's ``S`` (eq. 12) and its variance without the PSF-error term (eqs. 25–33).
    S_new, S_ref : numpy.ndarray
        Its new-image and reference parts, ``S = S_N − S_R``.
    epsilon : float
        Relative PSF-model error ``ε`` (dimensionless, ≥ 0).

    Returns
    -------
    numpy.ndarray
        ``S_corr``, float32.
    """
    variance = np.asarray(V_S, dtype=np.float32)
    if epsilon > 0:
        variance = variance + np.float32(epsilon**2) * np.clip(S_new * S_ref, 0.0, None)
    return (S / np.sqrt(variance)).astype(np.float32)


def calibrate_psf_error(
    S: np.ndarray,
    V_S: np.ndarray,
    S_new: np.ndarray,
    S_ref: np.ndarray,
    ref: np.ndarray,
    ref_sigma: float,
    bad: np.ndarray | None,
    star_xy: np.ndarray | None,
    fwhm: float,
    min_ratio: float = CALIBRATION_MIN_RATIO,
) -> float:
    """The PSF-model error ``ε`` that gives ``S_corr`` unit variance at bright stars in both images.

    Around each star (pixels within ``2 × fwhm`` where ``S_N S_R > 0``) the excess of ``S²`` over
    its variance ``V_S`` is compared with ``S_N S_R``: ``ε_k² = Σ (S² − V_S) / Σ S_N S_R``. Only
    stars whose peak ``S_N S_R`` exceeds ``min_ratio × V_S`` (bright, where the term is
    measurable) count; ``ε²`` is the median of ``ε_k²`` over them (robust against variable stars
    and transients on stars), clipped at 0. With exact PSFs ``ε`` comes out 0 or a few 1e-3.

    Parameters
    ----------
    S, V_S, S_new, S_ref : numpy.ndarray
        ZOGY's ``S`` (background removed), its variance and its two parts (:func:`with_psf_error`).
    ref : numpy.ndarray
        Background-subtracted reference, e- (stars are found on it when ``star_xy`` is None).
    ref_sigma : float
        Its noise per pixel, e-.
    bad : numpy.ndarray or None
        Unusable pixels (left out).
    star_xy : numpy.ndarray or None
        ``(n, 2)`` star positions ``(x, y)``, px; None: SEP detections on ``ref``.
    fwhm : float
        FWHM of the difference PSF, px.
    min_ratio : float, default 100
        Brightness cut (above).

    Returns
    -------
    float
        ``ε ≥ 0`` (0 when fewer than 3 bright stars).
    """
    if star_xy is None or len(star_xy) < 3:
        star_xy = star_catalogue(ref, 0.0, ref_sigma, None, n=300)[:, :2]
    star_xy = np.asarray(star_xy, dtype=np.float64).reshape(-1, 2)
    ny, nx = S.shape
    half, disc = psf_error_disc(fwhm)
    ratios = []
    for x, y in star_xy:
        ic, jc = int(np.rint(x)), int(np.rint(y))
        if ic < half or jc < half or ic >= nx - half or jc >= ny - half:
            continue
        box = (slice(jc - half, jc + half + 1), slice(ic - half, ic + half + 1))
        ratio = star_psf_error_ratio(S[box], V_S[box], S_new[box], S_ref[box], None if bad is None else bad[box],
                                     disc, min_ratio)
        if ratio is not None:
            ratios.append(ratio)
    return psf_error_from_ratios(ratios)


def psf_error_disc(fwhm: float) -> tuple[int, np.ndarray]:
    """Half-side ``h`` of the ``(2h + 1)²`` box around a star in which ``ε`` is calibrated, and the disc of
    radius ``max(2 fwhm, 3)`` px in it (:func:`calibrate_psf_error`)."""
    radius = max(2.0 * float(fwhm), 3.0)
    half = int(np.ceil(radius))
    offsets = np.arange(-half, half + 1)
    return half, np.hypot(offsets[None, :], offsets[:, None]) <= radius


def star_psf_error_ratio(S: np.ndarray, V_S: np.ndarray, S_new: np.ndarray, S_ref: np.ndarray,
                         bad: np.ndarray | None, disc: np.ndarray,
                         min_ratio: float = CALIBRATION_MIN_RATIO) -> float | None:
    """One star's ``ε_k² = Σ (S² − V_S) / Σ S_N S_R`` over its box (:func:`psf_error_disc`), where the disc has
    ``S_N S_R > 0`` and no ``bad`` pixel; None when the star is too faint (peak ``S_N S_R / V_S < min_ratio``)."""
    product = (S_new * S_ref).astype(np.float64)
    variance = V_S.astype(np.float64)
    use = disc & (product > 0)
    if bad is not None:
        use &= ~bad
    if not use.any() or np.max(product[use] / variance[use]) < min_ratio:
        return None
    excess = float(np.sum(S.astype(np.float64)[use] ** 2 - variance[use]))
    return excess / float(np.sum(product[use]))


def psf_error_from_ratios(ratios: list[float]) -> float:
    """``ε = sqrt(max(median ε_k², 0))`` over the stars' ratios (:func:`star_psf_error_ratio`); 0 for fewer than 3."""
    if len(ratios) < 3:
        return 0.0
    return float(np.sqrt(max(float(np.median(ratios)), 0.0)))


#: A frame's PSF is modelled as varying when its FWHM changes by at least this fraction over the
#: frame (corner to corner of the fitted plane) and the change is significant at ``VARY_SIGNIFICANCE`` σ.
VARY_FRACTION, VARY_SIGNIFICANCE = 0.08, 5.0
#: Most stars (the brightest isolated ones) for the FWHM plane and the spatial model.
MAX_FIELD_STARS = 150


def _significant(plane, plane_err, vary_fraction: float) -> bool:
    """Whether a FWHM plane changes by ``vary_fraction`` of its mean or more, at :data:`VARY_SIGNIFICANCE` σ."""
    change = abs(plane[1]) + abs(plane[2])
    significance = change / max(float(np.hypot(plane_err[1], plane_err[2])), 1e-12)
    return bool(change >= vary_fraction * plane[0] and significance >= VARY_SIGNIFICANCE)


@dataclass(frozen=True)
class PSFField:
    """A PSF that may vary over the frame: the frame PSF and, when it varies, a polynomial model.

    Attributes
    ----------
    constant : PSFModel
        The frame's PSF (:func:`~astrid_assets.science.psf.analytic.estimate_frame_psf`), used everywhere when
        ``varies`` is False.
    shape : tuple of int
        ``(ny, nx)`` of the frame, px.
    fwhm_plane : tuple of float
        ``(f, g_x, g_y)``: FWHM ≈ ``f + g_x u + g_y v`` px with ``u = x / (nx − 1) − ½``,
        ``v = y / (ny − 1) − ½`` (``g_x`` is the change over the frame width, px). From
        linearised stretch fits against the frame PSF (FWHM after pixelisation) when the PSF
        does not vary; from Moffat fits to the brightest stars (FWHM of the continuous profile)
        when it does.
    fwhm_plane_err : tuple of float
        1σ errors of ``fwhm_plane``, px.
    varies : bool
        Whether the spatial model is used (the FWHM changes by at least :data:`VARY_FRACTION`
        over the frame, at :data:`VARY_SIGNIFICANCE` σ).
    coefficients : numpy.ndarray or None
        ``(n_terms, size, size)`` pixel-wise polynomial coefficients in ``(u, v)`` (terms of
        :func:`_terms`), or None.
    degree : int
        Polynomial degree of ``coefficients``.
    n_stars : int
        Stars the spatial model was fitted to (0 when it was not fitted).
    star_xy : numpy.ndarray
        ``(n, 2)`` positions ``(x, y)``, px, of the isolated stars measured for the FWHM plane.
    """

    constant: PSFModel
    shape: tuple[int, int]
    fwhm_plane: tuple[float, float, float]
    fwhm_plane_err: tuple[float, float, float]
    varies: bool = False
    coefficients: np.ndarray | None = field(default=None, repr=False)
    variance: np.ndarray | None = field(default=None, repr=False)
    degree: int = 0
    n_stars: int = 0
    star_xy: np.ndarray = field(default_factory=lambda: np.empty((0, 2)), repr=False)
    _grids: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def fwhm_range(self) -> float:
        """Change of the fitted FWHM between the frame's extreme corners, px."""
        return float(abs(self.fwhm_plane[1]) + abs(self.fwhm_plane[2]))

    def at(self, x: float, y: float) -> np.ndarray:
        """Unit-sum PSF stamp at ``(x, y)`` px (float64, centroid on the central pixel)."""
        return self.at_many(np.atleast_1d(x), np.atleast_1d(y))[0]

    def at_grid(self, nodes_x: np.ndarray, nodes_y: np.ndarray) -> np.ndarray:
        """:meth:`at_many` on the grid of ``nodes_x`` × ``nodes_y`` px: ``(len(nodes_y), len(nodes_x), size, size)``
        stamps (``[j, i]`` at ``(nodes_x[i], nodes_y[j])``), computed once per grid and kept (read-only): a
        reference's tile nodes serve every frame differenced against it."""
        key = (tuple(np.round(nodes_x, 3)), tuple(np.round(nodes_y, 3)))
        if key not in self._grids:
            grid_x, grid_y = (grid.ravel() for grid in np.meshgrid(nodes_x, nodes_y))
            stamps = self.at_many(grid_x, grid_y)
            stamps = stamps.reshape(len(nodes_y), len(nodes_x), *stamps.shape[1:])
            stamps.setflags(write=False)
            self._grids[key] = stamps
        return self._grids[key]

    def at_many(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """:meth:`at` for ``n`` positions ``(x[k], y[k])``, px: ``(n, size, size)`` float64 unit-sum stamps.

        The spatial model's stamp at each position gets Moffat wings
        (:func:`~astrid_assets.science.psf.empirical._moffat_wings`, the ``n`` fits run together) and is
        re-centred on its central pixel, as :func:`~astrid_assets.science.psf.empirical.estimate_psf` does.
        """
        x, y = np.atleast_1d(np.asarray(x, dtype=np.float64)), np.atleast_1d(np.asarray(y, dtype=np.float64))
        if not self.varies or self.coefficients is None:
            return np.repeat(as_psf_image(self.constant)[None], x.size, axis=0)
        terms = _terms(*_unit_coords(x, y, self.shape), self.degree)  # (t, n)
        stamps = np.einsum("tn,tij->nij", terms, self.coefficients)
        variances = np.einsum("tn,tsij,sn->nij", terms, self.variance, terms)
        scales = stamps.sum(axis=(1, 2))[:, None, None]
        fwhms = np.array([measure_fwhm(stamp) for stamp in stamps])
        stamps = _moffat_wings_many(stamps / scales, np.clip(variances, 1e-30, None) / scales**2, fwhms, 2.0, 3.5)
        return np.stack([_recentre(stamp / stamp.sum(), radius=max(2.0 * fwhm, 3.0))
                         for stamp, fwhm in zip(stamps, fwhms, strict=True)])


def _unit_coords(x: np.ndarray, y: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(x, float) / max(shape[1] - 1, 1) - 0.5, np.asarray(y, float) / max(shape[0] - 1, 1) - 0.5


def _terms(u: np.ndarray, v: np.ndarray, degree: int) -> np.ndarray:
    """``(n_terms, n)`` monomials ``u^a v^b`` with ``a + b ≤ degree`` (1, u, v, u², uv, v², …)."""
    return np.stack([u**(d - b) * v**b for d in range(degree + 1) for b in range(d + 1)])


def _fwhm_plane(x, y, width, width_err, shape):
    """Weighted plane ``f + g_x u + g_y v`` through per-star FWHMs, errors scaled by sqrt(χ²/dof)."""
    u, v = _unit_coords(x, y, shape)
    design = np.column_stack([np.ones_like(u), u, v])
    usable = np.isfinite(width) & np.isfinite(width_err) & (width_err > 0)
    weight = np.where(usable, 1.0 / np.where(usable, width_err, 1.0), 0.0)
    width = np.where(usable, width, 0.0)
    coef = np.zeros(3)
    keep = usable
    if keep.sum() < 4:
        return (float(np.median(width[usable])) if usable.any() else np.nan, 0.0, 0.0), (np.inf, np.inf, np.inf)
    for _ in range(3):
        a, b = design[keep] * weight[keep, None], width[keep] * weight[keep]
        coef, *_ = np.linalg.lstsq(a, b, rcond=None)
        resid = (width - design @ coef) * weight
        scatter = 1.4826 * np.median(np.abs(resid[keep]))
        keep = usable & (np.abs(resid) <= 4 * max(scatter, 1.0))
    a = design[keep] * weight[keep, None]
    dof = max(int(keep.sum()) - 3, 1)
    chi2 = float(np.sum(((width[keep] - design[keep] @ coef) * weight[keep]) ** 2)) / dof
    cov = np.linalg.inv(a.T @ a) * max(chi2, 1.0)
    return tuple(float(c) for c in coef), tuple(float(e) for e in np.sqrt(np.diag(cov)))


def _star_widths(stamps, fluxes, star_rms, psf_image):
    """Per-star FWHM ``fwhm(P) (1 + b/a)`` from the linearised stretch fit of
    :func:`~astrid_assets.science.psf.empirical._shape_outliers`."""
    fwhm = measure_fwhm(psf_image)
    xx, yy, rr = _radius_grid(psf_image.shape[0])
    grad_y, grad_x = np.gradient(psf_image)
    stretch = -(2.0 * psf_image + xx * grad_x + yy * grad_y)
    core = rr <= max(2.0 * fwhm, 3.0)
    design = np.stack([psf_image[core], stretch[core], grad_x[core], grad_y[core]], axis=1)
    variance = np.maximum(_model_variance(psf_image, fluxes, star_rms)[:, core], 1e-12)
    weighted = design[None, :, :] / np.sqrt(variance)[:, :, None]
    normal = np.einsum("kpi,kpj->kij", weighted, weighted)
    rhs = np.einsum("kpi,kp->ki", weighted, stamps[:, core] / np.sqrt(variance))
    try:
        coef = np.linalg.solve(normal, rhs[:, :, None])[:, :, 0]
        cov = np.linalg.inv(normal)
    except np.linalg.LinAlgError:  # a degenerate stamp: no widths, so no spatial model
        nan = np.full(stamps.shape[0], np.nan)
        return nan, nan
    excess = coef[:, 1] / coef[:, 0]
    excess_err = np.sqrt(np.clip(cov[:, 1, 1], 0, None)) / np.abs(coef[:, 0])
    # a stretch by (1 + s) widens the FWHM by (1 + s); beyond the linear regime s is underestimated
    return fwhm * (1.0 + excess), fwhm * excess_err


def _moffat_plane(stamps, fluxes, star_rms, x, y, shape, fwhm, n_fit=60):
    """FWHM plane from Moffat fits (:func:`~astrid_assets.science.psf.profile_fit.fit_moffats`, fitted together)
    to the ``n_fit`` brightest stars.

    The linearised widths of :func:`_star_widths` shrink a change of 40 % by about a tenth; the
    profile fits do not. Each star's error is its fit's scatter about the plane. Returns
    ``(plane, plane_err)`` or None when fewer than 8 fits succeed.
    """
    order = np.argsort(-fluxes)[:n_fit]
    half = min(stamps.shape[1] // 2, int(np.ceil(2.0 * fwhm)))
    centre = stamps.shape[1] // 2
    box = (slice(centre - half, centre + half + 1),) * 2
    cut = stamps[order][:, box[0], box[1]]
    variance = star_rms[order, None, None] ** 2 + np.clip(cut, 0.0, None)
    width = np.array([fit.fwhm if fit.success and abs(fit.x - half) < 1.0 and abs(fit.y - half) < 1.0 else np.nan
                      for fit in fit_moffats(cut, variance, fwhm, oversample=3)])
    good = np.isfinite(width)
    if good.sum() < 8:
        return None
    return _fwhm_plane(x[order][good], y[order][good], width[good], np.ones(int(good.sum())), shape)


def _fit_field(stamps, fluxes, star_rms, x, y, shape, degree, start, clip=4.0, iterations=4):
    """Pixel-wise weighted polynomial fit of flux-normalised stamps in ``(u, v)`` (PSFEx-like)."""
    terms = _terms(*_unit_coords(x, y, shape), degree)  # (t, k)
    model = np.broadcast_to(start, stamps.shape).copy()
    weights = None
    for _ in range(iterations):
        fluxes = np.einsum("kij,kij->k", stamps, model) / np.einsum("kij,kij->k", model, model)
        normalised = stamps / fluxes[:, None, None]
        expected = star_rms[:, None, None] ** 2 + fluxes[:, None, None] * np.clip(model, 0, None)
        variance = expected / fluxes[:, None, None] ** 2
        kept = np.abs(normalised - model) <= clip * np.sqrt(variance)
        weights = np.where(kept, 1.0 / variance, 0.0)  # (k, i, j)
        normal = np.einsum("tk,sk,kij->ijts", terms, terms, weights)
        rhs = np.einsum("tk,kij->ijt", terms, weights * normalised)
        normal = normal + 1e-12 * np.eye(terms.shape[0])
        coefficients = np.linalg.solve(normal, rhs[..., None])[..., 0]  # (i, j, t)
        model = np.einsum("ijt,tk->kij", coefficients, terms)
        model = model / model.sum(axis=(1, 2))[:, None, None]
    covariance = np.linalg.inv(normal)  # (i, j, t, s)
    return np.moveaxis(coefficients, -1, 0), np.moveaxis(covariance, (2, 3), (0, 1)), fluxes


def estimate_psf_field(
    image: np.ndarray,
    background: np.ndarray | float,
    background_rms: np.ndarray | float,
    mask: np.ndarray | None = None,
    size: int = 25,
    *,
    min_snr: float = 15.0,
    min_stars: int = 3,
    degree: int = 2,
    vary_fraction: float = VARY_FRACTION,
    constant: PSFModel | None = None,
    force: bool = False,
    sources: Sources | None = None,
) -> PSFField:
    """The frame's PSF and, when its FWHM varies over the frame, a PSFEx-like spatial model.

    ``constant`` (or the PSF ladder, :func:`~astrid_assets.science.psf.analytic.estimate_frame_psf`, with the same
    arguments: the empirical stack, else a Moffat or Gaussian fitted to one to ten stars) is the frame PSF. The
    stars for the spatial model are selected as for it but with a half-light radius within 60 %
    of the median (a 25 % cut keeps only the stars of the frame's middle when the PSF widens
    towards an edge). Each star's FWHM comes from a linearised stretch fit against the frame PSF;
    a weighted plane in ``(x, y)`` through them says whether the PSF varies (a change of at least
    ``vary_fraction`` of the FWHM over the frame at :data:`VARY_SIGNIFICANCE` σ). Only then is
    the model fitted: each pixel of the flux-normalised, sub-pixel-centred star stamps is a
    polynomial of degree ``degree`` in ``(x, y)``, fitted with weights from the model variance
    ``σ_sky² + f P`` and per-pixel clipping, the fluxes refitted with the local model (Bertin
    2011, ASPC 442, 435, "PSFEx"). :meth:`PSFField.at` evaluates it with Moffat wings and
    re-centring as :func:`~astrid_assets.science.psf.empirical.estimate_psf` does.

    Parameters
    ----------
    image, background, background_rms, mask, size, min_snr, min_stars
        As for :func:`~astrid_assets.science.psf.empirical.estimate_psf` (image e- with sky, maps or scalars in e-).
    degree : int, default 2
        Polynomial degree of the spatial model.
    vary_fraction : float, default 0.08
        Smallest FWHM change over the frame, as a fraction of the FWHM, that is modelled.
    constant : PSFModel or None, default None
        The frame PSF if already estimated.
    force : bool, default False
        Fit the spatial model whatever the FWHM plane says (tests, diagnostics).
    sources : Sources or None, default None
        The image's extraction when already made (:class:`~astrid_assets.science.sources.Sources`
        of ``image − background``); None extracts it here.

    Returns
    -------
    PSFField

    Raises
    ------
    PSFError
        When the frame PSF cannot be estimated (``"no star: …"``: no usable star at all).
    """
    sources = sources or Sources.extract(image, background, background_rms, mask)
    frame, rms, bad, objects = sources.frame, sources.rms, sources.bad, sources.objects
    shape = frame.shape
    measured = None
    if constant is None:
        measured = select_psf_stars(frame, rms, bad, objects, size, min_snr, 0.02, MAX_FIELD_STARS)
        constant = estimate_frame_psf(image, background, background_rms, mask, size, min_snr=min_snr,
                                      min_stars=min_stars, max_stars=MAX_FIELD_STARS, objects=objects, stars=measured)
    size = constant.size
    flat = ((constant.fwhm, 0.0, 0.0), (np.inf, np.inf, np.inf))
    if measured is None:
        measured = select_psf_stars(frame, rms, bad, objects, size, min_snr, 0.02, MAX_FIELD_STARS)
    stars = shape_cut(measured, 0.6)
    x, y = stars["x"], stars["y"]
    if x.size < max(min_stars, 8):
        return PSFField(constant, shape, *flat)
    star_rms = (np.full(x.size, float(rms)) if np.ndim(rms) == 0 else
                rms[np.clip(np.rint(y).astype(int), 0, shape[0] - 1), np.clip(np.rint(x).astype(int), 0, shape[1] - 1)])
    star_rms = np.asarray(star_rms, dtype=np.float64)
    stamps = cut_centred_stamps(frame, x, y, size)
    psf_image = as_psf_image(constant)
    fluxes = np.einsum("kij,ij->k", stamps, psf_image) / (psf_image**2).sum()
    good = np.isfinite(fluxes) & (fluxes > 0)
    x, y, stamps, fluxes, star_rms = x[good], y[good], stamps[good], fluxes[good], star_rms[good]
    star_xy = np.column_stack([x, y])
    width, width_err = _star_widths(stamps, fluxes, star_rms, psf_image)
    plane, plane_err = _fwhm_plane(x, y, width, width_err, shape)
    varies = force or _significant(plane, plane_err, vary_fraction)
    if not varies or x.size < 3 * len(_terms(np.zeros(1), np.zeros(1), degree)):
        return PSFField(constant, shape, plane, plane_err, star_xy=star_xy)
    # stars far off the plane (blends, galaxies) out, then the pixel-wise polynomial fit
    u, v = _unit_coords(x, y, shape)
    predicted = plane[0] + plane[1] * u + plane[2] * v
    keep = np.abs(width - predicted) <= 4.0 * np.hypot(width_err, 0.03 * predicted)
    x, y, stamps, fluxes, star_rms = x[keep], y[keep], stamps[keep], fluxes[keep], star_rms[keep]
    plane, plane_err = _moffat_plane(stamps, fluxes, star_rms, x, y, shape, plane[0]) or (plane, plane_err)
    coefficients, covariance, _ = _fit_field(stamps, fluxes, star_rms, x, y, shape, degree, psf_image)
    return PSFField(constant, shape, plane, plane_err, True, coefficients, covariance, degree, int(x.size), star_xy)
