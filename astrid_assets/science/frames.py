"""Reading and writing frame FITS files, with the checks that keep a bad frame out of the night.

A raw frame is accepted when it opens as FITS, holds a 2-D image that is not entirely NaN or
infinite, and — for science frames (``IMAGETYP`` absent or ``object``/``light``/``science``) —
carries a celestial WCS. Anything else raises :class:`FrameError`, which names the night, the
frame and the problem, so the caller can quarantine that frame and process the rest.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS

from astrid_assets import __version__

SCIENCE_TYPES = {"object", "light", "science"}
CALIBRATION_TYPES = {"bias", "zero", "dark", "flat", "flatfield", "skyflat", "domeflat"}


class FrameError(ValueError):
    """A frame that cannot be used; the message names night, frame and problem."""

    def __init__(self, night: str, frame_id: str, problem: str):
        self.night, self.frame_id, self.problem = night, frame_id, problem
        super().__init__(f"night {night}, frame {frame_id}: {problem}")


def image_type(header: fits.Header) -> str:
    """Normalised ``IMAGETYP``: ``object``, ``bias``, ``dark`` or ``flat`` (absent: ``object``)."""
    value = str(header.get("IMAGETYP", "object")).strip().lower().replace(" ", "")
    if value in {"zero"}:
        return "bias"
    if "flat" in value:
        return "flat"
    if value in CALIBRATION_TYPES:
        return value
    return "object"


def read_frame(fits_bytes: bytes, night: str, frame_id: str) -> tuple[np.ndarray, fits.Header]:
    """The frame's image (``float32``) and header; :class:`FrameError` if it is unusable.

    The first HDU holding image data is used (a primary array or an image/compressed
    extension), with the primary header's cards merged under the extension's own.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
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
    image = image.astype(np.float32)
    if not np.isfinite(image).any():
        raise FrameError(night, frame_id, "every pixel is NaN or infinite")
    if image_type(header) == "object":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", AstropyWarning)
                has_wcs = WCS(header).has_celestial
        except Exception as error:
            raise FrameError(night, frame_id, f"invalid WCS ({error})") from None
        if not has_wcs:
            raise FrameError(night, frame_id, "science frame has no celestial WCS")
    return image, header


def provenance_cards(asset: str, partition: str) -> list[tuple[str, str, str]]:
    """Header cards recording which asset, partition and code version wrote a file."""
    return [
        ("ASSET", asset, "AstrID asset that wrote this file"),
        ("PARTITN", partition, "AstrID partition"),
        ("CODEVER", __version__, "AstrID code version"),
    ]


def to_fits_bytes(hdus: list[fits.ImageHDU | fits.PrimaryHDU]) -> bytes:
    """Serialise HDUs (the first becomes the primary) to FITS bytes."""
    first, *rest = hdus
    primary = first if isinstance(first, fits.PrimaryHDU) else fits.PrimaryHDU(first.data, first.header)
    buffer = io.BytesIO()
    fits.HDUList([primary, *rest]).writeto(buffer, output_verify="silentfix")
    return buffer.getvalue()


def read_extensions(fits_bytes: bytes) -> dict[str, tuple[np.ndarray, fits.Header]]:
    """Every image HDU of a multi-extension FITS, by ``EXTNAME`` (the primary as ``PRIMARY``)."""
    with fits.open(io.BytesIO(fits_bytes), memmap=False) as hdus:
        return {
            (hdu.name or "PRIMARY"): (np.asarray(hdu.data), hdu.header.copy())
            for hdu in hdus
            if hdu.data is not None
        }
