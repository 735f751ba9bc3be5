"""Catalogue context against canned Gaia, MAST (Pan-STARRS1) and SkyBoT answers, offline.

MAST and SkyBoT go through ``requests``: the network is replaced at ``requests.adapters.HTTPAdapter.send``
as in the SkyView and MAST tests. The Gaia archive's TAP client (``astroquery.utils.tap``) talks
``http.client`` directly: its ``HTTPSConnection`` is replaced by :class:`FakeTapConnection`. Everything
above the wire — astroquery's request building and its VOTable / JSON parsing — runs for real.
"""

from __future__ import annotations

import http.client
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest
import requests
from astropy.time import Time

from astrid_assets.catalogues.cones import cover_cones
from astrid_assets.catalogues.context import CatalogueOptions, ContextCache, context_rows
from astrid_assets.io.object_store import LocalObjectStore
from astrid_assets_tests.surveys.test_skyview import install_fake_archive

DATA = Path(__file__).parent / "data"
NIGHT, FIELD = "2024-03-05", "COSMOS-1"
EPOCH = 60374.25  # UTC MJD of the moving object's tracklet midpoint

#: A: 1.2″ from a Gaia star with a 15σ parallax; B: 0.36″ from a faint Gaia source without significant
#: astrometry, on a PS1 galaxy; C: a moving object 2.0″ from (4) Vesta at the epoch; D: a field without WCS.
OBJECTS = pd.DataFrame({
    "object_id": ["A", "B", "C", "D"], "ra": [150.0, 150.001, 150.0100, None], "dec": [2.0, 2.0, 2.01, None],
    "epoch_mjd": [60374.2, 60374.2, EPOCH, 60374.2],
})


class FakeTapResponse:
    def __init__(self, status: int, body: bytes, headers: dict[str, str]):
        self.status, self.reason, self._body, self._headers = status, "OK" if status == 200 else "Error", body, headers

    def read(self, *args) -> bytes:
        return self._body

    def getheaders(self) -> list[tuple[str, str]]:
        return list(self._headers.items())


class FakeTapConnection:
    """Stands in for ``http.client.HTTPSConnection`` under astroquery's TAP client; ``sent`` keeps each request
    (host, timeout, method, path, body)."""

    sent: list[tuple] = []
    fail: BaseException | None = None

    def __init__(self, host: str, port: int | None = None, timeout: float | None = None, **kwargs):
        self.host, self.port, self.timeout = host, port, timeout

    def request(self, method, url, body=None, headers=None):
        if self.fail is not None:
            raise self.fail
        FakeTapConnection.sent.append((self.host, self.timeout, method, url, body))

    def getresponse(self) -> FakeTapResponse:
        path = FakeTapConnection.sent[-1][3]
        if path.endswith("/tap/sync"):
            return FakeTapResponse(200, (DATA / "gaia_sources.vot").read_bytes(), {"Content-Type": "text/xml"})
        return FakeTapResponse(404, b"not here", {})


def requests_archive(request: requests.PreparedRequest):
    url = urlsplit(request.url)
    if url.path.endswith("/panstarrs/dr2/mean/metadata.json"):
        return 200, (DATA / "ps1_metadata.json").read_bytes(), {"Content-Type": "application/json"}
    if url.path.endswith("/panstarrs/dr2/mean.json"):
        return 200, (DATA / "ps1_mean.json").read_bytes(), {"Content-Type": "application/json"}
    if "skybot" in url.path:
        return 200, (DATA / "skybot_cone.vot").read_bytes(), {"Content-Type": "application/x-votable+xml"}
    return 404, b"not here", {}


@pytest.fixture
def archives(monkeypatch):
    """Canned Gaia, MAST and SkyBoT; yields the requests-level fake (``sent``) and the TAP fake class."""
    monkeypatch.setattr(FakeTapConnection, "sent", [])
    monkeypatch.setattr(FakeTapConnection, "fail", None)
    monkeypatch.setattr(http.client, "HTTPSConnection", FakeTapConnection)
    yield install_fake_archive(monkeypatch, requests_archive), FakeTapConnection


def run(store, options: CatalogueOptions | None = None, objects=OBJECTS):
    return context_rows(objects, ContextCache(store, NIGHT, FIELD), options or CatalogueOptions())


