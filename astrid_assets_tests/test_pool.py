"""The frame pool (astrid_assets.pool), its settings and its resource: engines, retries, thread caps, fail-fast checks.

The Dask engine and the nightly chain on every engine: astrid_assets_tests/defs/test_pool_engines.py.
"""

from __future__ import annotations

import os

import pytest
from dagster import DagsterInstance, asset, materialize

from astrid_assets import settings
from astrid_assets.pool import ProcessPool, SerialPool, open_pool
from astrid_assets.resources.pool import FramePoolResource, instance_placement
from astrid_assets_tests.pool_tasks import always_fails, dies_once, square_after, thread_caps

# --- engines -------------------------------------------------------------------------------------


def test_serial_pool_runs_in_order_retries_once_and_reports_what_still_fails(tmp_path):
    pool = SerialPool()
    flaky = str(tmp_path / "a-flaky")
    outcomes = pool.run_frames(square_after, [(flaky, 3), ("steady", 4)], ["frame a", "frame b"])
    assert [o.value[0] for o in outcomes] == [9, 16]
    assert [o.attempts for o in outcomes] == [2, 1] and all(o.ok for o in outcomes)

    (bad,) = pool.run_frames(always_fails, [(7,)], ["frame 7"])
    assert not bad.ok and bad.attempts == 2 and bad.error == "ValueError: frame 7 is corrupt"
    assert list(pool.map(square_after, ["x", "y"], [2, 5])) == [(4, os.getpid()), (25, os.getpid())]


