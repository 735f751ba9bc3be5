"""The ``astrid`` command: run the nightly chain, label candidates, train and roll back models, check backends.

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

    if not settings.dagster_home():
        home = settings.astrid_home() / "dagster"
        home.mkdir(parents=True, exist_ok=True)
        config = home / "dagster.yaml"
        if not config.exists():
            config.write_text("telemetry:\n  enabled: false\n")
        os.environ["DAGSTER_HOME"] = str(home)  # for DagsterInstance.get() here and in the runs it launches
    return DagsterInstance.get()


#: Console logs at INFO: step progress and warnings, without Dagster's DEBUG event stream.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def run_nightly(nights: list[str], asset_selection=None):
    """Execute ``nightly_pipeline`` for the window of nights in one run; its execution result."""
    from astrid_assets.definitions import defs
    from astrid_assets.partitions import night_range_tags

    print(f"astrid: processing nights {nights[0]} … {nights[-1]} in one run ...", flush=True)
    return defs.resolve_job_def("nightly_pipeline").execute_in_process(
        instance=embedded_instance(), raise_on_error=False, run_config=QUIET_RUN_CONFIG,
        tags=night_range_tags(nights[0], nights[-1]), asset_selection=asset_selection)


def injection_completeness(result, night: str) -> str:
    """Completeness at S/N ≥ 10 of the night from the run's injection–recovery check, as printed text."""
    for evaluation in result.get_asset_check_evaluations():
        by_night = evaluation.metadata.get("completeness_by_night")
        if evaluation.check_name == "injection_recovery" and by_night is not None and night in by_night.value:
            return f"{by_night.value[night]:6.0%}"
    return "     -"


def not_differenced(differences) -> str:
    """``"  not differenced: no_reference 3, unusable 1"`` for a night's frames that were not differenced."""
    skipped = differences[differences.status != "ok"]
    if skipped.empty:
        return ""
    counts = skipped.reason.fillna("other").value_counts()
    return "  not differenced: " + ", ".join(f"{reason} {count}" for reason, count in counts.items())


def run_failed_nights(result) -> dict[str, str]:
    """Night → why, for the nights of the run that a gate failed (and the steps downstream skipped)."""
    from astrid_assets.defs.nightly import failed_nights

    return failed_nights(event.step_materialization_data.materialization
                         for event in result.get_asset_materialization_events())


def print_summary(nights: list[str], result) -> None:
    from astrid_assets import settings
    from astrid_assets.io.tables import read_nights

    raw, calibrated = read_nights("raw_observations", nights), read_nights("calibrated_frames", nights)
    references, differences = read_nights("reference_images", nights), read_nights("difference_images", nights)
    candidates = read_nights("candidate_detections", nights)
    print("\nnight       frames quarant. calib. usable FWHM\" depth  refs diffs cands clean inj.S/N>=10")
    for night in nights:
        r, c = raw[raw.night == night], calibrated[calibrated.night == night]
        ok = c[c.status == "ok"]
        found = candidates[candidates.night == night]
        print(
            f"{night} {int((r.status == 'ok').sum()):6d} {int((r.status == 'quarantined').sum()):8d}"
            f" {len(ok):6d} {int(ok.usable.sum()):6d} {ok.fwhm_arcsec.median():5.2f} {ok.depth_mag.median():6.2f}"
            f" {int(((references.night == night) & (references.status == 'ok')).sum()):5d}"
            f" {int(((differences.night == night) & (differences.status == 'ok')).sum()):5d}"
            f" {len(found):5d} {int((found['flags'] == 0).sum()):5d} {injection_completeness(result, night):>11}"
            + not_differenced(differences[differences.night == night])
        )
    failed = run_failed_nights(result)
    if failed:
        print(f"\n{len(nights) - len(failed)} of {len(nights)} nights processed; {len(failed)} failed"
              " (the steps after the failure skipped them, keeping what they had stored):")
        for night, why in failed.items():
            print(f"  {night}: {why}")
    print(
        "\n(refs: fields with a reference; diffs: frames differenced with ZOGY; cands: |S_corr| >= 5;"
        " clean: unflagged; inj.: injection-recovery completeness at S/N >= 10)"
        f"\nTables: {settings.redact_url(settings.database_url())}"
        f"\nImages: {settings.redact_url(settings.object_store_url())}"
        f"\nDagster UI: DAGSTER_HOME={settings.dagster_home()} .venv/bin/dagster dev"
        " -m astrid_assets.definitions   then open http://127.0.0.1:3000"
        " (Assets → Global asset lineage; each asset has its partitions and Materialize buttons)"
    )


