"""An image pair made ready for a subtraction: unusable pixels filled, PSF stamps on one odd size, the
robust noise of a score image, and the differential background left between the two images.

Images in e- on one pixel grid, ``[y, x]``, 0-based; variances e-²; PSFs odd centred stamps.
"""

from __future__ import annotations

import numpy as np
from astropy.stats import mad_std

from astrid_assets.science import masks
from astrid_assets.science.inpaint import fill_images_from_neighbours
from astrid_assets.science.sources import unusable_pixels

__all__ = [
    "odd_common_stamps",
    "sanitise_pair",
    "robust_std",
    "BACKGROUND_MODELS",
    "BACKGROUND_CLEAN_SCORE",
    "BACKGROUND_BLOCK",
    "background_plane",
]


def odd_common_stamps(psf_a: np.ndarray, psf_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pad two odd centred PSF stamps to a common odd size (float64, unit sum).

    The stamps are only zero-padded: they come out float64 with unit sum when they go in so
    (as from :func:`~astrid_assets.science.psf.model.as_psf_image`).

    Parameters
    ----------
    psf_a, psf_b : numpy.ndarray
        PSF stamps with odd sides, centred on their central pixel.

    Returns
    -------
    numpy.ndarray, numpy.ndarray
        Both stamps, zero-padded symmetrically to ``(size, size)`` with ``size`` the largest side.

    Raises
    ------
    ValueError
        If a stamp has an even side.
    """
    size = max(psf_a.shape[0], psf_b.shape[0], psf_a.shape[1], psf_b.shape[1])
    size += 1 - size % 2

    def pad(psf: np.ndarray) -> np.ndarray:
        if psf.shape[0] % 2 == 0 or psf.shape[1] % 2 == 0:
            raise ValueError(f"PSF stamps must have odd sides, got {psf.shape}")
        py, px = (size - psf.shape[0]) // 2, (size - psf.shape[1]) // 2
        return np.pad(psf, ((py, py), (px, px)))

    return pad(psf_a), pad(psf_b)


def sanitise_pair(
    new: np.ndarray,
    ref: np.ndarray,
    new_var: np.ndarray | None,
    ref_var: np.ndarray | None,
    mask: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray, np.ndarray]:
    """Fill unusable / non-finite pixels (and their variance) of both images from their neighbours.

    A masked pixel set to zero inside a bright star is a hole that the ZOGY filters turn into
    lobes of high ``|S_corr|`` far beyond it (a saturated core left candidates 17–19 px out);
    filled by :func:`~astrid_assets.science.inpaint.fill_from_neighbours` it is nearly smooth, and the pixels stay
    flagged in the mask (``bad``) for the candidates.

    Parameters
    ----------
    new, ref : numpy.ndarray
        Images on one pixel grid, e-, indexed ``[y, x]``.
    new_var, ref_var : numpy.ndarray or None
        Variance maps of the image shape, e-² (scalars are not accepted); None: no map.
    mask : numpy.ndarray or None
        uint16 combined mask; ``UNUSABLE`` pixels are filled. None: only non-finite pixels are.

    Returns
    -------
    new, ref : numpy.ndarray
        float32 images, bad pixels filled from their neighbours.
    new_var, ref_var : numpy.ndarray or None
        float32 variance maps, bad pixels filled likewise (None stays None).
    bad : numpy.ndarray of bool
        Pixels non-finite in either image or variance map, or ``UNUSABLE`` in ``mask``.
    out_mask : numpy.ndarray
        uint16 copy of ``mask`` (zeros without one), ``NO_DATA`` added where non-finite.

    Raises
    ------
    ValueError
        If the images are not 2-d of one shape, or a variance map has another shape.
    """
    new = np.asarray(new, dtype=np.float32)
    ref = np.asarray(ref, dtype=np.float32)
    if new.shape != ref.shape or new.ndim != 2:
        raise ValueError(f"new {new.shape} and ref {ref.shape} must be 2-d images of one shape")
    nonfinite = ~np.isfinite(new) | ~np.isfinite(ref)
    for variance in (new_var, ref_var):
        if variance is not None:
            if np.shape(variance) != new.shape:
                raise ValueError("variance maps must have the image shape")
            nonfinite |= ~np.isfinite(variance)
    bad = nonfinite | unusable_pixels(mask, new.shape)
    out_mask = np.zeros(new.shape, np.uint16) if mask is None else np.array(mask, np.uint16)
    out_mask[nonfinite] |= masks.NO_DATA
    if bad.any():
        images = [image for image in (new, ref, new_var, ref_var) if image is not None]
        filled = iter(fill_images_from_neighbours(images, bad))
        new, ref = next(filled), next(filled)
        new_var = next(filled) if new_var is not None else None
        ref_var = next(filled) if ref_var is not None else None
    return new, ref, new_var, ref_var, bad, out_mask


def robust_std(values: np.ndarray, usable: np.ndarray, max_samples: int = 1_000_000) -> float:
    """1.4826 × median absolute deviation of ``values[usable]`` (subsampled for speed).

    Parameters
    ----------
    values : numpy.ndarray
        Image (e.g. ``S_corr``).
    usable : numpy.ndarray of bool
        Pixels to use, same shape as ``values``.
    max_samples : int, default 1_000_000
        Above this many usable pixels, every ``k``-th is taken (regular stride).

    Returns
    -------
    float
        Robust standard deviation, units of ``values``; NaN if no pixel is usable.
    """
    sample = values[usable]
    if sample.size > max_samples:
        sample = sample[:: sample.size // max_samples + 1]
    return float(mad_std(sample)) if sample.size else float("nan")


#: Differential background models of :func:`zogy`.
BACKGROUND_MODELS = ("plane", "constant", "none")


#: Pixels used for the background fit: ``|S_corr|`` below this.
BACKGROUND_CLEAN_SCORE = 3.0
#: Side (px) of the blocks the background fit sums the clean pixels in.
BACKGROUND_BLOCK = 16




def background_plane(D: np.ndarray, D_var: np.ndarray, S_corr: np.ndarray, bad: np.ndarray | None,
                     model: str) -> np.ndarray | None:
    """The differential background of a ZOGY difference ``D`` as a full image, or None if unmeasurable.

    A least-squares plane ``a + b x + c y`` (or the constant ``a``) over every usable, source-free
    pixel (``|S_corr| <`` :data:`BACKGROUND_CLEAN_SCORE`). The pixels are summed in blocks of
    :data:`BACKGROUND_BLOCK`² and the plane fitted to the block means weighted by their pixel counts
    (the same plane as a fit to the pixels, to first order in the block size), with blocks whose mean
    lies more than 4σ off the fit dropped for up to three rounds. Every clean pixel counts: the score
    integrates ``D`` over the PSF, so the error of a subsampled mean would reach ``S_corr`` amplified
    by ``1 / sqrt(Σ P_D²)`` (≈ 7 for a 5-px PSF). Unweighted by the variance: variance maps made from
    the pixel values themselves give a pixel that fluctuated low a higher weight, and weighting by
    them biased the fitted level by 0.03σ (0.2 in ``S_corr``) on pure noise.

    Parameters
    ----------
    D : numpy.ndarray
        Proper difference image (units of its noise).
    D_var : numpy.ndarray
        Variance of ``D`` per pixel (used only to leave out pixels without a finite one).
    S_corr : numpy.ndarray
        Corrected score, to leave sources out.
    bad : numpy.ndarray of bool or None
        Unusable pixels, left out.
    model : {"plane", "constant"}
        What is fitted.

    Returns
    -------
    numpy.ndarray or None
        ``float32`` image of the fitted background in the units of ``D``; None with fewer than 100
        usable pixels.
    """
    ny, nx = D.shape
    use = np.isfinite(D) & (np.abs(S_corr) < BACKGROUND_CLEAN_SCORE) & np.isfinite(D_var)
    if bad is not None:
        use &= ~bad
    if use.sum() < 100:
        return None
    block = BACKGROUND_BLOCK
    by, bx = -(-ny // block), -(-nx // block)
    padded_use = np.zeros((by * block, bx * block), np.float32)
    padded_use[:ny, :nx] = use
    padded_d = np.zeros((by * block, bx * block), np.float32)
    padded_d[:ny, :nx] = np.where(use, D, 0.0)
    counts = padded_use.reshape(by, block, bx, block).sum(axis=(1, 3)).ravel()
    sums = padded_d.reshape(by, block, bx, block).sum(axis=(1, 3)).ravel()
    # block centres in the units of the plane: x, y over the frame size, 0 at its centre
    cx = ((np.arange(bx) * block + (block - 1) / 2.0 - (nx - 1) / 2.0) / nx)
    cy = ((np.arange(by) * block + (block - 1) / 2.0 - (ny - 1) / 2.0) / ny)
    u, v = np.meshgrid(cx, cy)
    design = np.column_stack([np.ones(u.size), u.ravel(), v.ravel()])[:, : 1 if model == "constant" else 3]
    filled = counts > 0
    means = np.where(filled, sums / np.where(filled, counts, 1.0), 0.0)
    keep = filled.copy()
    for _ in range(3):
        w = np.sqrt(counts[keep])
        coefficients, *_ = np.linalg.lstsq(design[keep] * w[:, None], means[keep] * w, rcond=None)
        residual = (means - design @ coefficients) * np.sqrt(counts)
        spread = float(np.median(np.abs(residual[keep]))) / 0.6745
        new_keep = filled & (np.abs(residual) <= 4.0 * max(spread, 1e-12))
        if np.array_equal(new_keep, keep) or new_keep.sum() < 3:
            break
        keep = new_keep
    coefficients = np.r_[coefficients, np.zeros(3 - len(coefficients))]
    x = ((np.arange(nx) - (nx - 1) / 2.0) / nx).astype(np.float32)
    y = ((np.arange(ny) - (ny - 1) / 2.0) / ny).astype(np.float32)
    return (np.float32(coefficients[0]) + np.float32(coefficients[1]) * x[None, :]
            + np.float32(coefficients[2]) * y[:, None]).astype(np.float32)
