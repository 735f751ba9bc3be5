"""Calibrated science images from MAST (HST, JWST, ...) as AstrID frames (``source="mast"``).

One call asks MAST's CAOM observation index (:class:`astroquery.mast.ObservationsClass`) for
science *image* observations of one collection whose footprint meets a circle around the
field and whose exposure starts within the night, lists their products, keeps the calibrated
science FITS images and downloads each one.

Time convention
---------------
``night`` is a UTC date ``YYYY-MM-DD`` and its window is that date from 00:00:00 UTC up to
(not including) 00:00:00 UTC of the next day, as MJD (:func:`night_window_mjd`,
:data:`NIGHT_WINDOW_HOURS`).  An observation belongs to the night when its start ``t_min``
lies in the window, so each observation belongs to exactly one night and its ``DATE-OBS``
has the night's UTC date.

Credentials
-----------
Public data needs none.  If the environment variable ``MAST_TOKEN`` is set, the session logs
in with it through astroquery (the token travels only as a session cookie) and products with
exclusive-access rights are fetched too; otherwise only ``PUBLIC`` products are.  The token is
never logged nor put in an error message.  (Do not run astroquery's own logger at DEBUG with a
token set: astroquery then logs request headers, cookie included.)
"""

import logging
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Row, Table
from astropy.time import Time
from astroquery.exceptions import InvalidQueryError, NoResultsWarning
from astroquery.mast import ObservationsClass

from astrid_assets import settings
from astrid_assets.surveys.base import RawFrame
from astrid_assets.surveys.errors import SurveyError, archive_errors
from astrid_assets.surveys.skyview import (
    DEFAULT_TIMEOUT_S,
    check_position,
    night_start,
    path_safe,
    restamp,
    science_hdus,
    set_cards,
    use_timeout,
)

log = logging.getLogger(__name__)

#: Product sub-groups (``productSubGroupDescription``) kept per collection, most preferred
#: first; of several versions of one exposure (same file name up to its last ``_``) only the
#: most preferred is fetched.  HST: the CTE-corrected ``_flc`` else the ``_flt`` calibrated
#: single exposure (electrons, or electrons/s for WFC3-IR); JWST: the ``_cal`` calibrated
#: exposure.  A collection not listed here keeps every calibrated science FITS product.
DEFAULT_SUBGROUPS: dict[str, tuple[str, ...]] = {
    "HST": ("FLC", "FLT"),
    "JWST": ("CAL",),
}

#: GAIN (e-/ADU) and RDNOISE (e-) written when neither the file nor the archive gives them.
#: Calibrated HST/JWST images are already in electrons (or physical units): gain 1, and the
#: read noise 0 unless the header lists per-amplifier values (HST ``READNSEA``..``D``).
ASSUMED_GAIN = 1.0
ASSUMED_RDNOISE = 0.0


#: The night's window in hours after its 00:00 UTC, start included, end excluded.  (0, 24)
#: makes the nights a partition of time: every exposure belongs to exactly one night, the one
#: of its UTC date.  A window reaching into the next day, e.g. (0, 36), would catch the end of
#: a night observed west of Greenwich but give exposures between 00:00 and 12:00 UTC to two
#: nights.
NIGHT_WINDOW_HOURS: tuple[float, float] = (0.0, 24.0)


def night_window_mjd(night: str) -> tuple[float, float]:
    """``(start, end)`` of the night as MJD (UTC), by :data:`NIGHT_WINDOW_HOURS`."""
    midnight = float(night_start(night).mjd)
    return midnight + NIGHT_WINDOW_HOURS[0] / 24.0, midnight + NIGHT_WINDOW_HOURS[1] / 24.0


def _column(table: Table, name: str, fill: Any) -> np.ndarray:
    """``table[name]`` as a plain array, masked entries (or a missing column) as ``fill``."""
    if name not in table.colnames:
        return np.full(len(table), fill, dtype=object)
    col = table[name]
    return np.asarray(col.filled(fill) if hasattr(col, "filled") else col)


