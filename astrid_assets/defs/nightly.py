"""What every nightly table asset shares: partitions, backfill and freshness policies, and the night loop.

A run of a nightly asset covers one night or, in a backfill, a range of nights in **one run**
(``BackfillPolicy.single_run``): a 30-night backfill starts each step once instead of 30 times,
and every step finishes all its nights before the next step starts, so a night's reference can
use the calibrated frames of the nights before it from the same backfill. The asset body is
written for one night and :func:`for_each_night` runs it over the run's nights, splitting the
inputs by night and joining the outputs (:func:`run_nights` is that loop without Dagster). The
table IO manager replaces exactly the run's nights.

One bad night does not sink a window. Dagster's blocking checks act per asset and per run (one
failing night would stop every night downstream), so the nightly checks do not block: a night that
fails one of an asset's *gates* (:data:`~astrid_assets.defs.quality_checks.GATES`) is skipped by
every asset downstream of it — which keep the rows they had stored for that night and say why, in
the night's own materialization (``night_status``, ``night_problem``), the run's metadata
(``nights_failed``, ``nights_skipped``), its log and its ``astrid/failed_nights`` tag — while the
run's other nights go on (:func:`failed_nights` collects the nights and reasons of a run).
"""

import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import timedelta

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetRecordsFilter,
    BackfillPolicy,
    BetaWarning,
    DagsterInstance,
    FreshnessPolicy,
    MetadataValue,
    Output,
    asset,
)

from astrid_assets.defs.quality_checks import gate_failures, night_failures
from astrid_assets.io.schema import table_for
from astrid_assets.partitions import nightly_partitions

#: Metadata of each night's materialization of a nightly asset: ``ok``; ``failed``: the night failed one of the
#: asset's gates (its rows are stored, nothing downstream builds on them); ``skipped``: an asset upstream failed
#: or skipped the night, so this one kept its stored rows. :data:`NIGHT_PROBLEM` says why.
NIGHT_STATUS = "night_status"
NIGHT_PROBLEM = "night_problem"
#: Run tag: the nights of the run that some step failed or skipped, ``,``-separated (the reasons: metadata, log).
FAILED_NIGHTS_TAG = "astrid/failed_nights"

#: A night's products are expected within a day of the nightly schedule; warn after 26 h, fail after 50 h.
NIGHTLY_FRESHNESS = FreshnessPolicy.time_window(fail_window=timedelta(hours=50), warn_window=timedelta(hours=26))


def nightly_asset(**kwargs):
    """``@asset`` of a nightly table: one partition per night, its rows replaced per night by the table IO manager."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BetaWarning)  # backfill_policy is "beta" in Dagster 1.13
        return asset(partitions_def=nightly_partitions, metadata={"partition_expr": "night"},
                     io_manager_key="table_io_manager", group_name="nightly",
                     backfill_policy=BackfillPolicy.single_run(), freshness_policy=NIGHTLY_FRESHNESS, **kwargs)


def night_rows(table: pd.DataFrame, night: str) -> pd.DataFrame:
    """The rows of one night from an input that may hold several."""
    return table[table.night == night].reset_index(drop=True)


def merge_night_metadata(by_night: dict[str, dict]) -> dict:
    """One night: its metadata. Several: counts summed, and a per-night table of every number."""
    if len(by_night) == 1:
        return next(iter(by_night.values()))
    numbers = {night: {k: v for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool)}
               for night, values in by_night.items()}
    columns = sorted({k for values in numbers.values() for k in values})
    totals = {k: sum(values.get(k, 0) for values in numbers.values()) for k in columns
              if all(isinstance(values.get(k, 0), int) for values in numbers.values())}
    table = pd.DataFrame.from_dict(numbers, orient="index", columns=columns).rename_axis("night").reset_index()
    return {"nights": len(by_night), **totals, "by_night": MetadataValue.md(table.round(3).to_markdown(index=False))}


def run_nights(
    nights: list[str], night_fn: Callable[[str], tuple[pd.DataFrame, dict]]
) -> tuple[pd.DataFrame, dict[str, dict]]:
    """``night_fn(night) -> (rows, metadata)`` for each of ``nights`` in order: the rows of all the nights
    joined (the first night's, empty, when every night's are empty) and each night's metadata.

    The night loop of :func:`for_each_night`, without Dagster: a plain-Python caller (a benchmark, a
    notebook) runs the per-night functions of the assets over a range of nights with it.
    """
    tables, metadata = [], {}
    for night in nights:
        table, metadata[night] = night_fn(night)
        tables.append(table)
    non_empty = [t for t in tables if len(t)]
    return (pd.concat(non_empty, ignore_index=True) if non_empty else tables[0]), metadata


def recorded_problems(instance: DagsterInstance, asset_name: str, nights: list[str]) -> dict[str, str]:
    """The ``nights`` whose latest materialization of ``asset_name`` says it failed or skipped them: night → why."""
    problems = {}
    for night in nights:
        records = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey(asset_name), asset_partitions=[night]), limit=1).records
        metadata = records[0].asset_materialization.metadata if records else {}
        if NIGHT_STATUS in metadata and metadata[NIGHT_STATUS].value != "ok":
            problems[night] = str(metadata[NIGHT_PROBLEM].value)
    return problems


def upstream_failures(
    instance: DagsterInstance | None, nights: list[str], upstream: Mapping[str, pd.DataFrame]
) -> dict[str, str]:
    """The ``nights`` an asset with the inputs ``upstream`` (asset name → its rows) must skip: night → why.

    A night is skipped where an input's rows fail one of its gates, or where the input's latest
    materialization of the night says it failed or skipped it (how a skip travels down the chain).
    """
    reasons: dict[str, list[str]] = {}
    for name, rows in upstream.items():
        found = [night_failures(name, nights, rows), recorded_problems(instance, name, nights) if instance else {}]
        for night, why in (item for problems in found for item in problems.items()):
            reasons.setdefault(night, []).append(why)
    return {night: "; ".join(dict.fromkeys(why)) for night, why in sorted(reasons.items())}


def report_nights(
    context: AssetExecutionContext, asset_name: str, nights: list[str], skipped: dict[str, str], failed: dict[str, str]
) -> dict:
    """Say, before the output is yielded, which nights the asset skipped and which failed its gates.

    Each night's materialization gets its :data:`NIGHT_STATUS` (and :data:`NIGHT_PROBLEM`), the log an
    error or warning per such night and the run the :data:`FAILED_NIGHTS_TAG`; the run-level metadata
    (``nights_failed``, ``nights_skipped``: night → why) is returned.
    """
    for night in nights:
        status = "skipped" if night in skipped else "failed" if night in failed else "ok"
        problem = {} if status == "ok" else {NIGHT_PROBLEM: skipped.get(night) or failed[night]}
        context.add_asset_metadata({NIGHT_STATUS: status, **problem}, partition_key=night)
    for night, why in failed.items():
        context.log.error(f"{asset_name}: night {night} failed: {why}. The assets downstream skip this night; "
                          "the other nights of the run go on")
    for night, why in skipped.items():
        context.log.warning(f"{asset_name}: night {night} skipped (rows stored for it earlier, if any, kept): "
                            f"upstream failed: {why}")
    if skipped or failed:
        tag_failed_nights(context, sorted({*skipped, *failed}))
    return {**({"nights_failed": MetadataValue.json(failed)} if failed else {}),
            **({"nights_skipped": MetadataValue.json(skipped)} if skipped else {})}


def tag_failed_nights(context: AssetExecutionContext, nights: list[str]) -> None:
    """Add ``nights`` to the run's :data:`FAILED_NIGHTS_TAG` (shown with the run, searchable in the run list)."""
    run = context.instance.get_run_by_id(context.run_id)
    if run is None:  # a context built outside a run
        return
    earlier = [night for night in run.tags.get(FAILED_NIGHTS_TAG, "").split(",") if night]
    context.instance.add_run_tags(context.run_id, {FAILED_NIGHTS_TAG: ",".join(sorted({*earlier, *nights}))})


