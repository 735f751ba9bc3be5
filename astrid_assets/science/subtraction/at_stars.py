"""ZOGY's PSF-model error ``ε`` at the stars alone: what one pass and the tiles would leave, before either runs.

:func:`~astrid_assets.science.subtraction.tiles.zogy_field` keeps the tiled ZOGY only where its calibrated ``ε``
is below the one pass's (the model that leaves less at the stars wins). ``ε`` is calibrated within two FWHM of
bright stars (:func:`~astrid_assets.science.psf.field.calibrate_psf_error`), so ``S``, ``S_N``, ``S_R`` and
``V(S)`` are needed there only. Here they are computed there alone: each star's cut-out (its box plus the kernel
radius) is convolved with the real-space ZOGY kernels ``k_n``, ``k_r`` (Zackay, Ofek & Gal-Yam 2016, ApJ 830, 27,
eqs. 28–29), the variance maps with ``c k²`` (eqs. 26–27, ``c`` the correlated-noise factor), the results are
blended over the tile nodes with the tents' weights
(:func:`~astrid_assets.science.subtraction.tiles.tent_weights`), and the astrometric (eqs. 30–33) and flux-ratio
terms are added as ZOGY adds them. A cut-out is wide enough that the circular convolution does not wrap into the
box, so the values are those of a full-frame convolution with the same kernels; they differ from ZOGY's own only
by the kernels' truncation to their small grid
(:func:`~astrid_assets.science.subtraction.zogy_kernels.zogy_kernels`) and by the differential background plane,
which is not fitted (flat at a star's scale). On the real ESO 085-030 pair the estimate costs about a quarter of
what the tiles cost.

Conventions: images background-subtracted, e-, ``[y, x]`` 0-based, filled by
:func:`~astrid_assets.science.subtraction.image_pair.sanitise_pair`; variances e-²; star positions ``(x, y)`` px;
``flux_ratio`` ``F_n / F_r``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft

from astrid_assets.science.psf.field import psf_error_disc, psf_error_from_ratios, star_psf_error_ratio
from astrid_assets.science.psf.model import measure_fwhm
from astrid_assets.science.subtraction.fft_backends import fft_threads, wrap_embed
from astrid_assets.science.subtraction.noise_power import NoiseCorrelation
from astrid_assets.science.subtraction.zogy_kernels import zogy_kernels

__all__ = ["NodeKernels", "node_kernels", "psf_error_at_stars"]


@dataclass(frozen=True)
class NodeKernels:
    """The real-space kernels of one node: ``S_N = k_n ∗ N``, ``S_R = k_r ∗ R`` and the variance filters
    ``c_n k_n²``, ``c_r k_r²``; odd, centred, float64, on one common side."""

    k_new: np.ndarray
    k_ref: np.ndarray
    var_new: np.ndarray
    var_ref: np.ndarray
    psf_d_fwhm: float


def node_kernels(psf_new: np.ndarray, psf_ref: np.ndarray, shape: tuple[int, int], new_sigma: float,
                 ref_sigma: float, flux_ratio: float, new_noise: NoiseCorrelation | None = None,
                 ref_noise: NoiseCorrelation | None = None) -> NodeKernels:
    """The kernels ZOGY builds for a pair of PSF stamps
    (:func:`~astrid_assets.science.subtraction.zogy_kernels.zogy_kernels` without its full-grid filters); ``shape``
    bounds the small grid as it does there."""
    kernels = zogy_kernels(None, psf_new, psf_ref, shape, new_sigma, ref_sigma, flux_ratio, new_noise, ref_noise)
    c_new, c_ref = kernels.factors[0], kernels.factors[1]
    k_new, k_ref = _cropped(kernels.k_new, kernels.k_ref)
    return NodeKernels(k_new, k_ref, c_new * k_new**2, c_ref * k_ref**2, measure_fwhm(kernels.psf_d))


#: The kernels are cropped to the smallest centred square outside which every value is below this fraction of
#: the largest: the small grid is sized for the Fourier filters, a kernel's weight lies within a few FWHM (on the
#: real ESO 085-030 pair ε moves by under 0.001 between 1e-4 and 1e-2 here).
KERNEL_CROP = 1e-3


def _cropped(*kernels: np.ndarray) -> list[np.ndarray]:
    """The odd centred kernels cut to one common half-size outside which each is below :data:`KERNEL_CROP` × peak."""
    half = kernels[0].shape[0] // 2
    keep = 0
    for kernel in kernels:
        rows, cols = np.nonzero(np.abs(kernel) >= KERNEL_CROP * np.abs(kernel).max())
        keep = max(keep, int(np.abs(rows - half).max()), int(np.abs(cols - half).max()))
    return [kernel[half - keep: half + keep + 1, half - keep: half + keep + 1] for kernel in kernels]


def psf_error_at_stars(
    new: np.ndarray,
    ref: np.ndarray,
    new_var: np.ndarray,
    ref_var: np.ndarray,
    bad: np.ndarray,
    star_xy: np.ndarray,
    kernels: list[list[NodeKernels]],
    nodes: tuple[np.ndarray, np.ndarray],
    astrometric_sigma: tuple[float, float] = (0.0, 0.0),
    relative_ratio_err: float = 0.0,
) -> tuple[float, np.ndarray] | None:
    """``ε`` at the stars (:func:`~astrid_assets.science.psf.field.calibrate_psf_error`) of a ZOGY whose kernels
    are ``kernels[j][i]`` at node ``(nodes[1][i], nodes[0][j])``, blended with tent weights (one node: one pass).

    Parameters
    ----------
    new, ref : numpy.ndarray
        The filled pair, e-.
    new_var, ref_var : numpy.ndarray
        Their variance maps, e-² (arrays of the image shape).
    bad : numpy.ndarray
        Unusable pixels (left out of the calibration).
    star_xy : numpy.ndarray
        ``(n, 2)`` star positions ``(x, y)``, px.
    kernels : list of list of NodeKernels
        ``[j][i]`` the node at row node ``j``, column node ``i``; all on one kernel side.
    nodes : tuple of numpy.ndarray
        ``(nodes_y, nodes_x)``, px (:func:`~astrid_assets.science.subtraction.tiles.tile_nodes`; one each for
        a single pass).
    astrometric_sigma : tuple of float, default (0, 0)
        ``(σ_x, σ_y)`` registration noise, px (eqs. 30–33).
    relative_ratio_err : float, default 0
        ``σ_β / β`` of the flux ratio (its ``S_R²`` term).

    Returns
    -------
    tuple of (float, numpy.ndarray) or None
        ``ε ≥ 0`` and the ``(m, 2)`` positions of the stars bright enough to count in it; None when fewer than 3
        stars lie at least a box and a kernel radius inside the frame (then nothing can be said here).
    """
    from astrid_assets.science.subtraction.tiles import tent_weights  # tiles imports this module

    central = kernels[len(kernels) // 2][len(kernels[0]) // 2]
    half, disc = psf_error_disc(central.psf_d_fwhm)
    box = half + 1  # one more pixel each side for the astrometric term's gradient
    radius = max(node.k_new.shape[0] for row in kernels for node in row) // 2
    side = sfft.next_fast_len(2 * (box + radius) + 1, real=True)
    ny, nx = new.shape
    xy = np.rint(np.asarray(star_xy, np.float64).reshape(-1, 2)).astype(int)
    inside = ((xy[:, 0] >= box + radius) & (xy[:, 1] >= box + radius)
              & (xy[:, 0] + box + radius + 1 <= nx) & (xy[:, 1] + box + radius + 1 <= ny))
    xy = xy[inside]
    if len(xy) < 3:
        return None
    lo = box + radius  # the cut-out starts this far before the star's pixel
    spectra = [sfft.rfft2(np.stack([np.pad(image[y - lo: y + box + radius + 1, x - lo: x + box + radius + 1],
                                           ((0, side - 2 * lo - 1),) * 2) for x, y in xy]).astype(np.float32),
                          axes=(-2, -1), workers=fft_threads())
               for image in (new, ref, new_var, ref_var)]
    offsets = np.arange(-box, box + 1)
    weight_y = tent_weights((xy[:, 1, None] + offsets[None, :]).ravel(), nodes[0]).reshape(len(nodes[0]), len(xy), -1)
    weight_x = tent_weights((xy[:, 0, None] + offsets[None, :]).ravel(), nodes[1]).reshape(len(nodes[1]), len(xy), -1)
    size = 2 * box + 1
    parts = np.zeros((3, len(xy), size, size))  # S_N, S_R, V(S) from the variance maps
    crop = (slice(None), slice(lo - box, lo + box + 1), slice(lo - box, lo + box + 1))
    for j, row in enumerate(kernels):
        for i, node in enumerate(row):
            weight = weight_y[j, :, :, None] * weight_x[i, :, None, :]
            use = weight.reshape(len(xy), -1).any(axis=1)
            if not use.any():
                continue
            filters = [sfft.rfft2(wrap_embed(k, (side, side))) for k in
                       (node.k_new, node.k_ref, node.var_new, node.var_ref)]
            values = (spectra[0][use] * filters[0], spectra[1][use] * filters[1],
                      spectra[2][use] * filters[2] + spectra[3][use] * filters[3])
            for part, spectrum in zip(parts, values, strict=True):
                values_at = sfft.irfft2(spectrum, s=(side, side), axes=(-2, -1), workers=fft_threads())
                part[use] += weight[use] * values_at[crop]
    s_new, s_ref, v_s = parts
    sigma_x, sigma_y = (float(s) for s in astrometric_sigma)
    if sigma_x > 0 or sigma_y > 0:
        (gy_new, gx_new), (gy_ref, gx_ref) = (np.gradient(p, axis=(1, 2)) for p in (s_new, s_ref))
        v_s = v_s + sigma_x**2 * (gx_new**2 + gx_ref**2) + sigma_y**2 * (gy_new**2 + gy_ref**2)
    if relative_ratio_err > 0:
        v_s = v_s + relative_ratio_err**2 * s_ref**2
    inner = (slice(1, -1), slice(1, -1))
    ratios, used = [], []
    for k, (x, y) in enumerate(xy):
        ratio = star_psf_error_ratio(s_new[k][inner] - s_ref[k][inner], np.clip(v_s[k][inner], 1e-30, None),
                                     s_new[k][inner], s_ref[k][inner],
                                     bad[y - half: y + half + 1, x - half: x + half + 1], disc)
        if ratio is not None:
            ratios.append(ratio)
            used.append((x, y))
    return psf_error_from_ratios(ratios), np.array(used, dtype=np.float64).reshape(-1, 2)
