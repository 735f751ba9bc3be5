"""The learning loop: training_datasets → unet_models (MLflow) → scored_detections (champion)."""

import io
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    Config,
    IdentityPartitionMapping,
    MetadataValue,
    Output,
    ResourceParam,
    asset,
)

from astrid_assets import settings
from astrid_assets.defs.detection import stamps_from_bytes
from astrid_assets.defs.nightly import nightly_asset
from astrid_assets.defs.quality_checks import SCORED_DETECTIONS_CHECKS, scored_detections_checks
from astrid_assets.io import schema
from astrid_assets.io.object_store import ObjectStore
from astrid_assets.partitions import dataset_versions, model_versions
from astrid_assets.previews import markdown_image
from astrid_assets.resources import DatabaseResource, ModelRegistryResource, ObjectStoreResource
from astrid_assets.validations import labelled_candidates

SPLITS = ("train", "val", "test")
FROZEN_BENCHMARK_KEY = "unet_models/frozen_benchmark.npz"


class DatasetConfig(Config):
    """What a training dataset collects (the seeds' collect request)."""

    name: str = "astrid"
    night_start: str = "0001-01-01"  #: first night of candidates to collect (default: all)
    night_end: str = "9999-12-31"
    sources: list[str] = []  #: raw-frame sources to include (simulated, fits_drop, skyview, mast); empty: all
    confidence_threshold: float = 0.6  #: minimum fraction of a candidate's labels agreeing with its consensus
    max_samples: int = 20000  #: stratified subsample above this
    split_fractions: list[float] = [0.7, 0.15, 0.15]  #: train / val / test, whole nights per split
    seed: int = 0
    min_samples: int = 60  #: gate: fewer samples block training
    min_minority_fraction: float = 0.05  #: gate: rarer class below this fraction blocks training


