"""Storage under faults, on real servers: PostgreSQL (tables and the Dagster instance) and moto's S3 server.

* a run that dies in the middle of a table write, or in the middle of a night's uploads, leaves
  the last good partition — rows and objects — exactly as it was, and no partial rows;
* two runs at the same time, in two processes, lose and duplicate nothing: on different nights
  on a fresh database (both create the tables) and on an existing one (overlapping transactions),
  and on the same night (one copy is left);
* an unreachable object store or database is retried with backoff, then fails with a clear message
  naming the store or the database (redacted), without library internals;
* credentials never reach the run's event log, asset metadata, error messages or Python logging.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import logging
import multiprocessing
import time
from pathlib import PurePosixPath

import boto3
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from dagster import DagsterInstance, materialize
from dagster._serdes import serialize_value
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from astrid_assets.defs import ingest
from astrid_assets.defs.calibration import calibrated_frames
from astrid_assets.defs.ingest import raw_observations
from astrid_assets.io import object_store, schema, tables
from astrid_assets.io.tables import TableIOManager, engine_for
from astrid_assets.resources import DatabaseResource, ObjectStoreResource, SimulatedSurveyResource
from astrid_assets.resources.pool import FramePoolResource

pytestmark = pytest.mark.integration

NIGHT = "2024-01-02"
FRAMES_PER_NIGHT = 17  # 5 bias, 5 dark, 5 flat, 2 science
AWS_SECRET = "AstridS3cret-XYZZY-7f3a91c2"
DB_PASSWORD = "AstridDbPassw0rd-PLUGH-4e8b"


# --- fixtures -----------------------------------------------------------------------------------

_simulated: dict = {}


@pytest.fixture(autouse=True)
def simulate_each_night_once(monkeypatch):
    """The simulated survey is the input here, not what is tested: simulate each night once."""
    real = ingest.fetch_simulated

    def cached(night, config):
        key = (night, repr(config))
        if key not in _simulated:
            _simulated[key] = real(night, config)
        return _simulated[key]

    monkeypatch.setattr(ingest, "fetch_simulated", cached)


@pytest.fixture
def database(pg_database):
    """The module's database with AstrID's tables dropped: each test starts unmigrated."""
    schema.metadata.drop_all(engine_for(pg_database))
    return pg_database


@pytest.fixture
def s3_requests(monkeypatch):
    """Hooks on boto3's default session (inherited by every client the store creates)."""
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # a new session: fresh credentials from the env
    boto3.setup_default_session()
    return boto3.DEFAULT_SESSION.events


# --- helpers ------------------------------------------------------------------------------------


def resources(database_url: str | None, store_url: str | None, seed: int = 2024) -> dict:
    return {
        "table_io_manager": TableIOManager(database_url=database_url),
        "object_store": ObjectStoreResource(url=store_url),
        "database": DatabaseResource(url=database_url),  # the night loop reads its inputs' night status
        "simulated_survey": SimulatedSurveyResource(seed=seed, fields=["F01"], frames_per_night=2, size=256),
        "frame_pool": FramePoolResource(),  # ASTRID_POOL (serial in the tests)
    }


def night_rows(url: str, table_name: str, night: str = NIGHT) -> pd.DataFrame:
    table = schema.table_for(table_name)
    with engine_for(url).connect() as connection:
        rows = pd.read_sql(select(table).where(table.c.night == night), connection)
    return rows.sort_values("frame_id").reset_index(drop=True)


