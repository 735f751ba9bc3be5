"""Run AstrID's nightly chain on a FITS drop folder in-process, as a new user would, and read back its tables.

Nothing is configured but ``ASTRID_FITS_DROP`` (and, where a test needs it, ``ASTRID_FIRST_NIGHT``):
the point is to measure what the defaults do with data AstrID did not make.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from unittest.mock import patch

import pandas as pd

#: The nightly chain up to the candidates (scoring needs a champion model, which a new user lacks).
CHAIN = ["raw_observations", "calibrated_frames", "reference_images", "difference_images", "candidate_detections"]


@dataclass
class ChainRun:
    """A run of the chain over a window of nights and the rows it wrote."""

    success: bool
    tables: dict[str, pd.DataFrame]
    checks: dict[str, object]  #: check name → its AssetCheckEvaluation
    failed_nights: dict[str, str] = field(default_factory=dict)  #: night → why, the nights a gate failed
    tags: dict[str, str] = field(default_factory=dict)  #: the run's tags once it ended
    materializations: list = field(default_factory=list)  #: the run's AssetMaterializations
    result: object = None  #: the run's ExecuteInProcessResult

    def completeness(self, night: str) -> float | None:
        """Injection–recovery completeness at S/N ≥ 10 of ``night`` from the ``injection_recovery`` check."""
        evaluation = self.checks.get("injection_recovery")
        by_night = evaluation.metadata.get("completeness_by_night") if evaluation else None
        return None if by_night is None else by_night.value.get(night)


def run_chain(drop: str | Path, first: str, last: str, instance, assets: list[str] = CHAIN) -> ChainRun:
    """Materialize ``assets`` (default :data:`CHAIN`) for the nights ``first`` … ``last`` (one run) from the
    drop folder ``drop``.

    The caller sets ``ASTRID_HOME`` (and ``ASTRID_FIRST_NIGHT`` before the definitions are imported
    where the nights are older than its default).
    """
    from dagster import AssetKey

    from astrid_assets.definitions import defs
    from astrid_assets.defs.nightly import failed_nights
    from astrid_assets.io.tables import read_nights
    from astrid_assets.partitions import night_range_tags

    with patch.dict(os.environ, {"ASTRID_FITS_DROP": str(drop)}):
        result = defs.resolve_job_def("nightly_pipeline").execute_in_process(
            instance=instance, raise_on_error=False, tags=night_range_tags(first, last),
            asset_selection=[AssetKey(name) for name in assets],
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
    nights = [str(day.date()) for day in pd.date_range(first, last, freq="D")]
    tables = {name: read_nights(name, nights) for name in assets}
    checks = {evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()}
    materializations = [event.step_materialization_data.materialization
                        for event in result.get_asset_materialization_events()]
    return ChainRun(result.success, tables, checks, failed_nights(materializations),
                    dict(instance.get_run_by_id(result.run_id).tags), materializations, result)
