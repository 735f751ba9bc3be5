"""Reading and writing frame FITS files, their WCS, and the checks that keep a bad frame out of the
night.

A raw frame is accepted when it opens as FITS and holds a 2-D numeric image that is not entirely
NaN or infinite.  Anything else raises :class:`FrameError`, which names the night, the frame and
the problem, so the caller can quarantine that frame and process the rest.  A science frame
without a celestial WCS is accepted (it is registered by star patterns downstream); a malformed
WCS is treated as absent: its cards are removed and the problem is kept in the ``WCSPROB`` card.

Header conventions (frame type, exposure, time, gain, read noise, saturation) are read by
:mod:`~astrid_assets.science.frames.headers`.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS

from astrid_assets import __version__
from astrid_assets.science.frames.headers import (
    EXPOSURE_KEYS,
    _number,
    _time_of,
    exposure_time,
)

__all__ = [
    "ORIGINAL_TYPE_CARD",
    "WCS_PROBLEM_CARD",
    "FrameError",
    "original_pixel_type",
    "astropy_warnings_silenced",
    "header_wcs",
    "celestial_wcs",
    "strip_wcs",
    "read_frame",
    "normalised_cards",
    "provenance_cards",
    "to_fits_bytes",
    "read_extensions",
]

#: Header card recording the pixel type of the original file (the stored raw frame is float32).
ORIGINAL_TYPE_CARD = "ORIGTYPE"
#: Header card holding the problem of a malformed WCS that was removed.
WCS_PROBLEM_CARD = "WCSPROB"
_WCS_KEY = re.compile(
    r"^(?:(?:CTYPE|CRVAL|CRPIX|CDELT|CROTA|CUNIT|CRDER|CSYER|CNAME)\d+[A-Z]?"
    r"|(?:CD|PC|PV|PS)\d+_\d+[A-Z]?"
    r"|(?:A|B|AP|BP)_(?:\d+_\d+|ORDER|DMAX)"
    r"|WCSAXES[A-Z]?|WCSNAME[A-Z]?|LONPOLE[A-Z]?|LATPOLE[A-Z]?)$"
)
_WCS_NUMBER = re.compile(r"^(?:(?:CRVAL|CRPIX|CDELT|CROTA)[12]|(?:CD|PC)[12]_[12])$")


class FrameError(ValueError):
    """A frame that cannot be used; the message names night, frame and problem.

    Parameters
    ----------
    night : str
        Night the frame belongs to (as the caller names it, e.g. its partition key).
    frame_id : str
        Identifier of the frame within the night.
    problem : str
        What is wrong, as a phrase.

    Attributes
    ----------
    night, frame_id, problem : str
        As given; the message is ``"night {night}, frame {frame_id}: {problem}"``.
    """

    def __init__(self, night: str, frame_id: str, problem: str):
        self.night, self.frame_id, self.problem = night, frame_id, problem
        super().__init__(f"night {night}, frame {frame_id}: {problem}")


def original_pixel_type(header: fits.Header, image: np.ndarray | None = None) -> str:
    """Numpy name of the pixel type of the original file (``uint16`` for ``BITPIX = 16`` with
    ``BZERO = 32768``), from the :data:`ORIGINAL_TYPE_CARD` card, else ``BITPIX``/``BZERO``, else
    the type of ``image``.

    Parameters
    ----------
    header : astropy.io.fits.Header
        Header of the frame (as stored, or as read by :func:`read_frame`).
    image : numpy.ndarray or None, default None
        The pixels, whose dtype is the last resort.

    Returns
    -------
    str
        numpy dtype name (``"uint16"``, ``"int32"``, ``"float32"``...), or ``"unknown"``.
    """
    card = header.get(ORIGINAL_TYPE_CARD)
    if isinstance(card, str) and card:
        return card
    bitpix = header.get("BITPIX")
    bzero, bscale = header.get("BZERO", 0), header.get("BSCALE", 1)
    if isinstance(bitpix, int) and bitpix > 0 and bscale == 1:
        if bitpix == 8:
            return "uint8"
        if bzero == 2 ** (bitpix - 1):
            return f"uint{bitpix}"
        if bzero == 0:
            return f"int{bitpix}"
    if isinstance(bitpix, int) and bitpix < 0:
        return f"float{-bitpix}"
    return str(image.dtype) if image is not None else "unknown"


@contextmanager
def astropy_warnings_silenced() -> Iterator[None]:
    """Astropy's warnings silenced inside the block (FITS card fixes, WCS keyword notes): headers of
    every acquisition software trip them, and a frame's real problems are reported by name instead.

    Yields
    ------
    None
        Inside the block, ``AstropyWarning`` (and subclasses) are ignored.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        yield


