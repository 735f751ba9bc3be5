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
from astrid_assets.defs.datasets import collect_stamps
from astrid_assets.defs.nightly import nightly_asset, report_nights, upstream_failures
from astrid_assets.defs.quality_checks import (
    SCORED_DETECTIONS_CHECKS,
    scored_detections_checks,
)
from astrid_assets.io.arrays import load_arrays, save_arrays
from astrid_assets.io.object_store import ObjectStore
from astrid_assets.ml.config import TrainingConfig
from astrid_assets.ml.dataset import (
    SPLITS,
    StampSet,
    split_sets,
)
from astrid_assets.ml.metrics import OPERATING_COMPLETENESS, OPERATING_MIN_SNR
from astrid_assets.partitions import model_versions
from astrid_assets.previews import markdown_image, training_curves
from astrid_assets.resources import DatabaseResource, ModelRegistryResource, ObjectStoreResource

FROZEN_BENCHMARK_KEY = "unet_models/frozen_benchmark.npz"


#: the parameters of :class:`~astrid_assets.ml.config.TrainingConfig` that a training run may override
RUN_PARAMETERS = ("epochs", "batch_size", "learning_rate", "weight_decay", "patience", "base_channels", "seed",
                  "deterministic", "device")


class _TrainingRun(Config):
    def training_config(self) -> TrainingConfig:
        """The :class:`TrainingConfig` this run trains with: defaults with this run's parameters, on
        ``processes`` processes (unset: ``ASTRID_TRAIN_PROCESSES``)."""
        overrides = {name: getattr(self, name) for name in RUN_PARAMETERS}
        return TrainingConfig.from_dict(overrides | {"processes": self.processes or settings.train_processes()})

TrainingRunConfig = create_model(
    "TrainingRunConfig", __base__=_TrainingRun, __module__=__name__,
    __doc__="Training overrides (types and defaults: :class:`astrid_assets.ml.config.TrainingConfig`) and guardrails.",
    **{name: (TrainingConfig.field_types()[name], TrainingConfig.defaults()[name]) for name in RUN_PARAMETERS},
    resume=(bool, False),  # continue from the version's last checkpoint in the object store
    processes=(int | None, None),  # training processes (DDP via torchrun); None: ASTRID_TRAIN_PROCESSES (1)
    roc_auc_floor=(float, 0.90),  # absolute floor on the frozen benchmark set for promotion
    promotion_margin=(float, 0.0),  # ROC AUC by which a challenger must beat the champion
    operating_completeness=(float, OPERATING_COMPLETENESS),  # fraction of validation reals (S/N >= min S/N) kept
    operating_min_snr=(float, OPERATING_MIN_SNR),  # reals from this expected S/N count for completeness
)


def frozen_benchmark_key(instrument: str | None = None) -> str:
    """Where the frozen benchmark set is kept: :data:`FROZEN_BENCHMARK_KEY` for the plain ``champion``,
    ``unet_models/frozen_benchmark/<slug>.npz`` for one instrument's ``champion-<slug>``."""
    from astrid_assets.science.frames.headers import instrument_slug

    return f"unet_models/frozen_benchmark/{instrument_slug(instrument)}.npz" if instrument else FROZEN_BENCHMARK_KEY


