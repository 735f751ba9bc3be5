"""What every nightly table asset shares: partitions, backfill and freshness policies, and the night loop.

A run of a nightly asset covers one night or, in a backfill, a range of nights in **one run**
(``BackfillPolicy.single_run``): a 30-night backfill starts each step once instead of 30 times,
and every step finishes all its nights before the next step starts, so a night's reference can
use the calibrated frames of the nights before it from the same backfill. The asset body is
written for one night and :func:`for_each_night` runs it over the run's nights, splitting the
inputs by night and joining the outputs (:func:`run_nights` is that loop without Dagster). The
table IO manager replaces exactly the run's nights.
"""

import warnings
from collections.abc import Callable, Iterator
from datetime import timedelta

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    BackfillPolicy,
    BetaWarning,
    FreshnessPolicy,
    MetadataValue,
    Output,
    asset,
)

from astrid_assets.partitions import nightly_partitions

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


def for_each_night(
    context: AssetExecutionContext,
    night_fn: Callable[[str], tuple[pd.DataFrame, dict]],
    checks: Callable[[list[str], pd.DataFrame], Iterator[AssetCheckResult]],
) -> Iterator:
    """Run ``night_fn(night) -> (rows, metadata)`` for each night of the run, then the data-quality checks.

    Yields the rows of all the nights as the asset's output (with the night's own metadata for a
    one-night run, merged by :func:`merge_night_metadata` for a range), then the results of
    ``checks(nights, rows)``.
    """
    nights = list(context.partition_keys)
    table, metadata = run_nights(nights, night_fn)
    yield Output(table, metadata=merge_night_metadata(metadata))
    yield from checks(nights, table)
