"""Cut-outs for alert packets: a 63×63 window of an image as a gzipped FITS file carrying its WCS, and
the variance, mask and PSF where known — what ZTF's ``stampData`` holds (one gzipped FITS image) with what
Rubin's cut-outs add (variance, mask, PSF).

Conventions
-----------
The window is :func:`~astrid_assets.science.cutouts.cutout_window` (pixels ``[y, x]``, 0-based, the
centre pixel nearest the position, half to even); pixels beyond the image edge are NaN in the image and
variance and :data:`~astrid_assets.science.masks.NO_DATA` in the mask. The stamp's WCS is the image's
with ``CRPIX`` moved by the window's origin (SIP too); the IRAF cards ``LTV1``/``LTV2`` (= −origin) map
stamp pixels back to the image's for a grid without sky coordinates. Images in e-, variance in e-².

The primary HDU is kept at full float32 precision. The variance, a smooth plane, is rounded to
:data:`VARIANCE_MANTISSA_BITS` bits of mantissa (relative precision 2⁻¹², 0.02 %) so that gzip
shrinks it: it is what keeps three cut-outs with their planes inside a 100 kB packet.
"""

from __future__ import annotations

import gzip
import io

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, Sip

from astrid_assets.science import masks
from astrid_assets.science.astrometry.align import is_placeholder
from astrid_assets.science.cutouts import cutout_window

__all__ = ["STAMP_SIZE", "VARIANCE_MANTISSA_BITS", "cutout_fits", "read_cutout", "round_mantissa"]

#: Side of a packet cut-out, px (ZTF's and AstrID's stamp size).
STAMP_SIZE = 63
#: Mantissa bits kept in the variance plane (float32 has 23).
VARIANCE_MANTISSA_BITS = 12


def round_mantissa(values: np.ndarray, bits: int) -> np.ndarray:
    """``values`` as float32 rounded to ``bits`` bits of mantissa (round half up on the magnitude).

    Parameters
    ----------
    values : numpy.ndarray
        Any float array; NaN and infinities pass unchanged.
    bits : int
        Mantissa bits kept, 0–23.

    Returns
    -------
    numpy.ndarray
        float32, relative error at most ``2**-(bits + 1)``.
    """
    as_float = np.ascontiguousarray(values, dtype=np.float32)
    drop = 23 - int(bits)
    if drop <= 0:
        return as_float.copy()
    integers = as_float.view(np.uint32)
    finite = np.isfinite(as_float)
    rounded = (integers + np.uint32(1 << (drop - 1))) & ~np.uint32((1 << drop) - 1)
    return np.where(finite, rounded, integers).astype(np.uint32).view(np.float32)


#: The celestial WCS of the last few image headers cut out (a night's cut-outs come frame by frame): ``id(header)`` →
#: ``(header, WCS or None)``; the entry holds its header, so the ``id`` stays its own.
_HEADER_WCS: dict[int, tuple[fits.Header, WCS | None]] = {}


def _celestial_wcs(header: fits.Header | None) -> WCS | None:
    """The header's celestial WCS, parsed once per header (None: no header, a placeholder grid, no sky axes)."""
    if header is None:
        return None
    cached = _HEADER_WCS.get(id(header))
    if cached is not None and cached[0] is header:
        return cached[1]
    wcs = None if is_placeholder(header) else WCS(header, naxis=2)
    wcs = wcs if wcs is not None and wcs.has_celestial else None
    if len(_HEADER_WCS) >= 8:
        _HEADER_WCS.clear()
    _HEADER_WCS[id(header)] = (header, wcs)
    return wcs


def _stamp_header(header: fits.Header | None, x0: int, y0: int) -> fits.Header:
    """The image header's WCS moved to a stamp whose pixel (0, 0) is the image's ``(x0, y0)``."""
    stamp = fits.Header()
    image_wcs = _celestial_wcs(header)
    if image_wcs is not None:
        wcs = image_wcs.deepcopy()
        wcs.wcs.crpix = wcs.wcs.crpix - np.array([x0, y0], float)
        if wcs.sip is not None:
            wcs.sip = Sip(wcs.sip.a, wcs.sip.b, wcs.sip.ap, wcs.sip.bp, wcs.wcs.crpix)
        stamp.update(wcs.to_header(relax=True))
    stamp["LTV1"] = (-float(x0), "stamp x = image x + LTV1 (0-based px)")
    stamp["LTV2"] = (-float(y0), "stamp y = image y + LTV2")
    stamp["LTM1_1"], stamp["LTM2_2"] = 1.0, 1.0
    return stamp


