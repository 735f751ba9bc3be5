"""Header conventions of the FITS standard and common acquisition software: frame type, exposure,
time, gain, read noise and saturation, each with where its value came from.

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
values. Every helper returns where its value came from (:class:`HeaderValue`), so that the
calibrated frame can say what it assumed.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from astropy.time import Time

__all__ = [
    "FRAME_TYPES",
    "CALIBRATION_KINDS",
    "SCIENCE_WORDS",
    "OTHER_WORDS",
    "IMAGETYPE_KEYS",
    "EXPOSURE_KEYS",
    "MJD_KEYS",
    "JD_KEYS",
    "TIME_KEYS",
    "GAIN_KEYS",
    "READ_NOISE_KEYS",
    "SATURATION_KEYS",
    "AMPLIFIERS",
    "HeaderValue",
    "imagetyp_card",
    "image_type",
    "exposure_time",
    "observation_mjd",
    "observation_date",
    "header_gain",
    "header_read_noise",
    "header_saturation",
    "INSTRUMENT_KEY_LENGTH",
    "instrument_key",
    "instrument_slug",
]

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


#: Longest instrument key (the ``raw_observations.instrument`` column is ``String(128)``).
INSTRUMENT_KEY_LENGTH = 128


def _card_text(header: fits.Header, key: str) -> str:
    value = header.get(key)
    if value is None or isinstance(value, bool):
        return ""
    return " ".join(str(value).replace(",", ";").split())


def instrument_key(header: fits.Header, source: str) -> str:
    """The frame's instrument: ``TELESCOP / INSTRUME`` as written, normalised; else the survey source.

    Normalised so that every frame of one instrument gets the same key: each card's text is
    stripped, runs of whitespace become one space and commas become ``;`` (keys are listed
    ``,``-separated); the two are joined by ``" / "`` when both are present, e.g.
    ``"0.5 m f/6.8 reflector / KAF-16803 CCD"``, or either one alone. Case is kept: it is part of
    what the acquisition software wrote. Without either card the key is ``source``
    (``"simulated"``, ``"fits_drop"``...). At most :data:`INSTRUMENT_KEY_LENGTH` characters.

    Parameters
    ----------
    header : astropy.io.fits.Header
        Frame header.
    source : str
        The survey source the frame came from (the fallback key).

    Returns
    -------
    str
        The instrument key, never empty.
    """
    cards = [text for text in (_card_text(header, "TELESCOP"), _card_text(header, "INSTRUME")) if text]
    key = " / ".join(cards) if cards else (" ".join(str(source).split()) or "unknown")
    return key[:INSTRUMENT_KEY_LENGTH]


def instrument_slug(key: str) -> str:
    """A stable name for an instrument key made of ``[a-z0-9-]`` only (MLflow aliases, object-store keys).

    Accents are dropped (NFKD), letters lowercased and every run of other characters becomes one
    ``-``, with none at either end: ``"0.5 m f/6.8 reflector / KAF-16803 CCD"`` →
    ``"0-5-m-f-6-8-reflector-kaf-16803-ccd"``. A slug is its own slug. A key with no ASCII letter
    or digit gets ``"i-"`` and the first 12 hex digits of its SHA-1.

    Parameters
    ----------
    key : str
        Instrument key (:func:`instrument_key`) or a slug.

    Returns
    -------
    str
        The slug, never empty.
    """
    ascii_text = unicodedata.normalize("NFKD", key).encode("ascii", "ignore").decode().lower()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text).strip("-")
    return slug or f"i-{hashlib.sha1(key.encode()).hexdigest()[:12]}"