def header_wcs(header: fits.Header) -> WCS:
    """The celestial WCS of ``header`` as it stands (astropy's errors on a malformed one propagate);
    :func:`celestial_wcs` is the checking reader for frames as they arrive.

    Parameters
    ----------
    header : astropy.io.fits.Header
        Frame header.

    Returns
    -------
    astropy.wcs.WCS
        Celestial part of the header's WCS (no axes when the header has none).
    """
    with astropy_warnings_silenced():
        return WCS(header).celestial


def celestial_wcs(header: fits.Header, shape: tuple[int, int] | None = None) -> tuple[WCS | None, str | None]:
    """``(wcs, problem)``: the header's celestial WCS, or ``(None, None)`` if it has none, or
    ``(None, problem)`` if its WCS cards are malformed: a non-numeric ``CRVAL``/``CRPIX``/
    ``CDELT``/``CD``/``PC`` card, a singular ``CD`` matrix or a zero ``CDELT`` (which astropy
    would silently "fix"), or cards astropy cannot build or apply (unknown projection...).

    The WCS must give a finite sky position at the frame centre ``((nx − 1)/2, (ny − 1)/2)``
    (0-based pixels).

    Parameters
    ----------
    header : astropy.io.fits.Header
        Frame header.
    shape : tuple of int or None, default None
        ``(ny, nx)`` of the image; None reads ``NAXIS2``/``NAXIS1`` (1 when absent).

    Returns
    -------
    wcs : astropy.wcs.WCS or None
        The celestial WCS, or None.
    problem : str or None
        Why the WCS is malformed, or None.
    """
    if not any(_WCS_KEY.match(key) for key in header):
        return None, None
    for key in header:
        if _WCS_NUMBER.match(key) and (isinstance(header[key], bool) or not isinstance(header[key], int | float)):
            return None, f"malformed WCS ({key} = {header[key]!r} is not a number)"
    if any(key.startswith("CD1_") or key.startswith("CD2_") for key in header):
        cd = np.array([[float(header.get(f"CD{i}_{j}", 0.0)) for j in (1, 2)] for i in (1, 2)])
        if not np.isfinite(cd).all() or abs(np.linalg.det(cd)) == 0:
            return None, "malformed WCS (singular CD matrix)"
    elif any(header.get(f"CDELT{i}") == 0 for i in (1, 2)):
        return None, "malformed WCS (CDELT of zero)"
    try:
        with astropy_warnings_silenced():
            wcs = WCS(header)
            if not wcs.has_celestial:
                return None, None
            celestial = wcs.celestial
            ny, nx = shape if shape is not None else (header.get("NAXIS2", 1), header.get("NAXIS1", 1))
            world = celestial.pixel_to_world_values((nx - 1) / 2, (ny - 1) / 2)
            if not np.all(np.isfinite(world)):
                return None, "WCS gives no finite sky position at the frame centre"
    except Exception as error:  # astropy raises many types on malformed cards
        return None, f"malformed WCS ({type(error).__name__}: {error})"
    return celestial, None


def strip_wcs(header: fits.Header) -> fits.Header:
    """A copy of ``header`` without its WCS cards (``CTYPEi``, ``CRVALi``, ``CDi_j``, SIP...).

    Parameters
    ----------
    header : astropy.io.fits.Header
        Frame header.

    Returns
    -------
    astropy.io.fits.Header
        The copy; ``header`` is not modified.
    """
    stripped = header.copy()
    for key in [key for key in stripped if _WCS_KEY.match(key)]:
        del stripped[key]
    return stripped


