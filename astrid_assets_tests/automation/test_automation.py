"""The nightly schedule and the retraining sensor, evaluated against a real (SQLite) database."""

from datetime import UTC, datetime

import pandas as pd
from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    SensorResult,
    SkipReason,
    build_schedule_context,
    build_sensor_context,
)

from astrid_assets.definitions import defs
from astrid_assets.io.schema import candidate_detections, metadata, raw_observations
from astrid_assets.io.tables import engine_for
from astrid_assets.labels import record_labels
from astrid_assets.resources import DatabaseResource


def test_the_schedule_processes_the_night_that_just_ended():
    schedule = defs.resolve_schedule_def("nightly_schedule")
    context = build_schedule_context(scheduled_execution_time=datetime(2024, 1, 6, 12, 0, tzinfo=UTC))
    (request,) = schedule.evaluate_tick(context).run_requests
    assert request.partition_key == "2024-01-05"
    assert schedule.job_name == "nightly_pipeline"


def test_the_retraining_sensor_fires_once_per_batch_of_new_labels(tmp_path, monkeypatch):
    monkeypatch.setenv("ASTRID_RETRAIN_MIN_LABELS", "3")
    url = f"sqlite:///{tmp_path / 'astrid.db'}"
    metadata.create_all(engine_for(url), tables=[candidate_detections])
    with engine_for(url).begin() as connection:
        connection.execute(candidate_detections.insert(), [
            {"night": "2024-01-06", "candidate_id": f"c{i}", "frame_id": "f", "field": "F01"} for i in range(4)])
    sensor = defs.resolve_sensor_def("retrain_on_new_labels")
    resources = {"database": DatabaseResource(url=url)}
    with DagsterInstance.ephemeral() as instance:
        def tick(cursor):
            return sensor(build_sensor_context(instance=instance, cursor=cursor, resources=resources))

        assert isinstance(tick(None), SkipReason)
        record_labels(url, pd.DataFrame({"candidate_id": ["c0", "c1", "c2"], "label": "real", "labeller": "ana"}))
        fired = tick(None)
        assert isinstance(fired, SensorResult) and fired.cursor == "3"
        (request,) = fired.run_requests
        assert (request.job_name, request.partition_key, request.run_key) == (
            "build_training_dataset", "r3", "dataset-r3")
        assert {r.partitions_def_name for r in fired.dynamic_partitions_requests} == {
            "dataset_versions", "model_versions"}
        assert isinstance(tick(fired.cursor), SkipReason)  # no new labels: no second training

        instance.add_dynamic_partitions("dataset_versions", ["r3"])
        instance.report_runless_asset_event(AssetMaterialization("training_datasets", partition="r3"))
        follow_up = tick(fired.cursor)
        (train,) = follow_up.run_requests
        assert (train.job_name, train.partition_key, train.run_key) == ("train_unet", "r3", "model-r3")

        record_labels(url, pd.DataFrame({"candidate_id": ["c3"], "label": "bogus", "labeller": "ana"}))
        assert all(r.job_name == "train_unet" for r in tick(fired.cursor).run_requests)  # 1 new < 3


def test_a_failed_run_is_posted_to_the_webhook(monkeypatch):
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from dagster import build_run_status_sensor_context, job, op

    from astrid_assets.automation.alerts import alert_on_run_failure

    received = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("ASTRID_ALERT_WEBHOOK", f"http://127.0.0.1:{server.server_port}/hooks/secret-token")

    @op
    def calibrate_night():
        raise ValueError("night 2024-01-05, frame F01-s001: flat missing")

    @job
    def nightly_pipeline():
        calibrate_night()

    with DagsterInstance.ephemeral() as instance:
        result = nightly_pipeline.execute_in_process(instance=instance, raise_on_error=False,
                                                     tags={"dagster/partition": "2024-01-05"})
        context = build_run_status_sensor_context(
            sensor_name="alert_on_run_failure", dagster_instance=instance, dagster_run=result.dagster_run,
            dagster_event=result.get_run_failure_event()).for_run_failure()
        alert_on_run_failure(context)
    server.shutdown()
    (alert,) = received
    assert "nightly_pipeline (partition 2024-01-05) failed" in alert["text"]
    assert "calibrate_night: ValueError: night 2024-01-05, frame F01-s001: flat missing" in alert["text"]
    assert "secret-token" not in alert["text"]


