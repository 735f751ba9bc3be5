"""Benchmark of Dagster's orchestration overhead: a backfill of the nightly chain against a plain Python loop.

Usage::

    .venv/bin/python benchmarks/bench_orchestration.py                  # 30 nights from 2024-01-01
    .venv/bin/python benchmarks/bench_orchestration.py --nights 3 --output /tmp/orchestration.json
    .venv/bin/python benchmarks/bench_orchestration.py --nights 10 --fields F01 --frames-per-night 2 --in-process

The same science run is done twice (three times with ``--in-process``), each on the embedded
default in its own fresh temporary folders (``ASTRID_HOME``: SQLite tables and a local object
folder; ``DAGSTER_HOME``: a SQLite instance with telemetry off; no ``ASTRID_DATABASE_URL``,
``ASTRID_OBJECT_STORE`` or ``MLFLOW_TRACKING_URI``):

* **dagster (CLI)** — the backfill of ``--nights`` nights as the assets' ``BackfillPolicy.single_run()``
  makes it: **one** run over the partition range, started the way a user would::

      dagster asset materialize -m astrid_assets.definitions \\
          --select raw_observations,calibrated_frames,...,scored_detections --partition-range A...B

  It runs on the executor AstrID's definitions choose (``in_process_executor``: the steps of the
  chain run one after another in the run's process). Tables go through the table IO manager (one
  transaction per step over the range, inputs read back from the database), run and step events to the instance's SQLite
  storage, the data-quality checks run in their steps.
* **dagster (in-process)**, with ``--in-process`` — the same run from a Python process calling
  ``defs.resolve_job_def("nightly_pipeline").execute_in_process(tags=<partition-range tags>)``
  (as ``astrid demo`` does): one process, no step subprocesses.
* **plain loop** — a Python process that calls the per-night science functions the assets call,
  in the order a single-run backfill runs them: every night of ``ingest_night``, then every night
  of ``calibrate_night``, ``references_night``, ``difference_night``, then ``detect_night`` with
  ``inject_night`` and the injection check, then the scoring pass-through (``load_champion`` finds no
  champion; the candidates are kept unscored, as ``scored_detections`` does). The nights of a step
  are joined by ``run_nights``, the loop ``for_each_night`` runs in the assets; the per-night functions
  log through a context from Dagster's ``build_asset_context()``. Each step's data-quality
  checks run as well (the same functions the assets yield from), and its rows are written as the
  IO manager writes them: one transaction per step that creates the table if needed, deletes the
  range's nights and inserts the rows with ``astrid_assets.io.tables.write_rows`` (the IO manager's
  own insert; ``astrid_assets.io.schema`` tables). Tables are passed between steps in memory;
  ``references_night`` reads the earlier nights' calibrated frames back from the database as in Dagster.

Every side is timed by wall clock **from this process around a subprocess** — a fresh interpreter,
so imports, process start and (for the CLI) code-location loading are included on every side. A
warm-up import runs first, untimed, so no side pays for a cold file cache. The ratio is
dagster (CLI) ÷ plain loop; the target is ≤ 1.5×. Both sides must produce the same rows: the
row count of every table for every night is compared, and a difference fails the benchmark. The
object-store keys (content-hashed for most objects) are compared too.

Also reported: each side's own breakdown (imports; per-step seconds of the plain loop; Dagster's
step durations from the run's step stats) and, per side, the seconds inside the six steps and
outside them (interpreter start, imports, code loading, run and step-process start): the outside
part is the fixed cost, less at the mercy of the machine's load than the science inside the steps.
For a small ``--nights`` the fixed cost dominates the ratio; it shrinks as the nights add science.
Results go to ``benchmarks/results/orchestration.json``. The machine's load average is recorded:
on a shared machine other processes slow every figure down.

The science is most of the time: about a minute per night of the default survey on one busy core,
so the default 30 nights take an hour or more for the two sides. Dagster 1.13 prints a
``SupersessionWarning`` for ``dagster asset materialize`` (it points to ``dg launch --assets``,
which is not installed here); the command still works and is what is timed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "orchestration.json"
NIGHTLY_ASSETS = [
    "raw_observations", "calibrated_frames", "reference_images", "difference_images", "candidate_detections",
    "scored_detections",
]
#: Variables that would point a side away from the embedded default (or at another side's state).
DEPLOYMENT_VARIABLES = [
    "ASTRID_DATABASE_URL", "ASTRID_OBJECT_STORE", "ASTRID_FITS_DROP", "MLFLOW_TRACKING_URI", "DAGSTER_HOME",
    "AWS_ENDPOINT_URL_S3",
]


def night_list(start: str, count: int) -> list[str]:
    first = date.fromisoformat(start)
    return [(first + timedelta(days=n)).isoformat() for n in range(count)]


# --------------------------------------------------------------------------------------------- workers
# Run in a fresh interpreter (``--worker``): they import what they need and write a JSON report.


def write_table(name: str, table, nights: list[str]) -> None:
    """``table``'s rows replace the nights of the run, as the table IO manager writes a single-run backfill."""
    from astrid_assets import settings
    from astrid_assets.io.schema import metadata, table_for
    from astrid_assets.io.tables import connect_with_retry, write_rows

    declared = table_for(name)
    with connect_with_retry(settings.database_url()) as connection, connection.begin():
        metadata.create_all(connection, tables=[declared])
        connection.execute(declared.delete().where(declared.c.night >= nights[0], declared.c.night <= nights[-1]))
        write_rows(connection, declared, table)


