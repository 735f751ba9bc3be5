"""The reproducibility manifest of a training run: what code, data, parameters and software made it."""

from __future__ import annotations

import hashlib
import platform
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from astrid_assets.ml.training import TrainingConfig

MANIFEST_FORMAT = "astrid-training-manifest/1"


def params_hash(config: TrainingConfig) -> str:
    """SHA-256 (hex) of the resolved configuration's YAML (:meth:`TrainingConfig.to_yaml`)."""
    return hashlib.sha256(config.to_yaml().encode("utf-8")).hexdigest()


def git_state(directory: str | Path | None = None) -> dict:
    """``{"git_commit": sha or None, "git_dirty": bool or None}`` of the repository holding
    ``directory`` (default: this package's source).  None when git or the repository is absent."""
    directory = Path(directory) if directory is not None else Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=directory, capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"git_commit": None, "git_dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit.strip(), "git_dirty": None if status is None else bool(status.strip())}


def reproducibility_manifest(
    config: TrainingConfig, dataset_digest: str, extra: Mapping | None = None, repository: str | Path | None = None
) -> dict:
    """A flat, JSON/YAML-serialisable record of a training run.

    Keys: ``format``, ``python``, ``platform``, ``torch``, ``numpy``, ``cuda`` (torch's CUDA
    version or None), ``device`` (resolved; with ``device_name`` on CUDA), ``git_commit``,
    ``git_dirty`` (tracked files modified; None when git or the repository is unavailable),
    ``params_hash`` (SHA-256 of the resolved configuration YAML), ``params`` (that configuration),
    ``seed``, ``deterministic``, ``dataset_digest`` (:func:`~astrid_assets.ml.dataset.content_digest`),
    then the ``extra`` items (a key that collides with one above raises ValueError).
    """
    resolved = config.resolved()
    device = torch.device(resolved.device)
    manifest = {
        "format": MANIFEST_FORMAT,
        "python": platform.python_version(),
        "python_implementation": sys.implementation.name,
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cuda": torch.version.cuda,
        "device": resolved.device,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or None,
        "torch_threads": torch.get_num_threads(),
        **git_state(repository),
        "params_hash": params_hash(resolved),
        "params": resolved.to_dict(),
        "seed": resolved.seed,
        "deterministic": resolved.deterministic,
        "dataset_digest": dataset_digest,
    }
    for key, value in (extra or {}).items():
        if key in manifest:
            raise ValueError(f"extra key {key!r} would overwrite a manifest field")
        manifest[key] = value
    return manifest
