"""Injection training sets: how fast they are built, and how well a model trained on them alone vets real candidates.

One survey per invocation, in its own ``ASTRID_HOME`` under ``--root``:

* ``--survey skygen``: an independent synthetic sky (:mod:`astrid_assets.testing.skygen`, which shares
  nothing with the simulator) written as a FITS drop folder; truth from the generator
  (:func:`astrid_assets.testing.matrix.candidate_truth`): a candidate is real when a transient's change
  of its sign lies under it, with that change's true difference S/N;
* ``--survey demo``: the built-in simulated survey (``astrid demo``'s nights), truth from the simulator
  (its curator at zero error rate); the S/N of a real candidate is its measured S/N.

Steps: the nightly chain; ``training_datasets`` with ``source: injections`` (timed: the figure of
issue 13 is 5,000 examples from 10 nights in ≤ 10 minutes); a U-Net trained on that set alone; the
operating threshold chosen on the validation split (``--completeness`` of injected fakes with S/N ≥ 6
kept); then, on every candidate of the nights the model did not train on (the test split's nights),
against the truth: ROC AUC of real vs everything else, the share of real S/N ≥ 6 transients kept and of
bogus candidates rejected at the threshold. ``--foreign`` also scores those candidates with a model saved
by a run on the other survey. Results: ``<root>/result.json``; the model: ``<root>/model.pt``.

Run::

    .venv/bin/python benchmarks/bench_injection_training.py --survey skygen --root /tmp/inj-skygen
    .venv/bin/python benchmarks/bench_injection_training.py --survey demo --root /tmp/inj-demo \\
        --foreign /tmp/inj-skygen/model.pt
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import pandas as pd


def set_home(root: Path) -> None:
    home = root / "home"
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    (home / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    os.environ.update({"ASTRID_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")})


def skygen_truth(root: Path, nights: int, frames: int, reuse: bool = False) -> tuple[pd.DataFrame, float]:
    """Write and run the skygen survey; its candidates with ``real`` and ``truth_snr``, and the chain's seconds."""
    from dagster import DagsterInstance

    from astrid_assets.testing import matrix, skygen
    from astrid_assets.testing.chain import run_chain

    cell = skygen.Cell("injection-bench", psf="moffat", beta=3.0, fwhm=2.8, state="raw", n_nights=nights,
                       frames_per_night=frames, first_night="2016-09-01", seed=7)
    last = (pd.Timestamp(cell.first_night) + pd.Timedelta(days=nights - 1)).date().isoformat()
    started = time.perf_counter()
    if reuse and (root / "truth.csv").exists():  # the chain ran before in this root: read its tables back
        from astrid_assets.io.tables import read_nights
        from astrid_assets.testing.chain import CHAIN, ChainRun

        truth = pd.read_csv(root / "truth.csv")
        night_keys = [str(day.date()) for day in pd.date_range(cell.first_night, last, freq="D")]
        run = ChainRun(True, {name: read_nights(name, night_keys) for name in CHAIN}, {})
    else:
        truth = skygen.write_drop(root / "drop", cell)
        truth.to_csv(root / "truth.csv", index=False)
        run = run_chain(root / "drop", cell.first_night, last, DagsterInstance.get())
    seconds = time.perf_counter() - started
    evaluation = matrix.evaluate(cell, truth, run)
    print(f"skygen chain: {seconds:.0f} s, completeness S/N>=10 {evaluation.completeness:.3f}, "
          f"differenced {evaluation.differenced}/{evaluation.frames_after_first_night}", flush=True)
    labelled = matrix.candidate_truth(cell, truth, run)
    return labelled.assign(truth_snr=labelled.difference_snr), seconds


def demo_truth(root: Path) -> tuple[pd.DataFrame, float]:
    """Run the demo's nights; their candidates with the simulator's ``real`` verdict and measured ``truth_snr``."""
    from astrid_assets.cli.commands import curate_nights, night_window, run_nightly
    from astrid_assets.io.tables import read_nights
    from astrid_assets.labels import labelled_candidates
    from astrid_assets.settings import database_url
    from astrid_assets.surveys.simulated import DEMO_NIGHTS

    nights = night_window(*DEMO_NIGHTS)
    started = time.perf_counter()
    run_nightly(nights)
    seconds = time.perf_counter() - started
    curate_nights(nights[0], nights[-1], fraction=1.0, error_rate=0.0)
    labels = labelled_candidates(database_url(), nights[0], nights[-1])[["candidate_id", "label"]]
    candidates = read_nights("candidate_detections", nights).merge(labels, on="candidate_id", how="left")
    return candidates.assign(real=candidates.label == "real", truth_snr=candidates.snr), seconds


def build_dataset(version: str, config: dict) -> tuple[dict, dict, float]:
    """Materialize ``training_datasets`` partition ``version``; its arrays, metadata and seconds."""
    from astrid_assets.cli.commands import embedded_instance
    from astrid_assets.definitions import defs

    instance = embedded_instance()
    instance.add_dynamic_partitions("dataset_versions", [version])
    started = time.perf_counter()
    result = defs.resolve_job_def("build_training_dataset").execute_in_process(
        partition_key=version, instance=instance, raise_on_error=False,
        run_config={"ops": {"training_datasets": {"config": config}}})
    seconds = time.perf_counter() - started
    metadata = {k: v.value for k, v in result.asset_materializations_for_node("training_datasets")[0].metadata.items()}
    return stored_dataset(version), metadata, seconds


