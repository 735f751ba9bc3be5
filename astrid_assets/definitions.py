"""AstrID's Dagster definitions: the one place that wires assets, resources and automation.

Load with ``dagster dev -m astrid_assets.definitions``. Which deployment this is (embedded
default or production) is decided by environment variables alone; see :mod:`astrid_assets.settings`.
"""

from dagster import Definitions, in_process_executor

from astrid_assets import settings
from astrid_assets.automation.alerts import alert_on_failed_nights, alert_on_run_failure
from astrid_assets.automation.rescoring import rescore_after_new_champion
from astrid_assets.automation.retraining import retrain_on_new_labels
from astrid_assets.automation.schedules import nightly_schedule
from astrid_assets.defs.calibration import calibrated_frames
from astrid_assets.defs.context import object_context
from astrid_assets.defs.datasets import training_datasets
from astrid_assets.defs.detection import candidate_detections
from astrid_assets.defs.differencing import difference_images, reference_images
from astrid_assets.defs.forced_photometry import forced_photometry
from astrid_assets.defs.ingest import raw_observations
from astrid_assets.defs.learning import scored_detections, unet_models
from astrid_assets.defs.objects import object_detections, transient_objects
from astrid_assets.defs.packets import alert_packets, notifications
from astrid_assets.io.tables import TableIOManager
from astrid_assets.jobs import build_training_dataset, nightly_pipeline, train_unet
from astrid_assets.resources import (
    DatabaseResource,
    ModelRegistryResource,
    ObjectStoreResource,
    SimulatedSurveyResource,
    mlflow_run,
)
from astrid_assets.resources.pool import FramePoolResource

nightly_assets = [
    raw_observations, calibrated_frames, reference_images, difference_images, candidate_detections, scored_detections,
    object_detections, transient_objects, forced_photometry, object_context,
    alert_packets, notifications,
]
learning_assets = [training_datasets, unet_models]
MLFLOW_EXPERIMENT = "astrid-unet"

def default_resources() -> dict:
    """Resources of every deployment; what they connect to comes from the environment."""
    return {
        "table_io_manager": TableIOManager(),
        "object_store": ObjectStoreResource(),
        "simulated_survey": SimulatedSurveyResource(),
        "database": DatabaseResource(),
        "frame_pool": FramePoolResource(),  # ASTRID_POOL: where a step's frames run (astrid_assets.pool)
        "model_registry": ModelRegistryResource(),
        "mlflow": mlflow_run.configured(
            {"experiment_name": MLFLOW_EXPERIMENT, "mlflow_tracking_uri": settings.mlflow_tracking_uri()}
        ),
    }


defs = Definitions(
    assets=nightly_assets + learning_assets,
    # Every AstrID job is a chain of steps that depend on each other (raw → … → scored; dataset →
    # model): the multiprocess executor would start a fresh interpreter (torch, astropy, MLflow) for
    # each step and gain no parallelism, so steps run one after another in the run's own process.
    executor=in_process_executor,
    jobs=[nightly_pipeline, build_training_dataset, train_unet],
    schedules=[nightly_schedule],
    sensors=[retrain_on_new_labels, rescore_after_new_champion, alert_on_run_failure, alert_on_failed_nights],
    resources=default_resources(),
)