def test_nearest_gaia_source_and_the_star_rule(archives, tmp_path):
    _, tap = archives
    rows, counts = run(LocalObjectStore(tmp_path), CatalogueOptions(panstarrs=False, skybot=False))
    rows = rows.set_index("object_id")

    assert rows.loc["A", "gaia_source_id"] == "3837893406718357888"
    assert rows.loc["A", "gaia_distance_arcsec"] == pytest.approx(1.2, abs=0.01)
    assert rows.loc["A", "gaia_g"] == pytest.approx(16.42, abs=1e-3)
    assert rows.loc["A", "gaia_parallax_snr"] == pytest.approx(15.5, rel=1e-3)
    assert rows.loc["A", "is_star"] is True  # parallax 15.5σ
    assert rows.loc["B", "gaia_source_id"] == "3837893406718357999"  # the nearer of two sources
    assert rows.loc["B", "gaia_distance_arcsec"] == pytest.approx(0.36, abs=0.01)
    assert rows.loc["B", "is_star"] is False  # parallax 1.1σ, proper motion 0.9σ
    assert rows.loc["B", "gaia_pm_snr"] == pytest.approx(((0.2 / 0.4) ** 2 + (0.3 / 0.38) ** 2) ** 0.5, rel=1e-3)
    assert rows.loc["C", "gaia_source_id"] is None and rows.loc["C", "is_star"] is None  # nothing within 10″
    assert counts["near_gaia_star"] == 1
    # one synchronous ADQL query to the Gaia archive, with a timeout, one circle per object with a position
    [(host, timeout, method, path, body)] = [sent for sent in tap.sent if sent[3].endswith("/sync")]
    assert (host, method, path) == ("gea.esac.esa.int", "POST", "/tap-server/tap/sync") and timeout
    query = parse_qs(body)["QUERY"][0]
    assert "gaiadr3.gaia_source" in query and query.count("CIRCLE(") == 3


def test_panstarrs_score_point_source_and_galaxy(archives, tmp_path):
    web, _ = archives
    rows, _ = run(LocalObjectStore(tmp_path), CatalogueOptions(gaia=False, skybot=False))
    rows = rows.set_index("object_id")

    assert rows.loc["A", "sgscore"] == 1.0  # iPSF − iKron = 0.02 mag
    assert rows.loc["B", "sgscore"] == 0.0  # 0.54 mag: extended
    assert rows.loc["B", "ps1_distance_arcsec"] == pytest.approx(0.29, abs=0.01)  # not the single detection
    assert pd.isna(rows.loc["C", "sgscore"]) and pd.isna(rows.loc["C", "ps1_distance_arcsec"])  # 48″ away
    assert all(kwargs["timeout"] for request, kwargs in web.sent if "mean.json" in request.url)


def test_skybot_names_the_asteroid_at_a_moving_objects_position(archives, tmp_path):
    web, _ = archives
    rows, counts = run(LocalObjectStore(tmp_path), CatalogueOptions(gaia=False, panstarrs=False))
    rows = rows.set_index("object_id")

    assert rows.loc["C", "ssnamenr"] == "4 Vesta"
    assert rows.loc["C", "ssdistnr"] == pytest.approx(2.0, abs=0.02)
    assert rows.loc["C", "ssmagnr"] == pytest.approx(7.9)
    assert rows.loc["A", "ssnamenr"] is None  # Vesta is 38″ from A, beyond 30″
    assert counts["near_solar_system_object"] == 1
    epochs = sorted(float(parse_qs(urlsplit(r.url).query)["-ep"][0]) for r, _ in web.sent if "skybot" in r.url)
    assert Time(EPOCH, format="mjd", scale="utc").jd in [pytest.approx(e, abs=1e-6) for e in epochs]


def test_an_unreachable_archive_gives_no_context_and_a_note(archives, tmp_path, monkeypatch):
    _, tap = archives
    monkeypatch.setattr(tap, "fail", ConnectionRefusedError("no route to gea.esac.esa.int"))
    install_fake_archive(monkeypatch, lambda request: (_ for _ in ()).throw(requests.ConnectionError("refused")))

    rows, counts = run(LocalObjectStore(tmp_path))

    assert counts["archives_failed"] == 3
    placed = rows[rows.object_id != "D"]
    assert placed[["gaia_source_id", "sgscore", "ssnamenr"]].isna().all().all()
    for note in placed.context_note:
        assert all(f"{archive}: no context" in note for archive in ("gaia", "panstarrs", "skybot"))
    # nothing was cached: a re-run with the archives back asks again and gets the context
    install_fake_archive(monkeypatch, requests_archive)
    monkeypatch.setattr(tap, "fail", None)
    rows, counts = run(LocalObjectStore(tmp_path))
    assert counts["archives_failed"] == 0 and rows.set_index("object_id").loc["C", "ssnamenr"] == "4 Vesta"