def read_frame(fits_bytes: bytes, night: str, frame_id: str) -> tuple[np.ndarray, fits.Header]:
    """The frame's image (``float32``) and header; :class:`FrameError` if it is unusable.

    The first HDU holding image data is used (a primary array or an image/compressed
    extension), with the primary header's cards merged under the extension's own.  The pixel
    type of the original file is recorded in the ``ORIGTYPE`` card (integer data are evidence
    of a raw frame, and set the ADC ceiling).  A frame without a celestial WCS is accepted; a
    malformed WCS is removed and its problem written to the ``WCSPROB`` card.

    Parameters
    ----------
    fits_bytes : bytes
        Content of the FITS file.
    night : str
        Night of the frame, for :class:`FrameError` messages.
    frame_id : str
        Identifier of the frame, for :class:`FrameError` messages.

    Returns
    -------
    image : numpy.ndarray
        2-d ``float32`` image as stored (ADU for raw data; BZERO/BSCALE applied by astropy),
        indexed ``[y, x]``.
    header : astropy.io.fits.Header
        Merged header with ``ORIGTYPE`` (and ``WCSPROB`` where the WCS was removed).

    Raises
    ------
    FrameError
        Unreadable FITS, no image data, an image that is not 2-d or not numeric, or one
        with no finite pixel.
    """
    try:
        with astropy_warnings_silenced():
            with fits.open(io.BytesIO(fits_bytes), memmap=False) as hdus:
                hdu = next((h for h in hdus if getattr(h, "data", None) is not None), None)
                if hdu is None:
                    raise FrameError(night, frame_id, "the FITS file holds no image data")
                image = np.asarray(hdu.data)
                header = hdus[0].header.copy()
                if hdu is not hdus[0]:
                    header.update(hdu.header.copy(strip=True))
    except FrameError:
        raise
    except Exception as error:  # astropy raises OSError, TypeError or ValueError on corrupt input
        raise FrameError(
            night, frame_id, f"unreadable or truncated FITS ({type(error).__name__}: {error})"
        ) from None
    if image.ndim != 2:
        raise FrameError(
            night, frame_id, f"image has {image.ndim} dimension(s) {image.shape}, expected 2-D"
        )
    if image.dtype.kind not in "iuf":
        raise FrameError(night, frame_id, f"image has non-numeric type {image.dtype}")
    if ORIGINAL_TYPE_CARD not in header:
        header[ORIGINAL_TYPE_CARD] = (image.dtype.name, "pixel type of the original file")
    image = image.astype(np.float32)
    if not np.isfinite(image).any():
        raise FrameError(night, frame_id, "every pixel is NaN or infinite")
    _, problem = celestial_wcs(header, image.shape)
    if problem is not None:
        header = strip_wcs(header)
        header[WCS_PROBLEM_CARD] = (problem[:60], "WCS removed as malformed")
    return image, header


def normalised_cards(header: fits.Header) -> list[tuple[str, object, str]]:
    """Standard cards (``EXPTIME``, ``MJD-OBS``, ``DATE-OBS``) a header lacks but can be derived
    from its other cards (``EXPOSURE``, ``JD``, ``DATE-OBS`` + ``TIME-OBS``...), for later steps
    that read only the standard names.

    A ``DATE-OBS`` without a time is replaced, its original text kept in ``DATEORIG``.

    Parameters
    ----------
    header : astropy.io.fits.Header
        Frame header.

    Returns
    -------
    list of tuple
        ``(keyword, value, comment)`` cards to add: ``EXPTIME`` (s), ``MJD-OBS`` (d, UTC, 8
        decimals), ``DATEORIG`` and ``DATE-OBS`` (ISO 8601 UTC); the header is not modified.
    """
    cards: list[tuple[str, object, str]] = []
    exptime = exposure_time(header)
    if _number(header, "EXPTIME") is None and exptime is not None:
        source = next(key for key in EXPOSURE_KEYS if _number(header, key) == exptime)
        cards.append(("EXPTIME", exptime, f"[s] from {source}"))
    time, source = _time_of(header)
    if time is not None:
        if _number(header, "MJD-OBS") is None:
            cards.append(("MJD-OBS", round(float(time.mjd), 8), f"[d] start of exposure, from {source[7:]}"))
        date_text = header.get("DATE-OBS")
        if not (isinstance(date_text, str) and "T" in date_text):
            if isinstance(date_text, str) and date_text.strip():
                cards.append(("DATEORIG", date_text, "DATE-OBS as written"))
            cards.append(("DATE-OBS", str(time.isot), f"[UTC] start of exposure, from {source[7:]}"))
    return cards