def select_products(
    products: Table,
    subgroups: Sequence[str] | None,
    calib_levels: Sequence[int],
    *,
    public_only: bool,
) -> Table:
    """The calibrated science FITS images among ``products`` (a ``get_product_list`` table).

    Keeps ``productType == "SCIENCE"`` products whose ``calib_level`` is in ``calib_levels``
    and whose file name ends in ``.fits``; only ``PUBLIC`` ones (``dataRights``) if
    ``public_only``; a table without one of those two columns is not filtered on it; and, if
    ``subgroups`` is given, only those sub-groups, the most preferred version of each
    exposure.  Duplicate ``dataURI`` rows are dropped; the result is sorted by file name.
    """
    names = np.array([str(n) for n in _column(products, "productFilename", "")], dtype=str)
    keep = np.char.endswith(np.char.lower(names), ".fits")
    keep &= np.char.upper(_column(products, "productType", "").astype(str)) == "SCIENCE"
    if "calib_level" in products.colnames:  # older MAST answers lack these two columns
        keep &= np.isin(_column(products, "calib_level", -1).astype(int), list(calib_levels))
    if public_only and "dataRights" in products.colnames:
        keep &= np.char.upper(_column(products, "dataRights", "").astype(str)) == "PUBLIC"
    groups = np.char.upper(_column(products, "productSubGroupDescription", "").astype(str))
    wanted = [g.upper() for g in subgroups] if subgroups else []
    if wanted:
        keep &= np.isin(groups, wanted)
    chosen = np.flatnonzero(keep)
    if wanted:  # of several versions of one exposure keep the most preferred
        stems = [names[i].lower().rsplit("_", 1)[0] for i in chosen]
        ranks = [wanted.index(groups[i]) for i in chosen]
        best: dict[str, int] = {}
        for stem, rank in zip(stems, ranks, strict=True):
            best[stem] = min(rank, best.get(stem, rank))
        chosen = [i for i, s, r in zip(chosen, stems, ranks, strict=True) if r == best[s]]
    unique: dict[str, int] = {}
    for i in sorted(chosen, key=lambda i: names[i]):
        unique.setdefault(str(products["dataURI"][i]), int(i))
    return products[list(unique.values())]


def _lookup(headers: Sequence[fits.Header], *keys: str) -> Any:
    """The first value of any of ``keys`` in ``headers`` (searched in order), else ``None``."""
    for key in keys:
        for hdr in headers:
            value = hdr.get(key)
            if value not in (None, "") and not isinstance(value, fits.card.Undefined):
                return value
    return None


def _iso(value: Any, fmt: str | None = None) -> str | None:
    """``value`` as an ISO UTC time ``YYYY-MM-DDThh:mm:ss.sss``, or ``None`` if unparseable."""
    try:
        return Time(value, format=fmt, scale="utc").isot
    except (ValueError, TypeError):
        return None


def _date_obs(headers: Sequence[fits.Header], t_min: float | None, night: str) -> tuple[str, str]:
    """(DATE-OBS, its source): the file's start of exposure, else MAST's ``t_min``, else night."""
    date_obs = _lookup(headers, "DATE-OBS")
    candidates: list[str | None] = []
    if date_obs is not None and "T" in str(date_obs):
        candidates.append(_iso(str(date_obs)))
    time_obs = _lookup(headers, "TIME-OBS")
    if date_obs is not None and time_obs is not None:
        candidates.append(_iso(f"{date_obs}T{time_obs}"))
    candidates.append(_iso(str(_lookup(headers, "DATE-BEG") or "")))
    mjd = _lookup(headers, "EXPSTART", "MJD-OBS", "MJD-BEG")
    if isinstance(mjd, int | float):
        candidates.append(_iso(float(mjd), "mjd"))
    for iso in candidates:
        if iso is not None:
            return iso, "archive"
    if t_min is not None and np.isfinite(t_min):
        return str(_iso(t_min, "mjd")), "mast:t_min"
    return night_start(night).isot, "night"


def _filter_name(headers: Sequence[fits.Header], archive_filters: str | None) -> str | None:
    """FILTER, else the non-CLEAR of FILTER1/FILTER2 (HST ACS), else MAST's ``filters``."""
    value = _lookup(headers, "FILTER")
    if value is not None:
        return str(value)
    parts = [str(v) for v in (_lookup(headers, "FILTER1"), _lookup(headers, "FILTER2"))]
    parts = [p for p in parts if p != "None" and not p.upper().startswith("CLEAR")]
    if parts:
        return ";".join(parts)
    return archive_filters or None