def test_a_new_champion_rescores_the_recent_nights_once(tmp_path, monkeypatch):
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    from astrid_assets.io.schema import scored_detections
    from astrid_assets.resources import ModelRegistryResource

    class Registry(ModelRegistryResource):  # the registry's aliases, without an MLflow store
        champion: str | None = None
        per_instrument: dict[str, str] = {}

        def aliases(self):
            return {**({} if self.champion is None else {"champion": self.champion}), **self.per_instrument}

    monkeypatch.setenv("ASTRID_RESCORE_NIGHTS", "7")
    url = f"sqlite:///{tmp_path / 'astrid.db'}"
    nights = [f"2024-01-{d:02d}" for d in range(1, 10)]
    metadata.create_all(engine_for(url), tables=[candidate_detections, scored_detections])
    with engine_for(url).begin() as connection:
        connection.execute(candidate_detections.insert(), [
            {"night": night, "candidate_id": f"{night}-c{i}", "frame_id": "f", "field": "F01"}
            for night in nights for i in range(3)])

    def score(version, chosen):
        with engine_for(url).begin() as connection:
            connection.execute(scored_detections.delete().where(scored_detections.c.night.in_(chosen)))
            connection.execute(scored_detections.insert(), [
                {"night": night, "candidate_id": f"{night}-c{i}", "frame_id": "f", "real_probability": 0.5,
                 "model_version": version} for night in chosen for i in range(3)])

    sensor = defs.resolve_sensor_def("rescore_after_new_champion")
    with DagsterInstance.ephemeral() as instance:
        for night in nights:
            instance.report_runless_asset_event(AssetMaterialization("candidate_detections", partition=night))

        def tick(champion, per_instrument=None):
            resources = {"database": DatabaseResource(url=url),
                         "model_registry": Registry(champion=champion, per_instrument=per_instrument or {})}
            return sensor(build_sensor_context(instance=instance, resources=resources))

        assert isinstance(tick(None), SkipReason)
        score(None, nights)  # scored while there was no champion: no probabilities
        score("2", nights[2:5])
        (request,) = tick("2").run_requests  # 2024-01-03…05 are already scored by v2
        assert request.run_key == "rescore-v2-2024-01-06-2024-01-09"
        assert (request.tags[ASSET_PARTITION_RANGE_START_TAG], request.tags[ASSET_PARTITION_RANGE_END_TAG]) == (
            "2024-01-06", "2024-01-09")
        assert request.job_name == "nightly_pipeline" and request.asset_selection == [
            AssetKey("scored_detections")]

        score("2", nights[5:])
        assert isinstance(tick("2"), SkipReason)  # everything in the look-back is scored by the champion
        (request,) = tick("3").run_requests  # a new champion: the whole look-back, the oldest night excluded
        assert request.run_key == "rescore-v3-2024-01-03-2024-01-09"

        # frame "f" is a Cam A frame: Cam A's own champion, not the plain one, must have scored it
        metadata.create_all(engine_for(url), tables=[raw_observations])
        with engine_for(url).begin() as connection:
            connection.execute(raw_observations.insert(), [
                {"night": night, "frame_id": "f", "field": "F01", "source": "fits_drop", "status": "ok",
                 "instrument": "0.4 m / Cam A"} for night in nights])
        score("3", nights[2:])
        assert isinstance(tick("3"), SkipReason)
        assert isinstance(tick("3", {"champion-other-cam": "4"}), SkipReason)  # another instrument's champion
        (request,) = tick("3", {"champion-0-4-m-cam-a": "5"}).run_requests
        assert request.run_key == "rescore-v5-2024-01-03-2024-01-09"