def _window(plane: np.ndarray, window, size: int, fill, dtype) -> np.ndarray:
    """The ``size``² window of ``plane`` as ``dtype`` (native byte order), ``fill`` beyond its edge: only the window is
    converted, not the plane."""
    stamp = np.full((size, size), fill, dtype=dtype)
    stamp[window.stamp] = plane[window.image]
    return stamp


def cutout_fits(
    image: np.ndarray, x: float, y: float, header: fits.Header | None = None, *, variance: np.ndarray | None = None,
    mask: np.ndarray | None = None, psf: np.ndarray | None = None, cards: dict | None = None,
    size: int = STAMP_SIZE,
) -> bytes:
    """A gzipped FITS cut-out of ``image`` centred on ``(x, y)``.

    Parameters
    ----------
    image : numpy.ndarray
        2-d image, e-.
    x, y : float
        Centre, px (0-based).
    header : astropy.io.fits.Header, optional
        The image's header; its celestial WCS (unless a placeholder grid) is carried over, moved to the stamp.
    variance, mask : numpy.ndarray, optional
        Planes of ``image``'s shape (e-², uint16 bits of :mod:`~astrid_assets.science.masks`); become
        the ``VARIANCE`` and ``MASK`` extensions.
    psf : numpy.ndarray, optional
        The PSF at the position (unit sum), the ``PSF`` extension.
    cards : dict, optional
        Extra primary-header cards (provenance: asset, night, frame), ``{key: value or (value, comment)}``.
    size : int, default 63
        Odd side of the stamp, px.

    Returns
    -------
    bytes
        A gzipped FITS file: primary image (float32) with ``XPOS``/``YPOS`` (the position on the stamp, px,
        0-based), then ``VARIANCE`` (float32), ``MASK`` (uint16) and ``PSF`` when given.

    Raises
    ------
    ValueError
        When the window lies wholly off the image or the position is not finite.
    """
    window = cutout_window(image.shape, x, y, size // 2)
    if window is None:
        raise ValueError(f"no cut-out at ({x}, {y}): off the {image.shape[1]}×{image.shape[0]} image")
    x0, y0 = window.x - size // 2, window.y - size // 2
    header_out = _stamp_header(header, x0, y0)
    header_out["XPOS"] = (float(x) - x0, "position on the stamp, px, 0-based")
    header_out["YPOS"] = (float(y) - y0, "position on the stamp, px, 0-based")
    header_out["BUNIT"] = "electron"
    for key, value in (cards or {}).items():
        header_out[key] = value
    hdus = [fits.PrimaryHDU(_window(image, window, size, np.nan, np.float32), header_out)]
    if variance is not None:
        plane = round_mantissa(_window(variance, window, size, np.nan, np.float32), VARIANCE_MANTISSA_BITS)
        hdus.append(fits.ImageHDU(plane, name="VARIANCE"))
        hdus[-1].header["BUNIT"] = "electron2"
    if mask is not None:
        hdus.append(fits.ImageHDU(_window(mask, window, size, masks.NO_DATA, np.uint16), name="MASK"))
    if psf is not None:
        hdus.append(fits.ImageHDU(np.asarray(psf, np.float32), name="PSF"))
    buffer = io.BytesIO()
    fits.HDUList(hdus).writeto(buffer)
    return gzip.compress(buffer.getvalue(), compresslevel=6, mtime=0)  # 9: 1.3 ms more a cut-out, 0.2 % smaller


def read_cutout(stamp_data: bytes) -> fits.HDUList:
    """Open a packet's ``stampData`` (gzipped FITS) with astropy, as a consumer would."""
    return fits.open(io.BytesIO(gzip.decompress(stamp_data)))
