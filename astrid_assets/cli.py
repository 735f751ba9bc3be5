"""The ``astrid`` command: run the main job on the embedded default, and (later) label candidates.

``astrid demo`` runs ``nightly_pipeline`` for a window of nights in-process, on a Dagster instance
under ``$ASTRID_HOME/dagster`` (so the runs appear in ``dagster dev`` afterwards), and prints what
was produced.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import date, timedelta


def night_window(start: str, end: str) -> list[str]:
    """Every night from ``start`` to ``end`` inclusive (``YYYY-MM-DD``)."""
    first, last = date.fromisoformat(start), date.fromisoformat(end)
    if last < first:
        raise SystemExit(f"astrid: the window ends ({end}) before it starts ({start})")
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


def embedded_instance():
    """The Dagster instance: ``$DAGSTER_HOME`` if set, else SQLite under ``$ASTRID_HOME/dagster``."""
    from dagster import DagsterInstance

    from astrid_assets import settings

    if not os.environ.get("DAGSTER_HOME"):
        home = settings.astrid_home() / "dagster"
        home.mkdir(parents=True, exist_ok=True)
        config = home / "dagster.yaml"
        if not config.exists():
            config.write_text("telemetry:\n  enabled: false\n")
        os.environ["DAGSTER_HOME"] = str(home)
    return DagsterInstance.get()


#: Console logs at INFO: step progress and warnings, without Dagster's DEBUG event stream.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def run_nightly(nights: list[str]) -> list[tuple[str, bool]]:
    """Execute ``nightly_pipeline`` for each night; (night, success) pairs."""
    from astrid_assets.definitions import defs

    instance = embedded_instance()
    job = defs.resolve_job_def("nightly_pipeline")
    outcomes = []
    for night in nights:
        print(f"astrid: processing night {night} ...", flush=True)
        result = job.execute_in_process(
            partition_key=night, instance=instance, raise_on_error=False, run_config=QUIET_RUN_CONFIG
        )
        outcomes.append((night, result.success))
    return outcomes


def print_summary(nights: list[str]) -> None:
    from astrid_assets import settings
    from astrid_assets.io.tables import read_nights

    raw = read_nights("raw_observations", nights)
    calibrated = read_nights("calibrated_frames", nights)
    print("\nnight        frames  science  quarantined  calibrated  usable  FWHM\"  depth(5σ)")
    for night in nights:
        r, c = raw[raw.night == night], calibrated[calibrated.night == night]
        ok = c[c.status == "ok"]
        print(
            f"{night}  {int((r.status == 'ok').sum()):6d}  {int((r.imagetyp == 'object').sum()):7d}"
            f"  {int((r.status == 'quarantined').sum()):11d}  {len(ok):10d}  {int(ok.usable.sum()):6d}"
            f"  {ok.fwhm_arcsec.median():5.2f}  {ok.depth_mag.median():9.2f}"
        )
    print(
        f"\nTables: {settings.redact_url(settings.database_url())}"
        f"\nImages: {settings.redact_url(settings.object_store_url())}"
        f"\nDagster UI: DAGSTER_HOME={os.environ['DAGSTER_HOME']} .venv/bin/dagster dev"
        " -m astrid_assets.definitions   then open http://127.0.0.1:3000"
        " (Assets → Global asset lineage; each asset has its partitions and Materialize buttons)"
    )


def demo(args: argparse.Namespace) -> int:
    nights = night_window(args.start, args.end)
    outcomes = run_nightly(nights)
    print_summary(nights)
    failed = [night for night, ok in outcomes if not ok]
    if failed:
        print(f"astrid: runs failed for {', '.join(failed)}; see the run logs in the Dagster UI", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="astrid", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("demo", help="run the nightly pipeline for a window of nights on the embedded default")
    run.add_argument("--start", default="2024-01-01", help="first night, YYYY-MM-DD (UTC)")
    run.add_argument("--end", default="2024-01-03", help="last night, YYYY-MM-DD (UTC)")
    run.set_defaults(handler=demo)
    from astrid_assets import doctor  # `astrid doctor [--migrate]`: check every configured backend

    doctor.add_parser(commands)
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
