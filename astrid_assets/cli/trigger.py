"""Launch nightly work on a running AstrID deployment through its Dagster webserver, and wait for it.

The client for other tools (an observatory scheduler, a notebook, a CI job)::

    from astrid_assets.cli.trigger import trigger_night, trigger_window

    run_id = trigger_night("http://dagster.example.org:3000", night)              # one night, waits
    backfill_id = trigger_window("http://dagster.example.org:3000", first, last)  # a window of nights

(``night``, ``first``, ``last`` as ``YYYY-MM-DD``), or from a shell: ``astrid trigger --url
http://127.0.0.1:3000 --night YYYY-MM-DD`` and ``astrid trigger --url … --start YYYY-MM-DD --end YYYY-MM-DD``.

A night is one run of ``nightly_pipeline`` submitted with :class:`dagster_graphql.DagsterGraphQLClient`.
A window is a partition backfill of the nightly assets over the date range, launched with the
``launchPartitionBackfill`` mutation; the assets' single-run backfill policy makes it one run. Both
go through the deployment's run queue, so the webserver's daemon must be running. Waiting polls
the run or backfill until it ends and raises :class:`TriggerError` (naming the night or window and
the run or backfill) unless it succeeded. Only the Dagster client library is imported: the caller
needs neither AstrID's science nor its database.
"""

import time
from urllib.parse import urlsplit

import requests
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

from astrid_assets.defs.nightly import FAILED_NIGHTS_TAG

#: The nightly chain's assets, in order (the selection a window backfill materializes).
NIGHTLY_ASSETS = ("raw_observations", "calibrated_frames", "reference_images", "difference_images",
                  "candidate_detections", "scored_detections")
NIGHTLY_JOB = "nightly_pipeline"

LAUNCH_BACKFILL = """
mutation LaunchWindow($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}
"""

BACKFILL_STATUS = """
query BackfillStatus($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status runs(limit: 1000) { id status tags { key value } } }
    ... on Error { message }
  }
}
"""

RUN_TAGS = """
query RunTags($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { tags { key value } }
    ... on Error { message }
  }
}
"""

FINISHED_BACKFILL = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
FINISHED_RUN = {"SUCCESS", "FAILURE", "CANCELED"}


class TriggerError(RuntimeError):
    """A launch was refused, or the run or backfill did not succeed."""


def graphql_url(url: str) -> str:
    """The GraphQL endpoint of a webserver at ``url`` (``http://host:port[/prefix]``)."""
    return url.rstrip("/") + "/graphql"


