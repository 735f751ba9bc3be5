"""Reading and writing frame FITS files, the header conventions of acquisition software, and the
checks that keep a bad frame out of the night.

A raw frame is accepted when it opens as FITS and holds a 2-D numeric image that is not entirely
NaN or infinite.  Anything else raises :class:`FrameError`, which names the night, the frame and
the problem, so the caller can quarantine that frame and process the rest.  A science frame
without a celestial WCS is accepted (it is registered by star patterns downstream); a malformed
WCS is treated as absent: its cards are removed and the problem is kept in the ``WCSPROB`` card.

Header conventions
------------------
The helpers below read what the FITS standard and common acquisition software write:

* frame type (:func:`image_type`): ``IMAGETYP`` (else ``OBSTYPE``/``FRAMETYP``) by its words, as
  written by MaxIm DL (``Light Frame``, ``Bias Frame``, ``Dark Frame``, ``Flat Field``,
  ``Tricolor Image``), N.I.N.A. / SGP / Voyager (``LIGHT``, ``BIAS``, ``DARK``, ``FLAT``,
  ``DARKFLAT``), IRAF / NOAO (``object``, ``zero``, ``dark``, ``flat``, ``skyflat``,
  ``domeflat``, ``comp``, ``arc``, ``focus``) and SBIG (``Light Frame``...);
* exposure time (:func:`exposure_time`, s): ``EXPTIME``, ``EXPOSURE``, ``EXP_TIME``, ``ITIME``;
* time of the start of the exposure (:func:`observation_mjd`, :func:`observation_date`):
  ``MJD-OBS`` / ``MJD_OBS`` / ``MJD``, ``DATE-OBS`` (ISO 8601, or a date with the time in
  ``TIME-OBS`` / ``UT`` / ``UTSTART`` / ``UTC-OBS``; the old ``DD/MM/YY`` form), ``JD`` / ``JD-OBS``;
* detector gain (e-/ADU), read noise (e-) and saturation (ADU) (:func:`header_gain`,
  :func:`header_read_noise`, :func:`header_saturation`), with per-amplifier variants.

Cards whose comment says they were *assumed* (as AstrID's SkyView and MAST fetchers mark the
``GAIN = 1`` / ``RDNOISE = 0`` they write when the archive gives none) are not taken as measured
values.  Every helper returns where its value came from, so that the calibrated frame can say
what it assumed.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from astropy.time import Time
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS

from astrid_assets import __version__

#: Normalised frame types.  ``object`` is a science frame; ``other`` a frame that is neither
#: science nor calibration (focus, test, arc lamp, acquisition...): kept in the table, not processed.
FRAME_TYPES = ("object", "bias", "dark", "flat", "other")
CALIBRATION_KINDS = ("bias", "dark", "flat")
#: Words of an ``IMAGETYP`` that mean a science frame.
SCIENCE_WORDS = {"light", "object", "science", "sci", "obj", "tricolor", "target", "standard", "std"}
#: Words of an ``IMAGETYP`` that mean neither science nor calibration.
OTHER_WORDS = {
    "focus", "test", "arc", "comp", "comparison", "lamp", "acquisition", "acq", "guide", "guider",
    "pointing", "sync", "snapshot", "junk", "engineering", "eng", "wavecal", "thar", "fringe", "illum",
}
#: Header keywords, in order of preference.
IMAGETYPE_KEYS = ("IMAGETYP", "OBSTYPE", "FRAMETYP")
EXPOSURE_KEYS = ("EXPTIME", "EXPOSURE", "EXP_TIME", "ITIME")
MJD_KEYS = ("MJD-OBS", "MJD_OBS", "MJD")
JD_KEYS = ("JD", "JD-OBS", "JD_OBS")
TIME_KEYS = ("TIME-OBS", "UT", "UTSTART", "UTC-OBS", "UT-START", "UTC")
GAIN_KEYS = ("GAIN", "EGAIN", "CCDGAIN")
READ_NOISE_KEYS = ("RDNOISE", "READNOIS", "READNOISE", "RON", "RDNOIS", "READ_NOISE")
SATURATION_KEYS = ("SATURATE", "DATAMAX", "SATLEVEL")
#: Per-amplifier suffixes (``GAINA``, ``RDNOISEB``, ``SATURATC``...).
AMPLIFIERS = "ABCDEFGH"
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


@dataclass(frozen=True)
class HeaderValue:
    """A number read from a header (or worked out), with where it came from.

    ``value`` is None when the header does not give it; ``source`` is human-readable, e.g.
    ``"header GAIN"`` or ``"header mean(GAINA,GAINB)"``; ``note`` holds a caveat (or "").

    Attributes
    ----------
    value : float or None
        The number, in the unit of what it is (gain e-/ADU, read noise e-, saturation ADU);
        None when unknown.
    source : str
        Where it came from.
    note : str
        A caveat, or ``""``.
    """

    value: float | None
    source: str
    note: str = ""


# --------------------------------------------------------------------------- frame type


def imagetyp_card(header: fits.Header) -> str | None:
    """The frame-type card's text as written (``IMAGETYP``, else ``OBSTYPE`` or ``FRAMETYP``).

    Parameters
    ----------
    header : astropy.io.fits.Header
        Frame header.

    Returns
    -------
    str or None
        The first non-empty string card, stripped; None if there is none.
    """
    for key in IMAGETYPE_KEYS:
        value = header.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def image_type(header: fits.Header) -> str:
    """Normalised frame type: ``object``, ``bias``, ``dark``, ``flat`` or ``other``.

    Classified by the words of the frame-type card (:func:`imagetyp_card`), case-insensitive:
    ``bias`` or ``zero`` → ``bias``; ``dark`` (including ``DARKFLAT`` / ``Flat Dark``, darks for
    the flats) → ``dark``; ``flat`` (``Flat Field``, ``Flat Frame``, ``skyflat``, ``domeflat``,
    ``twiflat``...) → ``flat``; ``light``, ``object``, ``science``, ``Tricolor Image`` or no card
    → ``object``; a word of :data:`OTHER_WORDS` (``focus``, ``test``, ``arc``, ``comp``,
    ``acquisition``...) → ``other``.  Any other text (e.g. a target name written into the card)
    is taken as a science frame.

    Parameters
    ----------
    header : astropy.io.fits.Header
        Frame header.

    Returns
    -------
    str
        One of :data:`FRAME_TYPES`.
    """
    text = imagetyp_card(header)
    if text is None:
        return "object"
    value = text.lower()
    words = [word for word in re.split(r"[^a-z0-9]+", value) if word]
    if "bias" in value or any(word == "zero" or word.startswith("zero") for word in words):
        return "bias"
    if "dark" in value:
        return "dark"
    if "flat" in value:
        return "flat"
    if any(word in SCIENCE_WORDS for word in words):
        return "object"
    if any(word in OTHER_WORDS for word in words):
        return "other"
    return "object"


# --------------------------------------------------------------------------- exposure and time


def _number(header: fits.Header, key: str) -> float | None:
    value = header.get(key)
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def exposure_time(header: fits.Header) -> float | None:
    """Exposure time in seconds from ``EXPTIME``, ``EXPOSURE``, ``EXP_TIME`` or ``ITIME``
    (the first present and non-negative); None if none is.

    Parameters
    ----------
    header : astropy.io.fits.Header
        Frame header.

    Returns
    -------
    float or None
        Exposure time, s (finite, ≥ 0; non-numeric cards are skipped).
    """
    for key in EXPOSURE_KEYS:
        value = _number(header, key)
        if value is not None and value >= 0:
            return value
    return None


def _parse_date(date_text: str, time_text: str | None) -> Time | None:
    text = date_text.strip()
    old = re.fullmatch(r"(\d{1,2})/(\d{1,2})/(\d{2})", text)  # pre-1999 FITS: DD/MM/YY, 19YY
    if old:
        day, month, year = (int(part) for part in old.groups())
        text = f"{1900 + year:04d}-{month:02d}-{day:02d}"
    if "T" not in text and time_text:
        clock = time_text.strip().replace(" ", ":")
        if re.fullmatch(r"\d{1,2}:\d{1,2}(:\d{1,2}(\.\d*)?)?", clock):
            text = f"{text}T{clock}"
    try:
        return Time(text, scale="utc")
    except (ValueError, TypeError):
        return None


def _time_of(header: fits.Header) -> tuple[Time | None, str]:
    for key in MJD_KEYS:
        value = _number(header, key)
        if value is not None:
            return Time(value, format="mjd", scale="utc"), f"header {key}"
    date_text = header.get("DATE-OBS")
    if isinstance(date_text, str) and date_text.strip():
        time_key = next((key for key in TIME_KEYS if isinstance(header.get(key), str)), None)
        parsed = _parse_date(date_text, header.get(time_key) if time_key else None)
        if parsed is not None:
            used = "DATE-OBS" if "T" in date_text or time_key is None else f"DATE-OBS + {time_key}"
            return parsed, f"header {used}"
    for key in JD_KEYS:
        value = _number(header, key)
        if value is not None and value > 2.0e6:
            return Time(value, format="jd", scale="utc"), f"header {key}"
    return None, "absent"


def observation_mjd(header: fits.Header) -> float | None:
    """MJD (UTC) of the start of the exposure from ``MJD-OBS``/``MJD_OBS``/``MJD``, else
    ``DATE-OBS`` (ISO 8601, or a date with ``TIME-OBS``/``UT``/``UTSTART``/``UTC-OBS``, or
    ``DD/MM/YY``), else ``JD``/``JD-OBS`` − 2400000.5; None if the header has no time.

    ``DD/MM/YY`` years are read as 19YY; a ``JD`` card is used only above 2 000 000.

    Parameters
    ----------
    header : astropy.io.fits.Header
        Frame header.

    Returns
    -------
    float or None
        MJD, days (UTC).
    """
    time, _ = _time_of(header)
    return None if time is None else float(time.mjd)


def observation_date(header: fits.Header) -> str | None:
    """ISO 8601 UTC start of the exposure (``YYYY-MM-DDThh:mm:ss.sss``): ``DATE-OBS`` as written
    when it holds date and time, else derived from the cards :func:`observation_mjd` reads.

    Parameters
    ----------
    header : astropy.io.fits.Header
        Frame header.

    Returns
    -------
    str or None
        ISO 8601 date and time (UTC; ``DATE-OBS`` stripped but otherwise as written), or None.
    """
    date_text = header.get("DATE-OBS")
    if isinstance(date_text, str) and "T" in date_text and _parse_date(date_text, None) is not None:
        return date_text.strip()
    time, _ = _time_of(header)
    return None if time is None else str(time.isot)


# --------------------------------------------------------------------------- detector


def _assumed(header: fits.Header, key: str) -> bool:
    return "assumed" in str(header.comments[key]).lower()


def _keyed(header: fits.Header, keys: tuple[str, ...], per_amplifier: tuple[str, ...], what: str,
           combine: str, positive: bool = True) -> HeaderValue:
    """First non-assumed card of ``keys``; else the per-amplifier cards (``<prefix><A..H>``)
    combined by ``combine`` (``mean`` or ``min``)."""
    ignored = []
    for key in keys:
        value = _number(header, key)
        if value is None or (positive and value <= 0) or value < 0:
            continue
        if _assumed(header, key):
            ignored.append(f"{key}={value:g}")
            continue
        return HeaderValue(value, f"header {key}")
    for prefix in per_amplifier:
        found = {}
        for amp in AMPLIFIERS:
            key = f"{prefix}{amp}"
            value = _number(header, key) if key in header else None
            if value is not None and value > 0 and not _assumed(header, key):
                found[key] = value
        if found:
            values = np.array(list(found.values()))
            names = ",".join(found)
            if len(found) == 1:
                return HeaderValue(float(values[0]), f"header {names}")
            combined = float(values.mean() if combine == "mean" else values.min())
            spread = float(values.max() / values.min() - 1.0)
            note = (f"{len(found)} amplifiers ({names} = {', '.join(f'{v:g}' for v in values)}): "
                    f"{combine} used for the whole frame" + (f", they differ by {spread:.0%}" if spread > 0.02 else ""))
            return HeaderValue(combined, f"header {combine}({names})", note)
    note = f"card(s) marked assumed ignored: {', '.join(ignored)}" if ignored else ""
    return HeaderValue(None, f"no {what} card", note)


def header_gain(header: fits.Header) -> HeaderValue:
    """Detector gain (e-/ADU) from ``GAIN``, ``EGAIN`` or ``CCDGAIN``, else the mean of the
    per-amplifier ``GAINA``, ``GAINB``... (noted: one gain is used for the whole frame).

    A ``BUNIT`` of electrons means gain 1 (``e-/s``: gain = exposure time, the data are a rate).
    Cards whose comment says *assumed* are ignored.  ``value`` None if nothing applies.

    Parameters
    ----------
    header : astropy.io.fits.Header
        Frame header.

    Returns
    -------
    HeaderValue
        Gain, e- per stored unit (e-/ADU), with its source and any note.
    """
    found = _keyed(header, GAIN_KEYS, ("GAIN",), "gain", "mean")
    if found.value is not None:
        return found
    unit = str(header.get("BUNIT", "")).strip().lower().replace(" ", "")
    if unit.startswith(("electron", "e-", "e/")) or unit in {"e", "electrons"}:
        if "/s" in unit or "s-1" in unit or "s**-1" in unit:
            exptime = exposure_time(header)
            if exptime:
                return HeaderValue(exptime, f"BUNIT {header['BUNIT']!r}: gain = exposure time")
        else:
            return HeaderValue(1.0, f"BUNIT {header['BUNIT']!r}: data in electrons")
    return found


def header_read_noise(header: fits.Header) -> HeaderValue:
    """Read noise (e-) from ``RDNOISE``, ``READNOIS``, ``READNOISE``, ``RON``..., else the mean
    of per-amplifier ``RDNOISEA``/``RDNOISEB``... (or ``READNSEA``...).  A read noise of 0 is
    taken as given only when not marked assumed.  ``value`` None if absent.

    Parameters
    ----------
    header : astropy.io.fits.Header
        Frame header.

    Returns
    -------
    HeaderValue
        Read noise, e- rms, with its source and any note (per-amplifier cards must be > 0).
    """
    return _keyed(header, READ_NOISE_KEYS, ("RDNOISE", "READNSE", "RDNOIS", "RON"), "read-noise", "mean",
                  positive=False)


def header_saturation(header: fits.Header) -> HeaderValue:
    """Saturation level (ADU, in the units of the stored pixels) from ``SATURATE``,
    ``DATAMAX`` or ``SATLEVEL``, else the minimum of the per-amplifier ``SATURATA``,
    ``SATURATB``... (the lowest amplifier limits the frame).  ``value`` None if absent.

    Parameters
    ----------
    header : astropy.io.fits.Header
        Frame header.

    Returns
    -------
    HeaderValue
        Saturation level, ADU (stored pixel units), with its source and any note.
    """
    return _keyed(header, SATURATION_KEYS, ("SATURAT",), "saturation", "min")


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


# --------------------------------------------------------------------------- WCS


@contextmanager
def astropy_warnings_silenced() -> Iterator[None]:
    """Astropy's warnings silenced inside the block (FITS card fixes, WCS keyword notes): headers of
    every acquisition software trip them, and a frame's real problems are reported by name instead."""
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


# --------------------------------------------------------------------------- reading and writing


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
