"""Alert packets from plain rows: ZTF names and units, history windows, the schema's versions and the size limit."""

import copy
import io
import json
import math

import fastavro
import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from fastavro.validation import validate

from astrid_assets.packets import packets as pk
from astrid_assets.packets.cutouts import cutout_fits, read_cutout

ZP, EXPTIME = 25.0, 60.0


def flux_of(mag: float) -> float:
    """e- in EXPTIME s of a source of magnitude ``mag`` (AstrID's MAGZP convention, as the simulator's)."""
    return 10 ** (-0.4 * (mag - ZP)) * EXPTIME


def detection(candidate_id: str, mjd: float, mag: float, sign: int = 1, **extra) -> dict:
    flux = sign * flux_of(mag)
    return {"candidate_id": candidate_id, "object_id": "AT-F01-0001", "frame_id": candidate_id.split("-c")[0],
            "field": "F01", "mjd_obs": mjd, "x": 101.2, "y": 57.9, "ra": 150.01, "dec": 2.21, "sign": sign,
            "flux": flux, "flux_err": abs(flux) / 20, "snr": 20.0 * sign, "s_corr_peak": 21.0 * sign, "fwhm": 3.1,
            "elongation": 1.1, "sharpness": 0.9, "rule_score": 0.8, "flags": 0, "filter": "r", "zero_point": ZP,
            "exptime": EXPTIME, "instrument": "AstrID-Sim", "real_probability": 0.93, "model_version": "7",
            "real": True, "n_detections": 3, "first_mjd": 60310.1, "last_mjd": mjd, **extra}


def noise_cutouts(seed: int = 1) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval, wcs.wcs.crpix, wcs.wcs.cdelt = [150, 2.2], [256, 256], [-2.8e-4, 2.8e-4]
    header = wcs.to_header()
    planes = {name: rng.normal(400, 20, (512, 512)).astype(np.float32) for name in ("science", "template")}
    planes["difference"] = rng.normal(0, 28, (512, 512)).astype(np.float32)
    variance = np.full((512, 512), 784.0, np.float32) + rng.normal(0, 3, (512, 512)).astype(np.float32)
    mask = np.zeros((512, 512), np.uint16)
    psf = np.ones((31, 31), np.float32) / 961
    return {name: cutout_fits(image, 101.2, 57.9, header, variance=None if name == "science" else variance,
                              mask=mask, psf=psf if name == "difference" else None)
            for name, image in planes.items()}


def a_packet(**extra) -> dict:
    history = [detection("f1-c0001", 60310.1, 19.4), detection("f2-c0003", 60312.1, 19.1),
               detection("f0-c0009", 60270.0, 19.9)]  # 42 days before: outside the 30-day window
    forced = [{"object_id": "AT-F01-0001", "frame_id": f"f{i}", "field": "F01", "mjd_obs": 60305.0 + i,
               "filter": "r", "flux": 10.0 * i, "flux_err": 5.0, "snr": 2.0 * i, "mag": None, "mag_err": None,
               "maglim_5sigma": 21.0, "before_first_detection": i < 5, "detected": False, "baseline": 1.0,
               "zero_point": ZP, "exptime": EXPTIME} for i in range(10)]
    obj = {"object_id": "AT-F01-0001", "field": "F01", "ra": 150.01, "dec": 2.21, "x": 101.0, "y": 58.0,
           "first_mjd": 60310.1, "last_mjd": 60314.2, "first_night": "2024-01-01", "last_night": "2024-01-05",
           "n_detections": 3, "real_probability": 0.93, "model_version": "7", "moving": False, "ssnamenr": None}
    context = {"object_id": "AT-F01-0001", "gaia_source_id": "123", "gaia_distance_arcsec": 4.2, "gaia_g": 17.0,
               "is_star": True, "sgscore": 0.98, "ps1_distance_arcsec": 4.1, "ssnamenr": None,
               "context_note": None, "gaia_parallax_snr": float("nan")}
    injection = pk.injection_record({"fakes": 180, "completeness_snr_ge_10": 0.98, "snr_50": 4.6,
                                     "completeness_at_operating_point": None}, 5.0)
    return pk.build_packet(detection("f3-c0002", 60314.2, 18.7, **extra), history, forced, obj, context,
                           noise_cutouts(), injection)