def train_version(version: str, night_start: str, night_end: str, training: dict, source: str = "labels") -> dict:
    """Add ``version`` to both dynamic partitions, build its dataset from ``source`` (labels, injections
    or mixed: :class:`~astrid_assets.defs.datasets.DatasetConfig`), then train its model."""
    from astrid_assets.definitions import defs

    instance = embedded_instance()
    for partitions in ("dataset_versions", "model_versions"):
        instance.add_dynamic_partitions(partitions, [version])
    outcomes = {}
    for job, asset, config in [("build_training_dataset", "training_datasets",
                                {"night_start": night_start, "night_end": night_end, "source": source}),
                               ("train_unet", "unet_models", training)]:
        print(f"astrid: {job} {version} ...", flush=True)
        outcomes[job] = defs.resolve_job_def(job).execute_in_process(
            partition_key=version, instance=instance, raise_on_error=False,
            run_config={**QUIET_RUN_CONFIG, "ops": {asset: {"config": config}}})
        if not outcomes[job].success:
            break
    return outcomes


def run_learning_loop(nights: list[str], version: str, epochs: int) -> dict:
    """Simulated curation, a dataset and a model version, then the nights re-scored by the champion."""
    from dagster import AssetKey

    curate_nights(nights[0], nights[-1], fraction=1.0, error_rate=0.02, seed=0)
    outcomes = train_version(version, nights[0], nights[-1], {"epochs": epochs})
    if not all(result.success for result in outcomes.values()):
        return outcomes
    print("astrid: scoring the nights with the champion ...", flush=True)
    outcomes["scoring"] = run_nightly(nights, asset_selection=[AssetKey("scored_detections")])
    return outcomes


def add_train_parser(commands) -> None:
    parser = commands.add_parser("train", help="build a dataset version (from labels, injections or both) and train "
                                               "a U-Net version on it")
    parser.add_argument("--version", required=True, help="dataset and model version key, e.g. v2")
    parser.add_argument("--start", required=True, help="first night of the window")
    parser.add_argument("--end", required=True, help="last night of the window")
    parser.add_argument("--source", choices=["labels", "injections", "mixed"], default="labels",
                        help="labels: people's labels; injections: fakes injected into the window's frames are real, "
                             "their untouched detections bogus (no labels needed); mixed: both")
    parser.add_argument("--epochs", type=int, default=30)
    parser.set_defaults(handler=train)


def train(args: argparse.Namespace) -> int:
    outcomes = train_version(args.version, args.start, args.end, {"epochs": args.epochs}, args.source)
    print_learning_summary(outcomes, night_window(args.start, args.end))
    return 0 if all(result.success for result in outcomes.values()) else 1