def test_process_pool_survives_a_killed_worker_and_caps_threads(tmp_path, monkeypatch):
    """Two spawned workers: a worker killed mid-frame breaks the executor; the frame is retried on a fresh one,
    the other frames keep their results, and every worker runs one thread per numerical library."""
    monkeypatch.setenv("ASTRID_POOL", "processes")
    monkeypatch.setenv("ASTRID_WORKERS", "2")
    with open_pool() as pool:
        assert isinstance(pool, ProcessPool) and pool.workers == 2
        values = list(range(6))
        outcomes = pool.run_frames(square_after, [("steady", v) for v in values], [f"frame {v}" for v in values])
        assert [o.value[0] for o in outcomes] == [v * v for v in values]
        assert os.getpid() not in {o.value[1] for o in outcomes}, "frames ran in worker processes"

        marker = str(tmp_path / "oom")
        killed, steady = pool.run_frames(dies_once, [(marker,), (marker,)], ["frame k", "frame s"])
        assert killed.ok and killed.attempts == 2, killed.error  # retried on a fresh pool
        assert steady.ok

        caps = pool.submit(thread_caps).result()
    assert caps["env"] == {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    assert caps["pools"] and set(caps["pools"]) == {1}
    assert caps["torch"] == 1
    assert caps["fft"] == 1  # scipy.fft's own thread pool, which neither the environment nor threadpoolctl reaches


def test_process_pool_replaces_its_workers_between_batches_after_max_tasks():
    with ProcessPool(1, max_tasks_per_child=2) as pool:
        first = pool.run_frames(square_after, [("steady", v) for v in range(3)], ["a", "b", "c"])
        second = pool.run_frames(square_after, [("steady", 5)], ["d"])
    assert [o.value[0] for o in first + second] == [0, 1, 4, 25]
    assert pool.generation == 2
    assert second[0].value[1] not in {o.value[1] for o in first}, "a fresh worker ran the second batch"


# --- settings ------------------------------------------------------------------------------------


def test_pool_settings(monkeypatch):
    monkeypatch.delenv("ASTRID_POOL", raising=False)
    monkeypatch.delenv("ASTRID_WORKERS", raising=False)
    assert settings.pool_kind() == "processes"  # the default of a deployment
    assert 1 <= settings.pool_workers() == settings.available_cores() <= len(os.sched_getaffinity(0))
    monkeypatch.setenv("ASTRID_POOL", "Threads")
    with pytest.raises(ValueError, match="ASTRID_POOL='threads' is not one of serial, processes, dask"):
        settings.pool_kind()
    monkeypatch.setenv("ASTRID_WORKERS", "0")
    with pytest.raises(ValueError, match="ASTRID_WORKERS=0 must be at least 1"):
        settings.pool_workers()
    monkeypatch.setenv("ASTRID_POOL", "dask")
    monkeypatch.delenv("ASTRID_DASK_ADDRESS", raising=False)
    with pytest.raises(settings.DeploymentError, match="ASTRID_DASK_ADDRESS"):
        open_pool()


def test_beyond_one_host_postgresql_and_s3_are_required(astrid_home, monkeypatch):
    # one host: the embedded default is fine whatever the pool
    assert settings.multi_host_problems("processes", "DefaultRunLauncher", "SqliteRunStorage") == []
    monkeypatch.setenv("ASTRID_DASK_ADDRESS", "tcp://scheduler:8786")
    problems = settings.multi_host_problems("dask", "DefaultRunLauncher", "SqliteRunStorage")
    assert len(problems) == 3
    assert all(p.startswith("AstrID runs beyond one host (ASTRID_POOL=dask)") for p in problems)
    assert "ASTRID_DATABASE_URL is sqlite:///" in problems[0] and "PostgreSQL URL" in problems[0]
    assert f"ASTRID_OBJECT_STORE is the local folder {astrid_home / 'objects'}" in problems[1]
    assert "SQLite (SqliteRunStorage)" in problems[2]
    # a run launcher that places runs on other machines needs the same, with any pool
    (launcher_problem, *_) = settings.multi_host_problems("processes", "K8sRunLauncher")
    assert launcher_problem.startswith("AstrID runs beyond one host (the run launcher K8sRunLauncher)")

    monkeypatch.setenv("ASTRID_DATABASE_URL", "postgresql+psycopg2://astrid:hunter2@db:5432/astrid")
    monkeypatch.setenv("ASTRID_OBJECT_STORE", "s3://astrid/objects")
    assert settings.multi_host_problems("dask", "DockerRunLauncher", "PostgresRunStorage") == []
    monkeypatch.setenv("ASTRID_OBJECT_STORE", str(astrid_home / "objects"))
    (problem,) = settings.multi_host_problems("dask", "DockerRunLauncher", "PostgresRunStorage")
    assert "hunter2" not in problem


@asset
def frames_of_a_night(frame_pool: FramePoolResource) -> list[int]:
    return [value for value, _ in frame_pool.open().map(square_after, ["steady"] * 3, [1, 2, 3])]


def test_a_run_fails_at_its_start_on_sqlite_with_a_dask_pool(astrid_home, monkeypatch):
    monkeypatch.setenv("ASTRID_POOL", "dask")
    monkeypatch.setenv("ASTRID_DASK_ADDRESS", "tcp://127.0.0.1:9")  # never reached: the check comes first
    result = materialize([frames_of_a_night], resources={"frame_pool": FramePoolResource()},
                         instance=DagsterInstance.get(), raise_on_error=False)
    assert not result.success
    (failure,) = [event for event in result.all_events if event.is_failure]
    message = str(failure.event_specific_data.error.cause or failure.event_specific_data.error)
    assert "DeploymentError" in message and "ASTRID_DATABASE_URL is sqlite:///" in message
    assert "ASTRID_OBJECT_STORE is the local folder" in message


def test_the_resource_hands_a_runs_steps_one_pool(astrid_home, monkeypatch):
    monkeypatch.setenv("ASTRID_POOL", "serial")
    instance = DagsterInstance.get()  # $DAGSTER_HOME: the default launcher, SQLite: one host
    assert instance_placement(instance) == ("DefaultRunLauncher", "SqliteRunStorage")
    result = materialize([frames_of_a_night], resources={"frame_pool": FramePoolResource()}, instance=instance)
    assert result.output_for_node("frames_of_a_night") == [1, 4, 9]
