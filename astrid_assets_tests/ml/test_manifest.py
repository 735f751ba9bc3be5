"""The reproducibility manifest, and the ML package's independence from Dagster and MLflow."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from astrid_assets.ml.manifest import params_hash, reproducibility_manifest
from astrid_assets.ml.training import TrainingConfig


def test_manifest_records_software_code_params_and_data(tmp_path):
    config = TrainingConfig(seed=11, epochs=5)
    manifest = reproducibility_manifest(config, "d" * 64, {"dataset_version": "v3"})
    for key in ("python", "torch", "numpy", "git_commit", "git_dirty", "params_hash", "seed", "device"):
        assert key in manifest
    assert manifest["seed"] == 11 and manifest["dataset_digest"] == "d" * 64 and manifest["dataset_version"] == "v3"
    assert manifest["device"] in ("cpu", "cuda")
    assert manifest["params_hash"] == hashlib.sha256(config.to_yaml().encode()).hexdigest() == params_hash(config)
    assert params_hash(config.replace(epochs=6)) != manifest["params_hash"]
    assert params_hash(TrainingConfig.from_dict(manifest["params"])) == manifest["params_hash"]
    json.dumps(manifest)  # serialisable as it is
    # this checkout is a git repository
    assert len(manifest["git_commit"]) == 40 and isinstance(manifest["git_dirty"], bool)
    # outside a repository (or without git) the fields are None
    elsewhere = reproducibility_manifest(config, "d" * 64, repository=tmp_path)
    assert elsewhere["git_commit"] is None and elsewhere["git_dirty"] is None
    with pytest.raises(ValueError, match="overwrite"):
        reproducibility_manifest(config, "d" * 64, {"seed": 3})


def test_ml_package_imports_neither_dagster_nor_mlflow():
    code = (
        "import sys\n"
        "import astrid_assets.ml.dataset, astrid_assets.ml.unet, astrid_assets.ml.metrics\n"
        "import astrid_assets.ml.training, astrid_assets.ml.manifest, astrid_assets.ml.config\n"
        "import astrid_assets.ml.checkpoints, astrid_assets.ml.tracking, astrid_assets.ml.rerun\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'dagster', 'mlflow'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
