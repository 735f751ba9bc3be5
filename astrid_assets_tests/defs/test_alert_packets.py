"""Alert packets and notifications from a small simulated survey run through the nightly chain.

Five nights of one field (two 256² frames a night; supernovae from the third night). The last night is then
scored as a champion would score it (rows written to ``scored_detections``) and its packets rebuilt: they must
validate, read back with a plain ``fastavro.reader``, carry the model version, and open with astropy.
"""

import dataclasses
import gzip
import io

import fastavro
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from dagster import AssetKey, DagsterInstance, Definitions
from fastavro.validation import validate

from astrid_assets.definitions import default_resources, nightly_assets, nightly_pipeline
from astrid_assets.io.object_store import open_object_store
from astrid_assets.io.tables import engine_for, read_nights
from astrid_assets.packets import load_schema
from astrid_assets.partitions import night_range_tags
from astrid_assets.resources import SimulatedSurveyResource

pytestmark = pytest.mark.slow  # five simulated nights through the nightly chain

NIGHTS = [str(day.date()) for day in pd.date_range("2024-01-01", "2024-01-05")]
LAST = NIGHTS[-1]


class EarlySupernovae(SimulatedSurveyResource):
    def config(self):
        return dataclasses.replace(super().config(), transient_start="2024-01-03", transient_end="2024-01-04",
                                   n_supernovae=6, supernova_rise_days=(1.0, 2.0), supernova_peak_snr=(40.0, 200.0))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    home = tmp_path_factory.mktemp("packets") / "astrid"
    (home / "dagster").mkdir(parents=True)
    (home / "dagster" / "dagster.yaml").touch()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ASTRID_HOME", str(home))
        patch.setenv("DAGSTER_HOME", str(home / "dagster"))
        for variable in ("ASTRID_DATABASE_URL", "ASTRID_OBJECT_STORE", "ASTRID_FITS_DROP", "MLFLOW_TRACKING_URI",
                         "ASTRID_SMTP_URL", "ASTRID_SMTP_HOST", "ASTRID_NOTIFY_WEBHOOK", "ASTRID_NOTIFICATIONS"):
            patch.delenv(variable, raising=False)
        job = Definitions(assets=nightly_assets, jobs=[nightly_pipeline], resources={
            **default_resources(), "simulated_survey": EarlySupernovae(fields=["F01"], frames_per_night=2, size=256)},
        ).resolve_job_def("nightly_pipeline")
        instance = DagsterInstance.get()
        config = {"ops": {"candidate_detections": {"config": {"injection_frames": 1, "injection_fakes": 30}}}}
        result = job.execute_in_process(instance=instance, raise_on_error=False,
                                        tags=night_range_tags(NIGHTS[0], NIGHTS[-1]), run_config=config)
        assert result.success
        # the last night scored as a champion (registry version 7) would score it
        scored = read_nights("scored_detections", [LAST])
        scored = scored.assign(real_probability=np.linspace(0.9, 0.99, len(scored)), model_version="7")
        scored["real"] = scored.real_probability >= 0.5
        with engine_for(f"sqlite:///{home / 'astrid.db'}").begin() as connection:
            connection.exec_driver_sql("DELETE FROM scored_detections WHERE night = ?", (LAST,))
        scored.to_sql("scored_detections", engine_for(f"sqlite:///{home / 'astrid.db'}"), if_exists="append",
                      index=False)
        again = job.execute_in_process(instance=instance, raise_on_error=False, partition_key=LAST,
                                       asset_selection=[AssetKey("alert_packets"), AssetKey("notifications")])
        assert again.success
        store = open_object_store(str(home / "objects"))
        rows = read_nights("alert_packets", NIGHTS)
        yield rows, store, read_nights("notifications", NIGHTS), read_nights("object_detections", NIGHTS)
    engine_for.cache_clear()


def test_one_packet_per_object_detection_in_one_file_per_night(run):
    rows, store, _, detections = run
    assert len(rows) == len(detections) > 0
    assert rows.groupby("night").path.nunique().eq(1).all()
    assert set(rows.candidate_id) == set(detections.candidate_id)


def test_a_ztf_consumer_reads_the_packets_unchanged(run):
    rows, store, _, _ = run
    content = store.get(rows[rows.night == LAST].path.iloc[0])
    packets = list(fastavro.reader(io.BytesIO(content)))  # a plain reader, the schema from the file
    assert packets and all(validate(packet, load_schema()) for packet in packets)
    for packet in packets:  # the few lines a ZTF consumer writes
        candidate = packet["candidate"]
        magnitude, positive = candidate["magpsf"], candidate["isdiffpos"] == "t"
        history = [p["magpsf"] for p in packet["prv_candidates"] or []]
        stamp = fits.open(io.BytesIO(gzip.decompress(packet["cutoutDifference"]["stampData"])))
        assert magnitude is None or 10 < magnitude < 30
        assert positive in (True, False) and all(m is None or 10 < m < 30 for m in history)
        assert stamp[0].data.shape == (63, 63) and {"VARIANCE", "MASK"} <= {h.name for h in stamp}
        assert WCS(stamp[0].header).has_celestial
        assert candidate["rbversion"] == "7" and candidate["drbversion"] == "7" and 0 <= candidate["rb"] <= 1
    assert any(p["prv_candidates"] for p in packets)  # some objects were seen on earlier nights
    assert any(p["fp_hists"] for p in packets)
    injection = packets[0]["injection"]
    assert injection["fakes"] == 30 and injection["detection_threshold"] == 5.0


def test_packets_are_under_100_kB_and_the_rows_say_their_size(run):
    rows, _, _, _ = run
    assert rows.packet_bytes.max() < 100_000
    assert (rows[rows.night == LAST].rbversion == "7").all()


def test_without_a_channel_matches_are_recorded_not_sent(run):
    rows, store, notifications, _ = run
    packets = list(fastavro.reader(io.BytesIO(store.get(rows[rows.night == LAST].path.iloc[0]))))
    notable = {p["objectId"] for p in packets if p["candidate"]["isdiffpos"] == "t" and p["candidate"]["snr"] >= 5
               and not (p["object"] or {}).get("moving")}
    tonight = notifications[notifications.night == LAST]
    assert set(tonight.object_id) == notable and len(tonight) == len(notable)
    assert set(tonight.status) <= {"no_channel"} and set(tonight.filter_name) <= {"notable"}
