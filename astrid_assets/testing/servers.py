"""Real servers for the integration tests and the benchmarks, started on loopback in their own process groups.

Each server runs in a new session (``start_new_session=True``) and is stopped by signalling its
whole process group, so worker processes (MLflow's gunicorn/uvicorn workers, say) die with it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import sqlalchemy as sa

from astrid_assets import settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode} before listening on {port}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout} s")


@contextmanager
def server_process(command: list[str], port: int, log: Path, timeout: float = 60, env: dict | None = None):
    """Run ``command`` in its own process group until the block exits; wait for ``port``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **(env or {})},
        )
        try:
            wait_for_port(port, timeout, process)
            yield process
        finally:
            stop_process_group(process)


def stop_process_group(process: subprocess.Popen, grace: float = 10) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after ``grace`` seconds."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def ensure_postgres_running() -> None:
    """Start the machine's PostgreSQL cluster if it is down (trust auth on 127.0.0.1:5432)."""
    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", 5432)) == 0:
            return
    versions = sorted(p.name for p in Path("/etc/postgresql").iterdir()) if Path("/etc/postgresql").exists() else []
    if not versions:
        raise RuntimeError("PostgreSQL is not running on 127.0.0.1:5432 and no cluster is installed")
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"], check=True)
    wait_for_port(5432, 30)


@contextmanager
def postgres_database(prefix: str = "astrid_test") -> Iterator[str]:
    """A fresh PostgreSQL database for this test session; dropped afterwards. Yields its URL."""
    ensure_postgres_running()
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin_url = settings.test_postgres_admin_url()
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        from astrid_assets.io.tables import engine_for

        engine_for(url).dispose()
        engine_for.cache_clear()
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def s3_server(log_dir: Path) -> Iterator[str]:
    """moto's standalone S3 server on loopback; yields its endpoint URL."""
    port = free_port()
    moto = Path(sys.executable).with_name("moto_server")
    with server_process([str(moto), "-H", "127.0.0.1", "-p", str(port)], port, log_dir / "moto.log"):
        yield f"http://127.0.0.1:{port}"


@contextmanager
def mlflow_server(work_dir: Path, artifacts_destination: str, s3_endpoint: str) -> Iterator[str]:
    """An MLflow tracking server on loopback (SQLite backend, artifacts proxied to the S3 server)."""
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [
        str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{work_dir / 'mlflow.db'}",
        "--artifacts-destination", artifacts_destination,
    ]
    with server_process(command, port, work_dir / "mlflow.log", timeout=120,
                        env={"MLFLOW_S3_ENDPOINT_URL": s3_endpoint}):
        yield f"http://127.0.0.1:{port}"


LOCATIONS = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus " \
            "locationOrLoadError { __typename ... on PythonError { message } } } } } }"


def wait_for_code_location(url: str, timeout: float = 180, process: subprocess.Popen | None = None) -> None:
    """Wait until the webserver has loaded every code location; a load error, or ``process`` exiting, raises."""
    from astrid_assets.cli.trigger import TriggerError, graphql

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"dagster-webserver exited with code {process.returncode}")
        try:
            entries = graphql(url, LOCATIONS, {})["workspaceOrError"]["locationEntries"]
        except TriggerError:  # not answering yet
            entries = []
        if entries and all(e["loadStatus"] == "LOADED" for e in entries):
            errors = [e["locationOrLoadError"] for e in entries
                      if e["locationOrLoadError"]["__typename"] != "RepositoryLocation"]
            if errors:
                raise RuntimeError(f"code location failed to load: {errors}")
            return
        time.sleep(0.5)
    raise TimeoutError(f"the webserver at {url} did not load its code locations within {timeout} s")


@contextmanager
def dagster_deployment(work_dir: Path, env: dict[str, str], workspace: Path) -> Iterator[str]:
    """``dagster-daemon`` and ``dagster-webserver`` on loopback, each in its own process group; yields the URL.

    ``env`` must name ``DAGSTER_HOME`` (with its dagster.yaml) and whatever the code location needs.
    """
    bin_dir = Path(sys.executable).parent
    port = free_port()
    with open(work_dir / "daemon.log", "wb") as daemon_log:
        daemon = subprocess.Popen([str(bin_dir / "dagster-daemon"), "run", "-w", str(workspace)],
                                  stdout=daemon_log, stderr=subprocess.STDOUT, start_new_session=True,
                                  env={**os.environ, **env})
        try:
            command = [str(bin_dir / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w", str(workspace)]
            with server_process(command, port, work_dir / "webserver.log", timeout=180, env=env):
                url = f"http://127.0.0.1:{port}"
                wait_for_code_location(url)
                yield url
        finally:
            stop_process_group(daemon)


@contextmanager
def process_group(command: list[str], log: Path, env: dict | None = None) -> Iterator[subprocess.Popen]:
    """Run ``command`` in its own process group (no port to wait for) until the block exits."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, **(env or {})})
        try:
            yield process
        finally:
            stop_process_group(process)


@contextmanager
def dask_cluster(log_dir: Path, workers: int = 2, memory_limit: str = "2GiB", timeout: float = 120,
                 env: dict | None = None) -> Iterator[str]:
    """``dask scheduler`` and ``workers`` ``dask worker`` processes (one thread each, under a nanny that restarts a
    worker past its ``memory_limit``) on loopback, each in its own process group; yields the scheduler's
    address once every worker has joined. The workers inherit this environment (and ``env``): the object
    store's credentials."""
    from distributed import Client

    dask = str(Path(sys.executable).with_name("dask"))
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    with server_process([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                        port, log_dir / "dask-scheduler.log", timeout=timeout, env=env):
        with ExitStack() as stack:
            for index in range(workers):
                stack.enter_context(process_group(
                    [dask, "worker", address, "--host", "127.0.0.1", "--nthreads", "1", "--memory-limit",
                     memory_limit, "--no-dashboard", "--name", f"astrid-worker-{index}"],
                    log_dir / f"dask-worker-{index}.log", env))
            with Client(address, timeout=timeout, set_as_default=False) as client:
                client.wait_for_workers(workers, timeout=timeout)
            yield address
