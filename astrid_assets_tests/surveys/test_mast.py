"""fetch_mast against a canned MAST, offline.

As for SkyView, the network is replaced at ``requests.adapters.HTTPAdapter.send``, so
astroquery's MAST client (column configs, the Mashup request and its JSON, product lists,
``download_file`` with its HEAD-then-GET) runs unchanged.  The archive's observation and
product tables are written here as astropy Tables and served the way MAST serves them (Mashup
JSON); the product files are the SkyView cut-out of M13, once as an HST-like multi-extension
file and once as the plain file.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from urllib.parse import parse_qs, unquote, urlsplit

import astropy.units as u
import numpy as np
import pytest
import requests
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time

from astrid_assets.science.frames.files import read_frame
from astrid_assets.surveys.errors import SurveyError
from astrid_assets.surveys.mast import fetch_mast, night_window_mjd
from astrid_assets_tests.surveys.test_skyview import M13, Answer, centre, install_fake_archive, m13_fits_bytes

NIGHT, FIELD = "2024-01-02", "M13"
START = 60311.0  # MJD of 2024-01-02T00:00 UTC
T_MIN = 60311.1234  # the canned exposure's start, 02:57:41 UTC on the night
SECRET = "mast-token-0123456789abcdef"


def observations_table() -> Table:
    """What MAST's CAOM index holds near M13 for the night (plus one just after it)."""
    return Table(
        rows=[
            ("2003501234", "HST", "jdba01010", "image", "science", "M13", 250.4226, 36.4602,
             T_MIN, T_MIN + 0.01, 500.0, "F606W", 3),
            # starts exactly at the next night's 00:00 UTC: not this night's
            ("2003509999", "HST", "jdba02010", "image", "science", "M13", 250.4226, 36.4602,
             START + 1.0, START + 1.01, 500.0, "F814W", 3),
        ],
        names=["obsid", "obs_collection", "obs_id", "dataproduct_type", "intentType", "target_name",
               "s_ra", "s_dec", "t_min", "t_max", "t_exptime", "filters", "calib_level"],
    )  # fmt: skip


def products_table() -> Table:
    """The products of observation 2003501234 (some duplicated, as MAST lists them)."""
    rows = [
        # filename, productType, subgroup, calib_level, dataRights, obsID
        ("jdba01a1q_flc.fits", "SCIENCE", "FLC", 2, "PUBLIC", "2003501235"),
        ("jdba01a1q_flt.fits", "SCIENCE", "FLT", 2, "PUBLIC", "2003501235"),  # FLC preferred
        ("jdba01a2q_flt.fits", "SCIENCE", "FLT", 2, "PUBLIC", "2003501236"),  # no FLC: kept
        ("jdba01a1q_raw.fits", "SCIENCE", "RAW", 1, "PUBLIC", "2003501235"),  # not calibrated
        ("jdba01010_drc.fits", "SCIENCE", "DRC", 3, "PUBLIC", "2003501234"),  # not a sub-group
        ("jdba01a1q_jif.fits", "AUXILIARY", "JIF", 1, "PUBLIC", "2003501235"),
        ("jdba01a1q_flc.jpg", "PREVIEW", "FLC", 2, "PUBLIC", "2003501235"),
        ("jdba01a3q_flc.fits", "SCIENCE", "FLC", 2, "EXCLUSIVE_ACCESS", "2003501237"),
        ("jdba01a1q_flc.fits", "SCIENCE", "FLC", 2, "PUBLIC", "2003501235"),  # listed twice
    ]
    return Table(
        rows=[
            (obsid, "HST", "image", name.split("_")[0], "SCIENCE", f"mast:HST/product/{name}", ptype,
             "Minimum Recommended Products", group, name, 16_000_000, "2003501234", rights, level, "F606W")
            for name, ptype, group, level, rights, obsid in rows
        ],
        names=["obsID", "obs_collection", "dataproduct_type", "obs_id", "description", "dataURI",
               "productType", "productGroupDescription", "productSubGroupDescription", "productFilename",
               "size", "parent_obsid", "dataRights", "calib_level", "filters"],
    )  # fmt: skip


def mashup_json(table: Table) -> bytes:
    """``table`` as MAST's Mashup service answers: fields with types, rows as objects."""
    kinds = {"U": "string", "S": "string", "f": "float", "i": "int", "b": "boolean"}
    fields = [{"name": name, "type": kinds[table[name].dtype.kind]} for name in table.colnames]
    rows = [{name: row[name].item() for name in table.colnames} for row in table]
    paging = {"page": 1, "pageSize": 50000, "pagesFiltered": 1, "rows": len(rows),
              "rowsFiltered": len(rows), "rowsTotal": len(rows)}  # fmt: skip
    return json.dumps(
        {"status": "COMPLETE", "msg": "", "fields": fields, "data": rows, "paging": paging}
    ).encode()


def column_config() -> bytes:
    """MAST's columnsconfig: each column's type (floats are filtered by min/max)."""
    columns = {**dict.fromkeys(observations_table().colnames, {"type": "string"}),
               **dict.fromkeys(products_table().colnames, {"type": "string"})}  # fmt: skip
    for name in ("s_ra", "s_dec", "t_min", "t_max", "t_exptime"):
        columns[name] = {"type": "float"}
    return json.dumps(columns).encode()


