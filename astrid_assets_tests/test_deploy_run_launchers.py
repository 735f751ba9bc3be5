"""deploy/run-launchers/: the example dagster.yaml files for DockerRunLauncher and K8sRunLauncher.

Loaded with Dagster's own instance-config loader (the launcher packages themselves are not installed here:
their class is named, not imported). Each places runs on other machines, so AstrID must refuse the
embedded SQLite and local folder under it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from astrid_assets import settings

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {"dagster.docker.yaml": ("dagster_docker", "DockerRunLauncher"),
            "dagster.k8s.yaml": ("dagster_k8s", "K8sRunLauncher")}
INSTANCE_VARIABLES = ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB",
                      "ASTRID_IMAGE")


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_instance_is_valid_queued_and_limited(name, tmp_path, monkeypatch, astrid_home):
    from dagster._core.instance.config import dagster_instance_config

    shutil.copy(ROOT / "deploy/run-launchers" / name, tmp_path / "dagster.yaml")
    for variable in INSTANCE_VARIABLES:
        monkeypatch.setenv(variable, "6543" if variable.endswith("PORT") else "value")
    config, custom_class = dagster_instance_config(str(tmp_path))

    assert custom_class is None and set(config["storage"]) == {"postgres"}
    module, launcher = EXAMPLES[name]
    assert (config["run_launcher"]["module"], config["run_launcher"]["class"]) == (module, launcher)
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    runs = config["concurrency"]["runs"]
    backfill = {limit["key"]: limit["limit"] for limit in runs["tag_concurrency_limits"]}["dagster/backfill"]
    assert 0 < backfill < runs["max_concurrent_runs"], "a backfill leaves run slots for the nightly schedule"
    # no literal secret: the password is an environment reference
    assert yaml.safe_load((tmp_path / "dagster.yaml").read_text())["storage"]["postgres"]["postgres_db"][
        "password"] == {"env": "DAGSTER_PG_PASSWORD"}

    # under this launcher, the embedded default (SQLite, a local folder) is refused, saying so
    with pytest.raises(settings.DeploymentError, match=f"the run launcher {launcher}.*PostgreSQL URL"):
        settings.require_multi_host_storage("processes", launcher, "PostgresRunStorage")
