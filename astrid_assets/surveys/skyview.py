"""NASA SkyView cut-outs as AstrID frames (``source="skyview"``).

SkyView (https://skyview.gsfc.nasa.gov) resamples archival all-sky surveys (DSS, SDSS,
2MASS, ...) onto a grid centred where you ask.  A cut-out is a *mosaic*, not an exposure
taken on the night: it has no epoch of its own, so the frame is dated by the AstrID night
(see :func:`fetch_skyview`).  It is the source to use for reference images and for runs
without telescope data.

Requests go through :class:`astroquery.skyview.SkyViewClass`: a GET of the SkyView form
(``basicform.pl``), a GET of ``runquery.pl`` with the form filled in, then a GET of each FITS
file the result page links to.  Every request passes through the ``requests`` session of the
client, which carries a default timeout (:func:`use_timeout`).

The helpers :func:`use_timeout`, :func:`path_safe`, :func:`night_start`,
:func:`science_hdus`, :func:`set_cards` and :func:`restamp` are shared with
:mod:`astrid_assets.surveys.mast`.
"""

import io
import logging
import re
import warnings
from collections.abc import Callable, Mapping
from datetime import date

import astropy.units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS
from astroquery import cache_conf
from astroquery.skyview import SkyViewClass
from requests import PreparedRequest, Response, Session
from requests.adapters import HTTPAdapter

from astrid_assets.surveys.base import RawFrame
from astrid_assets.surveys.errors import archive_errors

log = logging.getLogger(__name__)

#: Seconds to wait for a connection and between bytes of an answer, for every request.
DEFAULT_TIMEOUT_S = 60.0

#: SkyView survey name -> (FILTER, nominal EXPTIME in seconds) written when the cut-out's own
#: header has none.  The exposure times are the usual per-plate / per-frame values of the
#: underlying survey (POSS-II plates ~1 h; SDSS 53.9 s drift scan; 2MASS 6 x 1.3 s); a
#: resampled mosaic has no single exposure time, so they are nominal.
SURVEY_BANDS: dict[str, tuple[str, float]] = {
    "DSS": ("R", 2700.0),  # POSS-I E (103aE) / SERC, the SkyView "DSS" mosaic
    "DSS1 Red": ("R", 2700.0),  # POSS-I E, 103aE + red plexiglass
    "DSS1 Blue": ("B", 720.0),  # POSS-I O, 103aO
    "DSS2 Red": ("R", 3600.0),  # POSS-II F, IIIaF + RG610
    "DSS2 Blue": ("B", 3600.0),  # POSS-II J, IIIaJ + GG385
    "DSS2 IR": ("I", 5400.0),  # POSS-II N, IV-N + RG9
    "SDSSu": ("u", 53.9),
    "SDSSg": ("g", 53.9),
    "SDSSr": ("r", 53.9),
    "SDSSi": ("i", 53.9),
    "SDSSz": ("z", 53.9),
    "2MASS-J": ("J", 7.8),
    "2MASS-H": ("H", 7.8),
    "2MASS-K": ("Ks", 7.8),
}

#: Assumed detector values for a SkyView cut-out whose header has none: its pixels are
#: resampled plate densities or calibrated fluxes, not detector counts, so there is no gain
#: or read noise to speak of.  GAIN = 1 (pixel values are taken as counts), RDNOISE = 0.
ASSUMED_GAIN = 1.0
ASSUMED_RDNOISE = 0.0
#: EXPTIME (seconds) for a survey missing from :data:`SURVEY_BANDS`: 1 s, i.e. pixel values
#: are taken as they are, never scaled by an exposure time.
ASSUMED_EXPTIME = 1.0

Card = tuple[str | float | int | bool, str]