def stored_dataset(version: str) -> dict:
    """The arrays of dataset ``version`` already built in this root."""
    from astrid_assets.io.arrays import load_arrays
    from astrid_assets.io.object_store import open_object_store
    from astrid_assets.io.tables import engine_for
    from astrid_assets.settings import database_url, object_store_url

    rows = pd.read_sql(f"select path from training_datasets where dataset_version = '{version}'",
                       engine_for(database_url()))
    return load_arrays(open_object_store(object_store_url()).get(rows.path.iloc[0]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--survey", choices=["skygen", "demo"], required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--nights", type=int, default=11, help="skygen nights (the first builds the reference)")
    parser.add_argument("--frames", type=int, default=3, help="skygen frames per night")
    parser.add_argument("--rounds", type=int, default=3, help="injections per frame")
    parser.add_argument("--fakes", type=int, default=60, help="fakes per injection")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--completeness", type=float, default=0.95)
    parser.add_argument("--reuse", action="store_true", help="skygen: reuse the chain run already in --root")
    parser.add_argument("--split", type=float, nargs=3, default=[0.6, 0.15, 0.25],
                        help="train / val / test fractions (whole nights); the test nights' candidates are scored")
    parser.add_argument("--version", default="injections-1", help="dataset version key")
    parser.add_argument("--reuse-model", action="store_true",
                        help="score with the model.pt and dataset --version of an earlier run in --root")
    parser.add_argument("--foreign", type=Path, help="a model.pt of a run on the other survey to score this one")
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    set_home(args.root)
    load = os.getloadavg()[0]

    from astrid_assets.defs.datasets import collect_stamps
    from astrid_assets.io.object_store import open_object_store
    from astrid_assets.ml.config import TrainingConfig
    from astrid_assets.ml.dataset import split_sets
    from astrid_assets.ml.evaluation import predict
    from astrid_assets.ml.metrics import roc_auc
    from astrid_assets.ml.training import train
    from astrid_assets.ml.unet import load_weights, save_weights
    from astrid_assets.settings import object_store_url
    from astrid_assets.testing.vetting import held_out, injection_threshold, vet

    candidates, chain_seconds = (skygen_truth(args.root, args.nights, args.frames, args.reuse)
                                 if args.survey == "skygen"
                                 else demo_truth(args.root))
    if args.reuse_model:  # score with the model and dataset of an earlier run in this root (e.g. a foreign one)
        previous = json.loads((args.root / "result.json").read_text())
        arrays, metadata, build_seconds = stored_dataset(args.version), previous["dataset_metadata"], \
            previous["dataset_seconds"]
        model, train_seconds = load_weights(args.root / "model.pt"), previous["train_seconds"]
    else:
        arrays, metadata, build_seconds = build_dataset(args.version, {
            "source": "injections", "injection_rounds": args.rounds, "injection_fakes": args.fakes,
            "split_fractions": args.split})
    n_examples = len(arrays["labels"])
    print(f"injection set: {n_examples} examples ({int(arrays['labels'].sum())} real) in {build_seconds:.0f} s "
          f"= {n_examples / build_seconds:.2f} examples/s", flush=True)
    sets = split_sets(arrays)
    if not args.reuse_model:
        config = TrainingConfig(epochs=args.epochs, patience=5)
        started = time.perf_counter()
        model = train(sets["train"], sets["val"], config, args.root / "checkpoints").model
        train_seconds = time.perf_counter() - started
        save_weights(model, args.root / "model.pt")

    threshold = injection_threshold(model, arrays, args.completeness)
    scored = held_out(candidates, arrays)
    stamps = collect_stamps(scored, open_object_store(object_store_url()))
    real, snr = scored.real.to_numpy(bool), scored.truth_snr.to_numpy(float)
    result = {
        "survey": args.survey, "load_average_start": load, "load_average_end": os.getloadavg()[0],
        "chain_seconds": chain_seconds, "dataset_seconds": build_seconds, "examples": n_examples,
        "examples_per_second": n_examples / build_seconds, "dataset_metadata": {k: str(v) for k, v in metadata.items()},
        "train_seconds": train_seconds, "test_nights": sorted(set(scored.night)),
        "injected_test_roc_auc": roc_auc(sets["test"].labels.astype(int), predict(model, sets["test"], device="cpu")),
        "own_model": vet(predict(model, stamps, device="cpu"), real, snr, threshold).as_dict(),
    }
    if args.foreign:
        foreign = load_weights(args.foreign)
        foreign_threshold = json.loads((args.foreign.parent / "result.json").read_text())["own_model"]["threshold"]
        result["foreign_model"] = vet(predict(foreign, stamps, device="cpu"), real, snr, foreign_threshold).as_dict()
        foreign_own = injection_threshold(foreign, arrays, args.completeness)  # its threshold set on this survey
        result["foreign_model_rethresholded"] = vet(predict(foreign, stamps, device="cpu"), real, snr,
                                                    foreign_own).as_dict()
    (args.root / "result.json").write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps({k: v for k, v in result.items() if k != "dataset_metadata"}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
