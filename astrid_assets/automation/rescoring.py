"""Re-scoring after a new champion: the recent nights are scored again by the model now in charge.

The sensor reads the registry's ``champion`` alias. Among the last ``ASTRID_RESCORE_NIGHTS``
(default 7) nights with candidate detections, a night is *stale* when some of its candidates
have no probability from that champion (never scored, scored before any champion existed, or
scored by an earlier one). The stale nights are re-scored in one run of ``scored_detections`` over
their range. The run key names the champion version and the range, so a repeated tick, or a
rollback to a champion that already scored those nights, launches nothing new.
"""

import pandas as pd
from dagster import AssetKey, RunRequest, SensorEvaluationContext, SensorResult, SkipReason, sensor
from sqlalchemy import func, inspect, select

from astrid_assets import settings
from astrid_assets.io.schema import candidate_detections, scored_detections
from astrid_assets.io.tables import engine_for
from astrid_assets.jobs import nightly_pipeline
from astrid_assets.partitions import night_range_tags
from astrid_assets.resources import DatabaseResource, ModelRegistryResource


def stale_nights(url: str, nights: list[str], champion: str) -> list[str]:
    """The nights whose candidates are not all scored by registry version ``champion``."""
    engine = engine_for(url)
    existing = set(inspect(engine).get_table_names())
    if candidate_detections.name not in existing or not nights:
        return []
    with engine.connect() as connection:
        found = pd.read_sql(select(candidate_detections.c.night, func.count().label("n"))
                            .where(candidate_detections.c.night.in_(nights))
                            .group_by(candidate_detections.c.night), connection).set_index("night").n
        scored = pd.Series(dtype=int)
        if scored_detections.name in existing:
            scored = pd.read_sql(select(scored_detections.c.night, func.count().label("n"))
                                 .where(scored_detections.c.night.in_(nights))
                                 .where(scored_detections.c.model_version == champion)
                                 .where(scored_detections.c.real_probability.is_not(None))
                                 .group_by(scored_detections.c.night), connection).set_index("night").n
    return sorted(night for night, n in found.items() if n > scored.get(night, 0))


@sensor(name="rescore_after_new_champion", minimum_interval_seconds=settings.sensor_interval_s(),
        jobs=[nightly_pipeline],
        description="After the champion model changes, re-scores the recent nights (ASTRID_RESCORE_NIGHTS).")
def rescore_after_new_champion(
    context: SensorEvaluationContext, model_registry: ModelRegistryResource, database: DatabaseResource
):
    champion = model_registry.champion_version()
    if champion is None:
        return SkipReason("no champion model yet")
    nights = sorted(context.instance.get_materialized_partitions(AssetKey("candidate_detections")))
    recent = nights[-settings.rescore_nights():]
    stale = stale_nights(database.resolved_url(), recent, champion)
    if not stale:
        return SkipReason(f"the last {len(recent)} nights with candidates are scored by champion v{champion}")
    first, last = stale[0], stale[-1]
    return SensorResult(run_requests=[RunRequest(
        job_name="nightly_pipeline", asset_selection=[AssetKey("scored_detections")],
        run_key=f"rescore-v{champion}-{first}-{last}",
        tags={**night_range_tags(first, last), "astrid/champion": champion},
    )])
