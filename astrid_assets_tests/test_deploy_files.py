"""The deployment files: dagster.yaml, docker-compose.yaml, Dockerfile and deploy/.

dagster.yaml is loaded with Dagster's own instance-config loader (no database needed);
docker-compose.yaml is checked by ``docker-compose config -q`` when docker-compose is on PATH
(CI installs Debian's docker-compose 1.29) and always structurally with PyYAML.
No Docker engine and no network are needed; the whole module runs in a few seconds.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DAGSTER_YAML = ROOT / "dagster.yaml"
COMPOSE = ROOT / "docker-compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DEPLOY = ROOT / "deploy"
WORKSPACE = DEPLOY / "workspace.docker.yaml"
ENV_EXAMPLE = DEPLOY / "astrid.env.example"

PG_ENV = {
    "DAGSTER_PG_HOST": "pg.example.internal",
    "DAGSTER_PG_PORT": "6543",
    "DAGSTER_PG_USER": "astrid_dagster",
    "DAGSTER_PG_PASSWORD": "s3cr:t/p@ss word",  # characters that must be URL-quoted
    "DAGSTER_PG_DB": "astrid_prod",
}

EXPECTED_SERVICES = {
    "postgres",
    "minio",
    "minio-init",
    "mlflow",
    "dagster-init",
    "user-code",
    "webserver",
    "daemon",
    "dask-scheduler",
    "dask-worker",
    "review",
    "review-proxy",
}
DAGSTER_SERVICES = ("dagster-init", "user-code", "webserver", "daemon")
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|CREDENTIAL", re.IGNORECASE)
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}; not $${...}, compose's escaped `$`.
SUBSTITUTION = re.compile(r"(?<!\$)\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<default>[^}]*))?\}")
URL_USERINFO = re.compile(r"^[a-z][a-z0-9+.-]*://(?P<user>[^:@/]+):(?P<password>[^@/]+)@", re.IGNORECASE)
LOCAL_DEV_MARKER = "local-dev"


# --- dagster.yaml --------------------------------------------------------------------------


@pytest.fixture
def dagster_home(tmp_path, monkeypatch):
    """A DAGSTER_HOME holding the production dagster.yaml, with the instance variables set."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DAGSTER_YAML, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for name, value in PG_ENV.items():
        monkeypatch.setenv(name, value)
    return home


def _instance_ref(home: Path):
    from dagster._core.instance.ref import InstanceRef

    return InstanceRef.from_dir(str(home))


def test_dagster_yaml_passes_dagsters_instance_config_validation(dagster_home):
    from dagster._core.instance.config import dagster_instance_config

    config, custom_instance_class = dagster_instance_config(str(dagster_home))

    assert custom_instance_class is None
    assert set(config["storage"]) == {"postgres"}
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["telemetry"] == {"enabled": False}
    assert config["run_monitoring"]["enabled"] is True
    assert config["retention"]["schedule"]["purge_after_days"] > 0


def test_instance_selects_postgres_storage_and_the_queued_run_coordinator(dagster_home):
    from dagster._core.launcher import DefaultRunLauncher
    from dagster._core.run_coordinator import QueuedRunCoordinator

    ref = _instance_ref(dagster_home)

    assert (ref.storage_data.module_name, ref.storage_data.class_name) == (
        "dagster_postgres",
        "DagsterPostgresStorage",
    )
    assert isinstance(ref.run_coordinator, QueuedRunCoordinator)
    launcher = ref.run_launcher
    assert isinstance(launcher, DefaultRunLauncher)
    # Dagster refuses to start an instance that asks to resume runs its launcher cannot resume.
    if not launcher.supports_resume_run:
        assert ref.settings["run_monitoring"].get("max_resume_run_attempts", 0) == 0


def test_run_queue_and_pool_limits_are_what_the_daemon_will_enforce(dagster_home):
    from dagster._core.instance.config import ConcurrencyConfig, PoolGranularity

    ref = _instance_ref(dagster_home)
    concurrency = ConcurrencyConfig.from_concurrency_settings(
        ref.settings["concurrency"], ref.run_coordinator.get_run_queue_config()
    )

    run_queue = concurrency.run_queue_config
    assert run_queue.max_concurrent_runs == 8
    assert {"key": "dagster/backfill", "limit": 4} in run_queue.tag_concurrency_limits
    assert run_queue.max_user_code_failure_retries > 0
    # The `database` pool: 4 slots unless set otherwise, claimed per op.
    assert concurrency.pool_config.default_pool_limit == 4
    assert concurrency.pool_config.pool_granularity == PoolGranularity.OP