def frozen_benchmark(store: ObjectStore, arrays: dict[str, np.ndarray], instrument: str | None = None) -> StampSet:
    """The frozen benchmark set of the plain ``champion`` (``instrument`` None) or of one instrument's.

    The first dataset's test split (``arrays``' when none is stored yet), kept under
    :func:`frozen_benchmark_key` for every later version. People's labels come first, because promotion
    must measure what people see: once a dataset mixes human labels with injections and its test split
    holds human-labelled examples (``origin`` ``human``) of both classes, those alone are frozen under
    ``<key>-human`` and every later promotion is judged on them. Only the examples of ``instrument``
    count when the arrays record instruments. A set without both classes is used but not frozen (its
    ROC AUC is undefined).
    """
    key = frozen_benchmark_key(instrument)
    human_key = key.replace(".npz", "-human.npz")
    if store.exists(human_key):
        return split_sets(load_arrays(store.get(human_key)))["train"]
    test = arrays["split"] == SPLITS.index("test")
    if instrument and "instruments" in arrays:
        test &= np.asarray(arrays["instruments"]).astype(str) == instrument
    origin = np.asarray(arrays.get("origin", np.full(len(test), "human"))).astype(str)
    human = test & (origin == "human")
    if (origin != "human").any() and len(set(np.asarray(arrays["labels"])[human].tolist())) == 2:
        test, key = human, human_key
    elif store.exists(key):
        return split_sets(load_arrays(store.get(key)))["train"]
    benchmark = {k: v[test] for k, v in arrays.items() if k != "split"} | {"split": np.zeros(int(test.sum()), np.int8)}
    if len(set(np.asarray(benchmark["labels"]).tolist())) == 2:
        store.put(key, save_arrays(benchmark))
    return split_sets(benchmark)["train"]


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
    """Train the U-Net on a dataset version, log it to MLflow, register it, choose its operating point
    and decide promotion.

    Trains in this process, or on ``processes`` (``ASTRID_TRAIN_PROCESSES``) DistributedDataParallel
    processes launched with ``torchrun`` (:mod:`astrid_assets.ml.distributed`), whose rank 0 reports each
    epoch back here: only this process writes to MLflow.
    One MLflow run per model version, named ``unet_<version>``: resolved configuration, per-epoch
    metrics, the dataset as an input with its digest, tags (git commit, dataset version, Dagster
    run id), artifacts (config YAML, dataset manifest, reproducibility manifest, training curves)
    and the model registered as ``astrid-unet``. A version trained on one instrument's frames competes
    for ``champion-<slug>`` on that instrument's frozen benchmark; one trained across instruments (or on
    a dataset that does not record them) for ``champion`` on the shared one (:mod:`astrid_assets.ml.champions`).
    It becomes the alias's challenger, and champion only past the guardrails (floor and margin).
    The operating threshold is chosen on the validation split (:func:`astrid_assets.ml.metrics.operating_threshold`);
    it is recorded with the version (tags ``operating_threshold``, ``instruments``) with its completeness and bogus
    rejection on the test split, and scoring uses it.
    """
    from astrid_assets.ml.champions import (
        alias_for_instruments,
        choose_operating_point,
        dataset_instruments,
        split_values,
    )
    from astrid_assets.ml.checkpoints import download_checkpoints, upload_checkpoints
    from astrid_assets.ml.distributed import train_in_processes
    from astrid_assets.ml.evaluation import evaluate, predict
    from astrid_assets.ml.manifest import reproducibility_manifest
    from astrid_assets.ml.tracking import epoch_logger, finish_run, log_training_outcome, start_training_run
    from astrid_assets.ml.unet import save_weights
    from astrid_assets.resources.mlflow_registry import promote, record_operating_point, register_model

    version = context.partition_key
    store = object_store.open()
    if training_datasets.empty:
        raise ValueError(f"model version {version}: no training dataset {version}; "
                         f"materialize training_datasets partition {version} first")
    dataset_version, digest, path = training_datasets.iloc[0][["dataset_version", "digest", "path"]]
    arrays = load_arrays(store.get(path))
    sets = split_sets(arrays)
    instruments = dataset_instruments(arrays, training_datasets)
    alias = alias_for_instruments(instruments)
    frozen = frozen_benchmark(store, arrays, instruments[0] if len(instruments) == 1 else None)
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
    # in this process, or on training_config.processes DDP processes whose rank 0 reports each epoch here
    result = train_in_processes(sets["train"], sets["val"], training_config, checkpoints,
                                on_epoch=epoch_logger(mlflow), resume=config.resume)
    upload_checkpoints(store, stored_checkpoints, checkpoints)
    test_metrics = evaluate(result.model, sets["test"])
    frozen_metrics = evaluate(result.model, frozen)
    operating = choose_operating_point(
        sets["val"].labels, predict(result.model, sets["val"]), split_values(arrays, "snr", "val"),
        sets["test"].labels, predict(result.model, sets["test"]), split_values(arrays, "snr", "test"),
        config.operating_completeness, config.operating_min_snr)
    curves = training_curves(result.history)
    log_training_outcome(mlflow, training_config, test_metrics, frozen_metrics, training_datasets.to_dict("records"),
                         manifest, curves, checkpoints)
    mlflow.log_params({"operating_completeness": operating.completeness, "operating_min_snr": operating.min_snr,
                       "operating_threshold": operating.threshold, "champion_alias": alias,
                       "instruments": ",".join(instruments)[:6000]})
    mlflow.log_metrics({"test_operating_completeness": operating.test_completeness,
                        "test_bogus_rejection": operating.test_bogus_rejection})
    registry_version = register_model(mlflow, result.model)
    client = model_registry.client()
    record_operating_point(client, registry_version, instruments, operating.threshold, operating.completeness)
    champion, _ = model_registry.load_alias(alias)
    champion_metric = float(evaluate(champion, frozen)["roc_auc"]) if champion is not None else None
    decision = promote(client, registry_version, version, float(frozen_metrics["roc_auc"]),
                       champion_metric, config.roc_auc_floor, config.promotion_margin, alias)
    save_weights(result.model, checkpoints / "weights.pt", {"model_version": version, "dataset_digest": digest})
    weights_path = store.put(f"unet_models/{version}/weights.pt", (checkpoints / "weights.pt").read_bytes())
    run_id = finish_run(mlflow)
    context.add_output_metadata({
        "mlflow_run_id": run_id, "registry_version": registry_version, "promoted": decision.promoted,
        "decision": decision.reason, "champion_alias": alias, "instruments": MetadataValue.json(instruments),
        "test_roc_auc": float(test_metrics["roc_auc"]),
        "frozen_roc_auc": float(frozen_metrics["roc_auc"]), "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early, **operating.as_dict(),
        "training_curves": MetadataValue.md(markdown_image(curves, "training curves")),
    })
    return pd.DataFrame([{
        "model_version": version, "dataset_version": dataset_version, "dataset_digest": digest,
        "mlflow_run_id": run_id, "registry_version": registry_version, "weights_path": weights_path,
        "best_epoch": result.best_epoch, "epochs_completed": result.epochs_completed,
        "stopped_early": result.stopped_early, "test_roc_auc": float(test_metrics["roc_auc"]),
        "test_f1": float(test_metrics["f1"]), "frozen_roc_auc": float(frozen_metrics["roc_auc"]),
        "promoted": decision.promoted, "decision": decision.reason, "manifest": json.dumps(manifest, default=str),
        "instruments": ",".join(instruments), "champion_alias": alias, "operating_threshold": operating.threshold,
        "test_completeness": operating.test_completeness, "test_bogus_rejection": operating.test_bogus_rejection,
    }])


