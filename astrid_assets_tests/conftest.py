"""Shared fixtures: an empty embedded AstrID home per test, real frames, and real servers for integration tests.

Every test that starts a server carries the ``integration`` marker, so ``pytest -m "not integration"``
is a fast loop that starts none. Two checks keep it so: collection fails naming any test that uses a
server fixture (:data:`SERVER_FIXTURES`), lives in a server folder (:data:`SERVER_FOLDERS`) or whose
module uses :mod:`astrid_assets.testing.servers` without the marker, and a server fixture requested
at run time (``request.getfixturevalue``) by a test without it fails that test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from astrid_assets.testing import servers

# A test's Dagster runs hand their frames to the serial pool (no worker processes to start per run); the
# pool tests (astrid_assets_tests/test_pool.py) choose their engines themselves.
os.environ.setdefault("ASTRID_POOL", "serial")

#: Fixtures that start a server (PostgreSQL, moto's S3 server, MLflow, dagster-webserver, Chromium),
#: defined here and in the folders' conftest.py; a test using one, even through another fixture, is integration.
SERVER_FIXTURES = frozenset({"postgres_url", "s3_endpoint", "mlflow_uri", "pg_database", "dagster_ui", "browser",
                             "smtp_server", "webhook_server"})
#: Folders of this package whose tests all start servers.
SERVER_FOLDERS = frozenset({"e2e", "ui"})
HERE = Path(__file__).resolve().parent


def server_use(item: pytest.Item) -> str | None:
    """How ``item`` starts a server, as far as collection can tell; None if it does not seem to."""
    used = sorted(SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())))
    if used:
        return f"uses the fixture {', '.join(used)}"
    path = Path(item.path).resolve()
    if path.is_relative_to(HERE) and path.relative_to(HERE).parts[0] in SERVER_FOLDERS:
        return f"is in {path.relative_to(HERE).parts[0]}/"
    module = getattr(item, "module", None)
    if module is not None and any(value is servers for value in vars(module).values()):
        return "its module uses astrid_assets.testing.servers"
    return None


def unmarked_server_error(tests: list[str]) -> pytest.UsageError:
    return pytest.UsageError(
        "tests that start servers must carry the integration marker (pytestmark = pytest.mark.integration "
        "at the top of the module, @pytest.mark.integration on the test, or pytest.param(..., "
        "marks=pytest.mark.integration)):\n  " + "\n  ".join(tests))


@pytest.hookimpl(tryfirst=True)  # before -m deselects: every collected test is checked
def pytest_collection_modifyitems(config, items):
    unmarked = [f"{item.nodeid}: {why}" for item in items
                if item.get_closest_marker("integration") is None and (why := server_use(item))]
    if unmarked:
        raise unmarked_server_error(unmarked)


class ServerFixtureGuard:
    """Fails a test without the integration marker that requests a server fixture while it runs.

    A plugin rather than conftest hooks: ``pytest_fixture_setup`` of a session-scoped fixture is not
    called on a conftest below the root directory.
    """

    def __init__(self):
        self.running: pytest.Item | None = None

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        self.running = item
        try:
            return (yield)
        finally:
            self.running = None

    @pytest.hookimpl(tryfirst=True)
    def pytest_fixture_setup(self, fixturedef, request):
        test = self.running
        if fixturedef.argname in SERVER_FIXTURES and test is not None and not test.get_closest_marker("integration"):
            raise unmarked_server_error([f"{test.nodeid}: requests the fixture {fixturedef.argname}"])


def pytest_configure(config):
    config.pluginmanager.register(ServerFixtureGuard(), "astrid-server-fixture-guard")


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
def real_data() -> Path:
    """The folder of real frames (:func:`astrid_assets.settings.real_data_dir`: ``ASTRID_REAL_DATA``, default
    ``../shared/data/real`` beside the project). Where it is absent the test is skipped with a message naming
    the folder and the variable, or fails when ``ASTRID_REQUIRE_REAL_DATA=1`` (as in CI)."""
    from astrid_assets import settings

    folder = settings.real_data_dir()
    if not folder.is_dir():
        message = (f"the real frames are not in {folder}: set ASTRID_REAL_DATA to their folder "
                   "(default ../shared/data/real, relative to the project root)")
        if settings.real_data_required():
            pytest.fail(f"{message}; ASTRID_REQUIRE_REAL_DATA is set, so their absence is a failure", pytrace=False)
        pytest.skip(f"{message}; ASTRID_REQUIRE_REAL_DATA=1 makes this a failure")
    return folder


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
