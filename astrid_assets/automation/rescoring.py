"""Re-scoring after a new champion: the recent nights are scored again by the models now in charge.

The sensor reads the registry's champion aliases: each candidate is scored by the champion of its
frame's instrument (``champion-<slug>``, else the plain ``champion``; :func:`~astrid_assets.ml.champions.
assign_champions`). Among the last ``ASTRID_RESCORE_NIGHTS`` (default 7) nights with candidate
detections, a night is *stale* when some of its candidates have no real probability from the champion that
applies to them (never scored, scored before any champion existed, or scored by an earlier one). The
stale nights are re-scored in one run of ``scored_detections`` over their range. The run key names the
champion versions and the range, so a repeated tick, or a rollback to a champion that already scored
those nights, launches nothing new.
"""

import pandas as pd
from dagster import AssetKey, RunRequest, SensorEvaluationContext, SensorResult, SkipReason, sensor
from sqlalchemy import inspect, select

from astrid_assets import settings
from astrid_assets.io.schema import candidate_detections, raw_observations, scored_detections
from astrid_assets.io.tables import engine_for
from astrid_assets.jobs import nightly_pipeline
from astrid_assets.ml.champions import assign_champions
from astrid_assets.partitions import night_range_tags
from astrid_assets.resources import DatabaseResource, ModelRegistryResource


def _read(connection, existing: set[str], table, columns: list[str], nights: list[str]) -> pd.DataFrame:
    if table.name not in existing:
        return pd.DataFrame(columns=columns)
    have = [c for c in columns if c in {column["name"] for column in inspect(connection).get_columns(table.name)}]
    frame = pd.read_sql(select(*[table.c[c] for c in have]).where(table.c.night.in_(nights)), connection)
    return frame.reindex(columns=columns)


def stale_nights(url: str, nights: list[str], aliases: dict[str, str]) -> tuple[list[str], list[str]]:
    """The nights whose candidates are not all scored by the champion that applies to them, and the
    registry versions those champions are."""
    engine = engine_for(url)
    existing = set(inspect(engine).get_table_names())
    if candidate_detections.name not in existing or not nights:
        return [], []
    with engine.connect() as connection:
        found = _read(connection, existing, candidate_detections, ["night", "candidate_id", "frame_id"], nights)
        frames = _read(connection, existing, raw_observations, ["night", "frame_id", "instrument"], nights)
        scored = _read(connection, existing, scored_detections,
                       ["night", "candidate_id", "model_version", "real_probability"], nights)
    instruments = frames.dropna(subset=["instrument"]).drop_duplicates("frame_id").set_index("frame_id").instrument
    expected = assign_champions(found, instruments.to_dict(), aliases).version
    done = scored[scored.real_probability.notna()].set_index("candidate_id").model_version.astype(str)
    by = found.candidate_id.map(done)
    stale = expected.notna() & (by != expected)
    return sorted(set(found.night[stale])), sorted({str(v) for v in expected[stale]})


@sensor(name="rescore_after_new_champion", minimum_interval_seconds=settings.sensor_interval_s(),
        jobs=[nightly_pipeline],
        description="After a champion model changes, re-scores the recent nights (ASTRID_RESCORE_NIGHTS).")
def rescore_after_new_champion(
    context: SensorEvaluationContext, model_registry: ModelRegistryResource, database: DatabaseResource
):
    aliases = {alias: version for alias, version in model_registry.aliases().items() if alias.startswith("champion")}
    if not aliases:
        return SkipReason("no champion model yet")
    nights = sorted(context.instance.get_materialized_partitions(AssetKey("candidate_detections")))
    recent = nights[-settings.rescore_nights():]
    stale, versions = stale_nights(database.resolved_url(), recent, aliases)
    if not stale:
        held = ", ".join(f"{alias} v{version}" for alias, version in sorted(aliases.items()))
        return SkipReason(f"the last {len(recent)} nights with candidates are scored by their champions ({held})")
    first, last = stale[0], stale[-1]
    return SensorResult(run_requests=[RunRequest(
        job_name="nightly_pipeline", asset_selection=[AssetKey("scored_detections")],
        run_key=f"rescore-v{'-v'.join(versions)}-{first}-{last}",
        tags={**night_range_tags(first, last), "astrid/champion": ",".join(versions)},
    )])