def operating_report(
    table: pd.DataFrame, store: ObjectStore, instrument_of: dict, aliases: dict, model_registry: ModelRegistryResource,
) -> dict[str, dict]:
    """Per night: completeness and purity at each model's operating point from the night's injection test
    (the recovered fakes' stamps stored by ``candidate_detections``, scored by their frame's champion;
    :func:`~astrid_assets.ml.champions.injection_report`). Nights without a test or a champion are left out."""
    from astrid_assets.defs.detection import injection_key
    from astrid_assets.ml.champions import assign_champions, injection_report, score_with_champions
    from astrid_assets.ml.evaluation import predict

    models: dict[str, Any] = {}

    def model_of(version: str):
        if version not in models:
            models[version] = model_registry.load_version(version)
        return models[version]

    report = {}
    for night in sorted(table.night.unique()):
        if not aliases or not store.exists(injection_key(night)):
            continue
        fakes = load_arrays(store.get(injection_key(night)))
        found = pd.DataFrame({"frame_id": fakes["frames"][fakes["recovered"].astype(bool)]})
        versions = assign_champions(found, instrument_of, aliases).version
        if versions.isna().all():
            continue
        found, _ = score_with_champions(
            found, versions.tolist(), lambda rows, stamps=fakes["stamps"]: stamps[rows], model_of,
            model_registry.operating_threshold, lambda model, stamps: predict(model, stamps, device="auto"))
        own = table[(table.night == night) & table.frame_id.isin(set(fakes["frames"]))]
        report[night] = injection_report(fakes["snr"], fakes["recovered"], found.real.tolist(), own.real.tolist())
    return report


