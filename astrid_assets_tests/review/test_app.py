"""The scanning page in-process (Starlette's test client, no server): sign-in, CSRF, escaping, labels with
what was on screen, expert reviews, a trusted proxy, stamps, the overview."""

from __future__ import annotations

import io
import re

import numpy as np
import pandas as pd
from PIL import Image
from sqlalchemy import select

from astrid_assets.io.arrays import save_arrays
from astrid_assets.io.object_store import LocalObjectStore
from astrid_assets.io.schema import unet_models, validations
from astrid_assets.io.tables import engine_for
from astrid_assets.review.auth import hash_password, is_trusted_proxy, verify_password

from .conftest import NIGHT, PASSWORD, token


def label_rows(url):
    with engine_for(url).connect() as connection:
        return pd.read_sql(select(validations), connection)


def test_passwords_are_salted_scrypt_hashes():
    stored = hash_password("s3cret pass")
    assert stored.startswith("scrypt$16384$8$1$") and "s3cret" not in stored
    assert stored != hash_password("s3cret pass")
    assert verify_password("s3cret pass", stored) and not verify_password("s3cret pasS", stored)
    assert not verify_password("anything", None)


def test_an_unsigned_request_gets_the_sign_in_page(site):
    client = site.client()
    for path in ("/queue", "/overview", f"/candidate/{site.candidates.candidate_id[0]}",
                 f"/stamp/{site.candidates.candidate_id[0]}/science.png"):
        response = client.get(path)
        assert response.url.path == "/signin" and 'id="signin-form"' in response.text, path
    wrong = client.post("/signin", data={"name": "ana", "password": "nope", "csrf_token": token(response.text)})
    assert wrong.status_code == 401 and "wrong password" in wrong.text


def test_a_form_without_the_csrf_token_is_refused(site):
    client = site.sign_in("ana")
    candidate = site.candidates.candidate_id[0]
    for data in ({"label": "real"}, {"label": "real", "csrf_token": "forged"}):
        response = client.post(f"/candidate/{candidate}/label", data=data)
        assert response.status_code == 403 and "CSRF" in response.text
    assert site.client().post("/signin", data={"name": "ana", "password": PASSWORD}).status_code == 403
    assert label_rows(site.url).empty


def test_the_queue_puts_the_most_uncertain_first_and_a_label_records_what_was_shown(site):
    client = site.sign_in("ana")
    page = client.get("/queue").text
    shown = re.findall(r'class="candidate-link">([^<]+)<', page)
    # probabilities 0.05 + 0.08 i: |p - 0.5| smallest at i = 6 (0.53), then 5 (0.45), 7 (0.61), 4 (0.37)
    assert shown[:4] == [site.candidates.candidate_id[i] for i in (6, 5, 7, 4)]
    first = client.get(f"/candidate/{shown[0]}")
    assert 'id="model-version">7<' in first.text
    after = client.post(f"/candidate/{shown[0]}/label", data={
        "label": "real", "model_version": "7", "real_probability": "0.53", "csrf_token": token(first.text)})
    assert after.url.path == f"/candidate/{shown[1]}"  # on to the next in the queue
    row = label_rows(site.url).iloc[0]
    assert (row.candidate_id, row.label, row.labeller, row.model_version, row.source) == (
        shown[0], "real", "ana", "7", "review")
    assert row.real_probability == 0.53 and row.night == NIGHT
    assert shown[0] not in re.findall(r'class="candidate-link">([^<]+)<', client.get("/queue").text)


def test_a_hostile_name_is_stored_and_shown_as_text(site):
    hostile = "<script>alert(1)</script>"
    site.app.state.records.add_person(hostile, PASSWORD, "labeller")
    client = site.sign_in(hostile)
    candidate = site.candidates.candidate_id[0]
    page = client.get(f"/candidate/{candidate}")
    client.post(f"/candidate/{candidate}/label", data={"label": "bogus", "csrf_token": token(page.text)})
    assert label_rows(site.url).labeller.tolist() == [hostile]
    seen = site.sign_in("ana").get(f"/candidate/{candidate}").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in seen and hostile not in seen