def print_learning_summary(outcomes: dict, nights: list[str]) -> None:
    from astrid_assets import settings
    from astrid_assets.io.tables import read_nights
    from astrid_assets.labels import latest_labels
    from astrid_assets.ml.metrics import DEFAULT_THRESHOLD

    labels = latest_labels(settings.database_url(), nights)
    print(f"\nhuman labels in the window: {int((labels.label == 'real').sum())} real, "
          f"{int((labels.label == 'bogus').sum())} bogus")
    train = outcomes.get("train_unet")
    if train is None or not train.success:
        print("astrid: training did not complete; see the run in the Dagster UI")
        return
    model = {k: v.value for k, v in train.asset_materializations_for_node("unet_models")[0].metadata.items()}
    print(f"model: astrid-unet v{model['registry_version']}  test ROC AUC {model['test_roc_auc']:.3f}"
          f"  frozen-set ROC AUC {model['frozen_roc_auc']:.3f}  best epoch {model['best_epoch']}"
          f"\npromotion: {'champion' if model['promoted'] else 'challenger only'} — {model['decision']}")
    scored = read_nights("scored_detections", nights)
    real = scored.real if "real" in scored else scored.real_probability >= DEFAULT_THRESHOLD
    print(f"scored: {scored.real_probability.notna().sum()} candidates over {len(nights)} nights,"
          f" {int(real.fillna(False).astype(bool).sum())} called real at the model's operating threshold"
          f" ({model.get('operating_threshold', DEFAULT_THRESHOLD):.3f})")
    print(f"MLflow: {settings.redact_url(settings.mlflow_tracking_uri())}  (.venv/bin/mlflow ui --backend-store-uri"
          f" {settings.mlflow_tracking_uri()}; experiment astrid-unet, run unet_<version>; model astrid-unet)")


def add_demo_parser(commands) -> None:
    from astrid_assets.surveys.simulated import DEMO_NIGHTS

    parser = commands.add_parser("demo", help="run the nightly pipeline for a window of nights on the embedded default")
    parser.add_argument("--start", default=DEMO_NIGHTS[0], help="first night, YYYY-MM-DD (UTC)")
    parser.add_argument("--end", default=DEMO_NIGHTS[1], help="last night, YYYY-MM-DD (UTC)")
    parser.add_argument("--epochs", type=int, default=20, help="maximum training epochs of the demo model")
    parser.add_argument("--skip-training", action="store_true", help="stop after the nightly pipeline")
    parser.set_defaults(handler=demo)


def demo(args: argparse.Namespace) -> int:
    nights = night_window(args.start, args.end)
    results = {"nightly_pipeline": run_nightly(nights)}
    print_summary(nights, results["nightly_pipeline"])
    if not args.skip_training:
        learning = run_learning_loop(nights, f"demo-{args.end}", args.epochs)
        print_learning_summary(learning, nights)
        results.update(learning)
    failed = [name for name, result in results.items() if not result.success]
    if failed:
        print(f"astrid: runs failed for {', '.join(failed)}; see the run logs in the Dagster UI", file=sys.stderr)
        return 1
    return 0


def add_label_parser(commands) -> None:
    parser = commands.add_parser("label", help="label one candidate real, bogus or unsure")
    parser.add_argument("candidate_id")
    parser.add_argument("label", help="real | bogus | unsure")
    parser.add_argument("--by", required=True, help="who is labelling")
    parser.add_argument("--note")
    parser.set_defaults(handler=label)


def label(args: argparse.Namespace) -> int:
    import pandas as pd

    from astrid_assets import settings
    from astrid_assets.labels import LabelError, record_labels

    try:
        record_labels(settings.database_url(), pd.DataFrame([{
            "candidate_id": args.candidate_id, "label": args.label, "labeller": args.by, "note": args.note}]))
    except LabelError as error:
        print(f"astrid label: {error}", file=sys.stderr)
        return 2
    print(f"{args.candidate_id}: {args.label} (by {args.by})")
    return 0


def add_import_labels_parser(commands) -> None:
    parser = commands.add_parser("import-labels", help="record labels from a CSV (candidate_id,label[,labeller,note])")
    parser.add_argument("csv")
    parser.add_argument("--by", help="labeller for rows without one")
    parser.set_defaults(handler=import_labels)


