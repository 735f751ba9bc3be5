"""Partitions of AstrID's assets.

* ``nightly_partitions`` — one partition per observing night, keyed by the UTC date on which
  the night *starts* (``YYYY-MM-DD``), from ``ASTRID_FIRST_NIGHT`` (default 2000-01-01, so
  archival data can be processed; set it earlier for older plates or CCD frames).
* ``dataset_versions`` / ``model_versions`` — dynamic partitions, one per training-dataset
  version and per trained model version; added by the retraining sensor or by a person.
"""

from dagster import DailyPartitionsDefinition, DynamicPartitionsDefinition
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from astrid_assets import settings

nightly_partitions = DailyPartitionsDefinition(start_date=settings.first_night(), timezone="UTC")
dataset_versions = DynamicPartitionsDefinition(name="dataset_versions")
model_versions = DynamicPartitionsDefinition(name="model_versions")


def night_range_tags(first: str, last: str) -> dict[str, str]:
    """Run tags that make one run cover the nights ``first`` … ``last`` (as a single-run backfill does)."""
    return {ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last}
