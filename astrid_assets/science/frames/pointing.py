"""Where a frame points, and fields named after their pointing, for frames that name no field.

A frame without ``FIELD``/``OBJECT`` is placed by its pointing (:func:`header_pointing`):

* the centre of its celestial WCS (``CRVAL``/``CRPIX``/``CD``... through astropy), else
* the first pair of pointing cards of :data:`POINTING_KEYS` the header gives: ``RA``/``DEC``,
  ``OBJCTRA``/``OBJCTDEC`` (MaxIm DL, sexagesimal strings ``'12 34 56.78'`` / ``'+45 12 34.5'``),
  ``TELRA``/``TELDEC``... A number is in degrees; a sexagesimal string (``:``, spaces or
  ``h m s`` / ``d ' "`` separated) is in hours for right ascension and degrees for declination; a
  string holding one plain number is in degrees. Card coordinates are taken in the equinox of
  ``EQUINOX`` (J2000 / ICRS when absent) and precessed to ICRS.

Frames whose pointings lie within a *grouping radius* of each other are one field
(:func:`group_pointings`): the radius is :data:`GROUP_FRACTION` of the frame's narrower side
(width = pixels × pixel scale, from the WCS or the ``PIXSCALE``/``SECPIX``/``SCALE`` cards, or
``XPIXSZ`` µm / ``FOCALLEN`` mm), bounded by :data:`MIN_GROUP_RADIUS` and :data:`MAX_GROUP_RADIUS`,
and :data:`DEFAULT_GROUP_RADIUS` where the pixel scale is unknown. A night's dithered frames of one
target so share one field, and frames of targets a field width apart do not.

A field is named after the pointing of the first frame of the group (:func:`pointing_field_name`,
``P<ra>±<dec>`` in degrees to 0.01°, e.g. ``P123.46+45.61``), so the name itself says where the
field is (:func:`field_pointing` reads it back). A later night's group is given the name of a
*known* field (one named on an earlier night) whose pointing lies within its grouping radius, so a
slightly different pointing on a later night keeps its field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

__all__ = [
    "POINTING_KEYS",
    "GROUP_FRACTION",
    "DEFAULT_GROUP_RADIUS",
    "MIN_GROUP_RADIUS",
    "MAX_GROUP_RADIUS",
    "Pointing",
    "parse_angle",
    "pixel_scale",
    "header_pointing",
    "angular_distance",
    "pointing_field_name",
    "field_pointing",
    "group_pointings",
]

#: Pointing cards (right ascension, declination), in order of preference.
POINTING_KEYS = (
    ("RA", "DEC"), ("OBJCTRA", "OBJCTDEC"), ("TELRA", "TELDEC"), ("RA_OBJ", "DEC_OBJ"), ("OBJRA", "OBJDEC"),
    ("RA-TEL", "DEC-TEL"), ("CAT-RA", "CAT-DEC"), ("RA_TARG", "DEC_TARG"),
)
#: Grouping radius as a fraction of the frame's narrower side.
GROUP_FRACTION = 0.25
#: Grouping radius (deg) where the pixel scale is unknown.
DEFAULT_GROUP_RADIUS = 0.1
#: Bounds of the grouping radius (deg): 1 arcmin and 0.5°.
MIN_GROUP_RADIUS = 1.0 / 60.0
MAX_GROUP_RADIUS = 0.5

_SCALE_KEYS = ("PIXSCALE", "SECPIX", "SCALE", "PIXSCAL1", "SECPIX1")  # arcsec/pixel
_NAME = re.compile(r"P(\d{1,3}\.\d{2})([+-]\d{1,2}\.\d{2})(?:-\d+)?")


@dataclass(frozen=True)
class Pointing:
    """Where a frame points.

    Attributes
    ----------
    ra, dec : float
        ICRS right ascension and declination of the frame centre (or of the telescope's
        pointing, when read from cards), degrees; ``ra`` in [0, 360).
    radius : float
        Grouping radius, degrees (see the module's description).
    source : str
        Where the pointing came from, e.g. ``"WCS centre"`` or ``"header OBJCTRA/OBJCTDEC"``.
    """

    ra: float
    dec: float
    radius: float
    source: str


def _number(value) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def parse_angle(value, hours: bool = False) -> float | None:
    """An angle in degrees from a header card's value.

    Parameters
    ----------
    value : float, int or str
        A number (degrees), a string holding one number (degrees), or a sexagesimal string
        ``"12 34 56.78"``, ``"12:34:56.78"``, ``"12h34m56.78s"``, ``"-05 30 00"``,
        ``"+45d12'34.5\\""`` (two or three parts; minutes and seconds below 60).
    hours : bool, default False
        Whether a sexagesimal string is in hours (right ascension): its value is then × 15.

    Returns
    -------
    float or None
        Degrees, or None if ``value`` is not an angle.
    """
    number = _number(value) if not isinstance(value, str) else None
    if number is not None:
        return number
    if not isinstance(value, str):
        return None
    text = value.strip()
    if re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", text):
        return float(text)
    match = re.fullmatch(r"([+-]?)\s*(\d+)[\s:hHdD°]+(\d+(?:\.\d*)?)(?:[\s:mM']+(\d+(?:\.\d*)?))?[\s sS\"]*", text)
    if not match:
        return None
    sign, whole, minutes, seconds = match.groups()
    minutes_value, seconds_value = float(minutes), float(seconds or 0.0)
    if minutes_value >= 60 or seconds_value >= 60:
        return None
    angle = int(whole) + minutes_value / 60.0 + seconds_value / 3600.0
    angle = -angle if sign == "-" else angle
    return angle * 15.0 if hours else angle


def _shape(header: fits.Header) -> tuple[int, int] | None:
    for prefix in ("ZNAXIS", "NAXIS"):
        nx, ny = _number(header.get(f"{prefix}1")), _number(header.get(f"{prefix}2"))
        if nx and ny and nx > 0 and ny > 0:
            return int(ny), int(nx)
    return None


def pixel_scale(header: fits.Header, wcs=None) -> float | None:
    """Pixel scale in arcsec/pixel: from the celestial WCS (mean of the two axes), else the
    ``PIXSCALE``/``SECPIX``/``SCALE``/``PIXSCAL1`` cards (arcsec/pixel), else
    206.265 × ``XPIXSZ`` (µm, binned pixel as MaxIm DL writes it) / ``FOCALLEN`` (mm).

    Parameters
    ----------
    header : astropy.io.fits.Header
        Frame header.
    wcs : astropy.wcs.WCS or None, default None
        The frame's celestial WCS, if it has one.

    Returns
    -------
    float or None
        arcsec/pixel (positive), or None where unknown.
    """
    if wcs is not None:
        from astropy.wcs.utils import proj_plane_pixel_scales

        try:
            scale = float(np.mean(proj_plane_pixel_scales(wcs))) * 3600.0
            if math.isfinite(scale) and scale > 0:
                return scale
        except Exception:  # an unusual WCS: fall back to the cards
            pass
    for key in _SCALE_KEYS:
        scale = _number(header.get(key))
        if scale is not None and scale > 0:
            return scale
    pixel_um, focal_mm = _number(header.get("XPIXSZ")), _number(header.get("FOCALLEN"))
    if pixel_um and focal_mm and pixel_um > 0 and focal_mm > 0:
        return 206.265 * pixel_um / focal_mm
    return None


def _radius(header: fits.Header, shape: tuple[int, int] | None, wcs) -> float:
    scale = pixel_scale(header, wcs)
    if scale is None or shape is None:
        return DEFAULT_GROUP_RADIUS
    width = min(shape) * scale / 3600.0
    return float(min(max(GROUP_FRACTION * width, MIN_GROUP_RADIUS), MAX_GROUP_RADIUS))


def _to_icrs(ra: float, dec: float, header: fits.Header) -> tuple[float, float]:
    equinox = _number(header.get("EQUINOX")) or _number(header.get("EPOCH"))
    if equinox is None or abs(equinox - 2000.0) < 0.01 or not 1800 < equinox < 2200:
        return ra % 360.0, dec
    import astropy.units as u
    from astropy.coordinates import FK5, SkyCoord
    from astropy.time import Time

    coord = SkyCoord(ra * u.deg, dec * u.deg, frame=FK5(equinox=Time(equinox, format="jyear"))).icrs
    return float(coord.ra.deg) % 360.0, float(coord.dec.deg)


def header_pointing(header: fits.Header, shape: tuple[int, int] | None = None) -> Pointing | None:
    """The frame's pointing: its WCS centre, else its pointing cards (:data:`POINTING_KEYS`).

    Parameters
    ----------
    header : astropy.io.fits.Header
        Frame header (of the image HDU).
    shape : tuple of int or None, default None
        ``(ny, nx)`` of the image; None reads ``NAXIS2``/``NAXIS1`` (or ``ZNAXIS*`` of a
        tile-compressed image).

    Returns
    -------
    Pointing or None
        ICRS pointing (deg) with its grouping radius (deg) and source; None where the header
        gives no usable pointing (a malformed WCS is passed over for the cards).
    """
    from astrid_assets.science.frames.files import astropy_warnings_silenced, celestial_wcs

    shape = shape or _shape(header)
    try:
        wcs, _ = celestial_wcs(header, shape)
    except Exception:  # a header astropy cannot read as a WCS: the cards may still place it
        wcs = None
    if wcs is not None and shape is not None:
        try:
            with astropy_warnings_silenced():
                centre = wcs.pixel_to_world((shape[1] - 1) / 2, (shape[0] - 1) / 2).icrs
            ra, dec = float(centre.ra.deg), float(centre.dec.deg)
            if math.isfinite(ra) and math.isfinite(dec):
                return Pointing(ra % 360.0, dec, _radius(header, shape, wcs), "WCS centre")
        except Exception:  # a WCS that cannot place the centre: use the cards
            pass
    for ra_key, dec_key in POINTING_KEYS:
        if ra_key not in header or dec_key not in header:
            continue
        ra, dec = parse_angle(header[ra_key], hours=True), parse_angle(header[dec_key])
        if ra is None or dec is None or not -90.0 <= dec <= 90.0 or not 0.0 <= ra < 360.0:
            continue
        ra, dec = _to_icrs(ra, dec, header)
        return Pointing(ra, dec, _radius(header, shape, None), f"header {ra_key}/{dec_key}")
    return None


def angular_distance(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    """Great-circle distance in degrees between two positions given in degrees (haversine)."""
    ra1, dec1, ra2, dec2 = (math.radians(v) for v in (ra1, dec1, ra2, dec2))
    h = math.sin((dec2 - dec1) / 2) ** 2 + math.cos(dec1) * math.cos(dec2) * math.sin((ra2 - ra1) / 2) ** 2
    return math.degrees(2 * math.asin(min(1.0, math.sqrt(h))))


def pointing_field_name(ra: float, dec: float) -> str:
    """A field id from a pointing: ``P<ra>±<dec>``, degrees to 0.01°, e.g. ``"P005.20-00.75"``.

    Parameters
    ----------
    ra, dec : float
        ICRS position, degrees.

    Returns
    -------
    str
        The field id (14 characters, path-safe).
    """
    ra_text = f"{round(ra % 360.0, 2) % 360.0:06.2f}"
    return f"P{ra_text}{dec:+06.2f}"


def field_pointing(name: str) -> tuple[float, float] | None:
    """The pointing (ICRS ra, dec in degrees, to 0.01°) a :func:`pointing_field_name` id encodes.

    Parameters
    ----------
    name : str
        A field id (a ``-<n>`` suffix, given to a second field in one 0.01° cell, is allowed).

    Returns
    -------
    tuple of float or None
        ``(ra, dec)`` degrees, or None if ``name`` is not a pointing field id.
    """
    match = _NAME.fullmatch(name)
    if not match:
        return None
    ra, dec = float(match.group(1)), float(match.group(2))
    return (ra, dec) if 0 <= ra < 360 and -90 <= dec <= 90 else None


def group_pointings(pointings: Sequence[Pointing], known: Iterable[str] = ()) -> list[tuple[str, str]]:
    """Field id and the reason for it, for each pointing, grouping those within a grouping radius.

    Pointings are taken in order: each joins the first group (known fields first, then the groups
    formed so far, in the order they were formed) whose pointing lies within its grouping radius;
    otherwise it founds a new group named :func:`pointing_field_name` of its own pointing. A group's
    pointing is that of the pointing that founded it, so the result does not drift along a chain
    of dithers.

    Parameters
    ----------
    pointings : sequence of Pointing
        The frames' pointings, in a stable order (e.g. by observing time or file name).
    known : iterable of str
        Field ids seen before (e.g. on earlier nights); those that are pointing ids
        (:func:`field_pointing`) are matched first, so a later night keeps their names.

    Returns
    -------
    list of (str, str)
        ``(field, reason)`` per pointing, e.g. ``("P123.46+45.61", "pointing from header
        OBJCTRA/OBJCTDEC (123.4567, +45.6123) within 0.0417 deg of known field P123.46+45.61")``.
    """
    groups: list[tuple[str, float, float, bool]] = []  # name, ra, dec, known
    for name in dict.fromkeys(known):
        position = field_pointing(name)
        if position is not None:
            groups.append((name, *position, True))
    result = []
    for pointing in pointings:
        where = f"pointing from {pointing.source} ({pointing.ra:.4f}, {pointing.dec:+.4f})"
        for name, ra, dec, was_known in groups:
            distance = angular_distance(pointing.ra, pointing.dec, ra, dec)
            if distance <= pointing.radius:
                whose = "known field" if was_known else "the field of an earlier frame,"
                result.append((name, f"{where} within {distance:.4f} deg of {whose} {name} "
                                     f"(grouping radius {pointing.radius:.4f} deg)"))
                break
        else:
            name = pointing_field_name(pointing.ra, pointing.dec)
            if any(name == group[0] for group in groups):  # same 0.01° cell, yet farther than the radius
                name = f"{name}-{sum(group[0].startswith(name) for group in groups) + 1}"
            groups.append((name, pointing.ra, pointing.dec, False))
            result.append((name, f"{where}: new field named after its pointing "
                                 f"(grouping radius {pointing.radius:.4f} deg)"))
    return result
