"""What issue 21's assets (objects, forced photometry, catalogue context, alert packets, notifications) add to a
night's wall time on the demo.

Runs ``nightly_pipeline`` over the demo's window (default 2024-01-01 … 2024-01-07, the embedded default with
the demo's simulated survey) in a fresh ``ASTRID_HOME``, reads every step's duration from the run's events and
writes ``benchmarks/results/objects.json``: seconds per step, the chain's seconds without the new assets and the
fraction they add (all of them, and the objects and forced photometry alone). The catalogue context runs
offline here: its archives fail fast and it records notes, so its cost against live archives is not measured.

    .venv/bin/python benchmarks/bench_objects.py [--start 2024-01-01] [--end 2024-01-07]
"""

import argparse
import json
import os
import tempfile
from pathlib import Path

OBJECTS = ("object_detections", "transient_objects", "forced_photometry")
NEW = (*OBJECTS, "object_context", "alert_packets", "notifications")  # every asset issue 21 added


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", default="2024-01-01")
    parser.add_argument("--end", default="2024-01-07")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="astrid-bench-objects-")) / "astrid"
    (home / "dagster").mkdir(parents=True)
    (home / "dagster" / "dagster.yaml").touch()
    os.environ.update(ASTRID_HOME=str(home), DAGSTER_HOME=str(home / "dagster"))
    from dagster import DagsterInstance

    from astrid_assets.definitions import defs
    from astrid_assets.partitions import night_range_tags

    result = defs.resolve_job_def("nightly_pipeline").execute_in_process(
        instance=DagsterInstance.get(), tags=night_range_tags(args.start, args.end),
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
    seconds = {event.step_key: event.event_specific_data.duration_ms / 1000.0
               for event in result.all_events if event.event_type_value == "STEP_SUCCESS"}
    base = sum(s for step, s in seconds.items() if step not in NEW)
    added = sum(seconds.get(step, 0.0) for step in NEW)
    objects = sum(seconds.get(step, 0.0) for step in OBJECTS)
    report = {"nights": [args.start, args.end], "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
              "seconds": seconds, "chain_seconds": base, "new_assets_seconds": added,
              "new_assets_fraction": added / base if base else None,
              "objects_fraction": objects / base if base else None}
    out = Path(__file__).parent / "results" / "objects.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
