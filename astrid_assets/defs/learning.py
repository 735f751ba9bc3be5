"""The learning loop: training_datasets → unet_models (MLflow) → scored_detections (champion)."""

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetIn,
    Config,
    IdentityPartitionMapping,
    MetadataValue,
    Output,
    ResourceParam,
    asset,
)
from pydantic import create_model

from astrid_assets import settings
from astrid_assets.defs.detection import stamps_from_bytes
from astrid_assets.defs.nightly import nightly_asset
from astrid_assets.defs.quality_checks import (
    SCORED_DETECTIONS_CHECKS,
    TRAINING_DATASETS_CHECKS,
    scored_detections_checks,
    training_datasets_checks,
)
from astrid_assets.io import schema
from astrid_assets.io.arrays import load_arrays, save_arrays
from astrid_assets.io.object_store import ObjectStore
from astrid_assets.ml.config import TrainingConfig
from astrid_assets.ml.dataset import (
    CHANNELS,
    SPLITS,
    STAMP_SIZE,
    StampSet,
    content_digest,
    split_by_night,
    split_codes,
    split_sets,
)
from astrid_assets.partitions import dataset_versions, model_versions
from astrid_assets.previews import markdown_image, training_curves
from astrid_assets.resources import DatabaseResource, ModelRegistryResource, ObjectStoreResource
from astrid_assets.validations import labelled_candidates

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


def collect_stamps(candidates: pd.DataFrame, store: ObjectStore) -> np.ndarray:
    """The (N, 3, 63, 63) stamps of ``candidates``, in their order."""
    stamps = np.empty((len(candidates), len(CHANNELS), STAMP_SIZE, STAMP_SIZE), np.float32)
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
    check_specs=TRAINING_DATASETS_CHECKS,
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
    split_of = split_codes(split, len(candidates))
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
    yield from training_datasets_checks(table, labels, config.min_samples, config.min_minority_fraction)


#: the parameters of :class:`~astrid_assets.ml.config.TrainingConfig` that a training run may override
RUN_PARAMETERS = ("epochs", "batch_size", "learning_rate", "weight_decay", "patience", "base_channels", "seed",
                  "deterministic", "device")


class _TrainingRun(Config):
    def training_config(self) -> TrainingConfig:
        """The :class:`TrainingConfig` this run trains with: defaults with this run's parameters."""
        return TrainingConfig.from_dict({name: getattr(self, name) for name in RUN_PARAMETERS})

TrainingRunConfig = create_model(
    "TrainingRunConfig", __base__=_TrainingRun, __module__=__name__,
    __doc__="Training overrides (types and defaults: :class:`astrid_assets.ml.config.TrainingConfig`) and guardrails.",
    **{name: (TrainingConfig.field_types()[name], TrainingConfig.defaults()[name]) for name in RUN_PARAMETERS},
    resume=(bool, False),  # continue from the version's last checkpoint in the object store
    roc_auc_floor=(float, 0.90),  # absolute floor on the frozen benchmark set for promotion
    promotion_margin=(float, 0.0),  # ROC AUC by which a challenger must beat the champion
)


def frozen_benchmark(store: ObjectStore, arrays: dict[str, np.ndarray]) -> StampSet:
    """The frozen benchmark set: the first dataset's test split (``arrays``' when none is stored yet),
    kept under :data:`FROZEN_BENCHMARK_KEY` for every later version."""
    if not store.exists(FROZEN_BENCHMARK_KEY):
        test = arrays["split"] == SPLITS.index("test")
        store.put(FROZEN_BENCHMARK_KEY, save_arrays({k: v[test] for k, v in arrays.items() if k != "split"}
                                                    | {"split": np.zeros(int(test.sum()), np.int8)}))
    return split_sets(load_arrays(store.get(FROZEN_BENCHMARK_KEY)))["train"]


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
    from astrid_assets.ml.checkpoints import download_checkpoints, upload_checkpoints
    from astrid_assets.ml.manifest import reproducibility_manifest
    from astrid_assets.ml.tracking import epoch_logger, finish_run, log_training_outcome, start_training_run
    from astrid_assets.ml.training import evaluate, train
    from astrid_assets.ml.unet import save_weights
    from astrid_assets.registry import promote, register_model

    version = context.partition_key
    store = object_store.open()
    if training_datasets.empty:
        raise ValueError(f"model version {version}: no training dataset {version}; "
                         f"materialize training_datasets partition {version} first")
    dataset_version, digest, path = training_datasets.iloc[0][["dataset_version", "digest", "path"]]
    arrays = load_arrays(store.get(path))
    sets = split_sets(arrays)
    frozen = frozen_benchmark(store, arrays)
    training_config = config.training_config()
    manifest = reproducibility_manifest(training_config, digest, {"dataset_version": dataset_version,
                                                                  "model_version": version})
    # mlflow: dagster-mlflow's resource, MLflow's fluent API on the run it started for this Dagster run
    start_training_run(mlflow, version, dataset_version, training_config, manifest, arrays["labels"],
                       f"{settings.redact_url(store.url)}/{path}", digest)
    checkpoints = Path(tempfile.mkdtemp(prefix=f"unet-{version}-"))
    stored_checkpoints = f"unet_models/{version}/checkpoints"
    if config.resume:
        download_checkpoints(store, stored_checkpoints, checkpoints)
    result = train(sets["train"], sets["val"], training_config, checkpoints, on_epoch=epoch_logger(mlflow),
                   resume=config.resume)
    upload_checkpoints(store, stored_checkpoints, checkpoints)
    test_metrics = evaluate(result.model, sets["test"])
    frozen_metrics = evaluate(result.model, frozen)
    curves = training_curves(result.history)
    log_training_outcome(mlflow, training_config, test_metrics, frozen_metrics, training_datasets.to_dict("records"),
                         manifest, curves, checkpoints)
    registry_version = register_model(mlflow, result.model)
    champion, _ = model_registry.load_champion()
    champion_metric = float(evaluate(champion, frozen)["roc_auc"]) if champion is not None else None
    decision = promote(model_registry.client(), registry_version, version, float(frozen_metrics["roc_auc"]),
                       champion_metric, config.roc_auc_floor, config.promotion_margin)
    save_weights(result.model, checkpoints / "weights.pt", {"model_version": version, "dataset_digest": digest})
    weights_path = store.put(f"unet_models/{version}/weights.pt", (checkpoints / "weights.pt").read_bytes())
    run_id = finish_run(mlflow)
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
