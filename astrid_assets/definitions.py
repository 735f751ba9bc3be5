"""AstrID's Dagster definitions: the one place that wires assets, resources and automation.

Load with ``dagster dev -m astrid_assets.definitions``. Which deployment this is (embedded
default or production) is decided by environment variables alone; see :mod:`astrid_assets.settings`.
"""

from dagster import Definitions, define_asset_job

from astrid_assets import settings
from astrid_assets.defs.calibration import calibrated_frames
from astrid_assets.defs.detection import candidate_detections
from astrid_assets.defs.differencing import difference_images, reference_images
from astrid_assets.defs.ingest import raw_observations
from astrid_assets.defs.learning import scored_detections, training_datasets, unet_models
from astrid_assets.io.tables import TableIOManager
from astrid_assets.partitions import dataset_versions, model_versions, nightly_partitions
from astrid_assets.resources import (
    DatabaseResource,
    ModelRegistryResource,
    ObjectStoreResource,
    SimulatedSurveyResource,
    mlflow_run,
)

nightly_assets = [
    raw_observations, calibrated_frames, reference_images, difference_images, candidate_detections, scored_detections,
]
learning_assets = [training_datasets, unet_models]
MLFLOW_EXPERIMENT = "astrid-unet"

nightly_pipeline = define_asset_job(
    "nightly_pipeline",
    selection=nightly_assets,
    partitions_def=nightly_partitions,
    description="One observing night from raw frames to scored candidate detections.",
)
build_training_dataset = define_asset_job(
    "build_training_dataset", selection=[training_datasets], partitions_def=dataset_versions,
    description="Collect validated candidates into a new training dataset version.",
)
train_unet = define_asset_job(
    "train_unet", selection=[unet_models], partitions_def=model_versions,
    description="Train, evaluate, register and (past the guardrails) promote a U-Net version.",
)



def default_resources() -> dict:
    """Resources of every deployment; what they connect to comes from the environment."""
    return {
        "table_io_manager": TableIOManager(),
        "object_store": ObjectStoreResource(),
        "simulated_survey": SimulatedSurveyResource(),
        "database": DatabaseResource(),
        "model_registry": ModelRegistryResource(),
        "mlflow": mlflow_run.configured(
            {"experiment_name": MLFLOW_EXPERIMENT, "mlflow_tracking_uri": settings.mlflow_tracking_uri()}
        ),
    }


defs = Definitions(
    assets=nightly_assets + learning_assets,
    jobs=[nightly_pipeline, build_training_dataset, train_unet],
    resources=default_resources(),
)