def import_labels(args: argparse.Namespace) -> int:
    from astrid_assets import settings
    from astrid_assets.labels import LabelError, read_csv_labels, record_labels

    try:
        count = record_labels(settings.database_url(), read_csv_labels(args.csv, args.by))
    except (LabelError, OSError) as error:
        print(f"astrid import-labels: {error}", file=sys.stderr)
        return 2
    print(f"recorded {count} labels from {args.csv}")
    return 0


def add_candidates_parser(commands) -> None:
    parser = commands.add_parser("candidates", help="list a night's unlabelled candidates, highest rule score first")
    parser.add_argument("--night", required=True, help="YYYY-MM-DD")
    parser.set_defaults(handler=candidates)


def candidates(args: argparse.Namespace) -> int:
    from astrid_assets import settings
    from astrid_assets.labels import unlabelled_candidates

    table = unlabelled_candidates(settings.database_url(), args.night)
    columns = ["candidate_id", "ra", "dec", "sign", "snr", "rule_score", "flags"]
    print(table[columns].round(5).to_string(index=False) if len(table) else f"no unlabelled candidates on {args.night}")
    return 0


def add_curate_parser(commands) -> None:
    parser = commands.add_parser("curate", help="simulated curator: label candidates of simulated nights from truth")
    parser.add_argument("--start", required=True)
    parser.add_argument("--end", required=True)
    parser.add_argument("--fraction", type=float, default=1.0, help="fraction of candidates labelled")
    parser.add_argument("--error-rate", type=float, default=0.02, help="probability a label is wrong")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(handler=curate)


def curate(args: argparse.Namespace) -> int:
    curate_nights(args.start, args.end, fraction=args.fraction, error_rate=args.error_rate, seed=args.seed)
    return 0


def curate_nights(start: str, end: str, *, fraction: float = 1.0, error_rate: float = 0.02, seed: int = 0) -> int:
    """Label the candidates of the simulated nights ``start`` … ``end`` from their truth; the number labelled."""
    import numpy as np

    from astrid_assets import settings
    from astrid_assets.io.object_store import open_object_store
    from astrid_assets.io.tables import read_nights
    from astrid_assets.labels import record_labels, simulated_curation, unlabelled_candidates
    from astrid_assets.surveys.simulated import night_truth

    store, url, total = open_object_store(settings.object_store_url()), settings.database_url(), 0
    for night in night_window(start, end):
        truth = night_truth(read_nights("raw_observations", [night]), store)
        labels = simulated_curation(unlabelled_candidates(url, night), truth, fraction, error_rate,
                                    np.random.default_rng([seed, *map(int, night.split("-"))]))
        total += record_labels(url, labels) if len(labels) else 0
    print(f"simulated curator labelled {total} candidates")
    return total


def add_rerun_parser(commands) -> None:
    parser = commands.add_parser("rerun", help="rebuild a model version from its manifest (CPU, deterministic)"
                                 " and compare its test metrics with the recorded ones")
    parser.add_argument("--version", required=True)
    parser.set_defaults(handler=rerun)


def rerun(args: argparse.Namespace) -> int:
    from astrid_assets import settings
    from astrid_assets.io.object_store import open_object_store
    from astrid_assets.ml.rerun import rerun_from_manifest

    outcome = rerun_from_manifest(args.version, open_object_store(settings.object_store_url()), settings.database_url())
    same = all(abs(outcome["recorded"][k] - outcome["rebuilt"][k]) <= 1e-9 for k in outcome["recorded"])
    for key in outcome["recorded"]:
        print(f"{key}: recorded {outcome['recorded'][key]:.6f}  rebuilt {outcome['rebuilt'][key]:.6f}")
    print(f"model {args.version}: {'reproduced' if same else 'NOT reproduced'} from its manifest"
          f" (git {outcome['manifest'].get('git_commit')}, params {outcome['manifest'].get('params_hash', '')[:12]})")
    return 0 if same else 1


