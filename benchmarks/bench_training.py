"""Benchmark of the real/bogus U-Net: training and inference throughput on CPU (and CUDA if present).

Usage::

    .venv/bin/python benchmarks/bench_training.py
    .venv/bin/python benchmarks/bench_training.py --base-channels 8 16 --steps 10 --output /tmp/training.json
    .venv/bin/python benchmarks/bench_training.py --threads 1   # one intra-op thread (busy machines)
    .venv/bin/python benchmarks/bench_training.py --reference-run --base-channels 8   # + the test's training run

Figures, per device and U-Net width (``base_channels``, depth 3, 63×63 stamps padded to 64):

* ``train_samples_per_s`` — :func:`astrid_assets.ml.training.train` itself, on ``--steps`` batches of
  ``--batch-size`` normalised stamps per epoch (forward, combined loss, backward, gradient clipping,
  AdamW, scheduler, flips; deterministic mode on; mixed precision on CUDA), from the ``epoch_seconds``
  it reports; an epoch also validates on 16 stamps, a small part of its time;
* ``inference_candidates_per_s`` — :func:`astrid_assets.ml.evaluation.predict` on raw stamps
  (normalisation included) in batches of 256;
* ``model_forward_candidates_per_s`` — the network alone on normalised stamps (no gradients).

With ``--reference-run``, also the training run of ``astrid_assets_tests/ml/test_training.py``
(``test_model_reaches_auc_095_on_held_out_nights``: 1500 synthetic stamps over 30 nights, the training
nights' ~1030 of them, 2 epochs, ``base_channels`` 8, one intra-op thread as the ML tests use): its wall
seconds, the CPU seconds of the training thread, and the test ROC AUC it reaches. The test checks what
the model learns; how long that takes is measured here (32.6 s CPU on the 2-core CI machine of 2026-11-22).

Timings are the median over ``--repeats`` timed blocks (epochs, for training) after a warm-up block.
The machine's load average is recorded: on a shared machine other processes slow every figure down.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from astrid_assets.ml.dataset import StampSet, normalise_stamps
from astrid_assets.ml.evaluation import predict
from astrid_assets.ml.training import TrainingConfig, train
from astrid_assets.ml.unet import UNet
from astrid_assets.testing.stamps import make_stamps

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "training.json"
VALIDATION_STAMPS = 16  #: validated after every training epoch: few, so that the epoch is mostly training


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function, repeats: int, device: torch.device) -> float:
    function()  # warm-up (oneDNN/cuDNN plans, allocator)
    times = []
    for _ in range(repeats):
        synchronise(device)
        started = time.perf_counter()
        function()
        synchronise(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bench_training(
    device: torch.device, base_channels: int, batch_size: int, steps: int, repeats: int, train_set: StampSet
) -> float:
    """Training samples per second: the median epoch of a ``train`` run of one warm-up epoch and ``repeats``
    more, each of ``steps`` batches of the first ``steps × batch_size`` stamps of ``train_set``."""
    train_set = train_set.subset(np.arange(steps * batch_size))
    config = TrainingConfig(epochs=repeats + 1, batch_size=batch_size, base_channels=base_channels,
                            device=str(device), patience=None, checkpoint_every=0)
    result = train(train_set, train_set.subset(np.arange(VALIDATION_STAMPS)), config)
    seconds = statistics.median(epoch["epoch_seconds"] for epoch in result.history[1:])
    return len(train_set) / seconds


def bench_inference(device: torch.device, base_channels: int, repeats: int, raw: np.ndarray) -> tuple[float, float]:
    torch.manual_seed(0)
    model = UNet(base_channels=base_channels).to(device).eval()
    end_to_end = timed(lambda: predict(model, raw, batch_size=256, device=device), repeats, device)
    inputs = torch.from_numpy(normalise_stamps(raw)).to(device)

    @torch.no_grad()
    def forward() -> None:
        for start in range(0, len(inputs), 256):
            model(inputs[start : start + 256])

    network = timed(forward, repeats, device)
    return len(raw) / end_to_end, len(raw) / network


def reference_run() -> dict:
    """The training run of the ML test suite's AUC test (see module docstring), timed: wall and thread CPU seconds."""
    from astrid_assets.ml.dataset import split_by_night
    from astrid_assets.ml.evaluation import evaluate

    data = make_stamps(1500, seed=0, n_nights=30)  # the ML tests' ``synthetic`` fixture
    stamps = StampSet.from_stamps(data.stamps, data.labels, data.fwhm, data.ids)
    split = split_by_night(data.nights, (0.7, 0.15, 0.15), seed=0)
    config = TrainingConfig(epochs=2, batch_size=16, learning_rate=5e-3, warmup_epochs=0.3, base_channels=8,
                            patience=None, seed=1)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ML tests train (their conftest's one_torch_thread)
    try:
        wall, cpu = time.perf_counter(), time.thread_time()
        result = train(stamps.subset(split.train), stamps.subset(split.val), config)
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    finally:
        torch.set_num_threads(previous)
    auc = evaluate(result.model, stamps.subset(split.test))["roc_auc"]
    row = {"train_stamps": len(split.train), "epochs": config.epochs, "base_channels": config.base_channels,
           "torch_threads": 1, "wall_s": round(wall, 2), "thread_cpu_s": round(cpu, 2), "test_roc_auc": round(auc, 4)}
    print(f"reference run (ml/test_training.py): {row['train_stamps']} stamps, {config.epochs} epochs in "
          f"{wall:.1f} s wall, {cpu:.1f} s CPU; test ROC AUC {auc:.4f}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-channels", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8, help="optimisation steps per timed block (training epoch)")
    parser.add_argument("--candidates", type=int, default=1024, help="candidates per inference block")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--reference-run", action="store_true",
                        help="also time the training run of astrid_assets_tests/ml/test_training.py")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    data = make_stamps(max(args.candidates, args.steps * args.batch_size, VALIDATION_STAMPS), seed=0)
    stamp_set = StampSet.from_stamps(data.stamps, data.labels, data.fwhm)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        for base in args.base_channels:
            train_rate = bench_training(device, base, args.batch_size, args.steps, args.repeats, stamp_set)
            infer_rate, forward_rate = bench_inference(device, base, args.repeats, data.stamps[: args.candidates])
            row = {
                "device": device.type,
                "base_channels": base,
                "depth": 3,
                "parameters": sum(p.numel() for p in UNet(base_channels=base).parameters()),
                "batch_size": args.batch_size,
                "mixed_precision": device.type == "cuda",
                "train_samples_per_s": round(train_rate, 1),
                "inference_candidates_per_s": round(infer_rate, 1),
                "model_forward_candidates_per_s": round(forward_rate, 1),
            }
            rows.append(row)
            print(
                f"{device.type:5s} base {base:3d} ({row['parameters']:,} parameters): "
                f"train {train_rate:8.1f} samples/s   predict {infer_rate:8.1f} candidates/s   "
                f"network alone {forward_rate:8.1f} candidates/s",
                flush=True,
            )
    result = {
        "benchmark": "training",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average_1min": os.getloadavg()[0],
            "torch": torch.__version__,
            "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "settings": {
            "batch_size": args.batch_size,
            "steps_per_block": args.steps,
            "inference_candidates": args.candidates,
            "repeats": args.repeats,
        },
        "results": rows,
        "reference_run": reference_run() if args.reference_run else None,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
