"""Forced PSF photometry at fixed positions.

Images are background-subtracted, in e- (``float32``), indexed ``[y, x]``, 0-based: pixel
``[j, i]`` has its centre at ``(x, y) = (i, j)``. The PSF is a :class:`~astrid_assets.science.psf.empirical.PSFModel`
or a stamp
summing to 1 (:mod:`~astrid_assets.science.psf.empirical`): a flux is the flux inside the PSF stamp's footprint,
the stamp centred on the pixel nearest each position (:func:`~astrid_assets.science.cutouts.cutout_window`).
"""

from __future__ import annotations

import numpy as np

from astrid_assets.science import masks
from astrid_assets.science.cutouts import cutout_window
from astrid_assets.science.psf.model import PSFModel, ShiftablePSF, as_psf_image

__all__ = ["psf_photometry"]


def psf_photometry(
    image: np.ndarray,
    variance: np.ndarray | float,
    psf: PSFModel | np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Forced PSF-fit photometry at fixed positions on a background-subtracted image.

    The amplitude is the linear least-squares fit of the PSF, shifted to ``(x, y)``, with
    uniform weights inside the stamp (unbiased for bright stars whose own Poisson noise is in
    the variance map); its error propagates the full variance map:
    ``flux = Σ P·I / Σ P²`` and ``flux_err² = Σ P²·V / (Σ P²)²``.
    Pixels off the image, non-finite or flagged ``UNUSABLE`` are left out of the fit.

    Parameters
    ----------
    image : numpy.ndarray
        Background-subtracted image, e-, indexed ``[y, x]``.
    variance : numpy.ndarray or float
        Per-pixel variance, e-², map of ``image``'s shape or scalar.
    psf : PSFModel or numpy.ndarray
        PSF of ``image``: a :class:`~astrid_assets.science.psf.empirical.PSFModel` or an odd square stamp (normalised
        to unit
        sum here).
    x, y : numpy.ndarray or float
        Positions, pixels (0-based; pixel centres at integers). Non-finite positions give NaN.
    mask : numpy.ndarray or None, default None
        ``uint16`` mask (:mod:`~astrid_assets.science.masks`) on ``image``'s grid; pixels flagged ``UNUSABLE`` are left
        out. None: no pixel is masked.

    Returns
    -------
    flux, flux_err : numpy.ndarray
        e- (total flux within the PSF stamp), one per position (1-d, ``float64``); NaN where
        nothing usable: position off the image, no usable pixel, or less than half of the
        PSF's weight on usable pixels.
    """
    image = np.asarray(image)
    psf_image = as_psf_image(psf)
    shiftable = ShiftablePSF(psf_image)
    half = psf_image.shape[0] // 2
    variance_map = np.broadcast_to(np.asarray(variance, dtype=np.float32), image.shape)
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    y = np.atleast_1d(np.asarray(y, dtype=np.float64))
    flux = np.full(x.shape, np.nan)
    flux_err = np.full(x.shape, np.nan)
    windows = [cutout_window(image.shape, xk, yk, half) for xk, yk in zip(x, y, strict=True)]
    inside = [k for k, window in enumerate(windows) if window is not None]
    models = shiftable.at_many([x[k] - windows[k].x for k in inside], [y[k] - windows[k].y for k in inside])
    for k, shifted in zip(inside, models, strict=True):
        window = windows[k]
        model = shifted[window.stamp]
        pixels = image[window.image].astype(np.float64)
        pixel_var = variance_map[window.image].astype(np.float64)
        usable = np.isfinite(pixels) & np.isfinite(pixel_var)
        if mask is not None:
            usable &= (mask[window.image] & masks.UNUSABLE) == 0
        norm = float((model[usable] ** 2).sum())
        if norm <= 0 or model[usable].sum() < 0.5:
            continue
        flux[k] = (model[usable] * pixels[usable]).sum() / norm
        flux_err[k] = np.sqrt((model[usable] ** 2 * pixel_var[usable]).sum()) / norm
    return flux, flux_err
