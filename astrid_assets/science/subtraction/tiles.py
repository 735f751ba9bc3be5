"""ZOGY on overlapping tiles for frames whose PSF varies over the field.

The frame is covered by an ``n × n`` grid of nodes (the corners and ``n − 2`` interior lines
of each axis, equally spaced). Node ``(i, j)`` owns the bilinear "tent" weight
``w_i(x) w_j(y)`` with ``w_i(x) = max(0, 1 − |x − c_i| / h)`` (``c_i`` the node, ``h`` the node
spacing): the weights of all nodes sum to 1 at every pixel. Each node's region (the support of
its tent plus an FFT margin) is differenced with :func:`~astrid_assets.science.subtraction.zogy.zogy` using the PSFs of
both images evaluated at the node; the outputs (``D``, ``S``, ``S_N``, ``S_R``, the variance of ``S``,
the difference in e- and its variance) are blended with the tent weights, so the result is
continuous and equals a constant-PSF ZOGY where the PSFs do not vary. ``S_corr`` is formed from
the blended ``S`` and its blended variance (plus the PSF-error term, :mod:`~astrid_assets.science.psf.field`). The
difference PSF ``P_D`` of each node is kept: a candidate's PSF photometry uses their tent blend
at its position (:func:`blend_stamps`). ZTF runs ZOGY on sub-image tiles in the same spirit
(Masci et al. 2019, PASP 131, 018003).

Conventions: each image a :class:`~astrid_assets.science.subtraction.inputs.SubtractionImage` whose ``psf`` is a
:class:`~astrid_assets.science.psf.field.PSFField`, background-subtracted, e-, ``[y, x]`` 0-based; PSF stamps odd,
unit sum, centred on the central pixel; ``flux_ratio`` is ``F_n / F_r``
(:mod:`~astrid_assets.science.subtraction.zogy`); the knobs a
:class:`~astrid_assets.science.subtraction.inputs.ZogyOptions`.

References
----------
* Zackay, Ofek & Gal-Yam 2016, ApJ 830, 27 (ZOGY).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import sep

from astrid_assets.science.photometry.flux_ratio import FluxRatioError, clipped_ratio_mean, star_flux_ratios
from astrid_assets.science.psf.field import PSFField, calibrate_psf_error, with_psf_error
from astrid_assets.science.psf.model import as_psf_image, measure_fwhm
from astrid_assets.science.sources import star_catalogue, unusable_pixels
from astrid_assets.science.subtraction.at_stars import node_kernels, psf_error_at_stars
from astrid_assets.science.subtraction.image_pair import robust_std, sanitise_pair
from astrid_assets.science.subtraction.inputs import SubtractionImage, ZogyOptions, pair_mask
from astrid_assets.science.subtraction.noise_power import correlation_method
from astrid_assets.science.subtraction.zogy import (
    ZogyResult,
    _zogy_sanitised,
    difference_noise_factor,
    scaled_by_noise_factor,
    with_noise_correlation,
    zogy,
)

__all__ = ["tile_nodes", "tent_weights", "blend_stamps", "zogy_tiled", "aperture_flux_ratio", "zogy_field",
           "estimated_psf_errors"]

#: Nodes per axis and the FFT margin around each tent's support, px.
N_TILES, MARGIN = 5, 40


def tile_nodes(length: int, n_tiles: int = N_TILES) -> np.ndarray:
    """Node coordinates along one axis, px: ``n_tiles`` equally spaced from 0 to ``length − 1``."""
    return np.linspace(0.0, float(length - 1), int(n_tiles))


def tent_weights(coord: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """``(len(nodes), len(coord))`` tent weights ``max(0, 1 − |coord − c_i| / h)``; they sum to 1."""
    coord = np.atleast_1d(np.asarray(coord, dtype=np.float64))
    spacing = float(nodes[1] - nodes[0]) if nodes.size > 1 else np.inf
    coord = np.clip(coord, nodes[0], nodes[-1])
    return np.clip(1.0 - np.abs(coord[None, :] - nodes[:, None]) / spacing, 0.0, None)


def blend_stamps(stamps: np.ndarray, x: float, y: float, shape: tuple[int, int]) -> np.ndarray:
    """Tent blend at ``(x, y)`` px of per-node stamps ``(n_y, n_x, s, s)`` on a frame of ``shape``.

    Returns the unit-sum ``(s, s)`` stamp; a 2-d ``stamps`` is returned as it is.
    """
    stamps = np.asarray(stamps)
    if stamps.ndim == 2:
        return stamps
    wy = tent_weights([y], tile_nodes(shape[0], stamps.shape[0]))[:, 0]
    wx = tent_weights([x], tile_nodes(shape[1], stamps.shape[1]))[:, 0]
    stamp = np.einsum("j,i,jikl->kl", wy, wx, stamps.astype(np.float64))
    return stamp / stamp.sum()


def _tile_span(centre: float, step: float, margin: int, length: int) -> tuple[int, int]:
    """``(start, stop)`` px of a node's tile along one axis: the tent's support ``centre ± step`` plus
    ``margin``, clipped to the frame."""
    return max(0, int(np.floor(centre - step)) - margin), min(length, int(np.ceil(centre + step)) + margin + 1)


def _node_stamps(psf: PSFField, shape: tuple[int, int], n_tiles: int) -> np.ndarray:
    """``(n_tiles, n_tiles, s, s)`` PSF stamps of a field at the tile nodes (``[j, i]`` at ``(x_i, y_j)``;
    :meth:`~astrid_assets.science.psf.field.PSFField.at_grid`, kept with the field)."""
    return psf.at_grid(tile_nodes(shape[1], n_tiles), tile_nodes(shape[0], n_tiles))


def zogy_tiled(
    new: SubtractionImage,
    ref: SubtractionImage,
    options: ZogyOptions,
    *,
    n_tiles: int = N_TILES,
    margin: int = MARGIN,
    sanitised: tuple | None = None,
) -> ZogyResult:
    """ZOGY with PSFs that vary over the frame: :func:`~astrid_assets.science.subtraction.zogy.zogy` on tent-weighted
    tiles, blended.

    With ``options.noise_correlation="measured"`` the images' noise correlations are measured once for the frame
    (:func:`~astrid_assets.science.subtraction.zogy.with_noise_correlation`) and every tile uses them.
    Unusable and non-finite pixels are filled once for the whole frame
    (:func:`~astrid_assets.science.subtraction.image_pair.sanitise_pair`, as a single ZOGY pass fills them)
    and each tile is cut from the filled images, so every tile sees the same values there.

    Parameters
    ----------
    new, ref : SubtractionImage
        The pair on one grid (as for :func:`~astrid_assets.science.subtraction.zogy.zogy`; mask
        ``new.mask | ref.mask``), each ``psf`` a :class:`~astrid_assets.science.psf.field.PSFField`
        evaluated at the tile nodes.
    options : ZogyOptions
        As for :func:`~astrid_assets.science.subtraction.zogy.zogy`, with ``flux_ratio`` given (one for
        all tiles: :func:`zogy_field` fits it once for the frame). ``psf_error="auto"`` calibrates ``ε``
        on the blended images at ``psf_error_stars`` (or SEP detections on ``ref``); ``renormalise``
        divides the blended ``S_corr`` by its robust standard deviation.
    n_tiles : int, default 5
        Nodes per axis (at least 2).
    margin : int, default 40
        Pixels added around each tent's support before the FFTs (more than the kernel half-size).
    sanitised : tuple, optional
        What :func:`~astrid_assets.science.subtraction.image_pair.sanitise_pair` returned for this pair, when
        the caller has it.

    Returns
    -------
    ZogyResult
        Blended images; ``P_D`` and ``psf_fwhm`` are the central node's, ``F_S`` their median;
        ``parts["P_D_tiles"]`` holds the ``(n, n, s, s)`` per-node difference PSFs (and, with
        ``keep_parts``, the blended ``S_new``, ``S_ref``, ``V_S``).

    Raises
    ------
    ValueError
        ``options.flux_ratio`` is None.
    """
    if options.flux_ratio is None:
        raise ValueError("zogy_tiled needs options.flux_ratio (zogy_field fits it)")
    shape = new.image.shape
    nodes_y, nodes_x = tile_nodes(shape[0], n_tiles), tile_nodes(shape[1], n_tiles)
    step_y, step_x = float(nodes_y[1] - nodes_y[0]), float(nodes_x[1] - nodes_x[0])
    weight_y = tent_weights(np.arange(shape[0]), nodes_y)
    weight_x = tent_weights(np.arange(shape[1]), nodes_x)
    keys = ("D", "S", "difference", "difference_var", "S_new", "S_ref", "V_S", "V_noise")
    sums = {key: np.zeros(shape, np.float32) for key in keys}
    filled_new, filled_ref, filled_new_var, filled_ref_var, bad, out_mask = sanitised or sanitise_pair(
        new.image, ref.image, new.variance, ref.variance, pair_mask(new, ref))
    new, ref = with_noise_correlation(new, ref, options, bad)  # once for the frame: every tile uses it
    new_stamps, ref_stamps = (_node_stamps(image.psf, shape, n_tiles) for image in (new, ref))
    # the difference's noise is measured once, on the blended frame
    tile_options = replace(options, psf_error=None, keep_parts=True, noise_correlation=(
        "white" if options.noise_correlation == "difference" else options.noise_correlation))
    psf_d, f_s, centre = [], [], None
    for j, cy in enumerate(nodes_y):
        y0, y1 = _tile_span(cy, step_y, margin, shape[0])
        row = []
        for i, cx in enumerate(nodes_x):
            x0, x1 = _tile_span(cx, step_x, margin, shape[1])
            box = (slice(y0, y1), slice(x0, x1))
            result = _zogy_sanitised(
                replace(new, image=filled_new[box], psf=new_stamps[j, i], mask=None,
                        variance=None if filled_new_var is None else filled_new_var[box]),
                replace(ref, image=filled_ref[box], psf=ref_stamps[j, i], mask=None,
                        variance=None if filled_ref_var is None else filled_ref_var[box]),
                tile_options, bad[box], out_mask[box], score_std=False,
            )
            weight = (weight_y[j, y0:y1, None] * weight_x[i, None, x0:x1]).astype(np.float32)
            images = {"D": result.D, "S": result.S, "difference": result.difference,
                      "difference_var": result.difference_var, **result.parts}
            for key in keys:
                sums[key][box] += weight * images[key]
            row.append(result.P_D)
            f_s.append(result.F_S)
            if j * n_tiles + i == n_tiles**2 // 2:  # the central node (odd n_tiles)
                centre = result
        psf_d.append(row)
    difference_factor = 1.0
    if options.noise_correlation == "difference":
        blended_psf = blend_stamps(np.asarray(psf_d), (shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0, shape)
        difference_factor = difference_noise_factor(
            new, ref, sums["difference"], sums["difference_var"], blended_psf, bad)
        if difference_factor != 1.0:
            _, sums["V_S"], sums["difference_var"] = scaled_by_noise_factor(
                difference_factor, sums["S"], sums["V_S"], sums["V_noise"], sums["difference_var"])
    epsilon = 0.0
    if options.psf_error == "auto":
        epsilon = calibrate_psf_error(sums["S"], sums["V_S"], sums["S_new"], sums["S_ref"], ref.image, ref.sigma, bad,
                                      options.psf_error_stars, centre.psf_fwhm)
    elif options.psf_error:
        epsilon = float(options.psf_error)
    S_corr = with_psf_error(sums["S"], sums["V_S"], sums["S_new"], sums["S_ref"], epsilon)
    S_corr[bad] = 0.0
    s_corr_std = robust_std(S_corr, ~bad)
    scale = s_corr_std if options.renormalise and np.isfinite(s_corr_std) and s_corr_std > 0 else 1.0
    if scale != 1.0:
        S_corr /= np.float32(scale)
    parts = {"P_D_tiles": np.asarray(psf_d, dtype=np.float32)}
    if options.keep_parts:
        parts.update({key: sums[key] for key in ("S_new", "S_ref", "V_S", "V_noise")})
    return ZogyResult(
        D=sums["D"], S=sums["S"], S_corr=S_corr, difference=sums["difference"],
        difference_var=sums["difference_var"], P_D=centre.P_D, F_D=centre.F_D, F_S=float(np.median(f_s)),
        flux_ratio=float(options.flux_ratio), flux_ratio_err=float(options.flux_ratio_err or 0.0),
        psf_fwhm=measure_fwhm(centre.P_D), s_corr_std=s_corr_std, s_corr_scale=float(scale), mask=out_mask,
        backend=centre.backend, psf_error=float(epsilon), parts=parts,
        noise_correlation="difference" if options.noise_correlation == "difference" else correlation_method(
            new.noise, ref.noise), noise_factors=centre.noise_factors,
        s_corr_norm=float(centre.s_corr_norm * np.sqrt(difference_factor)),
    )


def aperture_flux_ratio(
    new: np.ndarray,
    ref: np.ndarray,
    new_var: np.ndarray | float,
    ref_var: np.ndarray | float,
    star_xy: np.ndarray,
    radius: float,
    mask: np.ndarray | None = None,
    min_snr: float = 20.0,
    clip: float = 3.0,
) -> tuple[float, float, int]:
    """``F_n / F_r`` from large-aperture photometry of the same stars in both images.

    A circle of ``radius`` px (several FWHM) holds nearly all of a star's light whatever the
    PSF, so the ratio does not depend on PSF models that vary over the frame. Stars with S/N ≥
    ``min_snr`` in both images and no unusable pixel in the aperture enter an iteratively
    ``clip``-σ clipped, inverse-variance weighted mean (σ: each star's error plus, in quadrature,
    the scatter beyond the errors), started from the median; variable stars and transients drop out.

    Returns
    -------
    ratio, ratio_err : float
        ``F_n / F_r`` and its 1σ error (scaled by ``sqrt(χ²/(n−1))`` when above 1).
    n_stars : int
        Stars kept.

    Raises
    ------
    FluxRatioError
        Fewer than 3 stars pass the S/N cut.
    """
    bad = unusable_pixels(mask, new.shape)
    x, y = np.asarray(star_xy, float)[:, 0], np.asarray(star_xy, float)[:, 1]
    inside = (x > radius) & (y > radius) & (x < new.shape[1] - 1 - radius) & (y < new.shape[0] - 1 - radius)
    x, y = x[inside], y[inside]
    measured = []
    for image, variance in ((new, new_var), (ref, ref_var)):
        variance = np.array(np.broadcast_to(np.asarray(variance, np.float32), image.shape), order="C")
        flux, error, flags = sep.sum_circle(np.ascontiguousarray(image, dtype=np.float32), x, y, radius,
                                            var=variance, mask=bad)
        measured.append((flux, np.where((flags & sep.APER_HASMASKED) == 0, error, np.inf)))
    (f_new, e_new), (f_ref, e_ref) = measured
    ratio, error, good = star_flux_ratios(f_new, e_new, f_ref, e_ref, min_snr)
    if good.sum() < 3:
        raise FluxRatioError(f"only {int(good.sum())} stars with S/N >= {min_snr:g} in both images' apertures")
    return clipped_ratio_mean(ratio, error, good, clip)


def zogy_field(new: SubtractionImage, ref: SubtractionImage, options: ZogyOptions = ZogyOptions()) -> ZogyResult:
    """ZOGY with each image's :class:`~astrid_assets.science.psf.field.PSFField`: one pass, or tiles where a PSF varies.

    When neither PSF varies this is :func:`~astrid_assets.science.subtraction.zogy.zogy` with the frame
    PSFs (the flux ratio fitted by PSF photometry of ``options.flux_ratio_stars`` when None). Otherwise
    the flux ratio is fitted once from large-aperture photometry (:func:`aperture_flux_ratio`, radius 3 ×
    the largest FWHM) and :func:`zogy_tiled` differences the frame with the PSFs at each node. The
    PSF-model error is calibrated at ``options.psf_error_stars``, else the fields' stars (the
    reference's first), else SEP detections on ``ref`` when neither has 3. With
    ``psf_error="auto"`` the tiled result is kept only when its
    calibrated PSF-model error ε is below the one-pass result's: the model that leaves less at the
    stars wins, and a tie keeps the frame PSFs. Both ε are first estimated at the stars alone
    (:func:`estimated_psf_errors`), and the tiles are not run where the estimate already says they lose
    (on the real ESO 085-030 pair, whose FWHM changes by 26 % over the frame in both images, the tiles'
    PSFs leave ε 0.044 against the one pass's 0.040, estimated 0.027 against 0.019: the estimate costs
    a quarter of the tiles). The result's ``varying_psf`` says which was done.

    Parameters
    ----------
    new, ref : SubtractionImage
        The pair on one grid, each ``psf`` a :class:`~astrid_assets.science.psf.field.PSFField` (mask
        ``new.mask | ref.mask``; otherwise as for :func:`~astrid_assets.science.subtraction.zogy.zogy`).
    options : ZogyOptions, default ZogyOptions()
        The knobs of both passes (:class:`~astrid_assets.science.subtraction.inputs.ZogyOptions`); the
        pipeline sets ``psf_error="auto"``.

    Returns
    -------
    ZogyResult
        The one pass's result, or the tiled one (``varying_psf`` True, ``parts["P_D_tiles"]``).
    """
    new_field, ref_field = new.psf, ref.psf
    star_xy = options.psf_error_stars
    if star_xy is None:
        star_xy = next((f.star_xy for f in (ref_field, new_field) if len(f.star_xy) >= 3), None)
    if star_xy is None:
        star_xy = star_catalogue(ref.image, 0.0, ref.sigma, pair_mask(new, ref), n=300)[:, :2]
    options = replace(options, psf_error_stars=star_xy)
    # filled and noise-measured once, for the one pass and the tiles
    sanitised = sanitise_pair(new.image, ref.image, new.variance, ref.variance, pair_mask(new, ref))
    new, ref = with_noise_correlation(new, ref, options, sanitised[4])
    one_pass = zogy(replace(new, psf=new_field.constant), replace(ref, psf=ref_field.constant), options, sanitised)
    if not (new_field.varies or ref_field.varies):
        return one_pass
    if options.flux_ratio is None:
        widths = [f.fwhm_plane[0] + 0.5 * f.fwhm_range for f in (new_field, ref_field)]
        try:
            ratio, ratio_err, _ = aperture_flux_ratio(
                new.image, ref.image, new.sigma**2 if new.variance is None else new.variance,
                ref.sigma**2 if ref.variance is None else ref.variance, star_xy, 3.0 * max(widths),
                pair_mask(new, ref))
        except FluxRatioError:
            return one_pass  # too few bright stars for the tiles' aperture ratio: the frame PSFs' pass stands
        options = replace(options, flux_ratio=ratio, flux_ratio_err=ratio_err)
    if options.psf_error == "auto":
        eps_one, eps_tiles = estimated_psf_errors(new, ref, options, one_pass, sanitised)
        if eps_one is not None and eps_tiles is not None and eps_tiles >= eps_one:
            return one_pass  # estimated at the stars, the tiles' PSF models would leave no less error there
    result = zogy_tiled(new, ref, options, sanitised=sanitised)
    if options.psf_error == "auto" and result.psf_error >= one_pass.psf_error:
        return one_pass  # the tiles' PSF models leave no less error at the stars than the frame PSFs
    return replace(result, varying_psf=True)


def estimated_psf_errors(new: SubtractionImage, ref: SubtractionImage, options: ZogyOptions, one_pass: ZogyResult,
                         sanitised: tuple, n_tiles: int = N_TILES) -> tuple[float | None, float | None]:
    """``(ε_one_pass, ε_tiles)`` estimated at the stars alone (:mod:`~astrid_assets.science.subtraction.at_stars`)
    for the one pass with the frame PSFs (``one_pass``'s flux ratio) and for the tiles (``options.flux_ratio``),
    at ``options.psf_error_stars``; the tiles at the stars bright enough to count in the first. None where
    fewer than 3 stars can be measured."""
    filled_new, filled_ref, new_var, ref_var, bad, _ = sanitised
    shape = new.image.shape
    new_var = np.full(shape, new.sigma**2, np.float32) if new_var is None else new_var
    ref_var = np.full(shape, ref.sigma**2, np.float32) if ref_var is None else ref_var
    common = (shape, float(new.sigma), float(ref.sigma))
    one = node_kernels(as_psf_image(new.psf.constant), as_psf_image(ref.psf.constant), *common,
                       one_pass.flux_ratio, new.noise, ref.noise)
    new_stamps, ref_stamps = (_node_stamps(image.psf, shape, n_tiles) for image in (new, ref))
    tiles = [[node_kernels(new_stamps[j, i], ref_stamps[j, i], *common, float(options.flux_ratio), new.noise,
                           ref.noise) for i in range(n_tiles)] for j in range(n_tiles)]
    images = (filled_new, filled_ref, new_var, ref_var, bad)
    one_pass_error = psf_error_at_stars(
        *images, options.psf_error_stars, [[one]], (np.array([(shape[0] - 1) / 2]), np.array([(shape[1] - 1) / 2])),
        options.astrometric_sigma, one_pass.flux_ratio_err / one_pass.flux_ratio)
    if one_pass_error is None or len(one_pass_error[1]) < 3:
        return None, None
    eps_one, bright = one_pass_error  # the tiles are estimated at the stars bright enough to count
    tiles_error = psf_error_at_stars(*images, bright, tiles, (tile_nodes(shape[0], n_tiles),
                                                                 tile_nodes(shape[1], n_tiles)),
                                     options.astrometric_sigma,
                                     float(options.flux_ratio_err or 0.0) / float(options.flux_ratio))
    return eps_one, None if tiles_error is None else tiles_error[0]
