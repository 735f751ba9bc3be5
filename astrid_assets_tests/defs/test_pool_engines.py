"""The same three nights through the chain on every frame pool: identical rows and object keys from ``serial``,
``processes`` with two workers, and a real Dask cluster (``dask scheduler`` and two ``dask worker`` processes on
loopback) with PostgreSQL and an S3 bucket, as a deployment beyond one host must have."""

from __future__ import annotations

import boto3
import pandas as pd
import pytest
from dagster import AssetKey, DagsterInstance, Definitions
from distributed import Client

from astrid_assets.definitions import default_resources, nightly_assets, nightly_pipeline
from astrid_assets.io.object_store import open_object_store
from astrid_assets.io.tables import read_nights
from astrid_assets.partitions import night_range_tags
from astrid_assets.resources import SimulatedSurveyResource
from astrid_assets.testing import servers

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # a Dask cluster; a small survey through the chain, thrice

NIGHTS = ["2024-01-01", "2024-01-02", "2024-01-03"]
#: Calibration to the candidates, with the injection check: every step that hands frames to the pool.
CHAIN = ["raw_observations", "calibrated_frames", "reference_images", "difference_images", "candidate_detections"]
ROW_KEYS = ("night", "field", "frame_id", "candidate_id")


@pytest.fixture(scope="module")
def dask_address(s3_endpoint, tmp_path_factory):
    """Two single-threaded Dask workers on loopback; they inherit the S3 test server's credentials."""
    with servers.dask_cluster(tmp_path_factory.mktemp("dask"), workers=2) as address:
        yield address


@pytest.fixture
def fresh_postgres():
    with servers.postgres_database("astrid_pool") as url:
        yield url


def run_nights(monkeypatch, pool: str, home, database_url: str | None = None, store_url: str | None = None,
               **environment) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """The chain over :data:`NIGHTS` in one run on ``pool``: the tables' rows and every object key written."""
    monkeypatch.setenv("ASTRID_HOME", str(home))
    monkeypatch.setenv("ASTRID_POOL", pool)
    for variable, value in {"ASTRID_DATABASE_URL": database_url, "ASTRID_OBJECT_STORE": store_url}.items():
        monkeypatch.setenv(variable, value) if value else monkeypatch.delenv(variable, raising=False)
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    resources = {**default_resources(), "simulated_survey": SimulatedSurveyResource(
        fields=["F01"], frames_per_night=2, size=256)}
    job = Definitions(assets=nightly_assets, jobs=[nightly_pipeline], resources=resources).resolve_job_def(
        "nightly_pipeline")
    result = job.execute_in_process(
        instance=DagsterInstance.ephemeral(), tags=night_range_tags(NIGHTS[0], NIGHTS[-1]),
        asset_selection=[AssetKey(name) for name in CHAIN], raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}},
                    "ops": {"candidate_detections": {"config": {"injection_frames": 1, "injection_fakes": 20}}}})
    assert result.success
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["injection_recovery"].passed
    tables = {}
    for name in CHAIN:
        rows = read_nights(name, NIGHTS)
        keys = [key for key in ROW_KEYS if key in rows.columns]
        tables[name] = rows.sort_values(keys).reset_index(drop=True)
    store = open_object_store(store_url or str(home / "objects"))
    return tables, store.list("")


def test_serial_processes_and_dask_give_the_same_rows_and_objects(
    tmp_path, monkeypatch, s3_endpoint, dask_address, fresh_postgres
):
    serial, serial_keys = run_nights(monkeypatch, "serial", tmp_path / "serial")
    processes, processes_keys = run_nights(monkeypatch, "processes", tmp_path / "processes", ASTRID_WORKERS="2")

    boto3.client("s3").create_bucket(Bucket="astrid-pool")
    with Client(dask_address, set_as_default=False) as client:
        before = client.run(lambda dask_worker: dask_worker.state.transition_counter)
        dask, dask_keys = run_nights(monkeypatch, "dask", tmp_path / "dask", database_url=fresh_postgres,
                                     store_url="s3://astrid-pool/objects", ASTRID_DASK_ADDRESS=dask_address)
        after = client.run(lambda dask_worker: dask_worker.state.transition_counter)
    assert len(after) == 2 and all(after[worker] > before[worker] for worker in after), "both Dask workers ran frames"

    # the chain did its work: references from the second night on, differences and candidates on them
    assert list(serial["reference_images"].status) == ["missing", "ok", "ok"]
    assert (serial["difference_images"].status == "ok").sum() == 4 and len(serial["candidate_detections"]) > 0
    assert any(key.startswith("calibrated_frames/2024-01-03/masters.") for key in serial_keys)
    for engine, tables in {"processes": processes, "dask": dask}.items():
        for name in CHAIN:
            pd.testing.assert_frame_equal(tables[name], serial[name], check_exact=True, check_dtype=False,
                                          obj=f"{name} on {engine}")
    assert processes_keys == serial_keys
    assert dask_keys == serial_keys