def test_candidate_has_ztf_names_and_units():
    candidate = a_packet()["candidate"]
    assert candidate["magpsf"] == pytest.approx(18.7, abs=1e-9)
    assert candidate["sigmapsf"] == pytest.approx(1.0857 / 20, rel=1e-3)
    assert candidate["jd"] == pytest.approx(60314.2 + 2400000.5)
    assert candidate["isdiffpos"] == "t" and candidate["fid"] == 2
    # diffmaglim: the 5-sigma limit where the detection is, 5 x flux_err
    assert candidate["diffmaglim"] == pytest.approx(18.7 - 2.5 * math.log10(5 / 20), abs=1e-9)
    assert [candidate[k] for k in ("rb", "rbversion", "drb", "drbversion")] == [0.93, "7", 0.93, "7"]
    assert candidate["neargaia"] == 4.2 and candidate["sgscore1"] == 0.98 and candidate["distpsnr1"] == 4.1
    assert candidate["ndethist"] == 3 and candidate["candid"] == pk.candid_of("f3-c0002") > 0


def test_a_fading_source_is_isdiffpos_f_with_the_magnitude_of_its_flux():
    faded = pk.candidate_record(detection("f3-c0004", 60314.2, 20.0, sign=-1))
    assert faded["isdiffpos"] == "f" and faded["magpsf"] == pytest.approx(20.0)


def test_no_zero_point_gives_null_magnitudes_and_fluxes_in_electrons():
    record = pk.candidate_record(detection("f3-c0005", 60314.2, 20.0, zero_point=float("nan")))
    assert record["magpsf"] is None and record["diffmaglim"] is None
    assert record["psfflux"] == pytest.approx(flux_of(20.0))


def test_history_and_forced_photometry_cover_the_30_days_before():
    packet = a_packet()
    assert [p["candidate_id"] for p in packet["prv_candidates"]] == ["f1-c0001", "f2-c0003"]
    assert all(packet["candidate"]["jd"] - 30 <= p["jd"] for p in packet["fp_hists"])
    assert len(packet["fp_hists"]) == 10 and packet["fp_hists"][0]["forcediffimflux"] == 0.0


def test_packets_validate_and_round_trip_through_a_plain_reader():
    packets = [a_packet(), a_packet(real=False)]
    schema = pk.load_schema()
    assert all(validate(packet, schema) for packet in packets)
    content = pk.write_packets(packets)
    read = list(fastavro.reader(io.BytesIO(content)))
    assert [r["candid"] for r in read] == [p["candid"] for p in packets]
    assert read[0]["schemavsn"] == pk.SCHEMA_VERSION and read[0]["candidate"]["rbversion"] == "7"
    assert read[0]["context"]["gaia_parallax_snr"] is None
    assert read[1]["candidate"]["real"] is False
    stamp = read_cutout(read[0]["cutoutDifference"]["stampData"])
    assert stamp[0].data.shape == (63, 63) and {"VARIANCE", "MASK", "PSF"} <= {h.name for h in stamp}
    assert isinstance(stamp, fits.HDUList)


def test_a_packet_with_its_schema_is_under_100_kB():
    packet = a_packet()
    alone = pk.packet_bytes(packet, with_schema=True)
    assert alone < 100_000, alone
    assert pk.packet_bytes(packet) < alone


def test_a_new_minor_version_reads_the_old_and_a_removed_field_is_a_new_major():
    content = pk.write_packets([a_packet()])
    raw = json.loads((pk.SCHEMA_DIR / "astrid_alert_1.0.avsc").read_text())
    newer = copy.deepcopy(raw)
    newer["fields"].append({"name": "brokerNote", "type": ["null", "string"], "default": None})
    newer["fields"][4]["type"]["fields"].append({"name": "magap", "type": ["null", "float"], "default": None})
    read = next(fastavro.reader(io.BytesIO(content), reader_schema=fastavro.parse_schema(newer)))
    assert read["brokerNote"] is None and read["candidate"]["magap"] is None
    assert read["candidate"]["magpsf"] == pytest.approx(18.7, abs=1e-5)
    assert pk.readable_by("1.0", "1.1") and not pk.readable_by("1.1", "1.0") and not pk.readable_by("1.0", "2.0")
    breaking = copy.deepcopy(raw)
    breaking["fields"].append({"name": "required", "type": "string"})  # no default: not a minor change
    with pytest.raises(fastavro.read.SchemaResolutionError):
        next(fastavro.reader(io.BytesIO(content), reader_schema=fastavro.parse_schema(breaking)))


def test_every_schema_file_reads_the_packets_of_the_ones_before_it():
    versions = pk.schema_versions()
    assert pk.SCHEMA_VERSION in versions
    content = pk.write_packets([a_packet()], versions[0])
    for version in versions:
        if pk.readable_by(versions[0], version):
            assert pk.read_packets(content, version)[0]["objectId"] == "AT-F01-0001"
