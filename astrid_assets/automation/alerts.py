"""Alerts: every failed run, and every run that finished with nights it could not process, is logged and,
if ``ASTRID_ALERT_WEBHOOK`` is set, posted there.

One bad night does not fail a range run (:mod:`astrid_assets.defs.nightly`): the run succeeds, tags
itself with :data:`~astrid_assets.defs.nightly.FAILED_NIGHTS_TAG`, and :func:`alert_on_failed_nights`
says which nights failed and why.

The webhook receives JSON ``{"text": ...}`` (the shape Slack and Mattermost incoming webhooks accept).
Its URL usually holds a token, so it comes only from the environment (:func:`settings.alert_webhook`) and is
never logged.
"""

import json
import urllib.request

from dagster import (
    DagsterEventType,
    DagsterRunStatus,
    RunFailureSensorContext,
    RunStatusSensorContext,
    run_failure_sensor,
    run_status_sensor,
)

from astrid_assets import settings
from astrid_assets.defs.nightly import FAILED_NIGHTS_TAG, failed_nights


def root_error(error) -> str:
    """The innermost cause of a Dagster error (the user's exception, not Dagster's wrapper)."""
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


def failure_message(context: RunFailureSensorContext) -> str:
    run = context.dagster_run
    partition = run.tags.get("dagster/partition")
    where = f" (partition {partition})" if partition else ""
    steps = "; ".join(
        f"{event.step_key}: {root_error(event.event_specific_data.error)}"
        for event in context.get_step_failure_events() if event.event_specific_data and event.event_specific_data.error
    )
    return f"AstrID run {run.run_id} of {run.job_name}{where} failed: {steps or context.failure_event.message}"


@run_failure_sensor(name="alert_on_run_failure", minimum_interval_seconds=60)
def alert_on_run_failure(context: RunFailureSensorContext) -> None:
    post_alert(context, failure_message(context))


def failed_nights_message(context: RunStatusSensorContext) -> str | None:
    """What a successful run that skipped nights says: each failed night and why; None when none failed."""
    run = context.dagster_run
    nights = [night for night in run.tags.get(FAILED_NIGHTS_TAG, "").split(",") if night]
    if not nights:
        return None
    records = context.instance.get_records_for_run(
        run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION).records
    reasons = failed_nights(record.event_log_entry.asset_materialization for record in records)
    return (f"AstrID run {run.run_id} of {run.job_name} finished, but {len(nights)} night(s) failed and their "
            "downstream steps were skipped: " + "; ".join(f"{night}: {reasons.get(night, 'see the run')}"
                                                          for night in nights))


@run_status_sensor(run_status=DagsterRunStatus.SUCCESS, name="alert_on_failed_nights", minimum_interval_seconds=60)
def alert_on_failed_nights(context: RunStatusSensorContext) -> None:
    message = failed_nights_message(context)
    if message:
        post_alert(context, message)


def post_alert(context, message: str) -> None:
    """Log ``message`` as an error and post it to ``ASTRID_ALERT_WEBHOOK`` (whose URL is never logged)."""
    context.log.error(message)
    webhook = settings.alert_webhook()
    if not webhook:
        return
    request = urllib.request.Request(webhook, data=json.dumps({"text": message}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10):
            pass
    except OSError as error:  # an unreachable webhook must not fail the sensor; its URL is not logged
        context.log.warning(f"alert webhook failed: {type(error).__name__}")