def client_for(url: str, timeout_s: int = 60) -> DagsterGraphQLClient:
    """A :class:`DagsterGraphQLClient` for the webserver at ``url``."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise TriggerError(f"not a webserver URL: {url!r} (expected e.g. http://127.0.0.1:3000)")
    return DagsterGraphQLClient(parts.hostname, port_number=parts.port, use_https=parts.scheme == "https",
                                path_prefix=parts.path.rstrip("/"), timeout=timeout_s)


def graphql(url: str, query: str, variables: dict, timeout_s: float = 60) -> dict:
    """POST one GraphQL operation to the webserver; its ``data``, or :class:`TriggerError` on errors."""
    try:
        response = requests.post(graphql_url(url), json={"query": query, "variables": variables}, timeout=timeout_s)
        response.raise_for_status()
    except requests.RequestException as error:
        raise TriggerError(f"{graphql_url(url)}: {root_cause(error)}") from None
    body = response.json()
    if body.get("errors"):
        raise TriggerError("; ".join(error.get("message", str(error)) for error in body["errors"]))
    return body["data"]


def root_cause(error: BaseException) -> str:
    """The innermost exception's text (a refused connection, not the client library's wrappers)."""
    while error.__cause__ is not None:
        error = error.__cause__
    return f"{type(error).__name__}: {error}"


def trigger_night(url: str, night: str, wait: bool = True, timeout_s: float = 3600, poll_s: float = 5,
                  run_config: dict | None = None) -> str:
    """Run ``nightly_pipeline`` for ``night`` (``YYYY-MM-DD``); the run id.

    With ``wait`` (the default), returns once the run succeeded, and raises :class:`TriggerError`
    if it failed, was cancelled, finished without processing the night (its inputs failed a quality
    gate: the run's ``astrid/failed_nights`` tag) or is still going after ``timeout_s``.
    """
    client = client_for(url)
    try:
        run_id = client.submit_job_execution(NIGHTLY_JOB, tags={"dagster/partition": night}, run_config=run_config)
    except DagsterGraphQLClientError as error:
        raise TriggerError(f"night {night}: {graphql_url(url)} refused the launch: {root_cause(error)}") from None
    if not wait:
        return run_id
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            status = client.get_run_status(run_id).value
        except DagsterGraphQLClientError as error:
            raise TriggerError(f"night {night}: run {run_id}: {root_cause(error)}") from None
        if status in FINISHED_RUN:
            break
        if time.monotonic() > deadline:
            raise TriggerError(f"night {night}: run {run_id} still {status} after {timeout_s:.0f} s")
        time.sleep(poll_s)
    if status != "SUCCESS":
        raise TriggerError(f"night {night}: run {run_id} ended {status}; see {url.rstrip('/')}/runs/{run_id}")
    run = graphql(url, RUN_TAGS, {"runId": run_id})["runOrError"]
    failed = failed_nights_of(run.get("tags") or [])
    if failed:
        raise TriggerError(f"night {night}: run {run_id} finished but could not process night(s) {', '.join(failed)}; "
                           f"why: {url.rstrip('/')}/runs/{run_id}")
    return run_id


def failed_nights_of(tags: list[dict]) -> list[str]:
    """The nights a finished run reports it could not process (its ``astrid/failed_nights`` tag)."""
    value = next((tag["value"] for tag in tags if tag["key"] == FAILED_NIGHTS_TAG), "")
    return [night for night in value.split(",") if night]


def window_backfill_params(start: str, end: str, assets=NIGHTLY_ASSETS, title: str | None = None) -> dict:
    """``LaunchBackfillParams`` for the nights ``start`` … ``end`` (inclusive) of ``assets``."""
    return {
        "partitionsByAssets": [{"assetKey": {"path": [asset]}, "partitions": {"range": {"start": start, "end": end}}}
                               for asset in assets],
        "title": title or f"nights {start} … {end}",
    }


def trigger_window(url: str, start: str, end: str, wait: bool = True, timeout_s: float = 6 * 3600,
                   poll_s: float = 10, assets=NIGHTLY_ASSETS) -> str:
    """Backfill the nightly assets for the nights ``start`` … ``end`` (inclusive); the backfill id.

    With ``wait``, returns once every run of the backfill succeeded with every night processed, and
    raises :class:`TriggerError` naming the failed runs, or the nights a run could not process, otherwise.
    """
    launched = graphql(url, LAUNCH_BACKFILL, {"params": window_backfill_params(start, end, assets)})
    result = launched["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise TriggerError(f"nights {start} … {end}: backfill refused: {result['__typename']}: "
                           f"{result.get('message', '')}")
    backfill_id = result["backfillId"]
    if not wait:
        return backfill_id
    deadline = time.monotonic() + timeout_s
    while True:
        backfill = backfill_state(url, backfill_id)
        runs = backfill["runs"] or []
        if backfill["status"] in FINISHED_BACKFILL and all(run["status"] in FINISHED_RUN for run in runs):
            break
        if time.monotonic() > deadline:
            raise TriggerError(f"nights {start} … {end}: backfill {backfill_id} still {backfill['status']} "
                               f"after {timeout_s:.0f} s")
        time.sleep(poll_s)
    failed = [run["id"] for run in runs if run["status"] != "SUCCESS"]
    if backfill["status"] not in {"COMPLETED", "COMPLETED_SUCCESS"} or failed:
        raise TriggerError(f"nights {start} … {end}: backfill {backfill_id} ended {backfill['status']}"
                           + (f"; runs not successful: {', '.join(failed)}" if failed else ""))
    bad_nights = sorted({night for run in runs for night in failed_nights_of(run.get("tags") or [])})
    if bad_nights:
        raise TriggerError(f"nights {start} … {end}: backfill {backfill_id} finished but could not process "
                           f"night(s) {', '.join(bad_nights)}; each run's page says why")
    return backfill_id


def backfill_state(url: str, backfill_id: str) -> dict:
    """Status of a backfill and of its runs (``{"status": ..., "runs": [{"id", "status"}]}``)."""
    result = graphql(url, BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
    if result["__typename"] != "PartitionBackfill":
        raise TriggerError(f"backfill {backfill_id}: {result.get('message', result['__typename'])}")
    return result
