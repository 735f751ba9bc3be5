"""Square cut-out windows around a position, clipped at the image edges: the one place the science core
works out which pixels of an image a stamp covers (astropy's
:func:`~astropy.nddata.utils.overlap_slices`, ``mode="partial"``).

Pixel convention
----------------
Arrays are indexed ``[y, x]``, 0-based, with pixel centres at integer coordinates (pixel ``i``
spans ``i - 0.5 .. i + 0.5``), as in astropy and SEP.  The window of half-size ``h`` is the
``(2h + 1) × (2h + 1)`` pixels centred on the pixel nearest to ``(x, y)``, ``int(np.rint(x))``:
a half-integer position rounds to the even pixel (numpy's round half to even: ``1.5 → 2``,
``2.5 → 2``, ``-0.5 → 0``).  The position is rounded before ``overlap_slices`` is called, so its
own rule (first pixel ``ceil(p - size / 2)``, which rounds a half-integer down) never applies.
What lies beyond the image is the caller's to fill (NaN, zeros, or left out).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from astropy.nddata.utils import NoOverlapError, overlap_slices

__all__ = ["Window", "cutout_window"]


class Window(NamedTuple):
    """The part of a ``(2 half + 1)²`` stamp centred on pixel ``(x, y)`` that lies on an image.

    Attributes
    ----------
    x, y : int
        Centre pixel, 0-based (the rounded position).
    image : tuple of slice
        ``(rows, columns)`` of the image inside the window, clipped at the image's edges.
    stamp : tuple of slice
        The matching ``(rows, columns)`` of the stamp (the stamp's centre is ``[half, half]``); its
        other pixels fall beyond the image edge.
    """

    x: int
    y: int
    image: tuple[slice, slice]
    stamp: tuple[slice, slice]


def cutout_window(shape: tuple[int, ...], x: float, y: float, half: int) -> Window | None:
    """The window of half-size ``half`` around ``(x, y)`` on an image of ``shape``.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` of the image (further axes are ignored).
    x, y : float
        Position, px (0-based, pixel centres at integers); rounded to the nearest pixel, half to
        even (module docstring).
    half : int
        Half-size of the stamp, px (its side is ``2 half + 1``); 0 or more.

    Returns
    -------
    Window or None
        The centre pixel and the matching image and stamp slices (clipped; never empty); None when
        ``(x, y)`` is not finite or the window lies wholly off the image.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.arange(25.0).reshape(5, 5)
    >>> stamp = np.full((3, 3), np.nan)
    >>> window = cutout_window(image.shape, 0.4, 2.0, 1)
    >>> stamp[window.stamp] = image[window.image]
    >>> stamp
    array([[nan,  5.,  6.],
           [nan, 10., 11.],
           [nan, 15., 16.]])
    """
    if not (np.isfinite(x) and np.isfinite(y)):
        return None
    ic, jc = int(np.rint(x)), int(np.rint(y))
    side = 2 * int(half) + 1
    try:
        image, stamp = overlap_slices(tuple(shape[:2]), (side, side), (jc, ic), mode="partial")
    except NoOverlapError:
        return None
    return Window(ic, jc, image, stamp)