def failed_nights(materializations: Iterable[AssetMaterialization]) -> dict[str, str]:
    """Night → why, for the nights that some asset failed or skipped, from a run's ``materializations``
    (the reason of a failed gate where a night has one, else the reason it was skipped)."""
    found: dict[str, tuple[bool, str]] = {}
    for materialization in materializations:
        status = materialization.metadata.get(NIGHT_STATUS)
        night = materialization.partition
        if night is None or status is None or status.value == "ok":
            continue
        failed = status.value == "failed"
        if night not in found or (failed and not found[night][0]):
            found[night] = (failed, str(materialization.metadata[NIGHT_PROBLEM].value))
    return {night: why for night, (_, why) in sorted(found.items())}


def for_each_night(
    context: AssetExecutionContext,
    night_fn: Callable[[str], tuple[pd.DataFrame, dict]],
    checks: Callable[[list[str], pd.DataFrame], Iterator[AssetCheckResult]],
    upstream: Mapping[str, pd.DataFrame] | None = None,
    database=None,
) -> Iterator:
    """Run ``night_fn(night) -> (rows, metadata)`` for each night of the run, then the data-quality checks.

    Yields the rows of all the nights as the asset's output (with the night's own metadata for a
    one-night run, merged by :func:`merge_night_metadata` for a range), then the results of
    ``checks(nights, rows)`` for the nights it built.

    ``upstream`` holds the asset's inputs by asset name. A night that one of them failed or skipped
    (:func:`upstream_failures`) is skipped: ``night_fn`` is not called for it, the rows the asset has
    stored for the night are kept (read back through ``database``, a
    :class:`~astrid_assets.resources.DatabaseResource`; none without it) and :func:`report_nights` says
    why; so does it for the nights that fail the asset's own gates. The other nights go on.
    """
    nights = list(context.partition_keys)
    asset_name = context.assets_def.key.to_user_string()
    skipped = upstream_failures(context.instance, nights, upstream or {})
    kept = database.read_nights(asset_name, sorted(skipped)) if skipped and database is not None else None

    def night_or_skip(night: str) -> tuple[pd.DataFrame, dict]:
        if night not in skipped:
            return night_fn(night)
        rows = night_rows(kept, night) if kept is not None else pd.DataFrame(
            columns=list(table_for(asset_name).c.keys()))
        return rows, {"skipped": 1, "kept_rows": len(rows), "skipped_because": skipped[night]}

    table, metadata = run_nights(nights, night_or_skip)
    built = [night for night in nights if night not in skipped]
    results = list(checks(built, table[table.night.isin(built)]))
    report = report_nights(context, asset_name, nights, skipped, gate_failures(asset_name, results))
    yield Output(table, metadata={**merge_night_metadata(metadata), **report})
    yield from results
