"""The MLflow record of a U-Net training run: tags, parameters, dataset input, metrics, artifacts.

Each function writes through ``tracking``, MLflow's fluent API with the run to write to active:
the ``mlflow`` module, or dagster-mlflow's resource (which forwards to it and started the run for
the Dagster run).  This module imports neither MLflow nor Dagster.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from astrid_assets.ml.config import TrainingConfig


def start_training_run(
    tracking: Any, model_version: str, dataset_version: str, config: TrainingConfig, manifest: Mapping,
    labels: np.ndarray, source: str, digest: str,
) -> None:
    """Name the run ``unet_<model_version>``, tag it (dataset and model versions, git commit), log the
    resolved configuration as its parameters and the dataset (``labels``, stored at ``source``, content
    ``digest``) as its training input."""
    tracking.set_tags({"mlflow.runName": f"unet_{model_version}", "dataset_version": dataset_version,
                       "model_version": model_version, "git_commit": manifest.get("git_commit", "unknown")})
    tracking.log_params(config.to_dict())
    tracking.log_input(tracking.data.from_numpy(labels, source=source, name=f"training_datasets:{dataset_version}",
                                                digest=digest[:32]), context="training")


def epoch_logger(tracking: Any) -> Callable[[int, dict], None]:
    """A ``train(..., on_epoch=...)`` callback logging each epoch's metrics at its step."""
    return lambda epoch, metrics: tracking.log_metrics(metrics, step=epoch)


def log_training_outcome(
    tracking: Any, config: TrainingConfig, test_metrics: Mapping, frozen_metrics: Mapping, dataset_rows: list[dict],
    manifest: Mapping, curves_png: bytes, directory: Path,
) -> None:
    """Log the test-split and frozen-benchmark metrics (``test_*``, ``frozen_*``) and the artifacts:
    ``config/resolved.yaml``, ``dataset/manifest.json`` (``dataset_rows``), ``reproducibility/manifest.json``
    and ``plots/training_curves.png`` (written to ``directory`` first)."""
    tracking.log_metrics({f"test_{k}": float(v) for k, v in test_metrics.items()})
    tracking.log_metrics({f"frozen_{k}": float(v) for k, v in frozen_metrics.items()})
    tracking.log_text(config.to_yaml(), "config/resolved.yaml")
    tracking.log_dict(dataset_rows, "dataset/manifest.json")
    tracking.log_dict(manifest, "reproducibility/manifest.json")
    curves = directory / "training_curves.png"
    curves.write_bytes(curves_png)
    tracking.log_artifact(str(curves), "plots")


def finish_run(tracking: Any) -> str:
    """End the active run; its id."""
    run_id = tracking.active_run().info.run_id
    tracking.end_run()
    return run_id