def _stamp_mast(
    hdul: fits.HDUList,
    night: str,
    field: str,
    collection: str,
    product: Mapping[str, Any],
    observation: Mapping[str, Any],
) -> None:
    """Write the cards AstrID needs into the primary header and every science HDU.

    Values are read from the first science HDU, then the primary header, then MAST's
    observation/product rows; archive cards already present in a header are kept, except
    DATE-OBS (made a full ISO time, the original kept in ORIGDATE), MJD-OBS (made to agree
    with DATE-OBS, a differing original kept in ORIGMJD) and IMAGETYP (set to ``object``, the
    original kept in ORIGTYP).
    """
    targets = sorted({0, *science_hdus(hdul)})
    sci = [i for i in targets if i != 0]
    headers = [hdul[sci[0]].header, hdul[0].header] if sci else [hdul[0].header]

    t_min = observation.get("t_min")
    date_obs, date_src = _date_obs(headers, None if t_min is None else float(t_min), night)
    mjd_obs = round(float(Time(date_obs, scale="utc").mjd), 8)
    band = _filter_name(headers, product.get("filters") or observation.get("filters"))
    exptime = _lookup(headers, "EXPTIME", "EFFEXPTM", "EXPOSURE", "TEXPTIME")
    exptime_note = "[s] exposure time"
    if exptime is None and observation.get("t_exptime") is not None:
        exptime, exptime_note = float(observation["t_exptime"]), "[s] exposure time (MAST t_exptime)"
    gain = _lookup(headers, "GAIN")
    bunit = str(_lookup(headers, "BUNIT") or "").upper()
    gain_note = "[e-/ADU] " + ("data in electrons" if "ELECTRON" in bunit else "assumed")
    readnoise, rn_note = _lookup(headers, "RDNOISE"), "[e-] read noise"
    if readnoise is None:
        amps = [_lookup(headers, f"READNSE{amp}") for amp in "ABCD"]
        amps = [float(a) for a in amps if isinstance(a, int | float)]
        readnoise, rn_note = (
            (round(sum(amps) / len(amps), 3), "[e-] mean of READNSEA-D")
            if amps
            else (ASSUMED_RDNOISE, "[e-] assumed")
        )

    for idx in targets:
        hdr = hdul[idx].header
        if "DATE-OBS" in hdr and str(hdr["DATE-OBS"]) != date_obs:
            hdr["ORIGDATE"] = (str(hdr["DATE-OBS"]), "DATE-OBS as the archive gave it")
        if "MJD-OBS" in hdr and abs(float(hdr["MJD-OBS"]) - mjd_obs) > 1e-6:
            hdr["ORIGMJD"] = (hdr["MJD-OBS"], "MJD-OBS as the archive gave it")
        if "IMAGETYP" in hdr and str(hdr["IMAGETYP"]).lower() != "object":
            hdr["ORIGTYP"] = (str(hdr["IMAGETYP"]), "IMAGETYP as the archive gave it")
        set_cards(
            hdr,
            {
                "DATE-OBS": (date_obs, "[UTC] start of exposure"),
                "MJD-OBS": (mjd_obs, "[d] MJD of DATE-OBS (UTC)"),
                "DATESRC": (date_src, "DATE-OBS source: night | archive | mast:t_min"),
                "IMAGETYP": ("object", "AstrID frame type"),
                "FIELD": (field, "AstrID sky field"),
                "SURVEY": (f"MAST {collection}", "archive and collection"),
                "MASTURI": (str(product.get("dataURI", "")), "MAST data URI"),
            },
        )
        extra: dict[str, tuple[Any, str]] = {
            "GAIN": (ASSUMED_GAIN if gain is None else gain, gain_note),
            "RDNOISE": (readnoise, rn_note),
        }
        if band is not None:
            extra["FILTER"] = (band, "filter / band")
        if exptime is not None:
            extra["EXPTIME"] = (exptime, exptime_note)
        set_cards(hdr, extra, keep=True)


def _as_dict(row: Row | None) -> dict[str, Any]:
    """A table row as a dict of plain values, masked entries left out."""
    if row is None:
        return {}
    out: dict[str, Any] = {}
    for name in row.colnames:
        value = row[name]
        if value is np.ma.masked or isinstance(value, np.ma.core.MaskedConstant):
            continue
        out[name] = value.item() if isinstance(value, np.generic) else value
    return out


