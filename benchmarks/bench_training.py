"""Benchmark of the real/bogus U-Net: training and inference throughput on CPU (and CUDA if present).

Usage::

    .venv/bin/python benchmarks/bench_training.py
    .venv/bin/python benchmarks/bench_training.py --base-channels 8 16 --steps 10 --output /tmp/training.json
    .venv/bin/python benchmarks/bench_training.py --threads 1   # one intra-op thread (busy machines)

Figures, per device and U-Net width (``base_channels``, depth 3, 63×63 stamps padded to 64):

* ``train_samples_per_s`` — :func:`astrid_assets.ml.training.train` itself, on ``--steps`` batches of
  ``--batch-size`` normalised stamps per epoch (forward, combined loss, backward, gradient clipping,
  AdamW, scheduler, flips; deterministic mode on; mixed precision on CUDA), from the ``epoch_seconds``
  it reports; an epoch also validates on 16 stamps, a small part of its time;
* ``inference_candidates_per_s`` — :func:`astrid_assets.ml.training.predict` on raw stamps
  (normalisation included) in batches of 256;
* ``model_forward_candidates_per_s`` — the network alone on normalised stamps (no gradients).

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
from astrid_assets.ml.training import TrainingConfig, predict, train
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-channels", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8, help="optimisation steps per timed block (training epoch)")
    parser.add_argument("--candidates", type=int, default=1024, help="candidates per inference block")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
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
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
