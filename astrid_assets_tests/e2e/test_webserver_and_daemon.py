"""AstrID driven as people and other tools drive it: through a running webserver and daemon.

``dagster-webserver`` and ``dagster-daemon`` run on loopback with the shipped ``dagster.yaml``
(runs, events and schedules in PostgreSQL, queued runs), AstrID's tables in the same database,
images in the S3 test server and models in the MLflow test server. A three-night backfill is
launched with a raw ``launchPartitionBackfill`` mutation, one night with ``DagsterGraphQLClient``
(through :func:`astrid_assets.cli.trigger.trigger_night`), and the retraining sensor is switched on
through GraphQL after labels land.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
import sqlalchemy as sa
from dagster import AssetKey, DagsterInstance

from astrid_assets.cli.trigger import backfill_state, graphql, trigger_night, trigger_window
from astrid_assets.io.tables import read_nights
from astrid_assets.testing import servers

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
WINDOW = ["2024-01-01", "2024-01-02", "2024-01-03"]
NIGHT = "2024-01-04"
NIGHTLY = ["raw_observations", "calibrated_frames", "reference_images", "difference_images",
           "candidate_detections", "scored_detections"]
MIN_LABELS = 100
SENSOR = {"repositoryLocationName": "astrid", "repositoryName": "__repository__", "sensorName": "retrain_on_new_labels"}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, s3_endpoint):
    """The webserver's URL, the instance (same PostgreSQL database) and AstrID's database URL.

    The deployment has its own MLflow server: the models its sensor trains must not appear in the
    registry that the learning-loop tests count versions in.
    """
    work = tmp_path_factory.mktemp("deployment")
    dagster_home = work / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(REPO / "dagster.yaml", dagster_home / "dagster.yaml")
    boto3.client("s3").create_bucket(Bucket="astrid-e2e")
    with servers.postgres_database("astrid_e2e") as url, pytest.MonkeyPatch.context() as patch, \
            servers.mlflow_server(work, "s3://astrid-e2e/mlflow", s3_endpoint) as mlflow_uri:
        pg = sa.engine.make_url(url)
        env = {
            "DAGSTER_HOME": str(dagster_home), "DAGSTER_PG_HOST": pg.host, "DAGSTER_PG_PORT": str(pg.port),
            "DAGSTER_PG_USER": pg.username, "DAGSTER_PG_PASSWORD": pg.password or "trust-auth", "DAGSTER_PG_DB":
            pg.database, "ASTRID_HOME": str(work / "astrid"), "ASTRID_DATABASE_URL": url,
            "ASTRID_OBJECT_STORE": "s3://astrid-e2e/astrid", "MLFLOW_TRACKING_URI": mlflow_uri,
            "ASTRID_RETRAIN_MIN_LABELS": str(MIN_LABELS), "ASTRID_SENSOR_INTERVAL_S": "5",
        }
        for name, value in env.items():
            patch.setenv(name, value)
        with servers.dagster_deployment(work, env, REPO / "workspace.yaml") as webserver:
            instance = DagsterInstance.get()
            yield webserver, instance, url
            instance.dispose()


def wait_for(condition, timeout: float, what: str, poll: float = 3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"{what} did not happen within {timeout} s")


LAUNCH = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename ... on LaunchBackfillSuccess { backfillId } ... on Error { message }
  }
}"""


def test_a_three_night_backfill_through_a_raw_graphql_mutation(deployment):
    webserver, instance, url = deployment
    params = {"title": "e2e window", "partitionsByAssets": [
        {"assetKey": {"path": [asset]}, "partitions": {"range": {"start": WINDOW[0], "end": WINDOW[-1]}}}
        for asset in NIGHTLY]}
    launched = graphql(webserver, LAUNCH, {"params": params})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill = wait_for(lambda: (state := backfill_state(webserver, launched["backfillId"]))["status"].startswith(
        "COMPLETED") and all(r["status"] == "SUCCESS" for r in state["runs"]) and state, 600, "the backfill")
    assert backfill["status"] in {"COMPLETED", "COMPLETED_SUCCESS"}
    assert len(backfill["runs"]) == 1  # the single-run backfill policy: one run for the three nights
    for asset in NIGHTLY:
        assert instance.get_materialized_partitions(AssetKey(asset)) >= set(WINDOW), asset
    assert list(read_nights("reference_images", WINDOW, url).sort_values("night").status.unique()) == [
        "missing", "ok"]
    assert len(read_nights("candidate_detections", WINDOW[1:], url)) > 0


