"""Notification filters on packets, and the SMTP settings read from the environment."""

import pytest

from astrid_assets import settings
from astrid_assets.notifications.filters import DEFAULT_FILTERS, NotificationFilter, is_rising, load_filters
from astrid_assets.packets import packets as pk
from astrid_assets_tests.packets.test_packets import detection


def packet(mag=19.0, rb=0.9, earlier_flux=0.0, context=None, moving=False, sign=1):
    forced = [{"object_id": "X", "frame_id": "f0", "field": "F01", "mjd_obs": 60313.2, "filter": "r",
               "flux": earlier_flux, "flux_err": 30.0}]
    return pk.build_packet(detection("f1-c0001", 60314.2, mag, sign=sign, real_probability=rb), [], forced,
                           {"object_id": "X", "field": "F01", "moving": moving}, {"object_id": "X", **(context or {})},
                           {}, None)


def test_each_condition_rejects_what_it_names():
    strict = NotificationFilter(name="s", min_real_probability=0.8, max_magpsf=19.5, min_snr=5,
                                gaia_star_radius_arcsec=2, solar_system_radius_arcsec=10, rising=True)
    assert strict.matches(packet())
    assert strict.rejections(packet(rb=0.5)) == ["rb 0.5 < 0.8"]
    assert "fainter than 19.5" in strict.rejections(packet(mag=20.0))[0]
    assert "Gaia star" in strict.rejections(packet(context={"is_star": True, "gaia_distance_arcsec": 0.3}))[0]
    assert strict.matches(packet(context={"is_star": False, "gaia_distance_arcsec": 0.3}))  # a galaxy: kept
    assert "solar-system" in strict.rejections(packet(context={"ssnamenr": "1999 XY", "ssdistnr": 2.0}))[0]
    assert strict.rejections(packet(moving=True)) == ["a moving object"]
    assert "fading" in strict.rejections(packet(sign=-1))[0]


def test_rising_compares_with_the_latest_earlier_measurement_of_the_filter():
    flux_now = pk.candidate_record(detection("f1-c0001", 60314.2, 19.0))["psfflux"]
    assert is_rising(packet(earlier_flux=0.0))
    assert not is_rising(packet(earlier_flux=flux_now * 1.2))
    alone = packet()
    alone["fp_hists"] = []
    assert not is_rising(alone)  # nothing to compare with


def test_filters_from_yaml_and_errors_that_name_the_key(tmp_path):
    path = tmp_path / "filters.yaml"
    path.write_text("filters:\n  - name: bright\n    max_magpsf: 18\n  - name: any\n")
    assert [f.name for f in load_filters(str(path))] == ["bright", "any"]
    assert load_filters(None) == DEFAULT_FILTERS
    with pytest.raises(ValueError, match="min_rb"):
        load_filters("filters:\n  - name: typo\n    min_rb: 0.5\n")
    with pytest.raises(ValueError, match="unique"):
        load_filters([{"name": "a"}, {"name": "a"}])


def test_smtp_settings_from_a_url_or_parts(monkeypatch):
    monkeypatch.delenv("ASTRID_SMTP_HOST", raising=False)
    monkeypatch.setenv("ASTRID_SMTP_URL", "smtp://apikey:SG.a%40b@smtp.sendgrid.net:587")
    assert settings.smtp_server() == {"host": "smtp.sendgrid.net", "port": 587, "user": "apikey",
                                      "password": "SG.a@b", "ssl": False}
    monkeypatch.setenv("ASTRID_SMTP_URL", "http://user:secret@host")
    with pytest.raises(ValueError) as error:
        settings.smtp_server()
    assert "secret" not in str(error.value)
    monkeypatch.delenv("ASTRID_SMTP_URL")
    monkeypatch.setenv("ASTRID_SMTP_HOST", "mail.example.org")
    monkeypatch.setenv("ASTRID_SMTP_SSL", "1")
    assert settings.smtp_server()["port"] == 465 and settings.smtp_server()["ssl"]
    monkeypatch.setenv("ASTRID_NOTIFICATIONS", "off")
    assert not settings.notifications_enabled()
