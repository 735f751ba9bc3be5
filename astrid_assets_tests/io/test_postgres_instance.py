"""Real materializations on a PostgreSQL-backed Dagster instance, with tables in PostgreSQL and images in S3.

The servers are real and local: the machine's PostgreSQL (a fresh database for this module,
holding both Dagster's storage and AstrID's tables, as production does) and moto's S3 server on
loopback. Also loads the repository's own ``dagster.yaml`` — the production instance config —
with ``DAGSTER_PG_*`` pointing at that database, and runs a materialization on it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import boto3
import pandas as pd
import pytest
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, DagsterRunStatus, materialize
from sqlalchemy import select
from sqlalchemy.engine import make_url

from astrid_assets.defs.calibration import calibrated_frames
from astrid_assets.defs.ingest import raw_observations
from astrid_assets.io import schema
from astrid_assets.io.tables import TableIOManager, engine_for
from astrid_assets.resources import DatabaseResource, ObjectStoreResource, SimulatedSurveyResource
from astrid_assets.resources.pool import FramePoolResource

pytestmark = pytest.mark.integration

NIGHT = "2024-01-02"
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def empty_tables(pg_database):
    """AstrID's tables dropped, so each test starts from an unmigrated database."""
    schema.metadata.drop_all(engine_for(pg_database))
    return pg_database


def resources(database_url: str, bucket: str) -> dict:
    return {
        "table_io_manager": TableIOManager(database_url=database_url),
        "object_store": ObjectStoreResource(url=f"s3://{bucket}/astrid"),
        "database": DatabaseResource(url=database_url),  # the night loop reads its inputs' night status
        "simulated_survey": SimulatedSurveyResource(fields=["F01"], frames_per_night=2, size=256),
        "frame_pool": FramePoolResource(),  # ASTRID_POOL (serial in the tests)
    }


def bucket_keys(bucket: str) -> list[str]:
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def table_rows(url: str, table_name: str) -> pd.DataFrame:
    table = schema.table_for(table_name)
    with engine_for(url).connect() as connection:
        rows = pd.read_sql(select(table).where(table.c.night == NIGHT), connection)
    return rows.sort_values("frame_id").reset_index(drop=True)


def test_rematerialising_a_night_on_a_postgres_instance_changes_nothing(pg_instance, empty_tables, bucket):
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    assert isinstance(pg_instance.run_storage, PostgresRunStorage)
    assert isinstance(pg_instance.event_log_storage, PostgresEventLogStorage)
    url = empty_tables
    snapshots, run_ids = [], []
    for _ in range(2):
        result = materialize([raw_observations, calibrated_frames], partition_key=NIGHT,
                             resources=resources(url, bucket), instance=pg_instance)
        assert result.success
        run_ids.append(result.run_id)
        snapshots.append({
            "raw": table_rows(url, "raw_observations"),
            "calibrated": table_rows(url, "calibrated_frames"),
            "keys": bucket_keys(bucket),
        })
    first, second = snapshots
    assert len(first["raw"]) == 17 and len(first["calibrated"]) == 2  # 15 calibration + 2 science frames
    pd.testing.assert_frame_equal(first["raw"], second["raw"])
    pd.testing.assert_frame_equal(first["calibrated"], second["calibrated"])
    assert first["keys"] == second["keys"]
    referenced = {f"astrid/{path}" for path in [*second["raw"].path, *second["calibrated"].path,
                                                 *second["calibrated"].masters_path.dropna()]}
    assert referenced == set(second["keys"])  # every object is referenced, every reference exists

    # Both runs, their events and the partitioned materializations are in PostgreSQL.
    for run_id in run_ids:
        assert pg_instance.get_run_by_id(run_id).status == DagsterRunStatus.SUCCESS
    with engine_for(url).connect() as connection:
        stored_runs = connection.exec_driver_sql(
            "SELECT count(*) FROM runs WHERE run_id = ANY(%(ids)s)", {"ids": run_ids}
        ).scalar_one()
    assert stored_runs == 2
    latest = pg_instance.get_latest_materialization_event(AssetKey("calibrated_frames"))
    assert latest.run_id == run_ids[1]
    assert latest.asset_materialization.partition == NIGHT
    assert latest.asset_materialization.metadata["dagster/row_count"].value == 2
    records = pg_instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("raw_observations"), asset_partitions=[NIGHT]), limit=100
    ).records
    assert set(run_ids) <= {record.run_id for record in records}


def test_the_shipped_dagster_yaml_works_on_postgres(empty_tables, bucket, tmp_path, monkeypatch):
    """The production instance config, with DAGSTER_PG_* pointing at the test database."""
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    database = empty_tables
    url = make_url(database)
    monkeypatch.setenv("DAGSTER_PG_HOST", url.host)
    monkeypatch.setenv("DAGSTER_PG_PORT", str(url.port or 5432))
    monkeypatch.setenv("DAGSTER_PG_USER", url.username)
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "shipped-config-password")  # trust auth: accepted, unused
    monkeypatch.setenv("DAGSTER_PG_DB", url.database)
    instance = DagsterInstance.from_config(str(home))
    try:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        result = materialize([raw_observations], partition_key=NIGHT, resources=resources(database, bucket),
                             instance=instance)
        assert result.success
        assert instance.get_run_by_id(result.run_id).status == DagsterRunStatus.SUCCESS
        assert instance.get_latest_materialization_event(AssetKey("raw_observations")).run_id == result.run_id
        assert len(table_rows(database, "raw_observations")) == 17
    finally:
        instance.dispose()
