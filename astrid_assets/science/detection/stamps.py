"""Cut-out stamps of candidates: square windows of the science, reference and difference images around
each candidate (the stamp contract: :data:`~astrid_assets.science.products.STAMP_SIZE`,
:data:`~astrid_assets.science.products.STAMP_CHANNELS`).

Images in e-, ``[y, x]``, 0-based; NaN beyond the image edge.  The windows are
:func:`~astrid_assets.science.cutouts.cutout_window` (its pixel and rounding convention).
"""

from __future__ import annotations

import numpy as np

from astrid_assets.science.cutouts import cutout_window

__all__ = ["cut_stamps"]


def cut_stamps(
    images: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, size: int = 63, fill: float = np.nan
) -> np.ndarray:
    """Cut-outs centred on ``(x, y)`` (rounded to the nearest pixel, half to even) from each image.

    Parameters
    ----------
    images : dict of str to numpy.ndarray
        Channel name → 2-d image, all of one shape; channels keep the dict's order.
    x, y : numpy.ndarray or float
        Centres, px (0-based; pixel centres at integers).
    size : int, default 63
        Odd side of the stamps, px; the centre pixel is ``[size // 2, size // 2]``.
    fill : float, default NaN
        Value for stamp pixels beyond the image (NaN by default; 0 for networks), and for
        whole stamps at non-finite centres.

    Returns
    -------
    numpy.ndarray
        float32 array ``(n_candidates, n_channels, size, size)``.

    Raises
    ------
    ValueError
        Even ``size``, no images, or images of different shapes.
    """
    if size % 2 != 1:
        raise ValueError(f"stamp size must be odd, got {size}")
    arrays = list(images.values())
    if not arrays:
        raise ValueError("no images to cut stamps from")
    shape = arrays[0].shape
    if any(a.shape != shape for a in arrays):
        raise ValueError("all images must have the same shape")
    x = np.atleast_1d(np.asarray(x, dtype=float))
    y = np.atleast_1d(np.asarray(y, dtype=float))
    stamps = np.full((x.size, len(arrays), size, size), fill, dtype=np.float32)
    for k, (xk, yk) in enumerate(zip(x, y, strict=True)):
        window = cutout_window(shape, xk, yk, size // 2)
        if window is None:
            continue
        for channel, image in enumerate(arrays):
            stamps[k, channel][window.stamp] = image[window.image]
    return stamps