def hst_like_fits() -> bytes:
    """M13 as an HST calibrated exposure: metadata in the primary header, image in ``SCI``."""
    with fits.open(io.BytesIO(m13_fits_bytes())) as hdul:
        image, sky = hdul[0].data.astype(np.float32), hdul[0].header
    primary = fits.PrimaryHDU()
    primary.header.update({
        "TELESCOP": "HST", "INSTRUME": "ACS", "IMAGETYP": "EXT", "DATE-OBS": NIGHT,
        "TIME-OBS": "02:57:41", "EXPSTART": T_MIN, "EXPTIME": 339.0, "FILTER1": "F606W",
        "FILTER2": "CLEAR2L", "CCDGAIN": 2.0, "READNSEA": 4.0, "READNSEB": 4.2,
        "READNSEC": 4.1, "READNSED": 4.3,
    })  # fmt: skip
    science = fits.ImageHDU(image, name="SCI")
    for key in ("CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CDELT1", "CDELT2", "EQUINOX"):
        science.header[key] = sky[key]
    science.header["BUNIT"] = "ELECTRONS"
    error = fits.ImageHDU(np.sqrt(np.abs(image)), header=science.header.copy(), name="ERR")
    out = io.BytesIO()
    fits.HDUList([primary, science, error]).writeto(out)
    return out.getvalue()


def invoked(request: requests.PreparedRequest) -> dict:
    """The Mashup request (JSON) an ``/api/v0/invoke`` POST carries."""
    body = request.body.decode() if isinstance(request.body, bytes) else request.body
    return json.loads(unquote(body.removeprefix("request=")))


def mast(
    observations: Table | None = None,
    files: dict[str, bytes] | None = None,
    invoke_status: int = 200,
) -> Callable[[requests.PreparedRequest], Answer]:
    """A MAST: column configs, the CAOM and product services, file downloads and ``whoami``."""
    observations = observations_table() if observations is None else observations
    files = (
        {"jdba01a1q_flc.fits": hst_like_fits(), "jdba01a2q_flt.fits": m13_fits_bytes()}
        if files is None
        else files
    )

    def handler(request: requests.PreparedRequest) -> Answer:
        url = urlsplit(request.url)
        if url.path.endswith("/columnsconfig"):
            return 200, column_config(), {}
        if url.path == "/api/v0/invoke":
            if invoke_status != 200:
                return invoke_status, b"<html>error</html>", {}
            service = invoked(request)["service"]
            table = observations if service.startswith("Mast.Caom.Filtered") else products_table()
            return 200, mashup_json(table), {"Content-Type": "application/json"}
        if url.path == "/api/v0.1/Download/file":
            name = parse_qs(url.query)["uri"][0].rsplit("/", 1)[-1]
            if name in files:
                return 200, files[name], {"Content-Type": "application/octet-stream"}
            return 404, b"no such file", {}
        if url.path == "/whoami":
            return 200, json.dumps({"anon": False, "attrib": {"display_name": "Test"}}).encode(), {}
        return 404, b"not here", {}

    return handler


@pytest.fixture
def offline(monkeypatch):
    """``offline(handler)`` puts a fake archive in place of the network and returns it."""
    return lambda handler: install_fake_archive(monkeypatch, handler)


@pytest.fixture(autouse=True)
def anonymous(monkeypatch):
    """No MAST token unless a test sets one."""
    monkeypatch.delenv("MAST_TOKEN", raising=False)
    monkeypatch.delenv("MAST_API_TOKEN", raising=False)


def test_night_window_is_the_utc_date():
    assert night_window_mjd(NIGHT) == (START, START + 1.0)
    assert Time(START, format="mjd").isot == "2024-01-02T00:00:00.000"


def test_calibrated_images_of_the_night_become_astrid_frames(offline):
    archive = offline(mast())

    frames = fetch_mast(NIGHT, FIELD, 250.4226, 36.4602)

    ids = [f.frame_id for f in frames]
    assert ids == ["M13-20240102-mast-jdba01a1q_flc", "M13-20240102-mast-jdba01a2q_flt"]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"[A-Za-z0-9._-]+", i) for i in ids)
    assert {(f.night, f.field, f.source) for f in frames} == {(NIGHT, FIELD, "mast")}
    for frame in frames:
        image, header = read_frame(frame.fits_bytes, NIGHT, frame.frame_id)  # AstrID's validation
        assert centre(header, image.shape).separation(M13) < 3 * u.arcmin
        for key in ("DATE-OBS", "MJD-OBS", "FILTER", "EXPTIME", "GAIN", "RDNOISE"):
            assert key in header
        assert (header["IMAGETYP"], header["FIELD"], header["SURVEY"]) == ("object", FIELD, "MAST HST")
        assert Time(header["DATE-OBS"]).mjd == pytest.approx(header["MJD-OBS"], abs=1e-7)
        assert START <= header["MJD-OBS"] < START + 1
    # only the two chosen products were downloaded
    downloads = [parse_qs(urlsplit(u).query)["uri"][0] for u in archive.urls("GET") if "Download" in u]
    assert downloads == ["mast:HST/product/jdba01a1q_flc.fits", "mast:HST/product/jdba01a2q_flt.fits"]
    assert all(kwargs["timeout"] for _, kwargs in archive.sent)