def plain_worker(nights: list[str], survey: dict) -> dict:
    """The nightly chain over ``nights`` in a plain loop; per-step seconds."""
    started = time.perf_counter()
    import logging

    import pandas as pd
    from dagster import build_asset_context

    from astrid_assets.defs.calibration import calibrate_night
    from astrid_assets.defs.detection import DetectionConfig, detect_night, inject_night, injection_check
    from astrid_assets.defs.differencing import (
        DifferencingConfig,
        ReferenceConfig,
        difference_night,
        references_night,
    )
    from astrid_assets.defs.ingest import IngestConfig, ingest_night
    from astrid_assets.defs.nightly import night_rows, run_nights
    from astrid_assets.defs.quality_checks import (
        calibrated_frames_checks,
        candidate_detections_checks,
        difference_images_checks,
        raw_observations_checks,
        reference_images_checks,
        scored_detections_checks,
    )
    from astrid_assets.resources import (
        DatabaseResource,
        ModelRegistryResource,
        ObjectStoreResource,
        SimulatedSurveyResource,
    )

    import_s = time.perf_counter() - started
    # What the per-night functions log through: Dagster's public context for calling asset code outside a run
    # (it opens an ephemeral instance, ~0.6 s; made before logging is set up, so its migrations stay quiet).
    context = build_asset_context()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    store = ObjectStoreResource().open()
    database = DatabaseResource()
    steps: dict[str, float] = {}

    def step(name: str, night_fn, checks) -> pd.DataFrame:
        """``night_fn`` over every night, rows joined as ``for_each_night`` does, checks, then one write."""
        began = time.perf_counter()
        table, _metadata = run_nights(nights, night_fn)
        failed = [r.check_name for r in checks(nights, table) if not r.passed]
        if failed:
            context.log.warning(f"{name}: checks not passed: {', '.join(failed)}")
        write_table(name, table, nights)
        steps[name] = time.perf_counter() - began
        return table

    survey_resource = SimulatedSurveyResource(**survey)
    raw = step("raw_observations", lambda night: ingest_night(
        context, night, IngestConfig(), store, survey_resource), raw_observations_checks)
    calibrated = step("calibrated_frames", lambda night: calibrate_night(
        context, night, night_rows(raw, night), store), calibrated_frames_checks)
    references = step("reference_images", lambda night: references_night(
        context, night, ReferenceConfig(), night_rows(calibrated, night), store, database), reference_images_checks)
    differences = step("difference_images", lambda night: difference_night(
        context, night, DifferencingConfig(), night_rows(calibrated, night), night_rows(references, night), store,
    ), difference_images_checks)

    detection = DetectionConfig()
    injections = {}

    def detect(night: str):
        table, metadata, searched = detect_night(night, detection, night_rows(differences, night), store)
        injections[night] = inject_night(context, detection, searched, store, night)
        return table, metadata

    def detection_checks(run_nights, table):
        yield from candidate_detections_checks(run_nights, table)
        yield injection_check(detection, injections)

    candidates = step("candidate_detections", detect, detection_checks)

    began = time.perf_counter()
    model, _version = ModelRegistryResource().load_champion()
    if model is not None:
        raise RuntimeError("a champion model exists in a fresh ASTRID_HOME: the benchmark expects none")
    scored = candidates[["night", "candidate_id", "frame_id"]].copy()
    scored["real_probability"], scored["model_version"] = None, None
    list(scored_detections_checks(nights, scored))
    write_table("scored_detections", scored, nights)
    steps["scored_detections"] = time.perf_counter() - began
    return {"import_s": round(import_s, 3), "steps_s": {k: round(v, 3) for k, v in steps.items()},
            "total_s": round(time.perf_counter() - started, 3)}