@nightly_asset(
    kinds={"pytorch", "sql"},
    check_specs=SCORED_DETECTIONS_CHECKS,
)
def scored_detections(
    context: AssetExecutionContext, candidate_detections: pd.DataFrame, object_store: ObjectStoreResource,
    model_registry: ModelRegistryResource, database: DatabaseResource,
):
    """Each candidate's real/bogus probability from the champion U-Net of its frame's instrument.

    The instrument comes from the frame's ``raw_observations`` row; the champion is the registry's
    ``champion-<slug>`` of that instrument when there is one, else ``champion`` (models loaded by MLflow
    alias). ``real`` says whether the probability reaches the operating threshold recorded with that
    version (:func:`astrid_assets.ml.metrics.recorded_threshold`). Candidates with no champion to score them pass
    through unscored (probability, version and ``real`` null) and the metadata says so. Every row records the
    registry version of the model that scored it. A night whose candidates failed a gate (or that an asset
    upstream skipped) is not scored: its stored rows are kept and the metadata says why.
    """
    from astrid_assets.ml.champions import assign_champions, score_with_champions
    from astrid_assets.ml.evaluation import predict

    nights = list(context.partition_keys)
    skipped = upstream_failures(context.instance, nights, {"candidate_detections": candidate_detections})
    candidate_detections = candidate_detections[~candidate_detections.night.isin(skipped)].reset_index(drop=True)
    table = candidate_detections[["night", "candidate_id", "frame_id"]].copy()
    aliases = model_registry.aliases() if len(table) else {}
    frames = database.read_nights("raw_observations", sorted(table.night.unique())) if len(table) else None
    instrument_of = {} if frames is None else dict(zip(frames.frame_id, frames.instrument, strict=True))
    chosen = assign_champions(table, instrument_of, aliases)
    store = object_store.open()
    table, thresholds = score_with_champions(
        table, chosen.version.tolist(), lambda rows: collect_stamps(candidate_detections.iloc[rows], store),
        model_registry.load_version, model_registry.operating_threshold,
        lambda model, stamps: predict(model, stamps, device="auto"))
    scored = table[table.model_version.notna()]
    metadata: dict[str, Any] = {"scored": len(scored), "candidates": len(table)}
    report = operating_report(table, store, instrument_of, aliases, model_registry)
    if report:
        metadata["at_operating_point"] = MetadataValue.md(pd.DataFrame(report).T.rename_axis("night").to_markdown())
        metadata["completeness_at_operating_point"] = MetadataValue.json(
            {night: r["completeness"] for night, r in report.items()})
    if scored.empty:
        metadata["note"] = ("no candidates" if table.empty
                            else "no champion model yet: candidates passed through unscored")
    else:
        by_version = (chosen.assign(real=table.real, probability=table.real_probability)
                      .dropna(subset=["version"]).groupby(["alias", "version"])
                      .agg(candidates=("real", "size"), real=("real", "sum")).reset_index())
        by_version["threshold"] = by_version.version.map(thresholds)
        metadata |= {
            "model_version": ",".join(sorted(thresholds, key=int)), "likely_real": int(scored.real.sum()),
            "unscored": len(table) - len(scored), "median_probability": float(scored.real_probability.median()),
            "thresholds": MetadataValue.json(thresholds),
            "champions": MetadataValue.md(by_version.to_markdown(index=False)),
        }
    results = list(scored_detections_checks([night for night in nights if night not in skipped], table))
    if skipped:
        kept = database.read_nights("scored_detections", sorted(skipped))
        table = pd.concat([t for t in (table, kept) if len(t)], ignore_index=True) if len(kept) else table
    metadata |= report_nights(context, "scored_detections", nights, skipped, {})
    yield Output(table, metadata=metadata)
    yield from results