def test_headers_come_from_the_file_first_then_from_mast(offline):
    offline(mast())

    hst, plain = fetch_mast(NIGHT, FIELD, 250.4226, 36.4602)

    with fits.open(io.BytesIO(hst.fits_bytes), checksum=True) as hdul:
        primary, science = hdul[0].header, hdul["SCI"].header
        assert "DATE-OBS" not in hdul["ERR"].header  # only the science image is stamped
    assert primary["ORIGDATE"] == NIGHT  # HST's date-only DATE-OBS, made a full time
    assert primary["ORIGTYP"] == "EXT"
    for header in (primary, science):  # the file's own DATE-OBS + TIME-OBS, filters and noise
        assert header["DATE-OBS"] == "2024-01-02T02:57:41.000"
        assert header["DATESRC"] == "archive"
        assert header["IMAGETYP"] == "object"
        assert header["FILTER"] == "F606W"
        assert header["EXPTIME"] == 339.0
        assert header["GAIN"] == 1.0  # calibrated HST data are in electrons
        assert header["RDNOISE"] == pytest.approx(4.15)
        assert header["MASTURI"] == "mast:HST/product/jdba01a1q_flc.fits"

    header = fits.getheader(io.BytesIO(plain.fits_bytes))  # a file without metadata
    assert header["DATE-OBS"] == Time(T_MIN, format="mjd").isot
    assert header["DATESRC"] == "mast:t_min"
    assert (header["FILTER"], header["EXPTIME"]) == ("F606W", 500.0)  # MAST's filters, t_exptime


def test_query_sent_carries_position_collection_and_night_window(offline):
    archive = offline(mast())

    fetch_mast(NIGHT, FIELD, 250.4226, 36.4602, radius_arcmin=6.0)

    requests_sent = [invoked(r) for r, _ in archive.sent if r.url.endswith("/api/v0/invoke")]
    query, products = requests_sent
    assert query["service"] == "Mast.Caom.Filtered.Position"
    ra, dec, radius = (float(x) for x in query["params"]["position"].split(","))
    assert (ra, dec) == pytest.approx((250.4226, 36.4602))
    assert radius == pytest.approx(0.1)  # 6 arcmin, in degrees
    filters = {f["paramName"]: f["values"] for f in query["params"]["filters"]}
    assert filters["obs_collection"] == ["HST"]
    assert filters["dataproduct_type"] == ["image"]
    assert filters["intentType"] == ["science"]
    assert filters["t_min"] == [{"min": START, "max": START + 1.0}]
    # the observation starting at the next night's 00:00 is not this night's
    assert products["service"] == "Mast.Caom.Products"
    assert products["params"]["obsid"] == "2003501234"


def test_no_observation_gives_no_frames(offline):
    archive = offline(mast(observations=observations_table()[:0]))

    assert fetch_mast(NIGHT, FIELD, 250.4226, 36.4602) == []
    assert not [u for u in archive.urls() if "Download" in u]


def test_http_error_raises_survey_error_naming_the_request(offline):
    offline(mast(invoke_status=500))

    with pytest.raises(SurveyError) as error:
        fetch_mast(NIGHT, FIELD, 250.4226, 36.4602)

    message = str(error.value)
    for expected in ("MAST HST", NIGHT, FIELD, "250.42260", "+36.46020", "500"):
        assert expected in message
    assert (error.value.survey, error.value.night, error.value.field) == ("MAST HST", NIGHT, FIELD)


def test_failed_download_raises_survey_error(offline):
    offline(mast(files={"jdba01a1q_flc.fits": hst_like_fits()}))  # the second file is missing

    with pytest.raises(SurveyError, match=r"jdba01a2q_flt\.fits.*404"):
        fetch_mast(NIGHT, FIELD, 250.4226, 36.4602)


def test_token_logs_in_fetches_exclusive_data_and_is_never_shown(offline, monkeypatch, caplog):
    monkeypatch.setenv("MAST_TOKEN", SECRET)
    files = {"jdba01a1q_flc.fits": hst_like_fits(), "jdba01a2q_flt.fits": m13_fits_bytes()}
    archive = offline(mast(files=files))  # jdba01a3q_flc (exclusive access) is then missing: 404
    caplog.set_level("DEBUG")

    with pytest.raises(SurveyError) as error:
        fetch_mast(NIGHT, FIELD, 250.4226, 36.4602)

    assert "jdba01a3q_flc.fits" in str(error.value)  # exclusive data were asked for
    whoami = [r for r, _ in archive.sent if r.url.endswith("/whoami")]
    assert whoami and f"mast_token={SECRET}" in whoami[0].headers["Cookie"]
    assert SECRET not in str(error.value) and SECRET not in repr(error.value.__cause__)
    assert SECRET not in caplog.text