def in_process_worker(nights: list[str], run_config: dict) -> dict:
    """``nightly_pipeline`` over ``nights`` in one run with ``execute_in_process``."""
    started = time.perf_counter()
    from dagster import DagsterInstance

    from astrid_assets.definitions import defs
    from astrid_assets.partitions import night_range_tags

    import_s = time.perf_counter() - started
    began = time.perf_counter()
    result = defs.resolve_job_def("nightly_pipeline").execute_in_process(
        instance=DagsterInstance.get(), tags=night_range_tags(nights[0], nights[-1]), run_config=run_config,
        raise_on_error=False)
    if not result.success:
        raise RuntimeError(f"nightly_pipeline run {result.run_id} failed")
    return {"import_s": round(import_s, 3), "execute_s": round(time.perf_counter() - began, 3),
            "total_s": round(time.perf_counter() - started, 3)}


def worker(args: argparse.Namespace) -> int:
    nights = night_list(args.start, args.nights)
    survey = json.loads(args.survey_json)
    if args.worker == "plain":
        report = plain_worker(nights, survey)
    else:
        report = in_process_worker(nights, run_config(survey))
    Path(args.report).write_text(json.dumps(report))
    return 0


# --------------------------------------------------------------------------------------------- driver


def run_config(survey: dict) -> dict:
    return {"resources": {"simulated_survey": {"config": survey}}} if survey else {}