def test_postgres_connection_is_built_from_the_environment(dagster_home, monkeypatch):
    import dagster_postgres
    from dagster._config import process_config, resolve_to_config_type
    from dagster_postgres.utils import pg_url_from_config

    ref = _instance_ref(dagster_home)
    config_type = resolve_to_config_type(dagster_postgres.DagsterPostgresStorage.config_type())
    stored = yaml.safe_load(ref.storage_data.config_yaml)

    resolved = process_config(config_type, stored)
    assert resolved.success, resolved.errors
    # The driver is named: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, not installed.
    assert pg_url_from_config(resolved.value) == (
        f"postgresql+psycopg2://{PG_ENV['DAGSTER_PG_USER']}:{quote(PG_ENV['DAGSTER_PG_PASSWORD'])}"
        f"@{PG_ENV['DAGSTER_PG_HOST']}:{PG_ENV['DAGSTER_PG_PORT']}/{PG_ENV['DAGSTER_PG_DB']}"
    )

    monkeypatch.delenv("DAGSTER_PG_PASSWORD")
    assert not process_config(config_type, stored).success


def test_instance_ref_shipped_to_run_workers_names_variables_not_values(dagster_home):
    from dagster._serdes import serialize_value

    serialized = serialize_value(_instance_ref(dagster_home))

    assert "DAGSTER_PG_PASSWORD" in serialized
    assert PG_ENV["DAGSTER_PG_PASSWORD"] not in serialized


@pytest.mark.integration
def test_dagster_yaml_opens_a_working_instance_on_postgres(dagster_home, postgres_url, monkeypatch):
    """The real thing: Dagster creates its tables and runs its queries through this config."""
    from dagster import DagsterInstance
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from sqlalchemy.engine import make_url

    url = make_url(postgres_url)
    for name, value in {
        "DAGSTER_PG_HOST": url.host or "127.0.0.1",
        "DAGSTER_PG_PORT": str(url.port or 5432),
        "DAGSTER_PG_USER": url.username or "postgres",
        "DAGSTER_PG_PASSWORD": url.password or "",
        "DAGSTER_PG_DB": url.database,
    }.items():
        monkeypatch.setenv(name, value)

    with DagsterInstance.from_ref(_instance_ref(dagster_home)) as instance:
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert instance.get_runs() == []
        assert instance.global_op_concurrency_default_limit == 4
        instance.event_log_storage.set_concurrency_slots("database", 4)
        assert instance.event_log_storage.get_concurrency_info("database").slot_count == 4


def _walk(node, path=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield path + (str(key),), value
            yield from _walk(value, path + (str(key),))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, path + (str(index),))


def _env_refs(node) -> set[str]:
    return {value["env"] for _, value in _walk(node) if isinstance(value, dict) and set(value) == {"env"}}


def test_dagster_yaml_holds_no_literal_secrets():
    config = yaml.safe_load(DAGSTER_YAML.read_text())
    postgres = config["storage"]["postgres"]

    assert "postgres_url" not in postgres
    fields = {"hostname": "HOST", "port": "PORT", "username": "USER", "password": "PASSWORD", "db_name": "DB"}
    for field, suffix in fields.items():
        assert postgres["postgres_db"][field] == {"env": f"DAGSTER_PG_{suffix}"}, field
    for path, value in _walk(config):
        if SECRET_KEY.search(path[-1]) or path[-1] in ("postgres_url", "mysql_url"):
            assert isinstance(value, dict) and set(value) == {"env"}, f"{'.'.join(path)} is a literal"
    assert _env_refs(config) == set(PG_ENV)


# --- docker-compose.yaml ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE.read_text())


def _compose_env() -> dict[str, str]:
    """This process's environment without any of the variables the compose file substitutes."""
    names = {match["name"] for match in SUBSTITUTION.finditer(COMPOSE.read_text())}
    return {key: value for key, value in os.environ.items() if key not in names}


def _as_list(command) -> list[str]:
    return command.split() if isinstance(command, str) else [str(part) for part in command]