def fetch_mast(
    night: str,
    field: str,
    ra: float,
    dec: float,
    radius_arcmin: float = 5.0,
    collection: str = "HST",
    subgroups: Sequence[str] | None = None,
    calib_levels: Sequence[int] = (2, 3),
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[RawFrame]:
    """Fetch the calibrated science images ``collection`` took around (``ra``, ``dec``) on a night.

    Parameters
    ----------
    night
        Observing night, UTC date ``YYYY-MM-DD``; observations starting (``t_min``) in
        [night 00:00, next day 00:00) UTC are fetched (:func:`night_window_mjd`).
    field
        AstrID field name; written to ``FIELD`` and used in the ``frame_id``.
    ra, dec
        Field centre, ICRS, degrees.
    radius_arcmin
        Cone radius, arcmin: observations whose footprint meets the circle are fetched.
    collection
        MAST ``obs_collection``, e.g. ``"HST"``, ``"JWST"``, ``"SWIFT"``.
    subgroups
        Product sub-groups to keep, most preferred first; default
        :data:`DEFAULT_SUBGROUPS` for the collection (every sub-group if it has no entry).
    calib_levels
        CAOM calibration levels to keep (2 = calibrated, 3 = combined/drizzled).
    timeout_s
        Per-request timeout (connect, and between bytes), seconds.

    Returns
    -------
    One :class:`RawFrame` per product file, sorted by file name; ``[]`` if MAST has no
    matching observation or product.  ``frame_id`` is ``<field>-<YYYYMMDD>-mast-<file stem>``
    made path-safe.  The primary header and every science HDU (2-D image with a celestial
    WCS; ``SCI`` extensions when named) carry ``DATE-OBS`` (full ISO UTC start of exposure:
    the file's ``DATE-OBS``[+``TIME-OBS``], ``DATE-BEG`` or ``EXPSTART``/``MJD-OBS``, else
    MAST's ``t_min``; ``DATESRC`` says which; a changed original kept in ``ORIGDATE``),
    ``MJD-OBS`` (of DATE-OBS), ``IMAGETYP='object'``, ``FIELD``, ``SURVEY``, ``MASTURI``
    and, unless the header has them, ``FILTER``, ``EXPTIME`` (from the file else MAST's
    ``t_exptime``), ``GAIN`` and ``RDNOISE`` (see :data:`ASSUMED_GAIN`).  A file astropy
    cannot read is passed on as fetched.

    Raises
    ------
    SurveyError
        MAST answered with an HTTP or service error, timed out, could not be reached, refused
        the ``MAST_TOKEN``, or a download failed.
    ValueError
        ``night`` is not a date or the position is out of range.
    """
    start, end = night_window_mjd(night)
    check_position(ra, dec)
    token = settings.mast_token()
    if subgroups is None:
        subgroups = DEFAULT_SUBGROUPS.get(collection.upper())
    survey = f"MAST {collection}"
    client = ObservationsClass()
    use_timeout(client._session, timeout_s)
    fetched: list[tuple[dict[str, Any], dict[str, Any], bytes]] = []
    with archive_errors(survey, night, field, ra, dec), warnings.catch_warnings():
        warnings.simplefilter("ignore", NoResultsWarning)
        if token:
            client.login(token=token)
        observations = client.query_criteria(
            coordinates=SkyCoord(ra * u.deg, dec * u.deg, frame="icrs"),
            radius=radius_arcmin * u.arcmin,
            obs_collection=collection,
            dataproduct_type="image",
            intentType="science",
            t_min=[start, end],
        )
        if len(observations):
            t_min = _column(observations, "t_min", np.nan).astype(float)
            observations = observations[(t_min >= start) & (t_min < end)]  # [start, end)
        if not len(observations):
            log.info("%s: no observation for night %s, field %s", survey, night, field)
            return []
        try:
            products = client.get_product_list(observations)
        except InvalidQueryError:  # every observation was filtered out (TESS/TICA FFIs)
            return []
        products = select_products(products, subgroups, calib_levels, public_only=not token)
        by_obsid = {str(r["obsid"]): r for r in observations}
        with tempfile.TemporaryDirectory(prefix="astrid-mast-") as tmp:
            for row in products:
                product = _as_dict(row)
                uri = str(product["dataURI"])
                local = Path(tmp) / path_safe(str(product.get("productFilename", "product.fits")))
                status, msg, _ = client.download_file(uri, local_path=str(local), cache=False, verbose=False)
                if status != "COMPLETE" or not local.is_file():
                    raise SurveyError(survey, night, field, ra, dec, f"download of {uri}: {msg}")
                obs_row = by_obsid.get(str(product.get("parent_obsid")))
                if obs_row is None:
                    obs_row = by_obsid.get(str(product.get("obsID")))
                fetched.append((product, _as_dict(obs_row), local.read_bytes()))
                local.unlink()
    log.info("%s: %d file(s) for night %s, field %s", survey, len(fetched), night, field)

    frames: list[RawFrame] = []
    used: set[str] = set()
    for product, observation, raw in fetched:
        name = str(product.get("productFilename", "product.fits"))
        frame_id = path_safe(f"{field}-{night.replace('-', '')}-mast-{name.removesuffix('.fits')}")
        if frame_id in used:  # two products with one file name: number the later ones
            frame_id = f"{frame_id}-{len(used):03d}"
        used.add(frame_id)
        frames.append(
            RawFrame(
                frame_id=frame_id,
                night=night,
                field=field,
                source="mast",
                fits_bytes=restamp(
                    raw,
                    lambda hdul, p=product, o=observation: _stamp_mast(hdul, night, field, collection, p, o),
                ),
            )
        )
    return frames