def test_objects_without_sky_position_get_a_note_and_no_query(archives, tmp_path):
    web, tap = archives
    rows, counts = run(LocalObjectStore(tmp_path), objects=OBJECTS[OBJECTS.object_id == "D"])

    assert rows.context_note.tolist() == ["no sky position (field without WCS): no catalogue query"]
    assert web.sent == [] and not [sent for sent in tap.sent if sent[3].endswith("/sync")]
    assert counts["without_sky_position"] == 1


def test_a_rerun_reads_the_cache_and_asks_nothing(archives, tmp_path):
    web, tap = archives
    store = LocalObjectStore(tmp_path)
    first, counts = run(store)
    asked = len(web.sent) + len(tap.sent)
    assert counts["archive_queries"] == 4 and counts["cache_hits"] == 0  # Gaia, PS1, SkyBoT at two epochs

    again, counts = run(store)

    assert len(web.sent) + len(tap.sent) == asked  # no second request
    assert counts["cache_hits"] == 4 and counts["archive_queries"] == 0
    pd.testing.assert_frame_equal(first, again)
    assert store.list(f"object_context/cache/{NIGHT}/{FIELD}/")


def test_cover_cones_split_a_wide_spread():
    positions = pd.DataFrame({"ra": [150.0, 150.001, 151.0], "dec": [2.0, 2.0, 2.0]})
    cones = cover_cones(positions, match_arcsec=30.0, max_radius_arcsec=360.0)
    assert sorted(sorted(c.index) for c in cones) == [[0, 1], [2]]
    assert all(c.radius_arcsec <= 360.0 for c in cones)


def test_the_asset_writes_context_and_survives_an_unreachable_archive(astrid_home, monkeypatch):
    """``object_context`` for one night from ``transient_objects`` rows written straight into the embedded
    SQLite database; SkyBoT refuses the connection, the night still succeeds with notes."""
    from dagster import materialize

    from astrid_assets.definitions import default_resources
    from astrid_assets.defs.context import object_context
    from astrid_assets.defs.objects import transient_objects
    from astrid_assets.io import schema
    from astrid_assets.io.tables import engine_for, read_nights, write_rows
    from astrid_assets.resources import DatabaseResource

    monkeypatch.setattr(FakeTapConnection, "sent", [])
    monkeypatch.setattr(FakeTapConnection, "fail", None)
    monkeypatch.setattr(http.client, "HTTPSConnection", FakeTapConnection)

    def no_skybot(request):
        if "skybot" in request.url:
            raise requests.ConnectionError("SkyBoT refused the connection")
        return requests_archive(request)

    install_fake_archive(monkeypatch, no_skybot)
    objects = OBJECTS.assign(night=NIGHT, field=FIELD, x=100.0, y=100.0, first_mjd=OBJECTS.epoch_mjd - 0.01,
                             last_mjd=OBJECTS.epoch_mjd + 0.01, first_night=NIGHT, last_night=NIGHT, n_detections=2,
                             real_probability=0.9, model_version="v1", position_err_px=0.1,
                             moving=[False, False, True, False], ssnamenr=None)
    engine = engine_for(DatabaseResource().resolved_url())
    schema.transient_objects.create(engine, checkfirst=True)
    with engine.begin() as connection:
        write_rows(connection, schema.transient_objects, objects[list(schema.transient_objects.c.keys())])

    result = materialize([*transient_objects.to_source_assets(), object_context], partition_key=NIGHT,
                         resources=default_resources())

    assert result.success
    rows = read_nights("object_context", [NIGHT]).set_index("object_id")
    assert rows.loc["A", "is_star"] and rows.loc["A", "sgscore"] == 1.0
    assert pd.isna(rows.loc["C", "ssnamenr"]) and "skybot: no context" in rows.loc["C", "context_note"]
    assert rows.loc["D", "context_note"].startswith("no sky position")
