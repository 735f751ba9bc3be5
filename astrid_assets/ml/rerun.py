"""Rebuilding a recorded model version from its reproducibility manifest (``astrid rerun``)."""

from __future__ import annotations

import json

from astrid_assets.io import schema
from astrid_assets.io.arrays import load_arrays
from astrid_assets.io.object_store import ObjectStore
from astrid_assets.ml.dataset import content_digest, split_sets


def rerun_from_manifest(model_version: str, store: ObjectStore, url: str) -> dict:
    """Rebuild a model version from its reproducibility manifest and compare its test metrics.

    Loads the recorded dataset from the object store ``store`` (checking its content digest), trains
    with the recorded parameters on the CPU in deterministic mode with the recorded thread count (and on the
    recorded number of processes: gloo, :mod:`astrid_assets.ml.distributed`),
    evaluates the test split and returns the recorded and the rebuilt metrics side by side.  ``url``:
    the database holding ``unet_models`` and ``training_datasets``.  Nothing is registered or stored.
    """
    import torch
    from sqlalchemy import select

    from astrid_assets.io.tables import engine_for
    from astrid_assets.ml.config import TrainingConfig
    from astrid_assets.ml.distributed import train_in_processes
    from astrid_assets.ml.evaluation import evaluate

    models, datasets = schema.unet_models, schema.training_datasets
    with engine_for(url).connect() as connection:
        recorded = connection.execute(select(models).where(models.c.model_version == model_version)).mappings().first()
        if recorded is None:
            raise ValueError(f"no model version {model_version!r} in unet_models")
        dataset = connection.execute(select(datasets).where(
            datasets.c.dataset_version == recorded["dataset_version"])).mappings().first()
    manifest = json.loads(recorded["manifest"])
    arrays = load_arrays(store.get(dataset["path"]))
    digest = content_digest(arrays["stamps"], arrays["labels"], arrays["ids"].tolist())
    if digest != recorded["dataset_digest"]:
        raise ValueError(f"dataset {recorded['dataset_version']} changed since model {model_version} was trained "
                         f"(digest {digest[:12]} ≠ {recorded['dataset_digest'][:12]})")
    sets = split_sets(arrays)
    config = TrainingConfig.from_dict({**manifest["params"], "device": "cpu", "deterministic": True})
    threads = torch.get_num_threads()
    torch.set_num_threads(int(manifest.get("torch_threads") or threads))
    try:
        rebuilt = evaluate(train_in_processes(sets["train"], sets["val"], config).model, sets["test"])
    finally:
        torch.set_num_threads(threads)
    return {"recorded": {"test_roc_auc": recorded["test_roc_auc"], "test_f1": recorded["test_f1"]},
            "rebuilt": {"test_roc_auc": float(rebuilt["roc_auc"]), "test_f1": float(rebuilt["f1"])},
            "manifest": manifest}
