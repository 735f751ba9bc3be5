"""Fixtures of the storage tests: a module's own PostgreSQL database and Dagster instance on it,
a fresh bucket on the S3 test server, and ports where nothing listens."""

import socket
import uuid

import boto3
import pytest
import yaml
from dagster import DagsterInstance

from astrid_assets.testing import servers


@pytest.fixture(scope="module")
def pg_database(request):
    """A fresh PostgreSQL database for the test module, holding Dagster's storage and AstrID's tables
    (one database, as in production). Not the session's ``postgres_url`` database: other modules
    expect that one to hold no Dagster runs."""
    with servers.postgres_database(prefix=f"astrid_{request.module.__name__.rsplit('_', 1)[-1]}") as url:
        yield url


@pytest.fixture(scope="module")
def pg_home(pg_database, tmp_path_factory):
    """A DAGSTER_HOME whose instance keeps runs, event logs and schedules in the test database."""
    home = tmp_path_factory.mktemp("dagster_home")
    config = {"storage": {"postgres": {"postgres_url": pg_database}}, "telemetry": {"enabled": False}}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return str(home)


@pytest.fixture(scope="module")
def pg_instance(pg_home):
    instance = DagsterInstance.from_config(pg_home)
    yield instance
    instance.dispose()


@pytest.fixture
def bucket(s3_endpoint):
    name = f"astrid-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture
def closed_port():
    """Ports bound but never listened on: connections are refused, and no other process can take them."""
    sockets = []

    def bind() -> int:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
        return sock.getsockname()[1]

    yield bind
    for sock in sockets:
        sock.close()