def provenance_cards(asset: str, partition: str) -> list[tuple[str, str, str]]:
    """Header cards recording which asset, partition and code version wrote a file.

    Parameters
    ----------
    asset : str
        Name of the Dagster asset writing the file (``ASSET`` card).
    partition : str
        Partition key (``PARTITN`` card).

    Returns
    -------
    list of tuple of str
        ``(keyword, value, comment)`` for ``ASSET``, ``PARTITN`` and ``CODEVER``.
    """
    return [
        ("ASSET", asset, "AstrID asset that wrote this file"),
        ("PARTITN", partition, "AstrID partition"),
        ("CODEVER", __version__, "AstrID code version"),
    ]


def to_fits_bytes(hdus: list[fits.ImageHDU | fits.PrimaryHDU]) -> bytes:
    """Serialise HDUs (the first becomes the primary) to FITS bytes.

    Parameters
    ----------
    hdus : list of astropy.io.fits.ImageHDU or astropy.io.fits.PrimaryHDU
        At least one HDU; a first ``ImageHDU`` is turned into a ``PrimaryHDU`` with its data and
        header. Cards are fixed silently (``output_verify="silentfix"``).

    Returns
    -------
    bytes
        The FITS file.
    """
    first, *rest = hdus
    primary = first if isinstance(first, fits.PrimaryHDU) else fits.PrimaryHDU(first.data, first.header)
    buffer = io.BytesIO()
    fits.HDUList([primary, *rest]).writeto(buffer, output_verify="silentfix")
    return buffer.getvalue()


def image_sections(fits_bytes: bytes) -> dict[str, tuple[fits.Section, fits.Header]]:
    """Every image HDU (no table) of a multi-extension FITS, by ``EXTNAME``, as a lazy ``astropy.io.fits.Section``.

    For reading small windows of large planes (cut-outs): only the pixels sliced are decoded (byte order and
    ``BZERO`` scaling applied), where :func:`read_extensions` decodes every plane whole.

    Parameters
    ----------
    fits_bytes : bytes
        Content of the FITS file (kept in memory while the sections are used).

    Returns
    -------
    dict of str to tuple of (astropy.io.fits.Section, astropy.io.fits.Header)
        A section (``shape``, ``dtype``, slicing gives a numpy array) and the header of every HDU that has data.
    """
    hdus = fits.open(io.BytesIO(fits_bytes), memmap=False, lazy_load_hdus=False)
    return {(hdu.name or "PRIMARY"): (hdu.section, hdu.header) for hdu in hdus
            if hdu.is_image and hdu.header.get("NAXIS", 0) > 0}


def read_extensions(fits_bytes: bytes) -> dict[str, tuple[np.ndarray, fits.Header]]:
    """Every image HDU of a multi-extension FITS, by ``EXTNAME`` (the primary as ``PRIMARY``).

    Parameters
    ----------
    fits_bytes : bytes
        Content of the FITS file.

    Returns
    -------
    dict of str to tuple of (numpy.ndarray, astropy.io.fits.Header)
        Data (as stored) and a copy of the header of every HDU that has data.
    """
    with fits.open(io.BytesIO(fits_bytes), memmap=False) as hdus:
        return {
            (hdu.name or "PRIMARY"): (np.asarray(hdu.data), hdu.header.copy())
            for hdu in hdus
            if hdu.data is not None
        }
