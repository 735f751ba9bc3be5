"""AstrID's Dagster definitions: the one place that wires assets, resources and automation.

Load with ``dagster dev -m astrid_assets.definitions``. Which deployment this is (embedded
default or production) is decided by environment variables alone; see :mod:`astrid_assets.settings`.
"""

from dagster import Definitions, define_asset_job

from astrid_assets.defs.calibration import calibrated_frames
from astrid_assets.defs.detection import candidate_detections
from astrid_assets.defs.differencing import difference_images, reference_images
from astrid_assets.defs.ingest import raw_observations
from astrid_assets.io.tables import TableIOManager
from astrid_assets.partitions import nightly_partitions
from astrid_assets.resources import DatabaseResource, ObjectStoreResource, SimulatedSurveyResource

nightly_assets = [raw_observations, calibrated_frames, reference_images, difference_images, candidate_detections]

nightly_pipeline = define_asset_job(
    "nightly_pipeline",
    selection=nightly_assets,
    partitions_def=nightly_partitions,
    description="One observing night from raw frames to candidate detections.",
)



def default_resources() -> dict:
    """Resources of every deployment; what they connect to comes from the environment."""
    return {
        "table_io_manager": TableIOManager(),
        "object_store": ObjectStoreResource(),
        "simulated_survey": SimulatedSurveyResource(),
        "database": DatabaseResource(),
    }


defs = Definitions(assets=nightly_assets, jobs=[nightly_pipeline], resources=default_resources())
