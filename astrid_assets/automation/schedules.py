"""The nightly schedule: once the night is over, process it through the whole chain."""

from dagster import build_schedule_from_partitioned_job

from astrid_assets import settings
from astrid_assets.jobs import nightly_pipeline

nightly_schedule = build_schedule_from_partitioned_job(
    nightly_pipeline, name="nightly_schedule", hour_of_day=settings.nightly_hour_utc(), minute_of_hour=0,
    description="Runs nightly_pipeline for the night that just ended (its UTC start date).",
)