def test_disagreement_and_expert_review(site):
    candidate = site.candidates.candidate_id[3]
    for name, label in (("ana", "real"), ("eve", "bogus")):
        client = site.sign_in(name)
        page = client.get(f"/candidate/{candidate}")
        client.post(f"/candidate/{candidate}/label", data={"label": label, "csrf_token": token(page.text)})
    for name in ("ana", "eve"):
        client = site.sign_in(name)
        assert 'id="disagreement"' in client.get(f"/candidate/{candidate}").text
        assert f">{candidate}</a>" in client.get("/queue").text.split('id="disagreements"')[1]
    labeller = site.sign_in("ana")
    page = labeller.get(f"/candidate/{candidate}").text
    assert 'id="review-form"' not in page
    refused = labeller.post(f"/candidate/{candidate}/review", data={"confirmed": "yes", "importance": "5",
                                                                    "csrf_token": token(page)})
    assert refused.status_code == 403
    expert = site.sign_in("eve")
    page = expert.get(f"/candidate/{candidate}").text
    done = expert.post(f"/candidate/{candidate}/review", data={"confirmed": "yes", "importance": "5",
                                                                "csrf_token": token(page)})
    assert "eve: confirmed, importance 5/5" in done.text
    assert re.search(r'Consensus: <strong>real</strong>, confidence 100 %.*expert', done.text, re.S)


def test_a_trusted_proxy_names_the_person_and_nobody_else_can(astrid_home, monkeypatch, site):
    from astrid_assets.review.app import create_app

    monkeypatch.setenv("ASTRID_REVIEW_USER_HEADER", "X-Forwarded-User")
    monkeypatch.setenv("ASTRID_REVIEW_TRUSTED_PROXIES", "10.1.0.0/16")
    site.app = create_app(site.url, str(site.objects))
    from_proxy = site.client("10.1.2.3").get("/queue", headers={"X-Forwarded-User": "zoe"})
    assert from_proxy.url.path == "/queue" and 'id="person-name">zoe<' in from_proxy.text
    assert site.app.state.records.person("zoe")["role"] == "labeller"
    forged = site.client("192.0.2.9").get("/queue", headers={"X-Forwarded-User": "zoe"})
    assert forged.url.path == "/signin"
    assert is_trusted_proxy("127.0.0.1", ["localhost"]) and not is_trusted_proxy("10.2.0.1", ["10.1.0.0/16"])


def test_stamps_are_pngs_of_the_stack_in_both_stretches(site):
    client = site.sign_in("ana")
    candidate = site.candidates.candidate_id[2]
    images = {}
    for stretch in ("zscale", "asinh"):
        response = client.get(f"/stamp/{candidate}/difference.png?stretch={stretch}")
        assert response.headers["content-type"] == "image/png"
        images[stretch] = np.asarray(Image.open(io.BytesIO(response.content)))
    assert images["zscale"].shape == (63, 63) and images["zscale"].dtype == np.uint8
    # the difference holds a point source at the centre: far brighter there than on the sky around it
    for image in images.values():
        centre, sky = image[29:34, 29:34].astype(float).mean(), np.median(image[:15].astype(float))
        assert centre > sky + 60, (centre, sky)
    assert not np.array_equal(images["zscale"], images["asinh"])
    assert client.get(f"/stamp/{candidate}/difference.png?stretch=log").status_code == 404


