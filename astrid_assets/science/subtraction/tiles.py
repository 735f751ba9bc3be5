"""ZOGY on overlapping tiles for frames whose PSF varies over the field.

The frame is covered by an ``n × n`` grid of nodes (the corners and ``n − 2`` interior lines
of each axis, equally spaced). Node ``(i, j)`` owns the bilinear "tent" weight
``w_i(x) w_j(y)`` with ``w_i(x) = max(0, 1 − |x − c_i| / h)`` (``c_i`` the node, ``h`` the node
spacing): the weights of all nodes sum to 1 at every pixel. Each node's region (the support of
its tent plus an FFT margin) is differenced with :func:`~astrid_assets.science.subtraction.zogy.zogy` using the PSFs of
both
images evaluated at the node; the outputs (``D``, ``S``, ``S_N``, ``S_R``, the variance of ``S``,
the difference in e- and its variance) are blended with the tent weights, so the result is
continuous and equals a constant-PSF ZOGY where the PSFs do not vary. ``S_corr`` is formed from
the blended ``S`` and its blended variance (plus the PSF-error term, :mod:`~astrid_assets.science.psf.field`). The
difference PSF ``P_D`` of each node is kept: a candidate's PSF photometry uses their tent blend
at its position (:func:`blend_stamps`). ZTF runs ZOGY on sub-image tiles in the same spirit
(Masci et al. 2019, PASP 131, 018003).

Conventions: images background-subtracted, e-, ``[y, x]`` 0-based; PSF stamps odd, unit sum,
centred on the central pixel; ``flux_ratio`` is ``F_n / F_r`` (:mod:`~astrid_assets.science.subtraction.zogy`).

References
----------
* Zackay, Ofek & Gal-Yam 2016, ApJ 830, 27 (ZOGY).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import sep

from astrid_assets.science.photometry.flux_ratio import FluxRatioError, clipped_ratio_mean, star_flux_ratios
from astrid_assets.science.psf.field import PSFField, calibrate_psf_error, with_psf_error
from astrid_assets.science.psf.model import measure_fwhm
from astrid_assets.science.sources import star_catalogue, unusable_pixels
from astrid_assets.science.subtraction.image_pair import robust_std, sanitise_pair
from astrid_assets.science.subtraction.zogy import ZogyResult, _zogy_sanitised, zogy

__all__ = ["tile_nodes", "tent_weights", "blend_stamps", "zogy_tiled", "aperture_flux_ratio", "zogy_field"]

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


def zogy_tiled(
    new: np.ndarray,
    ref: np.ndarray,
    new_psf_at: Callable[[float, float], np.ndarray],
    ref_psf_at: Callable[[float, float], np.ndarray],
    new_sigma: float,
    ref_sigma: float,
    new_var: np.ndarray | None,
    ref_var: np.ndarray | None,
    flux_ratio: float,
    flux_ratio_err: float = 0.0,
    astrometric_sigma: tuple[float, float] = (0.0, 0.0),
    backend: str = "auto",
    *,
    mask: np.ndarray | None = None,
    background: str = "plane",
    psf_error: float | str | None = "auto",
    star_xy: np.ndarray | None = None,
    n_tiles: int = N_TILES,
    margin: int = MARGIN,
) -> ZogyResult:
    """ZOGY with PSFs that vary over the frame: :func:`~astrid_assets.science.subtraction.zogy.zogy` on tent-weighted
    tiles, blended.

    Unusable and non-finite pixels are filled once for the whole frame
    (:func:`~astrid_assets.science.subtraction.image_pair.sanitise_pair`, as a single ZOGY pass fills them)
    and each tile is cut from the filled images, so every tile sees the same values there.

    Parameters
    ----------
    new, ref : numpy.ndarray
        Background-subtracted images on one grid, e-, ``[y, x]``.
    new_psf_at, ref_psf_at : callable
        ``(x, y) -> stamp``: each image's PSF at a position (px), odd, centred, any sum.
    new_sigma, ref_sigma : float
        Background noise per pixel, e-.
    new_var, ref_var : numpy.ndarray or None
        Variance maps, e-² (:func:`~astrid_assets.science.subtraction.zogy.zogy`).
    flux_ratio, flux_ratio_err : float
        ``F_n / F_r`` and its error, shared by all tiles (fitted once for the frame).
    astrometric_sigma, backend, mask, background
        As for :func:`~astrid_assets.science.subtraction.zogy.zogy`, per tile.
    psf_error : float, "auto" or None, default "auto"
        PSF-model error ``ε`` (:func:`~astrid_assets.science.psf.field.calibrate_psf_error`), calibrated on the
        blended images at ``star_xy`` (or SEP detections on ``ref``) when ``"auto"``.
    star_xy : numpy.ndarray or None, default None
        ``(n, 2)`` star positions ``(x, y)``, px, for the calibration.
    n_tiles : int, default 5
        Nodes per axis (at least 2).
    margin : int, default 40
        Pixels added around each tent's support before the FFTs (more than the kernel half-size).

    Returns
    -------
    ZogyResult
        Blended images; ``P_D`` and ``psf_fwhm`` are the central node's, ``F_S`` their median;
        ``parts["P_D_tiles"]`` holds the ``(n, n, s, s)`` per-node difference PSFs.
    """
    shape = new.shape
    nodes_y, nodes_x = tile_nodes(shape[0], n_tiles), tile_nodes(shape[1], n_tiles)
    step_y, step_x = float(nodes_y[1] - nodes_y[0]), float(nodes_x[1] - nodes_x[0])
    weight_y = tent_weights(np.arange(shape[0]), nodes_y)
    weight_x = tent_weights(np.arange(shape[1]), nodes_x)
    keys = ("D", "S", "difference", "difference_var", "S_new", "S_ref", "V_S")
    sums = {key: np.zeros(shape, np.float32) for key in keys}
    filled_new, filled_ref, filled_new_var, filled_ref_var, bad, out_mask = sanitise_pair(new, ref, new_var, ref_var,
                                                                                           mask)
    psf_d, f_s, centre = [], [], None
    for j, cy in enumerate(nodes_y):
        y0, y1 = _tile_span(cy, step_y, margin, shape[0])
        row = []
        for i, cx in enumerate(nodes_x):
            x0, x1 = _tile_span(cx, step_x, margin, shape[1])
            box = (slice(y0, y1), slice(x0, x1))
            result = _zogy_sanitised(
                filled_new[box], filled_ref[box], new_psf_at(cx, cy), ref_psf_at(cx, cy), new_sigma, ref_sigma,
                None if filled_new_var is None else filled_new_var[box],
                None if filled_ref_var is None else filled_ref_var[box], flux_ratio, float(flux_ratio_err or 0.0),
                astrometric_sigma, backend, bad[box], out_mask[box], background=background, keep_parts=True,
                score_std=False,
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
    epsilon = 0.0
    if psf_error == "auto":
        epsilon = calibrate_psf_error(sums["S"], sums["V_S"], sums["S_new"], sums["S_ref"], ref, ref_sigma, bad,
                                      star_xy, centre.psf_fwhm)
    elif psf_error:
        epsilon = float(psf_error)
    S_corr = with_psf_error(sums["S"], sums["V_S"], sums["S_new"], sums["S_ref"], epsilon)
    S_corr[bad] = 0.0
    tiles = np.asarray(psf_d, dtype=np.float32)
    return ZogyResult(
        D=sums["D"], S=sums["S"], S_corr=S_corr, difference=sums["difference"],
        difference_var=sums["difference_var"], P_D=centre.P_D, F_D=centre.F_D, F_S=float(np.median(f_s)),
        flux_ratio=float(flux_ratio), flux_ratio_err=float(flux_ratio_err), psf_fwhm=measure_fwhm(centre.P_D),
        s_corr_std=robust_std(S_corr, ~bad), s_corr_scale=1.0, mask=out_mask, backend=centre.backend,
        psf_error=float(epsilon), parts={"P_D_tiles": tiles},
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


def zogy_field(
    new: np.ndarray,
    ref: np.ndarray,
    new_field: PSFField,
    ref_field: PSFField,
    new_sigma: float,
    ref_sigma: float,
    new_var: np.ndarray | None = None,
    ref_var: np.ndarray | None = None,
    flux_ratio: float | None = None,
    astrometric_sigma: tuple[float, float] = (0.0, 0.0),
    backend: str = "auto",
    *,
    mask: np.ndarray | None = None,
    psf_error: float | str | None = "auto",
    flux_ratio_stars: np.ndarray | None = None,
) -> ZogyResult:
    """ZOGY with each image's :class:`~astrid_assets.science.psf.field.PSFField`: one pass, or tiles where a PSF varies.

    When neither PSF varies this is :func:`~astrid_assets.science.subtraction.zogy.zogy` with the frame
    PSFs (the flux ratio fitted by PSF photometry of ``flux_ratio_stars`` when None). Otherwise the
    flux ratio is fitted once from large-aperture photometry (:func:`aperture_flux_ratio`, radius 3 ×
    the largest FWHM) and :func:`zogy_tiled` differences the frame with the PSFs at each node.
    ``psf_error`` as for :func:`~astrid_assets.science.subtraction.zogy.zogy`, calibrated at the fields'
    stars (the reference's first; SEP detections on ``ref`` when neither has 3). With
    ``psf_error="auto"`` the tiled result is kept only when its
    calibrated PSF-model error ε is below the one-pass result's: the model that leaves less at the
    stars wins, and a tie keeps the frame PSFs (on the real ESO 085-030 pair, whose FWHM changes by
    26 % over the frame in both images, the tiles' PSFs, each from fewer stars, left 8 candidates
    at stars where one pass leaves 4; ε is 0 for both). The result's ``varying_psf`` says which was done.
    """
    star_xy = next((f.star_xy for f in (ref_field, new_field) if len(f.star_xy) >= 3), None)
    if star_xy is None:
        star_xy = star_catalogue(ref, 0.0, ref_sigma, mask, n=300)[:, :2]
    one_pass = zogy(new, ref, new_field.constant, ref_field.constant, new_sigma, ref_sigma, new_var, ref_var,
                    flux_ratio, astrometric_sigma, backend, mask=mask, psf_error=psf_error, star_xy=star_xy,
                    flux_ratio_stars=flux_ratio_stars)
    if not (new_field.varies or ref_field.varies):
        return one_pass
    flux_ratio_err = 0.0
    if flux_ratio is None:
        widths = [f.fwhm_plane[0] + 0.5 * f.fwhm_range for f in (new_field, ref_field)]
        flux_ratio, flux_ratio_err, _ = aperture_flux_ratio(
            new, ref, new_sigma**2 if new_var is None else new_var, ref_sigma**2 if ref_var is None else ref_var,
            star_xy, 3.0 * max(widths), mask)
    def psf_at(which: PSFField):
        """``(x, y) -> stamp``: the field's PSFs at the tile nodes, evaluated together; elsewhere
        :meth:`~astrid_assets.science.psf.field.PSFField.at`."""
        grid_x, grid_y = (grid.ravel() for grid in np.meshgrid(tile_nodes(new.shape[1]), tile_nodes(new.shape[0])))
        stamps = dict(zip(zip(grid_x.tolist(), grid_y.tolist(), strict=True), which.at_many(grid_x, grid_y),
                          strict=True))
        return lambda x, y: stamps[(x, y)] if (x, y) in stamps else which.at(x, y)

    result = zogy_tiled(new, ref, psf_at(new_field), psf_at(ref_field), new_sigma, ref_sigma, new_var, ref_var,
                        flux_ratio, flux_ratio_err, astrometric_sigma, backend, mask=mask, psf_error=psf_error,
                        star_xy=star_xy)
    if psf_error == "auto" and result.psf_error >= one_pass.psf_error:
        return one_pass  # the tiles' PSF models leave no less error at the stars than the frame PSFs
    return replace(result, varying_psf=True)
