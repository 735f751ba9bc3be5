"""AstrID's jobs (asset selections by name, so schedules and sensors can target them)."""

from dagster import AssetSelection, define_asset_job

from astrid_assets.partitions import dataset_versions, model_versions, nightly_partitions

nightly_pipeline = define_asset_job(
    "nightly_pipeline",
    selection=AssetSelection.groups("nightly"),
    partitions_def=nightly_partitions,
    description="One observing night from raw frames to scored candidate detections.",
)
build_training_dataset = define_asset_job(
    "build_training_dataset", selection="training_datasets", partitions_def=dataset_versions,
    description="Collect validated candidates into a new training dataset version.",
)
train_unet = define_asset_job(
    "train_unet", selection="unet_models", partitions_def=model_versions,
    description="Train, evaluate, register and (past the guardrails) promote a U-Net version.",
)