def test_one_night_through_the_graphql_client_and_a_window_of_one_asset(deployment):
    webserver, instance, url = deployment
    run_id = trigger_night(webserver, NIGHT, poll_s=2, timeout_s=600)
    run = instance.get_run_by_id(run_id)
    assert run.status.value == "SUCCESS" and run.tags["dagster/partition"] == NIGHT
    candidates = read_nights("candidate_detections", [NIGHT], url)
    assert len(candidates) > 0 and len(read_nights("scored_detections", [NIGHT], url)) == len(candidates)

    # The client's window path: the whole window's scoring again, as one backfill run.
    backfill_id = trigger_window(webserver, WINDOW[0], NIGHT, assets=["scored_detections"], poll_s=2, timeout_s=600)
    assert len(backfill_state(webserver, backfill_id)["runs"]) == 1


SENSOR_STATE = """
query($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename ... on Sensor { sensorState { status ticks(limit: 100) { status runIds skipReason timestamp } } }
  }
}"""
START_SENSOR = """
mutation($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) {
    __typename ... on Sensor { sensorState { status } } ... on Error { message }
  }
}"""


def sensor_runs(instance):
    """Run records of the runs the retraining sensor launched."""
    from dagster import RunsFilter

    return instance.get_run_records(filters=RunsFilter(tags={"dagster/sensor_name": "retrain_on_new_labels"}))


def test_the_retraining_sensor_trains_once_for_new_labels_and_not_again(deployment):
    webserver, instance, url = deployment
    curated = subprocess.run([str(Path(sys.executable).with_name("astrid")), "curate", "--start", WINDOW[1],
                              "--end", NIGHT, "--error-rate", "0"], capture_output=True, text=True, env=os.environ)
    assert curated.returncode == 0, curated.stderr[-2000:]
    from astrid_assets.labels import count_labels

    labels = count_labels(url)
    assert labels >= MIN_LABELS, f"only {labels} labels from the simulated curator"

    started = graphql(webserver, START_SENSOR, {"selector": SENSOR})["startSensor"]
    assert started["__typename"] == "Sensor", started
    version = f"r{labels}"

    def trained():
        runs = {record.dagster_run.tags.get("dagster/run_key"): record for record in sensor_runs(instance)}
        done = all(key in runs and runs[key].dagster_run.is_finished
                   for key in (f"dataset-{version}", f"model-{version}"))
        return done and runs

    runs = wait_for(trained, 900, "the sensor's dataset build and training")
    assert set(runs) == {f"dataset-{version}", f"model-{version}"}
    assert all(r.dagster_run.status.value == "SUCCESS" for r in runs.values()), {
        key: r.dagster_run.status for key, r in runs.items()}
    with sa.create_engine(url).connect() as connection:
        models = connection.execute(sa.text("SELECT model_version, dataset_version FROM unet_models")).all()
    assert models == [(version, version)]

    # No new labels: later ticks skip and launch nothing more. Only finished ticks are judged: a tick
    # still STARTED (its evaluation in progress) has neither a result nor runs yet.
    finished = max(record.end_time for record in runs.values())

    def later_ticks():
        ticks = graphql(webserver, SENSOR_STATE, {"selector": SENSOR})["sensorOrError"]["sensorState"]["ticks"]
        after = [tick for tick in ticks if tick["timestamp"] > finished and tick["status"] != "STARTED"]
        return len(after) >= 2 and after

    ticks = wait_for(later_ticks, 120, "two finished sensor ticks after the training")
    assert all(tick["status"] == "SKIPPED" and not tick["runIds"] for tick in ticks), ticks
    assert len(sensor_runs(instance)) == 2
