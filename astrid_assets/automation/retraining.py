"""The retraining sensor: new validated detections → a dataset version → a model version.

Its cursor is the number of labels recorded so far. When at least ``ASTRID_RETRAIN_MIN_LABELS``
(default 200) new labels have landed since the last training, it adds a version ``r<count>`` to
both dynamic partition sets and requests the dataset build; on a later tick, once that dataset is
materialized, it requests the model training. Run keys are derived from the version, so a tick
that repeats never builds or trains twice.
"""

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterRunStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from astrid_assets import settings
from astrid_assets.jobs import build_training_dataset, train_unet
from astrid_assets.partitions import dataset_versions, model_versions
from astrid_assets.resources import DatabaseResource


def passed_its_gates(instance, version: str) -> bool:
    """Whether the run that last built dataset ``version`` succeeded (its blocking checks passed).

    A dataset whose gates failed is stored for inspection, but its run failed: it is not trained on.
    """
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("training_datasets"), asset_partitions=[version]), limit=1).records
    run = instance.get_run_by_id(records[0].run_id) if records else None
    return run is None or run.status == DagsterRunStatus.SUCCESS


@sensor(name="retrain_on_new_labels", minimum_interval_seconds=settings.sensor_interval_s(),
        jobs=[build_training_dataset, train_unet],
        description="Builds a dataset version and trains a model version once ASTRID_RETRAIN_MIN_LABELS new "
                    "labels have landed.")
def retrain_on_new_labels(context: SensorEvaluationContext, database: DatabaseResource):
    from astrid_assets.labels import count_labels

    labels = count_labels(database.resolved_url())
    last = int(context.cursor or 0)
    requests, partitions = [], []
    trained = context.instance.get_materialized_partitions(AssetKey("unet_models"))
    built = context.instance.get_materialized_partitions(AssetKey("training_datasets"))
    for version in sorted(built - trained):
        if version.startswith("r") and passed_its_gates(context.instance, version):
            requests.append(RunRequest(job_name="train_unet", partition_key=version, run_key=f"model-{version}"))
    needed = settings.retrain_min_labels()
    if labels - last >= needed:
        version = f"r{labels}"
        partitions = [dataset_versions.build_add_request([version]), model_versions.build_add_request([version])]
        requests.append(RunRequest(job_name="build_training_dataset", partition_key=version,
                                   run_key=f"dataset-{version}"))
        last = labels
    if not requests:
        return SkipReason(f"{labels - last} new labels since the last training; "
                          f"retraining needs {needed}")
    return SensorResult(run_requests=requests, dynamic_partitions_requests=partitions, cursor=str(last))