def bucket_objects(bucket: str) -> dict[str, bytes]:
    client = boto3.client("s3")
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
    return {key: client.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


def assert_objects_complete(objects: dict[str, bytes]) -> None:
    """Every object holds exactly the bytes its content-addressed key names, and is a whole FITS file."""
    for key, content in objects.items():
        digest = PurePosixPath(key).suffixes[-2].lstrip(".")
        assert hashlib.sha256(content).hexdigest()[:12] == digest, f"{key} does not hold the bytes it names"
        with fits.open(io.BytesIO(content), memmap=False) as hdus:
            hdus.verify("exception")
            image = hdus[0].data
            assert image.shape == (256, 256) and np.isfinite(image).any(), key


def failure_text(result) -> str:
    """The step failures of a run, as a person reads them (message, cause chain and stack)."""
    return "\n".join(event.event_specific_data.error.to_string() for event in result.get_step_failure_events())


def s3_attempts() -> int:
    """Requests per operation the store makes: boto3's ``max_attempts`` counts retries, plus the first."""
    return inspect.signature(object_store.S3ObjectStore).parameters["max_attempts"].default + 1


# --- a run that dies mid-write ------------------------------------------------------------------


def test_a_run_that_dies_mid_table_write_leaves_the_last_good_partition(
    pg_instance, database, bucket, monkeypatch
):
    store = f"s3://{bucket}/astrid"
    good = materialize([raw_observations], partition_key=NIGHT, resources=resources(database, store),
                       instance=pg_instance)
    assert good.success
    good_rows, good_objects = night_rows(database, "raw_observations"), bucket_objects(bucket)
    assert len(good_rows) == FRAMES_PER_NIGHT

    real_insert = tables._insert_rows
    inside = {}

    def dies_after_five_rows(connection, table, schema_name, records):
        real_insert(connection, table, schema_name, records[:5])
        inside["rows"] = connection.execute(
            select(func.count()).select_from(table).where(table.c.night == NIGHT)
        ).scalar_one()
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(tables, "_insert_rows", dies_after_five_rows)
    # Another seed: every frame differs, so a row or object of the dead run would show.
    dead = materialize([raw_observations], partition_key=NIGHT, resources=resources(database, store, seed=7),
                       instance=pg_instance, raise_on_error=False)
    assert not dead.success and "killed mid-write" in failure_text(dead)
    assert inside["rows"] == 5  # inside its transaction the run had replaced the night with 5 rows ...
    pd.testing.assert_frame_equal(night_rows(database, "raw_observations"), good_rows)  # ... none committed

    objects = bucket_objects(bucket)
    assert {key: objects[key] for key in good_objects} == good_objects  # the good objects, untouched
    assert_objects_complete(objects)
    assert {f"astrid/{path}" for path in good_rows.path} <= set(objects)
    # The dead run's uploads are complete objects at keys of their own, referenced by no row.
    assert len(set(objects) - set(good_objects)) == FRAMES_PER_NIGHT


def test_an_upload_that_dies_mid_night_leaves_no_partial_object(
    pg_instance, database, bucket, s3_requests
):
    store = f"s3://{bucket}/astrid"
    assert materialize([raw_observations], partition_key=NIGHT, resources=resources(database, store),
                       instance=pg_instance).success
    good_rows, good_objects = night_rows(database, "raw_observations"), bucket_objects(bucket)

    from botocore.exceptions import ConnectionClosedError

    dropped = []

    def drop_connection(request, **_kwargs):  # the connection dies while dark03 is being sent
        if request.method == "PUT" and "dark03" in request.url:
            dropped.append(request.url)
            raise ConnectionClosedError(endpoint_url=request.url.split("?")[0])

    s3_requests.register("before-send.s3.PutObject", drop_connection)
    dead = materialize([raw_observations], partition_key=NIGHT, resources=resources(database, store, seed=7),
                       instance=pg_instance, raise_on_error=False)
    assert not dead.success
    assert len(dropped) == s3_attempts()  # retried, then given up
    assert "ObjectStoreError" in failure_text(dead) and "dark03" in failure_text(dead)

    objects = bucket_objects(bucket)
    assert_objects_complete(objects)
    assert {key: objects[key] for key in good_objects} == good_objects
    new_keys = set(objects) - set(good_objects)
    assert new_keys and not any("dark03" in key for key in new_keys)  # nothing at all where the upload died
    pd.testing.assert_frame_equal(night_rows(database, "raw_observations"), good_rows)


# --- concurrent runs ----------------------------------------------------------------------------


def _run_in_child(home: str, night: str, run_resources: dict, results) -> None:
    """A run in a forked process with its own engines and instance, as a run worker would have."""
    try:
        engine_for.cache_clear()
        instance = DagsterInstance.from_config(home)
        try:
            result = materialize([raw_observations], partition_key=night, resources=run_resources,
                                 instance=instance, raise_on_error=False)
            results.put((night, result.success, failure_text(result)))
        finally:
            instance.dispose()
    except BaseException as error:  # reported, not swallowed: the parent asserts on it
        results.put((night, False, f"{type(error).__name__}: {error}"))


def _run_concurrently(home: str, database_url: str, store_url: str, nights: list[str]) -> list:
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    engine_for(database_url).dispose()  # no pooled connection may be shared with the children
    processes = [
        context.Process(target=_run_in_child, args=(home, night, resources(database_url, store_url), results))
        for night in nights
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    return outcomes


def _after_barrier(barrier, function):
    def wrapped(*args, **kwargs):
        barrier.wait()
        return function(*args, **kwargs)

    return wrapped


def count_rows(url: str) -> tuple[dict[str, int], list]:
    """Rows per night, and any (night, frame_id) stored more than once."""
    with engine_for(url).connect() as connection:
        counts = dict(connection.exec_driver_sql(
            "SELECT night, count(*) FROM raw_observations GROUP BY night").all())
        duplicates = connection.exec_driver_sql(
            "SELECT night, frame_id FROM raw_observations GROUP BY night, frame_id HAVING count(*) > 1").all()
    return counts, duplicates


def test_concurrent_runs_on_different_nights_lose_and_duplicate_nothing(pg_home, database, bucket, monkeypatch):
    nights = ["2024-01-02", "2024-01-03"]
    store = f"s3://{bucket}/astrid"
    context = multiprocessing.get_context("fork")

    # 1. Fresh database: both runs reach table creation together (and would both CREATE TABLE).
    monkeypatch.setattr(tables.SqlClient, "ensure_schema_exists",
                        _after_barrier(context.Barrier(2, timeout=60), tables.SqlClient.ensure_schema_exists))
    outcomes = _run_concurrently(pg_home, database, store, nights)
    assert all(ok for _, ok, _ in outcomes), outcomes
    monkeypatch.undo()

    # 2. Both nights again: each deletes its night, then both insert while both transactions are open.
    monkeypatch.setattr(tables.DataFrameTableHandler, "handle_output",
                        _after_barrier(context.Barrier(2, timeout=60), tables.DataFrameTableHandler.handle_output))
    outcomes = _run_concurrently(pg_home, database, store, nights)
    assert all(ok for _, ok, _ in outcomes), outcomes
    assert count_rows(database) == ({night: FRAMES_PER_NIGHT for night in nights}, [])
    for night in nights:
        assert night_rows(database, "raw_observations", night).frame_id.str.contains(night.replace("-", "")).all()


def test_concurrent_runs_of_the_same_night_leave_one_copy(pg_home, database, bucket, monkeypatch):
    """Two runs of one night together: without a lock each would delete, neither seeing the other's rows."""
    store = f"s3://{bucket}/astrid"
    context = multiprocessing.get_context("fork")
    real_insert = tables._insert_rows

    def insert_then_dawdle(*args):  # keep the transaction open after inserting, before committing
        real_insert(*args)
        time.sleep(1.0)

    monkeypatch.setattr(tables, "_insert_rows", insert_then_dawdle)
    assert materialize([raw_observations], partition_key=NIGHT, resources=resources(database, store)).success
    monkeypatch.setattr(tables.SqlClient, "ensure_schema_exists",
                        _after_barrier(context.Barrier(2, timeout=60), tables.SqlClient.ensure_schema_exists))
    outcomes = _run_concurrently(pg_home, database, store, [NIGHT, NIGHT])
    assert all(ok for _, ok, _ in outcomes), outcomes
    assert count_rows(database) == ({NIGHT: FRAMES_PER_NIGHT}, [])


# --- unreachable servers ------------------------------------------------------------------------


def test_an_unreachable_object_store_is_retried_then_fails_cleanly(
    pg_instance, database, bucket, s3_requests, closed_port, monkeypatch
):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{closed_port()}")
    attempts = []
    s3_requests.register("before-send.s3", lambda **_kwargs: attempts.append(time.monotonic()))
    result = materialize([raw_observations], partition_key=NIGHT,  # how long it takes: benchmarks/bench_storage.py
                         resources=resources(database, f"s3://{bucket}/astrid"), instance=pg_instance,
                         raise_on_error=False)
    assert not result.success
    assert len(attempts) == s3_attempts()  # one request, retried with boto3's exponential backoff
    error = result.get_step_failure_events()[0].event_specific_data.error
    cause = error.cause
    assert cause.cls_name == "ObjectStoreError"
    assert f"in s3://{bucket}/astrid failed: EndpointConnectionError" in cause.message
    assert cause.cause is None and cause.context is None  # no chained boto exception ...
    assert not any("botocore" in frame for frame in cause.stack)  # ... and no boto frames


def test_an_unreachable_database_is_retried_then_fails_naming_it(pg_instance, bucket, closed_port):
    port = closed_port()
    url = f"postgresql+psycopg2://astrid:{DB_PASSWORD}@127.0.0.1:{port}/astrid"
    result = materialize([raw_observations], partition_key=NIGHT,
                         resources=resources(url, f"s3://{bucket}/astrid"), instance=pg_instance,
                         raise_on_error=False)
    assert not result.success
    error = result.get_step_failure_events()[0].event_specific_data.error
    cause = error.cause
    assert cause.cls_name == "DatabaseUnavailableError"
    assert (
        f"DatabaseUnavailableError: database postgresql+psycopg2://astrid:***@127.0.0.1:{port}/astrid "
        f"unreachable after {tables.CONNECT_ATTEMPTS} attempts"
    ) in cause.message
    assert "Connection refused" in cause.message
    assert cause.cause is None and cause.context is None
    assert not any("psycopg2" in frame or "sqlalchemy" in frame for frame in cause.stack)
    retries = [entry.user_message for entry in pg_instance.all_logs(result.run_id)
               if "connection attempt" in entry.user_message]
    assert len(retries) == tables.CONNECT_ATTEMPTS - 1
    backoff = [f"retrying in {tables.CONNECT_BACKOFF_S * 2**n:.2f} s" for n in range(tables.CONNECT_ATTEMPTS - 1)]
    assert [message[-len(wait):] for message, wait in zip(retries, backoff, strict=True)] == backoff  # doubling
    assert DB_PASSWORD not in failure_text(result) and DB_PASSWORD not in "".join(retries)


# --- credentials --------------------------------------------------------------------------------


def test_credentials_never_reach_logs_metadata_or_errors(
    pg_instance, database, bucket, s3_requests, closed_port, monkeypatch, caplog, capfd
):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    database_url = make_url(database).set(password=DB_PASSWORD).render_as_string(hide_password=False)
    monkeypatch.setenv("ASTRID_DATABASE_URL", database_url)  # trust auth: the password is accepted
    monkeypatch.setenv("ASTRID_OBJECT_STORE", f"s3://{bucket}/astrid")
    from_env = resources(None, None)  # URLs from the environment, as deployed

    runs = {"success": materialize([raw_observations, calibrated_frames], partition_key=NIGHT, resources=from_env,
                                   instance=pg_instance, raise_on_error=False)}
    monkeypatch.setenv("ASTRID_DATABASE_URL", f"postgresql+psycopg2://astrid:{DB_PASSWORD}@127.0.0.1:{closed_port()}/x")
    runs["database down"] = materialize([raw_observations], partition_key=NIGHT, resources=from_env,
                                        instance=pg_instance, raise_on_error=False)
    monkeypatch.setenv("ASTRID_DATABASE_URL", database_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{closed_port()}")
    runs["object store down"] = materialize([raw_observations], partition_key=NIGHT, resources=from_env,
                                            instance=pg_instance, raise_on_error=False)
    assert [result.success for result in runs.values()] == [True, False, False]
    assert len(night_rows(database, "calibrated_frames")) == 2

    captured = capfd.readouterr()
    texts = {
        "python logging": "\n".join(
            record.getMessage() + (logging.Formatter().formatException(record.exc_info) if record.exc_info else "")
            for record in caplog.records
        ),
        "stdout": captured.out,
        "stderr": captured.err,
    }
    for name, result in runs.items():
        run = pg_instance.get_run_by_id(result.run_id)
        texts[f"{name}: event log"] = "\n".join(serialize_value(entry) for entry in pg_instance.all_logs(result.run_id))
        texts[f"{name}: run record"] = serialize_value(run)
        texts[f"{name}: job snapshot"] = serialize_value(pg_instance.get_job_snapshot(run.job_snapshot_id))
    with engine_for(database).connect() as connection:
        texts["event_logs and runs tables"] = "\n".join(
            row[0] for row in connection.exec_driver_sql(
                "SELECT event FROM event_logs UNION ALL SELECT run_body FROM runs").all()
        )

    # What was checked holds what matters: metadata, the failures and the retries.
    assert "dagster/row_count" in texts["success: event log"]
    assert "DatabaseUnavailableError" in texts["database down: event log"]
    assert "astrid:***@127.0.0.1" in texts["database down: event log"]
    assert "ObjectStoreError" in texts["object store down: event log"]
    assert "connection attempt 1/" in texts["stderr"] + texts["python logging"]
    for name, text in texts.items():
        assert AWS_SECRET not in text, f"the AWS secret key appears in the {name}"
        assert DB_PASSWORD not in text, f"the database password appears in the {name}"
