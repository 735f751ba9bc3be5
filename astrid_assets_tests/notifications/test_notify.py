"""Notifications end to end on real servers: one filter, two nights, each matching object mailed (aiosmtpd, with a
login) and posted (HTTP) exactly once, nothing again on re-runs, and no credential anywhere."""

import logging

import pandas as pd
import pytest

from astrid_assets.notifications import configured_channels, idempotency_key, load_filters, notify_night, sent_keys
from astrid_assets.notifications.channels import WebhookChannel
from astrid_assets.packets import packets as pk
from astrid_assets_tests.notifications.conftest import SMTP_PASSWORD, WEBHOOK_TOKEN
from astrid_assets_tests.packets.test_packets import detection, noise_cutouts

pytestmark = pytest.mark.integration  # an SMTP server and an HTTP server on loopback

FILTERS = """
filters:
  - name: rising-real
    min_real_probability: 0.8
    min_snr: 5
    gaia_star_radius_arcsec: 2.0
    solar_system_radius_arcsec: 10
    rising: true
"""
NIGHT_MJD = {"2024-01-05": 60314.2, "2024-01-06": 60315.2, "2024-01-07": 60316.2}


def packet(object_id: str, night: str, rb: float = 0.95, mag: float = 19.0, sign: int = 1, context: dict | None = None,
           moving: bool = False, cutouts: dict | None = None) -> dict:
    mjd = NIGHT_MJD[night]
    row = detection(f"{object_id}-{night}-c0001", mjd, mag, sign=sign, object_id=object_id, real_probability=rb)
    forced = [{"object_id": object_id, "frame_id": f"before{i}", "field": "F01", "mjd_obs": mjd - 3 + i, "filter": "r",
               "flux": 0.0, "flux_err": 30.0, "detected": False} for i in range(3)]
    obj = {"object_id": object_id, "field": "F01", "moving": moving, "n_detections": 1}
    return pk.build_packet(row, [], forced, obj, {"object_id": object_id, **(context or {})}, cutouts or {}, None)


@pytest.fixture(scope="module")
def stamps():
    return noise_cutouts()


def nights(stamps) -> dict[str, list[dict]]:
    return {
        "2024-01-05": [
            packet("A", "2024-01-05", cutouts=stamps),  # matches
            packet("B", "2024-01-05", rb=0.3),  # not real enough yet
            packet("C", "2024-01-05", context={"is_star": True, "gaia_distance_arcsec": 0.4}),  # on a star
            packet("D", "2024-01-05", context={"ssnamenr": "2001 AB12", "ssdistnr": 1.5}),  # a known minor planet
            packet("M", "2024-01-05", moving=True),  # a tracklet
        ],
        "2024-01-06": [
            packet("A", "2024-01-06", mag=18.5),  # matches again: already notified
            packet("B", "2024-01-06", rb=0.9),  # now it matches
            packet("E", "2024-01-06"),  # new, matches
            packet("F", "2024-01-06", sign=-1),  # fading
        ],
    }


def test_each_object_is_sent_once_by_mail_and_webhook_and_no_credential_leaks(
        smtp_server, webhook_server, tmp_path, monkeypatch, caplog, stamps):
    url = f"sqlite:///{tmp_path / 'astrid.db'}"
    monkeypatch.setenv("ASTRID_SMTP_URL", smtp_server.url)
    monkeypatch.setenv("ASTRID_NOTIFY_TO", "night-team@example.org, pi@example.org")
    monkeypatch.setenv("ASTRID_NOTIFY_WEBHOOK", webhook_server.url)
    channels = configured_channels()
    assert [c.name for c in channels] == ["email", "webhook"]
    filters = load_filters(FILTERS)
    log = logging.getLogger("astrid.notifications.test")
    caplog.set_level(logging.DEBUG)
    by_night = nights(stamps)

    rows = [notify_night(night, packets, filters, channels, url, log=log) for night, packets in by_night.items()]
    rerun = [notify_night(night, packets, filters, channels, url, log=log) for night, packets in by_night.items()]

    subjects = [m["Subject"] for m in smtp_server.messages]
    assert len(subjects) == 3 and sorted(s.split(": ")[1].split(" ")[0] for s in subjects) == ["A", "B", "E"]
    assert subjects[0].startswith("AstrID rising-real: A at 19.00 mag")
    assert sorted(body["objectId"] for _, body in webhook_server.posts) == ["A", "B", "E"]
    assert rows[0].set_index("object_id").status.to_dict() == {"A": "sent"}
    assert rows[1].set_index("object_id").status.to_dict() == {"A": "already_sent", "B": "sent", "E": "sent"}
    assert all((r.status == "already_sent").all() for r in rerun)
    assert sorted(sent_keys(url).object_id) == ["A", "B", "E"]
    # the keys travel with the messages, so a receiver can drop duplicates too
    key_a = idempotency_key("A", "rising-real")
    assert smtp_server.messages[0]["X-Astrid-Idempotency-Key"] == key_a
    assert webhook_server.posts[0][0]["Idempotency-Key"] == key_a
    # the mail: plain text and HTML with the cut-out triplet and the light curve inline
    first = smtp_server.messages[0]
    assert first.get_body(("plain",)).get_content().startswith('AstrID: A matched the filter "rising-real"')
    html = first.get_body(("html",))
    assert 'src="cid:triplet"' in html.get_content() and 'src="cid:lightcurve"' in html.get_content()
    images = [part for part in first.walk() if part.get_content_type() == "image/png"]
    assert {part["Content-ID"] for part in images} == {"<triplet>", "<lightcurve>"}
    assert all(part.get_content()[:8] == b"\x89PNG\r\n\x1a\n" for part in images)
    assert smtp_server.logins and all(accepted for _, accepted in smtp_server.logins)
    # no credential in a log line, a row, a channel's description, a mail or a post
    ours = [r.getMessage() for r in caplog.records if not r.name.startswith("mail.log")]  # not the test server's
    shown = "\n".join([*ours, *(r.to_csv() for r in rows + rerun), *(repr(c) for c in channels)])
    delivered = b"".join(smtp_server.raw + webhook_server.raw)
    for secret in (SMTP_PASSWORD, WEBHOOK_TOKEN):
        assert secret not in shown and secret.encode() not in delivered


def test_switched_off_nothing_is_sent_and_a_failed_delivery_is_retried(
        smtp_server, webhook_server, tmp_path, monkeypatch, stamps):
    url = f"sqlite:///{tmp_path / 'astrid.db'}"
    filters = load_filters(FILTERS)
    packets = [packet("A", "2024-01-05", cutouts=stamps)]
    off = notify_night("2024-01-05", packets, filters, [WebhookChannel(webhook_server.url)], url, enabled=False)
    assert off.status.tolist() == ["disabled"] and not webhook_server.posts
    webhook_server.fail = True
    failed = notify_night("2024-01-05", packets, filters, [WebhookChannel(webhook_server.url)], url)
    assert failed.status.tolist() == ["failed"] and "HTTP 500" in failed.problem[0]
    assert WEBHOOK_TOKEN not in failed.problem[0] and sent_keys(url).empty  # the claim was released
    webhook_server.fail = False
    again = notify_night("2024-01-05", packets, filters, [WebhookChannel(webhook_server.url)], url)
    assert again.status.tolist() == ["sent"] and len(webhook_server.posts) == 1
    assert isinstance(again, pd.DataFrame)