def _environment(service: dict) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) if "=" in item else (item, "") for item in environment)
    return {str(key): "" if value is None else str(value) for key, value in environment.items()}


def _check_structure(compose: dict) -> None:
    """What `docker-compose config` cannot say, and what it would say, for machines without it."""
    services = compose["services"]
    assert set(services) == EXPECTED_SERVICES
    for name, service in services.items():
        assert service.get("image") or service.get("build"), f"{name}: neither image nor build"
        depends_on = service.get("depends_on") or {}
        assert isinstance(depends_on, dict), f"{name}: depends_on without conditions"
        for dependency, spec in depends_on.items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            condition = spec["condition"]
            assert condition in CONDITIONS, f"{name} -> {dependency}: {condition}"
            if condition == "service_healthy":
                assert services[dependency].get("healthcheck", {}).get("test"), f"{dependency}: no healthcheck"
            if condition == "service_completed_successfully":
                assert services[dependency].get("restart") == "no", f"{dependency} is not a one-shot job"
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: bind mount {source} does not exist"
            else:
                assert source in (compose.get("volumes") or {}), f"{name}: undeclared volume {source}"


def test_docker_compose_config_is_valid(compose):
    """`docker-compose config -q` as CI runs it; the structural check where docker-compose is absent."""
    executable = shutil.which("docker-compose")
    if executable is None:
        _check_structure(compose)
        return
    for extra in ([], ["--env-file", str(ENV_EXAMPLE)]):
        result = subprocess.run(
            [executable, "-f", str(COMPOSE), *extra, "config", "-q"],
            cwd=ROOT,
            env=_compose_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        # Every ${VAR} has a default (or the env file sets it): no "variable is not set" warnings.
        assert "not set" not in result.stderr, result.stderr


def test_compose_structure(compose):
    _check_structure(compose)


def test_compose_holds_no_literal_secrets(compose):
    # A secret comes from a substitution; a default, where there is one, is marked local-dev.
    for match in SUBSTITUTION.finditer(COMPOSE.read_text()):
        if SECRET_KEY.search(match["name"]) and match["op"] in (":-", "-"):
            assert LOCAL_DEV_MARKER in match["default"], (
                f"default of {match['name']} ({match['default']!r}) is not marked {LOCAL_DEV_MARKER!r}"
            )
    for name, service in compose["services"].items():
        for key, value in _environment(service).items():
            masked = SUBSTITUTION.sub("SUBSTITUTED", value)
            if SECRET_KEY.search(key):
                assert masked == "SUBSTITUTED", f"{name}.{key}: literal secret"
            userinfo = URL_USERINFO.match(masked)
            if userinfo:
                assert userinfo["password"] == "SUBSTITUTED", f"{name}.{key}: literal password in URL"
    # Published ports are reachable from this machine only.
    for name, service in compose["services"].items():
        for port in service.get("ports") or []:
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port} published on all interfaces"


def test_dagster_services_share_one_image_and_get_the_instance_variables(compose):
    services = compose["services"]
    instance_variables = _env_refs(yaml.safe_load(DAGSTER_YAML.read_text()))
    images = {(services[name]["image"], services[name]["build"]["context"]) for name in DAGSTER_SERVICES}
    assert len(images) == 1
    for name in DAGSTER_SERVICES:
        assert instance_variables <= set(_environment(services[name])), name


