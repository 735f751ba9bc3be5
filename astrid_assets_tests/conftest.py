"""Shared fixtures: an empty embedded AstrID home per test, and real servers for integration tests."""

from __future__ import annotations

import pytest

from astrid_assets_tests import servers


@pytest.fixture
def astrid_home(tmp_path, monkeypatch):
    """An empty ASTRID_HOME with the embedded defaults (SQLite, local folder) and its own DAGSTER_HOME."""
    from astrid_assets.io.tables import engine_for

    home = tmp_path / "astrid"
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True)
    (dagster_home / "dagster.yaml").touch()
    monkeypatch.setenv("ASTRID_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    for variable in ("ASTRID_DATABASE_URL", "ASTRID_OBJECT_STORE", "ASTRID_FITS_DROP", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(variable, raising=False)
    yield home
    engine_for.cache_clear()


@pytest.fixture(scope="session")
def postgres_url():
    """A fresh database on the machine's PostgreSQL for this test session."""
    with servers.postgres_database() as url:
        yield url


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """moto's S3 server on loopback, with test credentials in the environment."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", "astrid-test-key")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "astrid-test-secret-value")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        with servers.s3_server(tmp_path_factory.mktemp("servers")) as endpoint:
            patch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
            yield endpoint


@pytest.fixture(scope="session")
def mlflow_uri(s3_endpoint, tmp_path_factory):
    """A real MLflow tracking server on loopback, its artifacts in a bucket of the S3 test server."""
    import boto3

    boto3.client("s3").create_bucket(Bucket="astrid-mlflow")
    with servers.mlflow_server(tmp_path_factory.mktemp("mlflow"), "s3://astrid-mlflow/artifacts", s3_endpoint) as uri:
        yield uri