def test_the_overview_shows_nights_completeness_champion_and_health(site):
    LocalObjectStore(site.objects).put(f"candidate_detections/{NIGHT}/injections.npz", save_arrays({
        "snr": np.array([3.0, 4, 6, 8, 12, 15, 20, 25]), "recovered": np.array([0, 0, 1, 0, 1, 1, 1, 1], bool),
        "stamps": np.zeros((8, 3, 2, 2), np.float32), "frames": np.array(["f"] * 8)}))
    unet_models.create(engine_for(site.url))
    with engine_for(site.url).begin() as connection:
        connection.execute(unet_models.insert(), [
            {"model_version": "v1", "dataset_version": "v1", "registry_version": "6", "promoted": True,
             "champion_alias": "champion", "test_roc_auc": 0.91},
            {"model_version": "v2", "dataset_version": "v2", "registry_version": "7", "promoted": True,
             "champion_alias": "champion", "test_roc_auc": 0.962},
            {"model_version": "v3", "dataset_version": "v3", "registry_version": "8", "promoted": False,
             "champion_alias": "champion", "test_roc_auc": 0.99}])
    page = site.sign_in("ana").get("/overview").text
    nights = page.split('id="nights"')[1].split("</section>")[0]
    assert f"<td>{NIGHT}</td>" in nights and "<td>12</td>" in nights
    injections = page.split('id="injections"')[1].split("</section>")[0]
    assert "<svg" in injections and "8 fakes" in injections and "100 %" in injections
    champions = page.split('id="champions"')[1].split("</section>")[0]
    assert "<td>v2</td>" in champions and "0.962" in champions and "v3" not in champions
    health = page.split('id="health"')[1].split("</section>")[0]
    assert "database" in health and "object store" in health and "mlflow" in health
    assert "test-only-session-key" not in page


def test_light_curve_and_context_show_where_their_tables_have_rows(site):
    from astrid_assets.io.schema import table_for

    candidate = site.candidates.candidate_id[1]
    client = site.sign_in("ana")
    assert 'id="object"' not in client.get(f"/candidate/{candidate}").text  # no tables yet: no panel
    engine = engine_for(site.url)
    for name in ("object_detections", "forced_photometry", "object_context"):
        table_for(name).create(engine)
    site.app.state.records._tables = (0.0, set())  # let the page see the new tables now
    with engine.begin() as connection:
        connection.execute(table_for("object_detections").insert().values(
            night=NIGHT, candidate_id=candidate, object_id="AT-F01-0001", frame_id="f", field="F01"))
        connection.execute(table_for("forced_photometry").insert(), [
            {"night": NIGHT, "object_id": "AT-F01-0001", "frame_id": f"f{i}", "field": "F01", "mjd_obs": 60310.0 + i,
             "flux": flux, "flux_err": 40.0, "snr": flux / 40, "flux_limit_5sigma": 200.0}
            for i, flux in enumerate([10.0, -20.0, 900.0, 1500.0])])
        connection.execute(table_for("object_context").insert().values(
            night=NIGHT, object_id="AT-F01-0001", gaia_source_id="123", gaia_distance_arcsec=4.2, is_star=False))
    page = client.get(f"/candidate/{candidate}").text
    panel = page.split('id="object"')[1].split("</section>")[0]
    assert "AT-F01-0001" in panel and "<svg" in panel and panel.count("<circle") == 2  # two detections
    assert "gaia_distance_arcsec" in panel and "4.2" in panel


def test_astrid_person_adds_someone_who_can_sign_in(site, monkeypatch, capsys):
    from astrid_assets.cli import main

    monkeypatch.setenv("ASTRID_DATABASE_URL", site.url)
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough password\n"))
    assert main(["person", "ida", "--role", "expert"]) == 0
    assert "ida (expert) can sign in" in capsys.readouterr().out
    assert site.app.state.records.person("ida")["role"] == "expert"
    assert 'id="review-form"' in site.sign_in("ida", "a long enough password").get(
        f"/candidate/{site.candidates.candidate_id[0]}").text
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["person", "joe"]) == 1 and site.app.state.records.person("joe") is None


def test_the_queue_of_a_window_nobody_has_labelled_yet(site):
    """A new deployment (the demo's first nights): no label at all in the window, the queue still orders."""
    with engine_for(site.url).begin() as connection:
        connection.execute(validations.delete())
    page = site.sign_in("ana").get("/queue")
    assert page.status_code == 200
    assert len(re.findall(r'class="candidate-link">([^<]+)<', page.text)) == min(len(site.candidates), 50)