def save_arrays(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def load_arrays(content: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(content), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def collect_stamps(candidates: pd.DataFrame, store: ObjectStore) -> np.ndarray:
    """The (N, 3, 63, 63) stamps of ``candidates``, in their order."""
    stamps = np.empty((len(candidates), 3, 63, 63), np.float32)
    positions = {cid: i for i, cid in enumerate(candidates.candidate_id)}
    for path, group in candidates.groupby("stamp_path"):
        stack = stamps_from_bytes(store.get(path))
        stamps[[positions[c] for c in group.candidate_id]] = stack[group.stamp_index.to_numpy()]
    return stamps


@asset(
    partitions_def=dataset_versions,
    metadata={"partition_expr": "dataset_version"},
    io_manager_key="table_io_manager",
    kinds={"numpy", "sql"},
    group_name="learning",
    deps=["candidate_detections"],
    check_specs=[AssetCheckSpec(name, asset="training_datasets", blocking=True, description=text) for name, text in [
        ("enough_samples", "at least min_samples labelled candidates"),
        ("both_classes", "real and bogus present in every split"),
        ("class_balance", "the rarer class is at least min_minority_fraction of the samples"),
    ]],
)
def training_datasets(
    context: AssetExecutionContext, config: DatasetConfig, object_store: ObjectStoreResource,
    database: DatabaseResource,
):
    """Validated candidates of a night window with their stamps and per-pixel masks, split by night.

    Consensus labels (unsure ignored) with agreement ≥ ``confidence_threshold``; masks are the
    transient's footprint for real candidates and empty for bogus; train / validation / test
    hold whole nights so that no night leaks across splits. Arrays go to the object store; one
    manifest row per split (counts per class, nights, content hash) to the database.
    """
    from astrid_assets.ml.dataset import StampSet, content_digest, split_by_night

    version = context.partition_key
    store = object_store.open()
    url = database.url or settings.database_url()
    candidates = labelled_candidates(url, config.night_start, config.night_end)
    candidates = candidates[candidates.agreement >= config.confidence_threshold]
    if config.sources and len(candidates):
        raw = database.read_nights("raw_observations", sorted(candidates.night.unique()))
        allowed = set(raw.frame_id[raw.source.isin(config.sources)])
        candidates = candidates[candidates.frame_id.isin(allowed)]
    if len(candidates) > config.max_samples:
        candidates = candidates.groupby("label", group_keys=False).apply(
            lambda group: group.sample(frac=config.max_samples / len(candidates), random_state=config.seed))
    candidates = candidates.sort_values("candidate_id").reset_index(drop=True)
    labels = (candidates.label == "real").to_numpy(np.int64)
    stamps = collect_stamps(candidates, store)
    fwhm = candidates.fwhm.astype(float).fillna(3.0).clip(1.5, 8.0).to_numpy()
    stamp_set = StampSet.from_stamps(stamps, labels, fwhm, ids=candidates.candidate_id.to_numpy())
    split = split_by_night(candidates.night.to_numpy(), tuple(config.split_fractions), config.seed)
    split_of = np.empty(len(candidates), np.int8)
    for code, name in enumerate(SPLITS):
        split_of[getattr(split, name)] = code
    digest = content_digest(stamps, labels, candidates.candidate_id.tolist())
    path = store.put(f"training_datasets/{version}/{digest[:16]}.npz", save_arrays({
        "stamps": stamps, "masks": stamp_set.masks, "labels": labels, "split": split_of, "fwhm": fwhm,
        "ids": candidates.candidate_id.to_numpy().astype(str), "nights": candidates.night.to_numpy().astype(str),
    }))
    rows = []
    for code, name in enumerate(SPLITS):
        chosen = split_of == code
        rows.append({"dataset_version": version, "name": config.name, "night_start": config.night_start,
                     "night_end": config.night_end, "split": name, "n_real": int(labels[chosen].sum()),
                     "n_bogus": int((1 - labels[chosen]).sum()),
                     "nights": ",".join(sorted(set(candidates.night[chosen]))), "digest": digest, "path": path,
                     "config": json.dumps(config.model_dump())})
    table = pd.DataFrame(rows, columns=list(schema.training_datasets.c.keys()))
    yield Output(table, metadata={
        "samples": len(candidates), "real": int(labels.sum()), "bogus": int(len(labels) - labels.sum()),
        "digest": digest, "splits": MetadataValue.md(table[["split", "n_real", "n_bogus", "nights"]]
                                                     .to_markdown(index=False)),
    })
    minority = min(labels.sum(), len(labels) - labels.sum()) / max(len(labels), 1)
    yield AssetCheckResult(check_name="enough_samples", passed=len(labels) >= config.min_samples, metadata={
        "samples": len(labels), "required": config.min_samples})
    yield AssetCheckResult(check_name="both_classes", passed=bool(((table.n_real > 0) & (table.n_bogus > 0)).all()),
                           metadata={"per_split": MetadataValue.json(table[["split", "n_real", "n_bogus"]]
                                                                      .to_dict("records"))})
    yield AssetCheckResult(check_name="class_balance", passed=bool(minority >= config.min_minority_fraction),
                           metadata={"minority_fraction": float(minority), "required": config.min_minority_fraction})


class TrainingRunConfig(Config):
    """Training overrides (defaults: :class:`astrid_assets.ml.training.TrainingConfig`) and guardrails."""

    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    patience: int = 6
    base_channels: int = 16  #: U-Net width at full resolution
    seed: int = 0
    deterministic: bool = True
    device: str = "auto"
    resume: bool = False  #: continue from the version's last checkpoint in the object store
    roc_auc_floor: float = 0.90  #: absolute floor on the frozen benchmark set for promotion
    promotion_margin: float = 0.0  #: ROC AUC by which a challenger must beat the champion


def split_sets(arrays: dict[str, np.ndarray]):
    from astrid_assets.ml.dataset import StampSet

    full = StampSet.from_stamps(arrays["stamps"], arrays["labels"], arrays["fwhm"], ids=arrays["ids"])
    return {name: full.subset(np.flatnonzero(arrays["split"] == code)) for code, name in enumerate(SPLITS)}


def training_curves_png(history: list[dict]) -> bytes:
    import matplotlib.pyplot as plt

    from astrid_assets.previews import _png

    epochs = [h["epoch"] for h in history]
    figure, (losses, scores) = plt.subplots(1, 2, figsize=(8, 3))
    losses.plot(epochs, [h["train_loss"] for h in history], label="train")
    losses.plot(epochs, [h["val_loss"] for h in history], label="validation")
    losses.set_xlabel("epoch")
    losses.set_ylabel("loss")
    losses.legend()
    for key in ("val_roc_auc", "val_f1", "val_dice"):
        scores.plot(epochs, [h[key] for h in history], label=key.removeprefix("val_"))
    scores.set_xlabel("epoch")
    scores.legend()
    return _png(figure)


@asset(
    partitions_def=model_versions,
    ins={"training_datasets": AssetIn(partition_mapping=IdentityPartitionMapping())},
    metadata={"partition_expr": "model_version"},
    io_manager_key="table_io_manager",
    kinds={"pytorch", "mlflow"},
    group_name="learning",
)
def unet_models(
    context: AssetExecutionContext, config: TrainingRunConfig, training_datasets: pd.DataFrame,
    object_store: ObjectStoreResource, model_registry: ModelRegistryResource, mlflow: ResourceParam[Any],
) -> pd.DataFrame:
    """Train the U-Net on a dataset version, log it to MLflow, register it and decide promotion.

    One MLflow run per model version, named ``unet_<version>``: resolved configuration, per-epoch
    metrics, the dataset as an input with its digest, tags (git commit, dataset version, Dagster
    run id), artifacts (config YAML, dataset manifest, reproducibility manifest, training curves)
    and the model registered as ``astrid-unet``. The new version becomes ``challenger``, and
    ``champion`` only past the guardrails (floor and margin on the frozen benchmark set).
    """
    import mlflow as mlflow_api
    import torch
    from mlflow import pytorch as mlflow_pytorch

    from astrid_assets.ml.manifest import reproducibility_manifest
    from astrid_assets.ml.training import TrainingConfig, evaluate, train
    from astrid_assets.ml.unet import save_weights
    from astrid_assets.registry import MODEL_NAME, decide_promotion

    version = context.partition_key
    store = object_store.open()
    if training_datasets.empty:
        raise ValueError(f"model version {version}: no training dataset {version}; "
                         f"materialize training_datasets partition {version} first")
    dataset_version, digest, path = training_datasets.iloc[0][["dataset_version", "digest", "path"]]
    arrays = load_arrays(store.get(path))
    sets = split_sets(arrays)
    if not store.exists(FROZEN_BENCHMARK_KEY):  # the first dataset's test split, frozen for every later version
        test = arrays["split"] == SPLITS.index("test")
        store.put(FROZEN_BENCHMARK_KEY, save_arrays({k: v[test] for k, v in arrays.items() if k != "split"}
                                                    | {"split": np.zeros(int(test.sum()), np.int8)}))
    frozen = split_sets(load_arrays(store.get(FROZEN_BENCHMARK_KEY)))["train"]
    training_config = TrainingConfig.from_dict({k: v for k, v in config.model_dump().items()
                                                if k in TrainingConfig.__dataclass_fields__})
    manifest = reproducibility_manifest(training_config, digest, {"dataset_version": dataset_version,
                                                                  "model_version": version})
    tracking = mlflow  # dagster-mlflow's resource: the MLflow run it started for this Dagster run
    tracking.set_tags({"mlflow.runName": f"unet_{version}", "dataset_version": dataset_version,
                         "model_version": version, "git_commit": manifest.get("git_commit", "unknown")})
    tracking.log_params(training_config.to_dict())
    mlflow_api.log_input(mlflow_api.data.from_numpy(arrays["labels"], source=f"{settings.redact_url(store.url)}/{path}",
                                            name=f"training_datasets:{dataset_version}", digest=digest[:32]),
                     context="training")
    checkpoints = Path(tempfile.mkdtemp(prefix=f"unet-{version}-"))
    if config.resume:
        for name in ("last.pt", "best.pt"):
            key = f"unet_models/{version}/checkpoints/{name}"
            if store.exists(key):
                (checkpoints / name).write_bytes(store.get(key))
    result = train(sets["train"], sets["val"], training_config, checkpoints,
                   on_epoch=lambda epoch, metrics: mlflow_api.log_metrics(metrics, step=epoch), resume=config.resume)
    for checkpoint in checkpoints.glob("*.pt"):
        store.put(f"unet_models/{version}/checkpoints/{checkpoint.name}", checkpoint.read_bytes())
    test_metrics = evaluate(result.model, sets["test"])
    frozen_metrics = evaluate(result.model, frozen)
    mlflow_api.log_metrics({f"test_{k}": float(v) for k, v in test_metrics.items()})
    mlflow_api.log_metrics({f"frozen_{k}": float(v) for k, v in frozen_metrics.items()})
    mlflow_api.log_text(training_config.to_yaml(), "config/resolved.yaml")
    mlflow_api.log_dict(training_datasets.to_dict("records"), "dataset/manifest.json")
    mlflow_api.log_dict(manifest, "reproducibility/manifest.json")
    curves = training_curves_png(result.history)
    (checkpoints / "training_curves.png").write_bytes(curves)
    mlflow_api.log_artifact(str(checkpoints / "training_curves.png"), "plots")
    info = mlflow_pytorch.log_model(result.model.cpu(), name="model", registered_model_name=MODEL_NAME,
                                    serialization_format="pickle",
                                    pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])
    registry_version = str(info.registered_model_version)
    client = model_registry.client()
    champion, champion_version = model_registry.load_champion()
    champion_metric = float(evaluate(champion, frozen)["roc_auc"]) if champion is not None else None
    decision = decide_promotion(client, registry_version, float(frozen_metrics["roc_auc"]), champion_metric,
                                config.roc_auc_floor, config.promotion_margin)
    client.set_model_version_tag(MODEL_NAME, registry_version, "frozen_roc_auc", str(frozen_metrics["roc_auc"]))
    client.set_model_version_tag(MODEL_NAME, registry_version, "model_version", version)
    buffer = checkpoints / "weights.pt"
    save_weights(result.model, buffer, {"model_version": version, "dataset_digest": digest})
    weights_path = store.put(f"unet_models/{version}/weights.pt", buffer.read_bytes())
    run_id = mlflow_api.active_run().info.run_id
    mlflow_api.end_run()
    context.add_output_metadata({
        "mlflow_run_id": run_id, "registry_version": registry_version, "promoted": decision.promoted,
        "decision": decision.reason, "test_roc_auc": float(test_metrics["roc_auc"]),
        "frozen_roc_auc": float(frozen_metrics["roc_auc"]), "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "training_curves": MetadataValue.md(markdown_image(curves, "training curves")),
    })
    return pd.DataFrame([{
        "model_version": version, "dataset_version": dataset_version, "dataset_digest": digest,
        "mlflow_run_id": run_id, "registry_version": registry_version, "weights_path": weights_path,
        "best_epoch": result.best_epoch, "epochs_completed": result.epochs_completed,
        "stopped_early": result.stopped_early, "test_roc_auc": float(test_metrics["roc_auc"]),
        "test_f1": float(test_metrics["f1"]), "frozen_roc_auc": float(frozen_metrics["roc_auc"]),
        "promoted": decision.promoted, "decision": decision.reason, "manifest": json.dumps(manifest, default=str),
    }])


@nightly_asset(
    kinds={"pytorch", "sql"},
    check_specs=SCORED_DETECTIONS_CHECKS,
)
def scored_detections(
    context: AssetExecutionContext, candidate_detections: pd.DataFrame, object_store: ObjectStoreResource,
    model_registry: ModelRegistryResource,
):
    """Each candidate's real/bogus probability from the champion U-Net (loaded by MLflow alias).

    With no champion yet, candidates pass through unscored (probability null) and the metadata
    says so. Every row records the registry version of the model that scored it.
    """
    from astrid_assets.ml.training import predict

    model, version = model_registry.load_champion()
    table = candidate_detections[["night", "candidate_id", "frame_id"]].copy()
    if model is None or table.empty:
        table["real_probability"], table["model_version"] = None, None
        yield Output(table, metadata={"scored": 0, "candidates": len(table), "note": (
            "no champion model yet: candidates passed through unscored" if model is None else "no candidates")})
        yield from scored_detections_checks(list(context.partition_keys), table)
        return
    stamps = collect_stamps(candidate_detections, object_store.open())
    table["real_probability"] = predict(model, stamps, device="auto").astype(float)
    table["model_version"] = version
    yield Output(table, metadata={
        "scored": len(table), "model_version": version,
        "likely_real": int((table.real_probability >= 0.5).sum()),
        "median_probability": float(table.real_probability.median()),
    })
    yield from scored_detections_checks(list(context.partition_keys), table)


def rerun_from_manifest(model_version: str, store: ObjectStore, url: str) -> dict:
    """Rebuild a model version from its reproducibility manifest and compare its test metrics.

    Loads the recorded dataset (checking its content digest), trains with the recorded parameters
    on the CPU in deterministic mode with the recorded thread count, evaluates the test split and
    returns the recorded and the rebuilt metrics side by side. Nothing is registered or stored.
    """
    import torch
    from sqlalchemy import select

    from astrid_assets.io.tables import engine_for
    from astrid_assets.ml.dataset import content_digest
    from astrid_assets.ml.training import TrainingConfig, evaluate, train

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
        rebuilt = evaluate(train(sets["train"], sets["val"], config).model, sets["test"])
    finally:
        torch.set_num_threads(threads)
    return {"recorded": {"test_roc_auc": recorded["test_roc_auc"], "test_f1": recorded["test_f1"]},
            "rebuilt": {"test_roc_auc": float(rebuilt["roc_auc"]), "test_f1": float(rebuilt["f1"])},
            "manifest": manifest}