def side_environment(home: Path) -> dict[str, str]:
    """The embedded default under ``home``: ``ASTRID_HOME`` and ``DAGSTER_HOME`` fresh, telemetry off."""
    env = {k: v for k, v in os.environ.items() if k not in DEPLOYMENT_VARIABLES}
    (home / "astrid").mkdir(parents=True)
    (home / "dagster").mkdir(parents=True)
    (home / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env.update(ASTRID_HOME=str(home / "astrid"), DAGSTER_HOME=str(home / "dagster"))
    return env


def side_command(side: str, args: argparse.Namespace, survey: dict, nights: list[str], report: Path) -> list[str]:
    if side == "dagster_cli":
        executable = Path(sys.executable).parent / "dagster"
        command = [str(executable)] if executable.exists() else [sys.executable, "-m", "dagster"]
        command += ["asset", "materialize", "-m", "astrid_assets.definitions", "--select", ",".join(NIGHTLY_ASSETS),
                    "--partition-range", f"{nights[0]}...{nights[-1]}"]
        return command + (["--config-json", json.dumps(run_config(survey))] if survey else [])
    return [sys.executable, str(Path(__file__).resolve()), "--worker", "plain" if side == "plain" else "in_process",
            "--start", args.start, "--nights", str(args.nights), "--survey-json", json.dumps(survey),
            "--report", str(report)]


def row_counts(database: Path) -> dict[str, dict[str, int]]:
    """Rows of every nightly table, by night."""
    counts: dict[str, dict[str, int]] = {}
    with sqlite3.connect(database) as connection:
        existing = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for table in NIGHTLY_ASSETS:
            if table in existing:
                counts[table] = dict(connection.execute(f"SELECT night, COUNT(*) FROM {table} GROUP BY night"))
            else:
                counts[table] = {}
    return counts


def object_keys(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def dagster_step_seconds(dagster_home: Path) -> dict:
    """Run and step durations recorded by the Dagster instance of a side (its one run)."""
    from dagster import DagsterInstance

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        runs = instance.get_runs()
        if len(runs) != 1:
            return {"note": f"{len(runs)} runs in the instance"}
        run_id = runs[0].run_id
        stats = instance.get_run_stats(run_id)
        steps = {s.step_key: round(s.end_time - s.start_time, 3) for s in instance.get_run_step_stats(run_id)
                 if s.start_time and s.end_time}
        return {"run_s": round(stats.end_time - stats.start_time, 3) if stats.start_time and stats.end_time else None,
                "steps_s": steps}


def run_side(side: str, args: argparse.Namespace, survey: dict, nights: list[str], scratch: Path) -> dict:
    home = scratch / side
    env = side_environment(home)
    report = home / "report.json"
    log = home / "output.log"
    command = side_command(side, args, survey, nights, report)
    print(f"{side}: {' '.join(command[:6])} ...", flush=True)
    with log.open("w") as output:
        started = time.perf_counter()
        completed = subprocess.run(command, env=env, cwd=REPO, stdout=output, stderr=subprocess.STDOUT, check=False)
        wall_s = time.perf_counter() - started
    if completed.returncode != 0:
        tail = log.read_text(errors="replace")[-6000:]
        raise SystemExit(f"{side} failed (exit {completed.returncode}); end of its output:\n{tail}")
    result = {"side": side, "wall_s": round(wall_s, 3),
              "counts": row_counts(home / "astrid" / "astrid.db"),
              "objects": object_keys(home / "astrid" / "objects")}
    if report.exists():
        result["breakdown"] = json.loads(report.read_text())
    if side.startswith("dagster"):
        result.setdefault("breakdown", {})["dagster"] = dagster_step_seconds(home / "dagster")
        steps = result["breakdown"]["dagster"].get("steps_s", {})
    else:
        steps = result["breakdown"]["steps_s"]
    # Seconds inside the six steps (science, checks, table writes; for Dagster also its input loads and
    # step events) and outside them (interpreter, imports, code loading, run and step process start).
    result["in_steps_s"] = round(sum(steps.values()), 3)
    result["outside_steps_s"] = round(wall_s - result["in_steps_s"], 3)
    if args.keep_logs:
        kept = args.output.parent / f"orchestration-{side}.log"
        kept.write_text(log.read_text(errors="replace"))
    print(f"{side}: {wall_s:.1f} s", flush=True)
    return result


def compare(results: list[dict]) -> list[str]:
    """Differences in rows per table and night between the sides (fatal), and in object keys (reported)."""
    reference, problems = results[0], []
    for other in results[1:]:
        for table in NIGHTLY_ASSETS:
            if reference["counts"][table] != other["counts"][table]:
                problems.append(f"{table}: {reference['side']} {reference['counts'][table]} "
                                f"≠ {other['side']} {other['counts'][table]}")
    return problems


def environment() -> dict:
    import dagster

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "dagster": dagster.__version__,
    }


def print_table(results: list[dict]) -> None:
    totals = {r["side"]: {t: sum(n.values()) for t, n in r["counts"].items()} for r in results}
    print(f"\n{'rows':22s}" + "".join(f"{r['side']:>20s}" for r in results))
    for table in NIGHTLY_ASSETS:
        print(f"{table:22s}" + "".join(f"{totals[r['side']][table]:>20d}" for r in results))
    print(f"{'objects':22s}" + "".join(f"{len(r['objects']):>20d}" for r in results))
    plain = next(r for r in results if r["side"] == "plain")
    print(f"\n{'side':22s} {'seconds':>10s} {'× plain':>10s} {'in steps':>10s} {'outside':>10s}")
    for entry in results:
        print(f"{entry['side']:22s} {entry['wall_s']:10.1f} {entry['wall_s'] / plain['wall_s']:10.2f}"
              f" {entry['in_steps_s']:10.1f} {entry['outside_steps_s']:10.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nights", type=int, default=30)
    parser.add_argument("--start", default="2024-01-01", help="first night (YYYY-MM-DD)")
    parser.add_argument("--fields", nargs="+", help="simulated survey fields (default: the resource's F01 F02)")
    parser.add_argument("--frames-per-night", type=int, help="science frames per field and night (default: 3)")
    parser.add_argument("--in-process", action="store_true",
                        help="also time nightly_pipeline with execute_in_process (one process, no step processes)")
    parser.add_argument("--target", type=float, default=1.5, help="largest acceptable dagster (CLI) ÷ plain ratio")
    parser.add_argument("--keep-logs", action="store_true", help="copy each side's output next to the JSON result")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--worker", choices=["plain", "in_process"], help=argparse.SUPPRESS)
    parser.add_argument("--survey-json", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)

    survey = {}
    if args.fields:
        survey["fields"] = args.fields
    if args.frames_per_night is not None:
        survey["frames_per_night"] = args.frames_per_night
    nights = night_list(args.start, args.nights)
    sides = ["dagster_cli", *(["dagster_in_process"] if args.in_process else []), "plain"]
    args.output.parent.mkdir(parents=True, exist_ok=True)

    print("warm-up import (untimed) ...", flush=True)
    subprocess.run([sys.executable, "-c", "import astrid_assets.definitions"], cwd=REPO, check=True,
                   capture_output=True)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="astrid-bench-orchestration-") as scratch:
        results = [run_side(side, args, survey, nights, Path(scratch)) for side in sides]

    problems = compare(results)
    print_table(results)
    cli, plain = results[0], results[-1]
    ratio = cli["wall_s"] / plain["wall_s"]
    keys = {r["side"]: set(r["objects"]) for r in results}
    same_objects = all(k == keys["plain"] for k in keys.values())
    print(f"\nobject keys identical on every side: {same_objects}")
    fixed_s = cli["outside_steps_s"] - plain["outside_steps_s"]
    print(f"fixed cost of the CLI run beyond the plain loop's (seconds outside the steps): {fixed_s:.1f} s")
    verdict = "met" if ratio <= args.target else "NOT met"
    print(f"dagster (CLI) ÷ plain: {ratio:.2f}× (target ≤ {args.target}×: {verdict})")
    report = {
        "environment": {**environment(), "load_average_before": [round(x, 2) for x in load_before]},
        "nights": args.nights,
        "first_night": nights[0],
        "last_night": nights[-1],
        "survey": survey or "default (SimulatedSurveyResource: fields F01, F02; 3 frames per night)",
        "ratio_cli_over_plain": round(ratio, 3),
        "fixed_overhead_cli_s": round(fixed_s, 3),
        "target": args.target,
        "target_met": ratio <= args.target,
        "rows_match": not problems,
        "object_keys_identical": same_objects,
        "results": [{**{k: v for k, v in r.items() if k != "objects"}, "objects": len(r["objects"])}
                    for r in results],
    }
    if args.in_process:
        report["ratio_in_process_over_plain"] = round(results[1]["wall_s"] / plain["wall_s"], 3)
    args.output.write_text(json.dumps(report, indent=2))
    print(f"\nwritten to {args.output}")
    if problems:
        print("\nROW COUNTS DIFFER between the sides:\n" + "\n".join(problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
