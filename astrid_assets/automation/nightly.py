"""The nightly schedule: once the night is over, process it through the whole chain."""

import os

from dagster import build_schedule_from_partitioned_job

from astrid_assets.jobs import nightly_pipeline


def nightly_hour_utc() -> int:
    """UTC hour after which the night that just ended is processed (``ASTRID_NIGHTLY_HOUR_UTC``, default 12)."""
    return int(os.environ.get("ASTRID_NIGHTLY_HOUR_UTC", "12"))


nightly_schedule = build_schedule_from_partitioned_job(
    nightly_pipeline, name="nightly_schedule", hour_of_day=nightly_hour_utc(), minute_of_hour=0,
    description="Runs nightly_pipeline for the night that just ended (its UTC start date).",
)