def add_rollback_parser(commands) -> None:
    parser = commands.add_parser("rollback", help="give a champion alias back to the version it replaced")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--instrument", help="roll back this instrument's champion-<slug> (its key as in "
                                            "raw_observations.instrument, or its slug); default: the plain champion")
    which.add_argument("--alias", help="roll back this alias (champion or champion-<slug>)")
    parser.set_defaults(handler=rollback)


def rollback(args: argparse.Namespace) -> int:
    from astrid_assets.ml.champions import CHAMPION, champion_alias
    from astrid_assets.resources import ModelRegistryResource
    from astrid_assets.resources.mlflow_registry import MODEL_NAME
    from astrid_assets.resources.mlflow_registry import rollback as rollback_champion

    alias = getattr(args, "alias", None) or champion_alias(getattr(args, "instrument", None))
    if not alias.startswith(CHAMPION):
        print(f"astrid rollback: {alias!r} is not a champion alias (champion or champion-<slug>)", file=sys.stderr)
        return 2
    try:
        was, now = rollback_champion(ModelRegistryResource().client(), alias)
    except ValueError as error:
        print(f"astrid rollback: {error}", file=sys.stderr)
        return 2
    print(f"{MODEL_NAME}: {alias} moved back from v{was} to v{now}")
    return 0


def add_trigger_parser(commands) -> None:
    from astrid_assets import settings

    parser = commands.add_parser("trigger", help="launch a night or a window of nights on a running deployment"
                                 " (its webserver's GraphQL API) and wait for it")
    parser.add_argument("--url", default=settings.dagster_url(),
                        help="Dagster webserver (default $ASTRID_DAGSTER_URL or http://127.0.0.1:3000)")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--night", help="one night, YYYY-MM-DD: a run of nightly_pipeline")
    which.add_argument("--start", help="first night of a window: a backfill of the nightly assets")
    parser.add_argument("--end", help="last night of the window (default: --start)")
    parser.add_argument("--no-wait", action="store_true", help="return once launched")
    parser.add_argument("--timeout", type=float, default=6 * 3600, help="seconds to wait at most")
    parser.set_defaults(handler=trigger)


def trigger(args: argparse.Namespace) -> int:
    from astrid_assets.cli.trigger import TriggerError, trigger_night, trigger_window

    end = args.end or args.start  # a window of one night when --end is not given
    try:
        if args.night:
            print(f"astrid trigger: night {args.night} …", flush=True)
            run_id = trigger_night(args.url, args.night, wait=not args.no_wait, timeout_s=args.timeout)
            print(f"run {run_id} {'launched' if args.no_wait else 'succeeded'}: {args.url.rstrip('/')}/runs/{run_id}")
        else:
            night_window(args.start, end)  # refuses a window that ends before it starts
            print(f"astrid trigger: nights {args.start} … {end} …", flush=True)
            backfill = trigger_window(args.url, args.start, end, wait=not args.no_wait, timeout_s=args.timeout)
            print(f"backfill {backfill} {'launched' if args.no_wait else 'succeeded'}: "
                  f"{args.url.rstrip('/')}/runs/b/{backfill}")
    except (TriggerError, OSError) as error:
        print(f"astrid trigger: {error}", file=sys.stderr)
        return 1
    return 0


#: Builders of the subcommands, in the order ``astrid --help`` lists them (``doctor`` comes last).
COMMANDS = (add_demo_parser, add_label_parser, add_import_labels_parser, add_candidates_parser, add_curate_parser,
            add_train_parser, add_rerun_parser, add_rollback_parser, add_trigger_parser)


def build_parser() -> argparse.ArgumentParser:
    # `astrid export`, `astrid objects`: the object catalogue; `astrid doctor [--migrate]`: every configured backend
    from astrid_assets.cli import catalogue, doctor
    from astrid_assets.review import cli as review  # `astrid review`, `astrid person`: the scanning page

    parser = argparse.ArgumentParser(prog="astrid", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for add_parser in (*COMMANDS, catalogue.add_parsers, review.add_parsers, doctor.add_parser):
        add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)