def test_compose_commands_and_workspace_agree(compose):
    services = compose["services"]
    user_code = _as_list(services["user-code"]["command"])
    assert user_code[:3] == ["dagster", "code-server", "start"]
    assert user_code[user_code.index("-m") + 1] == "astrid_assets.definitions"
    assert user_code[user_code.index("-h") + 1] == "0.0.0.0"
    port = int(user_code[user_code.index("-p") + 1])
    location = user_code[user_code.index("--location-name") + 1]

    (entry,) = yaml.safe_load(WORKSPACE.read_text())["load_from"]
    assert entry["grpc_server"] == {"host": "user-code", "port": port, "location_name": location}
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert location == pyproject["tool"]["dagster"]["code_location_name"]

    webserver = _as_list(services["webserver"]["command"])
    assert webserver[0] == "dagster-webserver"
    assert webserver[webserver.index("-w") + 1] == "/opt/dagster/workspace.yaml"
    assert webserver[webserver.index("-h") + 1] == "0.0.0.0"
    daemon = _as_list(services["daemon"]["command"])
    assert daemon[:2] == ["dagster-daemon", "run"]
    assert daemon[daemon.index("-w") + 1] == "/opt/dagster/workspace.yaml"

    app = _environment(services["user-code"])
    for variable in (
        "ASTRID_DATABASE_URL",
        "ASTRID_OBJECT_STORE",
        "AWS_ENDPOINT_URL_S3",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_DEFAULT_REGION",
        "MLFLOW_TRACKING_URI",
    ):
        assert app.get(variable), variable
    assert app["ASTRID_DATABASE_URL"].startswith("postgresql+psycopg2://")
    assert app["ASTRID_OBJECT_STORE"].startswith("s3://")
    assert app["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def test_compose_backing_services(compose):
    services = compose["services"]
    assert services["postgres"]["image"] == "postgres:15"
    assert "/docker-entrypoint-initdb.d" in " ".join(services["postgres"]["volumes"])
    assert (DEPLOY / "postgres/initdb/10-create-mlflow-db.sh").is_file()

    mlflow = services["mlflow"]
    command = _as_list(mlflow["command"])
    assert command[:2] == ["mlflow", "server"]
    assert any(part.startswith("--artifacts-destination=s3://") for part in command)
    mlflow_env = _environment(mlflow)
    assert mlflow_env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert mlflow_env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")
    assert "mlflow" in mlflow_env["MLFLOW_SERVER_ALLOWED_HOSTS"]  # the Host header other containers send

    assert services["minio-init"]["depends_on"]["minio"]["condition"] == "service_healthy"
    assert services["minio-init"]["restart"] == "no"
    assert services["dagster-init"]["restart"] == "no"


def test_env_example_documents_every_variable_and_holds_placeholders_only():
    example = ENV_EXAMPLE.read_text()
    assignments = dict(line.split("=", 1) for line in example.splitlines() if line and not line.startswith("#"))
    for key, value in assignments.items():
        if SECRET_KEY.search(key):
            assert value.startswith("change-me"), f"{key} in {ENV_EXAMPLE.name} is not a placeholder"
    for name in {match["name"] for match in SUBSTITUTION.finditer(COMPOSE.read_text())}:
        assert re.search(rf"^#? ?{name}=", example, re.MULTILINE), f"{name} not documented in {ENV_EXAMPLE.name}"


# --- Dockerfile and helper scripts -------------------------------------------------------------


def test_dockerfile():
    text = DOCKERFILE.read_text()
    instructions = [line.split(None, 1) for line in text.splitlines() if line and line[0] not in "# "]

    assert instructions[0] == ["FROM", "python:3.11-slim"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (torch_pin,) = [dep for dep in pyproject["project"]["dependencies"] if dep.startswith("torch==")]
    assert f"--index-url https://download.pytorch.org/whl/cpu {torch_pin}" in text
    assert text.index("download.pytorch.org") < text.index("RUN pip install .")
    assert "DAGSTER_HOME=/opt/dagster/dagster_home" in text
    assert re.search(r"^COPY dagster.yaml \$\{DAGSTER_HOME\}/dagster.yaml$", text, re.MULTILINE)
    assert "COPY deploy/workspace.docker.yaml /opt/dagster/workspace.yaml" in text
    users = [argument.strip() for instruction, argument in instructions if instruction == "USER"]
    assert users and users[-1] not in ("root", "0")
    for instruction, argument in instructions:
        if instruction == "COPY" and not argument.startswith("--from"):
            for source in argument.split()[:-1]:
                assert (ROOT / source).exists(), f"COPY source {source} missing"

    ignored = DOCKERIGNORE.read_text().splitlines()
    for pattern in (".git", ".venv", ".env", ".astrid"):
        assert pattern in ignored, f"{pattern} not in .dockerignore"


@pytest.mark.parametrize(
    "script",
    ["postgres/initdb/10-create-mlflow-db.sh", "minio/create-bucket.sh", "dagster/init-instance.sh"],
)
def test_helper_scripts_are_executable_posix_sh(script):
    path = DEPLOY / script
    assert os.access(path, os.X_OK), f"{script} is not executable"
    assert path.read_text().startswith("#!/bin/sh\n")
    result = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
