"""Cut-out stamps of candidates: square windows of the science, reference and difference images around
each candidate (the stamp contract: :data:`~astrid_assets.science.products.STAMP_SIZE`,
:data:`~astrid_assets.science.products.STAMP_CHANNELS`).

Images in e-, ``[y, x]``, 0-based; NaN beyond the image edge.
"""

from __future__ import annotations

import numpy as np

__all__ = ["cut_stamps"]


def cut_stamps(
    images: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, size: int = 63, fill: float = np.nan
) -> np.ndarray:
    """Cut-outs centred on ``(x, y)`` (rounded to the nearest pixel) from each image.

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
    half = size // 2
    ny, nx = shape
    stamps = np.full((x.size, len(arrays), size, size), fill, dtype=np.float32)
    for k, (xk, yk) in enumerate(zip(x, y, strict=True)):
        if not (np.isfinite(xk) and np.isfinite(yk)):
            continue
        ic, jc = int(np.rint(xk)), int(np.rint(yk))
        x0, x1 = max(ic - half, 0), min(ic + half + 1, nx)
        y0, y1 = max(jc - half, 0), min(jc + half + 1, ny)
        if x0 >= x1 or y0 >= y1:
            continue
        sx, sy = x0 - (ic - half), y0 - (jc - half)
        for channel, image in enumerate(arrays):
            stamps[k, channel, sy : sy + (y1 - y0), sx : sx + (x1 - x0)] = image[y0:y1, x0:x1]
    return stamps
