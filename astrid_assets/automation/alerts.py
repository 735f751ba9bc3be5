"""Run-failure alerts: every failed run is logged and, if ``ASTRID_ALERT_WEBHOOK`` is set, posted there.

The webhook receives JSON ``{"text": ...}`` (the shape Slack and Mattermost incoming webhooks accept).
Its URL usually holds a token, so it comes only from the environment (:func:`settings.alert_webhook`) and is
never logged.
"""

import json
import urllib.request

from dagster import RunFailureSensorContext, run_failure_sensor

from astrid_assets import settings


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
    message = failure_message(context)
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
