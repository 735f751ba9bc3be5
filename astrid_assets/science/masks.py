"""Pixel mask bit-planes shared by every AstrID image (``uint16``).

A pixel may carry several flags; test with ``mask & FLAG``.

Flags in :data:`UNUSABLE` remove a pixel from photometry, detection and the ZOGY inputs. The
others describe where a pixel is: ``EDGE`` (the detector border), ``INTERPOLATED`` and
``BRIGHT_STAR`` (the wings of a saturated star, where a subtraction leaves residuals of the
unmodelled wings and of the masked core; candidates on it are flagged
:data:`~astrid_assets.science.detection.candidates.FLAG_BRIGHT_STAR`, the pixels are still measured).
"""

import numpy as np

__all__ = [
    "SATURATED",
    "BAD_PIXEL",
    "COSMIC_RAY",
    "EDGE",
    "NO_DATA",
    "INTERPOLATED",
    "BRIGHT_STAR",
    "NAMES",
    "UNUSABLE",
    "describe",
]

SATURATED = np.uint16(1 << 0)  #: at or above the detector's saturation level, or bled into
BAD_PIXEL = np.uint16(1 << 1)  #: bad column / dead or hot pixel (from the master calibrations)
COSMIC_RAY = np.uint16(1 << 2)  #: cosmic-ray hit (L.A.Cosmic)
EDGE = np.uint16(1 << 3)  #: within the edge margin of the detector
NO_DATA = np.uint16(1 << 4)  #: no data, e.g. outside the overlap after registration
INTERPOLATED = np.uint16(1 << 5)  #: value interpolated (e.g. over a cosmic ray)
#: within the wings of a saturated star (:func:`~astrid_assets.science.calibration.detector.bright_star_mask`);
#: not UNUSABLE
BRIGHT_STAR = np.uint16(1 << 6)

NAMES = {
    "SATURATED": SATURATED,
    "BAD_PIXEL": BAD_PIXEL,
    "COSMIC_RAY": COSMIC_RAY,
    "EDGE": EDGE,
    "NO_DATA": NO_DATA,
    "INTERPOLATED": INTERPOLATED,
    "BRIGHT_STAR": BRIGHT_STAR,
}

#: Flags that make a pixel unusable for photometry and detection (not EDGE, INTERPOLATED, BRIGHT_STAR).
UNUSABLE = SATURATED | BAD_PIXEL | COSMIC_RAY | NO_DATA


def describe(mask_value: int) -> list[str]:
    """Names of the flags set in one mask value, e.g. ``describe(5) == ['SATURATED', 'COSMIC_RAY']``.

    Parameters
    ----------
    mask_value : int
        One pixel's ``uint16`` mask value (any integer; bits outside :data:`NAMES` are ignored).

    Returns
    -------
    list of str
        Flag names set in ``mask_value``, in the order of :data:`NAMES` (lowest bit first).
    """
    return [name for name, bit in NAMES.items() if int(mask_value) & int(bit)]
