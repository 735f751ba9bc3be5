"""Alert packets: versioned Avro records, one per detection of an object, modelled on ZTF 4.02 and Rubin 11.0.

Schema and versions
-------------------
The schema is a file in the repository, ``packets/schema/astrid_alert_<MAJOR>.<MINOR>.avsc``
(:func:`load_schema`); every packet carries its version in ``schemavsn``. The compatibility rule
(:func:`readable_by`): a schema reads every packet written with a schema of the **same major version
and a lower or equal minor version** — a new minor version only adds fields, each with a default
(Avro schema resolution fills them in); removing or retyping a field, or adding one without a default,
needs a new major version.

What a packet holds
-------------------
``candidate`` (the detection, with ZTF's names and units where ZTF has the quantity: ``jd``, ``fid``,
``magpsf``/``sigmapsf`` in mag, ``isdiffpos`` ``'t'``/``'f'``, ``diffmaglim``, ``rb``/``drb`` with
``rbversion``/``drbversion`` — the real probability and the model version that gave it —, ``ssnamenr``,
``ssdistnr`` and ``distpsnr1``/``neargaia`` in arcsec, ``sgscore1``, ``ndethist``…), ``prv_candidates``
(the object's earlier detections within :data:`HISTORY_DAYS` days), ``fp_hists`` (forced photometry in the
same window, ZTF's ``forcediffimflux`` but in e-), ``object``, ``context``, three gzipped-FITS cut-outs
(:mod:`~astrid_assets.packets.cutouts`) and the night's ``injection`` completeness.

Magnitudes are ``MAGZP − 2.5 log10(|flux| / EXPTIME)`` with ``MAGZP`` the magnitude of 1 e-/s (AstrID's
zero-point convention); a frame without a zero point gives null magnitudes (fluxes in e- are always there).
Records are built from plain row dicts (a table row as ``dict``); NaN and missing values become null.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
from functools import cache
from pathlib import Path

import fastavro

__all__ = [
    "HISTORY_DAYS", "PUBLISHER", "SCHEMA_DIR", "SCHEMA_VERSION", "build_packet", "candid_of", "candidate_record",
    "context_record", "fid_of", "fp_hist_record", "injection_record", "load_schema", "magnitude", "object_record",
    "packet_bytes", "prv_candidate_record", "read_packets", "readable_by", "schema_versions", "write_packets",
]

SCHEMA_DIR = Path(__file__).with_name("schema")
#: The schema version AstrID writes.
SCHEMA_VERSION = "1.0"
PUBLISHER = "AstrID"
#: Days of history (earlier detections, forced photometry) a packet carries, as ZTF's.
HISTORY_DAYS = 30.0
#: ZTF's filter ids; any other filter is 0.
ZTF_FID = {"g": 1, "r": 2, "i": 3}
#: 2.5 / ln 10: magnitude error per unit relative flux error.
MAG_PER_RELATIVE_FLUX = 2.5 / math.log(10)


def schema_versions() -> list[str]:
    """The schema versions in :data:`SCHEMA_DIR`, oldest first."""
    found = [re.fullmatch(r"astrid_alert_(\d+)\.(\d+)\.avsc", path.name) for path in SCHEMA_DIR.iterdir()]
    return [f"{a}.{b}" for a, b in sorted((int(m[1]), int(m[2])) for m in found if m)]


@cache
def load_schema(version: str = SCHEMA_VERSION) -> dict:
    """The parsed Avro schema of ``version`` (fastavro's :func:`~fastavro.parse_schema`)."""
    path = SCHEMA_DIR / f"astrid_alert_{version}.avsc"
    if not path.exists():
        raise KeyError(f"no alert schema {version!r} (known: {', '.join(schema_versions())})")
    return fastavro.parse_schema(json.loads(path.read_text()))


def readable_by(writer_version: str, reader_version: str) -> bool:
    """The compatibility rule: a reader schema reads packets of the same major and a lower or equal minor."""
    writer, reader = (tuple(int(part) for part in v.split(".")) for v in (writer_version, reader_version))
    return writer[0] == reader[0] and writer[1] <= reader[1]


def _value(row: dict, key: str):
    """``row[key]`` with NaN, NA and absent as None, numpy scalars as Python ones."""
    value = row.get(key)
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    try:
        if value != value:  # pandas.NA and the like
            return None
    except TypeError:
        return None
    return value


def _float(row: dict, key: str) -> float | None:
    value = _value(row, key)
    return None if value is None else float(value)


def _int(row: dict, key: str) -> int | None:
    value = _value(row, key)
    return None if value is None else int(value)


def _bool(row: dict, key: str) -> bool | None:
    value = _value(row, key)
    return None if value is None else bool(value)


def _str(row: dict, key: str) -> str | None:
    value = _value(row, key)
    return None if value is None else str(value)


def candid_of(candidate_id: str) -> int:
    """A stable positive 63-bit integer id for ``candidate_id`` (ZTF's ``candid`` is a long)."""
    return int.from_bytes(hashlib.blake2b(candidate_id.encode(), digest_size=8).digest(), "big") >> 1


def fid_of(filter_name: str | None) -> int:
    """ZTF's filter id of a filter name (``g`` 1, ``r`` 2, ``i`` 3, with or without a ``zr``/``ztf_`` prefix); 0
    for any other."""
    if not filter_name:
        return 0
    name = str(filter_name).strip().lower().removeprefix("ztf_").removeprefix("ztf")
    if len(name) == 2 and name[0] == "z":  # zg, zr, zi
        name = name[1]
    return ZTF_FID.get(name.rstrip("'"), 0)


def jd_of(mjd: float | None) -> float | None:
    return None if mjd is None else float(mjd) + 2400000.5


def magnitude(flux: float | None, flux_err: float | None, zero_point: float | None,
              exptime: float | None) -> tuple[float | None, float | None]:
    """``(mag, sigma)`` of ``|flux|`` e- in ``exptime`` s: ``MAGZP − 2.5 log10(|flux| / exptime)`` and
    ``1.0857 flux_err / |flux|``; ``(None, None)`` without a zero point, exposure time or flux."""
    if None in (flux, zero_point, exptime) or flux == 0 or exptime <= 0:
        return None, None
    mag = zero_point - 2.5 * math.log10(abs(flux) / exptime)
    sigma = None if flux_err is None else MAG_PER_RELATIVE_FLUX * flux_err / abs(flux)
    return mag, sigma


def limiting_magnitude(flux_err: float | None, zero_point: float | None, exptime: float | None,
                       nsigma: float = 5.0) -> float | None:
    """Magnitude of a point source at ``nsigma`` × ``flux_err`` (e-): the limit at that position."""
    mag, _ = magnitude(None if flux_err is None else nsigma * flux_err, None, zero_point, exptime)
    return mag


def candidate_record(row: dict) -> dict:
    """The ``candidate`` record of a detection.

    Parameters
    ----------
    row : dict
        A ``candidate_detections`` row joined with: ``mjd_obs``, ``filter``, ``zero_point``, ``exptime``
        (its ``calibrated_frames`` row), ``instrument`` (``raw_observations``), ``real_probability``,
        ``model_version``, ``real`` (``scored_detections``), optionally ``diffmaglim`` (a measured 5σ limit,
        mag), the context's ``ssnamenr``, ``ssdistnr``, ``ssmagnr``, ``sgscore``, ``ps1_distance_arcsec``,
        ``gaia_distance_arcsec``, ``gaia_g``, and the object's ``n_detections``, ``first_mjd``, ``last_mjd``.

    Returns
    -------
    dict
        The record, ZTF names and units (module docstring).
    """
    flux, flux_err = _float(row, "flux"), _float(row, "flux_err")
    zero_point, exptime = _float(row, "zero_point"), _float(row, "exptime")
    mag, sigma = magnitude(flux, flux_err, zero_point, exptime)
    limit = _float(row, "diffmaglim")
    if limit is None:
        limit = limiting_magnitude(flux_err, zero_point, exptime)
    probability, version = _float(row, "real_probability"), _str(row, "model_version")
    snr = _float(row, "snr")
    if snr is None:
        snr = flux / flux_err if flux is not None and flux_err else 0.0
    return {
        "jd": jd_of(_float(row, "mjd_obs")), "fid": fid_of(_str(row, "filter")), "filter": _str(row, "filter"),
        "candid": candid_of(row["candidate_id"]), "candidate_id": str(row["candidate_id"]),
        "frame_id": str(row["frame_id"]), "field": str(row["field"]), "instrument": _str(row, "instrument"),
        "isdiffpos": "t" if (_int(row, "sign") or (1 if (flux or 0) >= 0 else -1)) > 0 else "f",
        "xpos": _float(row, "x"), "ypos": _float(row, "y"), "ra": _float(row, "ra"), "dec": _float(row, "dec"),
        "magpsf": mag, "sigmapsf": sigma, "diffmaglim": limit, "magzpsci": zero_point, "exptime": exptime,
        "psfflux": flux if flux is not None else 0.0, "psffluxerr": flux_err if flux_err is not None else 0.0,
        "snr": snr, "scorr": _float(row, "s_corr_peak"), "fwhm": _float(row, "fwhm"),
        "elong": _float(row, "elongation"), "sharpness": _float(row, "sharpness"), "flags": _int(row, "flags") or 0,
        "rule_score": _float(row, "rule_score"),
        "rb": probability, "rbversion": version, "drb": probability, "drbversion": version,
        "real": _bool(row, "real"),
        "ssnamenr": _str(row, "ssnamenr"), "ssdistnr": _float(row, "ssdistnr"), "ssmagnr": _float(row, "ssmagnr"),
        "sgscore1": _float(row, "sgscore"), "distpsnr1": _float(row, "ps1_distance_arcsec"),
        "neargaia": _float(row, "gaia_distance_arcsec"), "maggaia": _float(row, "gaia_g"),
        "ndethist": _int(row, "n_detections") or 1,
        "jdstarthist": jd_of(_float(row, "first_mjd")), "jdendhist": jd_of(_float(row, "last_mjd")),
    }


def prv_candidate_record(row: dict) -> dict:
    """A ``prv_candidate`` record: an earlier detection (a row as for :func:`candidate_record`)."""
    record = candidate_record(row)
    keys = ("jd", "fid", "filter", "candid", "candidate_id", "frame_id", "field", "isdiffpos", "xpos", "ypos", "ra",
            "dec", "magpsf", "sigmapsf", "diffmaglim", "magzpsci", "psfflux", "psffluxerr", "rb", "rbversion")
    return {key: record[key] for key in keys}


def fp_hist_record(row: dict) -> dict:
    """An ``fp_hist`` record from a ``forced_photometry`` row joined with its frame's ``zero_point``, ``exptime``."""
    return {
        "jd": jd_of(_float(row, "mjd_obs")), "fid": fid_of(_str(row, "filter")), "filter": _str(row, "filter"),
        "field": str(row["field"]), "frame_id": str(row["frame_id"]), "exptime": _float(row, "exptime"),
        "magzpsci": _float(row, "zero_point"), "diffmaglim": _float(row, "maglim_5sigma"),
        "forcediffimflux": _float(row, "flux"), "forcediffimfluxunc": _float(row, "flux_err"), "procstatus": "0",
        "snr": _float(row, "snr"), "mag": _float(row, "mag"), "magerr": _float(row, "mag_err"),
        "before_first_detection": _bool(row, "before_first_detection"), "detected": _bool(row, "detected"),
        "baseline": _float(row, "baseline"),
    }


def object_record(row: dict) -> dict:
    """The ``object`` record from a ``transient_objects`` row."""
    return {
        "objectId": str(row["object_id"]), "field": str(row["field"]), "ra": _float(row, "ra"),
        "dec": _float(row, "dec"), "x": _float(row, "x"), "y": _float(row, "y"),
        "position_err_arcsec": _float(row, "position_err_arcsec"), "first_night": _str(row, "first_night"),
        "last_night": _str(row, "last_night"), "first_mjd": _float(row, "first_mjd"),
        "last_mjd": _float(row, "last_mjd"), "n_detections": _int(row, "n_detections"),
        "real_probability": _float(row, "real_probability"), "model_version": _str(row, "model_version"),
        "moving": _bool(row, "moving"),
    }


def context_record(row: dict) -> dict:
    """The ``context`` record from an ``object_context`` row."""
    return {
        "gaia_source_id": _str(row, "gaia_source_id"), "gaia_distance_arcsec": _float(row, "gaia_distance_arcsec"),
        "gaia_g": _float(row, "gaia_g"), "gaia_parallax_snr": _float(row, "gaia_parallax_snr"),
        "gaia_pm_snr": _float(row, "gaia_pm_snr"), "is_star": _bool(row, "is_star"), "sgscore": _float(row, "sgscore"),
        "ps1_distance_arcsec": _float(row, "ps1_distance_arcsec"), "ssnamenr": _str(row, "ssnamenr"),
        "ssdistnr": _float(row, "ssdistnr"), "ssmagnr": _float(row, "ssmagnr"),
        "context_note": _str(row, "context_note"),
    }


def injection_record(summary: dict | None, detection_threshold: float) -> dict | None:
    """The ``injection`` record from a night's injection summary: ``fakes``, ``completeness_snr_ge_10``,
    ``snr_50`` and optionally ``completeness_at_operating_point``; None when the night had no test."""
    if summary is None:
        return None
    return {"detection_threshold": float(detection_threshold), "fakes": int(summary.get("fakes", 0)),
            "completeness_snr_ge_10": _float(summary, "completeness_snr_ge_10"),
            "snr_50": _float(summary, "snr_50"),
            "completeness_at_operating_point": _float(summary, "completeness_at_operating_point")}


def build_packet(
    detection: dict, history: list[dict], forced: list[dict], obj: dict | None, context: dict | None,
    cutouts: dict[str, bytes | None], injection: dict | None, version: str = SCHEMA_VERSION,
) -> dict:
    """One alert packet as an Avro-ready dict.

    Parameters
    ----------
    detection : dict
        The detection's row (:func:`candidate_record`).
    history : list of dict
        Earlier detections of the object (rows as ``detection``); those more than :data:`HISTORY_DAYS`
        days before it, or not before it, are left out.
    forced : list of dict
        ``forced_photometry`` rows of the object (:func:`fp_hist_record`); kept within :data:`HISTORY_DAYS`
        days before the detection, up to it.
    obj, context : dict or None
        The object's ``transient_objects`` and ``object_context`` rows.
    cutouts : dict
        ``science``, ``template``, ``difference``: gzipped FITS bytes
        (:func:`~astrid_assets.packets.cutouts.cutout_fits`) or None.
    injection : dict or None
        :func:`injection_record` of the night.
    version : str
        Schema version written in ``schemavsn``.
    """
    # the catalogue context and the object's history counts are the candidate's too (ZTF's ssnamenr, ndethist…)
    merged = {**(context or {}), **{k: (obj or {}).get(k) for k in ("n_detections", "first_mjd", "last_mjd")}}
    candidate = candidate_record({**{k: v for k, v in merged.items() if v is not None}, **{
        k: v for k, v in detection.items() if v is not None or k not in merged}})
    now, start = candidate["jd"], candidate["jd"] - HISTORY_DAYS
    earlier = sorted((prv_candidate_record(row) for row in history), key=lambda r: r["jd"])
    earlier = [r for r in earlier if start <= r["jd"] < now and r["candid"] != candidate["candid"]]
    photometry = sorted((fp_hist_record(row) for row in forced), key=lambda r: r["jd"])
    photometry = [r for r in photometry if start <= r["jd"] <= now]
    name = candidate["candidate_id"]

    def cutout(kind: str) -> dict | None:
        content = cutouts.get(kind)
        return None if content is None else {"fileName": f"{name}.{kind}.fits.gz", "stampData": content}

    return {
        "schemavsn": version, "publisher": PUBLISHER,
        "objectId": str(obj["object_id"]) if obj else str(detection["object_id"]),
        "candid": candidate["candid"], "candidate": candidate, "prv_candidates": earlier, "fp_hists": photometry,
        "object": object_record(obj) if obj else None, "context": context_record(context) if context else None,
        "cutoutScience": cutout("science"), "cutoutTemplate": cutout("template"),
        "cutoutDifference": cutout("difference"), "injection": injection,
    }


def write_packets(packets: list[dict], version: str = SCHEMA_VERSION, sync_marker: bytes | None = None) -> bytes:
    """An Avro object container file of ``packets`` (schema written once in its header; validated on write).

    ``sync_marker`` (16 bytes) makes the file's bytes reproducible (Avro picks a random one otherwise).
    """
    buffer = io.BytesIO()
    fastavro.writer(buffer, load_schema(version), packets, validator=True, sync_marker=sync_marker)
    return buffer.getvalue()


def read_packets(content: bytes, reader_version: str | None = None) -> list[dict]:
    """The packets of an Avro file, read with its own schema or resolved to ``reader_version``'s."""
    reader_schema = load_schema(reader_version) if reader_version else None
    return list(fastavro.reader(io.BytesIO(content), reader_schema=reader_schema))


def packet_bytes(packet: dict, version: str = SCHEMA_VERSION, with_schema: bool = False) -> int:
    """Size of one packet: the Avro-encoded record, or (``with_schema``) a one-packet Avro file as ZTF
    distributes them, schema included."""
    if with_schema:
        return len(write_packets([packet], version))
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, load_schema(version), packet)
    return buffer.tell()