class _TimeoutAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` that fills in a timeout for requests sent without one.

    astroquery sends most of its requests with ``timeout=None`` (wait forever); a nightly
    pipeline must not hang on a silent archive.
    """

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self.timeout_s = timeout_s

    def send(self, request: PreparedRequest, **kwargs: object) -> Response:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout_s
        return super().send(request, **kwargs)  # type: ignore[arg-type]


def use_timeout(session: Session, timeout_s: float) -> None:
    """Give every request of ``session`` (an astroquery client's ``_session``) a timeout."""
    adapter = _TimeoutAdapter(timeout_s)
    session.mount("https://", adapter)
    session.mount("http://", adapter)


def path_safe(text: str) -> str:
    """``text`` with every run of characters outside ``[A-Za-z0-9._-]`` replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "_"


def night_start(night: str) -> Time:
    """00:00 UTC of ``night`` (a UTC date ``YYYY-MM-DD``); ``ValueError`` if it is not one."""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", night):
        raise ValueError(f"night must be a UTC date YYYY-MM-DD, got {night!r}")
    return Time(date.fromisoformat(night).isoformat() + "T00:00:00", scale="utc")


def check_position(ra: float, dec: float) -> None:
    """``ValueError`` unless 0 <= ra < 360 and -90 <= dec <= 90 (degrees)."""
    if not (0.0 <= ra < 360.0 and -90.0 <= dec <= 90.0):
        raise ValueError(f"position out of range: RA {ra} deg, Dec {dec} deg")


def science_hdus(hdul: fits.HDUList) -> list[int]:
    """Indices of the HDUs that hold a 2-D image with a celestial WCS.

    If some of them are named ``SCI`` (HST, JWST) only those are returned, not their
    ``ERR``/``DQ`` companions.
    """
    found: list[int] = []
    for i, hdu in enumerate(hdul):
        if not isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU):
            continue
        if hdu.header.get("NAXIS") != 2:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                celestial = WCS(hdu.header, fobj=hdul).has_celestial
        except Exception:  # a WCS astropy cannot build is no WCS for AstrID
            celestial = False
        if celestial:
            found.append(i)
    named = [i for i in found if str(hdul[i].header.get("EXTNAME", "")).upper() == "SCI"]
    return named or found


def set_cards(header: fits.Header, cards: Mapping[str, Card], *, keep: bool = False) -> None:
    """Write ``cards`` (keyword -> (value, comment)) into ``header``.

    With ``keep=True`` a keyword the header already has is left as the archive wrote it.
    """
    for key, (value, comment) in cards.items():
        if keep and key in header:
            continue
        header[key] = (value, comment)


def restamp(fits_bytes: bytes, edit: Callable[[fits.HDUList], None]) -> bytes:
    """The FITS file ``fits_bytes`` with ``edit`` applied to its headers, checksums renewed.

    A file astropy cannot read in full (truncated, not FITS, an HTML error page) comes back
    unchanged, so that AstrID's validation of raw frames reports it like any other bad file.
    """
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with fits.open(io.BytesIO(fits_bytes)) as hdul:
                edit(hdul)
                out = io.BytesIO()
                hdul.writeto(out, checksum=True, output_verify="silentfix")
        if any("File may have been truncated" in str(w.message) for w in caught):
            raise OSError("file is truncated")
    except Exception as exc:  # any unreadable file is passed on as fetched
        log.warning("FITS file left as fetched: cannot update it (%s: %s)", type(exc).__name__, exc)
        return fits_bytes
    return out.getvalue()


def _stamp_skyview(hdul: fits.HDUList, night: str, field: str, survey: str) -> None:
    """Write the cards AstrID needs into the primary header and every science HDU."""
    band, exptime = SURVEY_BANDS.get(survey, (survey, ASSUMED_EXPTIME))
    start = night_start(night)
    for idx in sorted({0, *science_hdus(hdul)}):
        hdr = hdul[idx].header
        if "DATE-OBS" in hdr:
            hdr["ORIGDATE"] = (str(hdr["DATE-OBS"]), "DATE-OBS as SkyView gave it")
        if "MJD-OBS" in hdr:
            hdr["ORIGMJD"] = (hdr["MJD-OBS"], "MJD-OBS as SkyView gave it")
        set_cards(
            hdr,
            {
                "DATE-OBS": (start.isot, "[UTC] the night: a mosaic has no epoch"),
                "MJD-OBS": (round(float(start.mjd), 6), "[d] MJD of DATE-OBS (UTC)"),
                "DATESRC": ("night", "DATE-OBS source: night | archive | mast:t_min"),
                "IMAGETYP": ("object", "AstrID frame type"),
                "FIELD": (field, "AstrID sky field"),
                "SURVEY": (survey, "SkyView survey"),
            },
        )
        set_cards(
            hdr,
            {
                "FILTER": (band, "survey band"),
                "EXPTIME": (exptime, "[s] nominal per-plate/frame exposure (assumed)"),
                "GAIN": (ASSUMED_GAIN, "[e-/ADU] assumed: resampled survey pixels"),
                "RDNOISE": (ASSUMED_RDNOISE, "[e-] assumed: resampled survey pixels"),
            },
            keep=True,
        )


def fetch_skyview(
    night: str,
    field: str,
    ra: float,
    dec: float,
    survey: str = "DSS2 Red",
    pixels: int = 512,
    radius_arcmin: float = 10.0,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[RawFrame]:
    """Fetch the SkyView cut-out of ``survey`` centred on (``ra``, ``dec``) for one night.

    Parameters
    ----------
    night
        Observing night, UTC date ``YYYY-MM-DD``.  The cut-out does not depend on it; it dates
        the frame (``DATE-OBS`` = the night at 00:00:00 UTC).
    field
        AstrID field name; written to ``FIELD`` and used in the ``frame_id``.
    ra, dec
        Centre of the cut-out, ICRS, degrees.
    survey
        A SkyView survey name, e.g. ``"DSS2 Red"``, ``"SDSSr"``, ``"2MASS-J"``.
    pixels
        Width and height of the square cut-out, pixels.
    radius_arcmin
        Half-width of the square cut-out, arcmin (the image is ``2 * radius_arcmin`` across;
        the default 10 arcmin over 512 pixels is 2.3 arcsec/pixel).
    timeout_s
        Per-request timeout (connect, and between bytes), seconds.

    Returns
    -------
    One :class:`RawFrame` per FITS file SkyView links to (one per survey, so normally one);
    ``[]`` if the result page links to none.  ``frame_id`` is
    ``<field>-<YYYYMMDD>-skyview-<survey>-<nnn>`` made path-safe.

    The file's primary header and every image HDU with a celestial WCS get ``DATE-OBS``
    (the night, 00:00:00 UTC; the archive's own ``DATE-OBS``/``MJD-OBS``, if any, moved to
    ``ORIGDATE``/``ORIGMJD``), ``MJD-OBS``, ``DATESRC='night'``, ``IMAGETYP='object'``,
    ``FIELD``, ``SURVEY``, and - unless SkyView gave them - ``FILTER`` (band from
    :data:`SURVEY_BANDS`, else the survey name), ``EXPTIME`` (nominal, else 1 s),
    ``GAIN`` = 1 and ``RDNOISE`` = 0 (assumed, see :data:`ASSUMED_GAIN`).  The WCS is
    SkyView's (gnomonic, J2000).  A file astropy cannot read is passed on as fetched.

    Raises
    ------
    SurveyError
        SkyView answered with an HTTP error, timed out, could not be reached, or does not
        know ``survey``.
    ValueError
        ``night`` is not a date or the position is out of range.
    """
    night_start(night)
    check_position(ra, dec)
    client = SkyViewClass()
    use_timeout(client._session, timeout_s)
    position = SkyCoord(ra * u.deg, dec * u.deg, frame="icrs")
    files: list[bytes] = []
    # No astroquery cache: result pages point at short-lived files in SkyView's tempspace.
    with (
        cache_conf.set_temp("cache_active", False),
        archive_errors(f"SkyView {survey}", night, field, ra, dec),
    ):
        urls = client.get_image_list(
            position,
            survey,
            coordinates="J2000",
            projection="Tan",
            pixels=str(pixels),
            radius=radius_arcmin * u.arcmin,
            cache=False,
        )
        for url in urls:
            response = client._request("GET", url, cache=False, stream=True)
            response.raise_for_status()
            files.append(response.content)
    if not files:
        log.info("SkyView %s has no image for field %s (RA %.5f, Dec %+.5f)", survey, field, ra, dec)
    stem = f"{field}-{night.replace('-', '')}-skyview-{survey}"
    return [
        RawFrame(
            frame_id=path_safe(f"{stem}-{i:03d}"),
            night=night,
            field=field,
            source="skyview",
            fits_bytes=restamp(raw, lambda hdul: _stamp_skyview(hdul, night, field, survey)),
        )
        for i, raw in enumerate(files, start=1)
    ]
