"""Frames per hour of a night through the whole chain, through Dagster, with 1, 2, … worker processes.

Usage::

    .venv/bin/python benchmarks/bench_scale.py                                  # 32 frames of 2048², 1 and 2 workers
    .venv/bin/python benchmarks/bench_scale.py --size 4096 --frames 4 --workers 2   # memory per worker at 4096²

The simulated survey (``--fields`` fields, ``--frames`` science frames a night between them, ``--size``² pixels) is
prepared once, untimed: night 1 ingested and calibrated (the frames the references are built from) and night 2
ingested; the MLflow store is created. Then, for each ``--workers`` count, a copy of that home runs night 2 from
calibration to the last nightly asset (every asset of the ``nightly`` group but ``raw_observations``: calibration,
references, ZOGY differences, candidates with the injection check, scoring, and whatever nightly assets the
definitions hold) as one Dagster run (``execute_in_process`` of ``nightly_pipeline`` on a SQLite instance), with
``ASTRID_POOL=processes`` and ``ASTRID_WORKERS`` set: the frames of each step go to that many worker processes.

Reported per worker count: wall seconds of the run, science frames per hour, each step's seconds (from the
run's step events), the peak resident memory of each worker process (sampled every 0.2 s with psutil, its
largest over the run) and of the run's own process, and the load average before and after. The speed-up is
the 1-worker wall time over each other's. Results go to ``benchmarks/results/scale.json``.

On a machine shared with other work the load average says how much of it the benchmark had: the speed-up
from N workers is bounded by the cores that were idle, not by the pool.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NIGHTS = ("2024-01-01", "2024-01-02")


def use_home(home: Path) -> None:
    """The embedded default under ``home``: SQLite tables, a local object folder, a SQLite Dagster instance."""
    os.environ["ASTRID_HOME"] = str(home)
    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    for variable in ("ASTRID_DATABASE_URL", "ASTRID_OBJECT_STORE", "MLFLOW_TRACKING_URI", "ASTRID_FITS_DROP"):
        os.environ.pop(variable, None)
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    (home / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    from astrid_assets.io.tables import engine_for

    engine_for.cache_clear()


def job(args):
    from dagster import Definitions

    from astrid_assets.definitions import default_resources, nightly_assets, nightly_pipeline
    from astrid_assets.resources import SimulatedSurveyResource

    fields = [f"F{i + 1:02d}" for i in range(args.fields)]
    survey = SimulatedSurveyResource(fields=fields, frames_per_night=args.frames // args.fields, size=args.size)
    definitions = Definitions(assets=nightly_assets, jobs=[nightly_pipeline],
                              resources={**default_resources(), "simulated_survey": survey})
    return definitions.resolve_job_def("nightly_pipeline"), [a.key for a in nightly_assets]


def run(args, night: str, selection, workers: int):
    from dagster import DagsterInstance

    os.environ["ASTRID_POOL"] = "processes"
    os.environ["ASTRID_WORKERS"] = str(workers)
    nightly_job, _ = job(args)
    return nightly_job.execute_in_process(
        partition_key=night, instance=DagsterInstance.get(), asset_selection=selection, raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})


def prepare(args, home: Path) -> None:
    """Night 1 ingested and calibrated, night 2 ingested, the MLflow store created: what every timed run starts from."""
    from dagster import AssetKey

    use_home(home)
    started = time.perf_counter()
    for night, assets in ((NIGHTS[0], ["raw_observations", "calibrated_frames"]), (NIGHTS[1], ["raw_observations"])):
        result = run(args, night, [AssetKey(name) for name in assets], workers=args.prepare_workers)
        assert result.success, f"preparing {night} failed"
    from mlflow import MlflowClient

    from astrid_assets import settings

    MlflowClient(settings.mlflow_tracking_uri()).search_experiments()
    print(f"prepared {args.frames} frames of {args.size}² a night in {time.perf_counter() - started:.0f} s")


class MemorySampler:
    """Peak resident memory (bytes) of this process and of each of its descendants, sampled every ``interval`` s."""

    def __init__(self, interval: float = 0.2):
        import psutil

        self.me = psutil.Process()
        self.interval = interval
        self.peaks: dict[int, tuple[str, int]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def sample(self) -> None:
        import psutil

        while not self.stop.is_set():
            for process in [self.me, *self.me.children(recursive=True)]:
                try:
                    rss = process.memory_info().rss
                    kind = "run" if process.pid == self.me.pid else (
                        "worker" if "spawn_main" in " ".join(process.cmdline()) else "other")
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                if rss > self.peaks.get(process.pid, ("", 0))[1]:
                    self.peaks[process.pid] = (kind, rss)
            self.stop.wait(self.interval)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def timed(args, prepared: Path, workers: int, scratch: Path, index: int = 0) -> dict:
    from dagster import AssetKey

    home = scratch / f"run{index}-workers{workers}"  # a count may be repeated: --workers 1 2 2
    shutil.copytree(prepared, home)
    use_home(home)
    _, keys = job(args)
    selection = [key for key in keys if key != AssetKey("raw_observations")]
    load_before = os.getloadavg()
    with MemorySampler() as memory:
        started = time.perf_counter()
        result = run(args, NIGHTS[1], selection, workers)
        wall = time.perf_counter() - started
    load_after = os.getloadavg()
    from dagster import DagsterInstance

    steps = {stats.step_key: round(stats.end_time - stats.start_time, 1)
             for stats in DagsterInstance.get().get_run_step_stats(result.run_id)
             if stats.end_time and stats.start_time}
    failures = [event.message for event in result.all_events if event.is_failure]
    from astrid_assets.io.tables import read_nights

    calibrated = read_nights("calibrated_frames", [NIGHTS[1]])
    differences = read_nights("difference_images", [NIGHTS[1]])
    workers_peak = [rss for kind, rss in memory.peaks.values() if kind == "worker"]
    report = {
        "workers": workers, "success": result.success, "failures": failures, "wall_s": round(wall, 1),
        "frames": len(calibrated), "frames_differenced": int((differences.status == "ok").sum()),
        "frames_per_hour": round(len(calibrated) / wall * 3600, 1), "steps_s": steps,
        "peak_worker_rss_gb": round(max(workers_peak) / 1e9, 3) if workers_peak else None,
        "worker_processes": len(workers_peak),
        "peak_run_process_rss_gb": round(max(rss for kind, rss in memory.peaks.values() if kind == "run") / 1e9, 3),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
    }
    print(json.dumps(report))
    shutil.rmtree(home, ignore_errors=True)  # GBs of objects; a count may be run again
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--frames", type=int, default=32, help="science frames a night (spread over --fields)")
    parser.add_argument("--fields", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts, one run each, in "
                        "this order (repeat a count to see the spread: 1 2 2)")
    parser.add_argument("--prepare-workers", type=int, default=2)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks/results/scale.json")
    parser.add_argument("--prepared", type=Path, help="a prepared home of an earlier run with the same survey options "
                        "(prepared there, and kept, when it does not exist yet)")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="astrid-scale-"))
    try:
        prepared = args.prepared or scratch / "prepared"
        if not prepared.exists():
            prepare(args, prepared)
        runs = [timed(args, prepared, workers, scratch, index) for index, workers in enumerate(args.workers)]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    base = runs[0]["wall_s"]
    for entry in runs:
        entry["speed_up_vs_first"] = round(base / entry["wall_s"], 2)
    report = {"size": args.size, "frames_per_night": args.frames, "fields": args.fields, "cores": os.cpu_count(),
              "affinity_cores": len(os.sched_getaffinity(0)), "runs": runs}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    print(f"{'workers':>7} {'wall s':>8} {'frames/h':>9} {'speed-up':>8} {'worker GB':>9} {'load before/after':>20}")
    for e in runs:
        print(f"{e['workers']:>7} {e['wall_s']:>8} {e['frames_per_hour']:>9} {e['speed_up_vs_first']:>8} "
              f"{e['peak_worker_rss_gb']!s:>9} {e['load_average_before'][0]:>9} / {e['load_average_after'][0]}")


if __name__ == "__main__":
    main()
