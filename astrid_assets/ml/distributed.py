"""Training on several processes or GPUs: ``torchrun`` launching DistributedDataParallel workers.

:func:`train_in_processes` is :func:`~astrid_assets.ml.training.train` on ``config.processes``
processes: it writes the two sets and the resolved configuration to a run folder, starts
``python -m torch.distributed.run --standalone --nproc-per-node N -m astrid_assets.ml.distributed``
in its own process group, hands each epoch's metrics that rank 0 reports to ``on_epoch`` as they
come, and reads rank 0's result back (weights, history, best epoch) as a
:class:`~astrid_assets.ml.training.TrainingResult`.  Each worker (:func:`main`) joins the process
group — NCCL with one GPU per process (``cuda:<local rank>``) when the configuration resolves to
CUDA, gloo on CPUs — and calls :func:`~astrid_assets.ml.training.train`, which shards the epochs
with a seeded ``DistributedSampler`` (see its *Several processes* section).  Only rank 0 writes
checkpoints and reports metrics; the workers never talk to MLflow — the calling process logs what
rank 0 reported, as it logs a one-process run.

Run folder (a temporary folder for :func:`train_in_processes`): ``<split>_<array>.npy`` (the sets,
memory-mapped copy-on-write by every worker, so the pages are shared), ``config.json``,
``epochs.jsonl`` (one line per epoch from rank 0), ``rank<k>.pid``, ``torchrun.log`` (both
launcher's and workers' output), and on success ``weights.pt`` and ``result.json``.

A worker dies with its ``torchrun`` agent (Linux ``PR_SET_PDEATHSIG``), so killing the agent's
process group stops the run; :meth:`TrainingJob.kill` does that (and kills any worker left).  A
killed run resumes from its checkpoint directory with ``resume=True`` — bit for bit on the same
number of processes and device type (tested on CPU with gloo).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from astrid_assets.ml.config import TrainingConfig
from astrid_assets.ml.dataset import StampSet

__all__ = ["TrainingJob", "start_training", "train_in_processes", "main"]

log = logging.getLogger(__name__)

EPOCHS, RESULT, WEIGHTS, LOG, CONFIG = "epochs.jsonl", "result.json", "weights.pt", "torchrun.log", "config.json"
_ARRAYS = ("inputs", "labels", "masks", "weights")


def _write_sets(run_dir: Path, sets: dict[str, StampSet]) -> None:
    for split, stamp_set in sets.items():
        for name in _ARRAYS:
            values = getattr(stamp_set, name)
            if values is not None:
                np.save(run_dir / f"{split}_{name}.npy", values)


def _read_set(run_dir: Path, split: str) -> StampSet:
    """A set written by :func:`_write_sets`, memory-mapped copy-on-write (pages shared between workers)."""
    arrays = {name: np.load(run_dir / f"{split}_{name}.npy", mmap_mode="c")
              for name in _ARRAYS if (run_dir / f"{split}_{name}.npy").exists()}
    return StampSet(arrays["inputs"], arrays["labels"], arrays["masks"], weights=arrays.get("weights"))


def _worker_threads(processes: int) -> int:
    """Intra-op threads per worker: the cores this process may use, shared out (at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // processes)


@dataclass
class TrainingJob:
    """A running ``torchrun`` training (:func:`start_training`)."""

    process: subprocess.Popen  #: the ``torchrun`` agent, leader of its own process group
    run_dir: Path
    config: TrainingConfig  #: resolved
    checkpoint_dir: Path | None
    _reported: int = field(default=0, repr=False)

    def new_epochs(self) -> list[tuple[int, dict]]:
        """``(epoch, metrics)`` of the epochs rank 0 completed since the last call."""
        path = self.run_dir / EPOCHS
        if not path.exists():
            return []
        lines = path.read_text().split("\n")[:-1]  # complete lines only
        fresh = [json.loads(line) for line in lines[self._reported:]]
        self._reported = len(lines)
        return [(row["epoch"], row["metrics"]) for row in fresh]

    def worker_pids(self) -> list[int]:
        """Process ids of the workers that have started."""
        return [int(path.read_text()) for path in sorted(self.run_dir.glob("rank*.pid"))]

    def kill(self) -> None:
        """SIGKILL the ``torchrun`` process group and every worker (each in its own session); wait for the agent."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        for pid in self.worker_pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)  # the worker leads its session (torchrun starts it so)

    def log_tail(self, characters: int = 4000) -> str:
        path = self.run_dir / LOG
        return path.read_text(errors="replace")[-characters:] if path.exists() else ""

    def wait(self, on_epoch: Callable[[int, dict], None] | None = None, poll_s: float = 0.2):
        """Wait for the run, calling ``on_epoch(epoch, metrics)`` for each epoch rank 0 reports; its
        :class:`~astrid_assets.ml.training.TrainingResult`.  RuntimeError (with the log's tail) if it failed;
        any exception here (the callback's, an interrupt) kills the run first."""
        try:
            while True:
                finished = self.process.poll() is not None
                for epoch, metrics in self.new_epochs():
                    if on_epoch is not None:
                        on_epoch(epoch, metrics)
                if finished:
                    break
                time.sleep(poll_s)
        except BaseException:
            self.kill()
            raise
        if self.process.returncode != 0:
            raise RuntimeError(f"torchrun training on {self.config.processes} processes exited with status "
                               f"{self.process.returncode}:\n{self.log_tail()}")
        return self.result()

    def result(self):
        """Rank 0's :class:`~astrid_assets.ml.training.TrainingResult` of a finished run, the model on its device."""
        from astrid_assets.ml.config import resolve_device
        from astrid_assets.ml.training import TrainingResult
        from astrid_assets.ml.unet import load_weights

        summary = json.loads((self.run_dir / RESULT).read_text())
        model = load_weights(self.run_dir / WEIGHTS, resolve_device(self.config.device))
        return TrainingResult(model=model, checkpoint_dir=self.checkpoint_dir, **summary)


def start_training(
    train_set: StampSet,
    val_set: StampSet,
    config: TrainingConfig,
    run_dir: str | Path,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    threads: int | None = None,
) -> TrainingJob:
    """Start ``config.processes`` DDP workers with ``torchrun`` on this machine; the job, without waiting.

    ``run_dir`` (created) receives the sets, configuration, reports and result (module docstring);
    ``checkpoint_dir`` and ``resume`` are :func:`~astrid_assets.ml.training.train`'s.  ``threads``:
    intra-op threads per worker (default: the usable cores divided by the processes).  On CUDA,
    ``processes`` may not exceed the visible GPUs (ValueError)."""
    config = config.resolved()
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs a checkpoint_dir")
    if config.device.startswith("cuda"):
        import torch

        if config.processes > torch.cuda.device_count():
            raise ValueError(f"{config.processes} training processes but {torch.cuda.device_count()} GPUs visible")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_sets(run_dir, {"train": train_set, "val": val_set})
    (run_dir / CONFIG).write_text(json.dumps(config.to_dict()))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={config.processes}", "-m", __name__, "--run-dir", str(run_dir),
               "--threads", str(threads or _worker_threads(config.processes))]
    if checkpoint_dir is not None:
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
        command += ["--checkpoint-dir", str(checkpoint_dir)]
    if resume:
        command.append("--resume")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads or _worker_threads(config.processes))}
    with open(run_dir / LOG, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    log.info("training on %d processes (%s): torchrun pid %d, run folder %s",
             config.processes, config.device, process.pid, run_dir)
    return TrainingJob(process, run_dir, config, None if checkpoint_dir is None else Path(checkpoint_dir))


def train_in_processes(
    train_set: StampSet,
    val_set: StampSet,
    config: TrainingConfig | None = None,
    checkpoint_dir: str | Path | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
    resume: bool = False,
):
    """:func:`~astrid_assets.ml.training.train` on ``config.processes`` DDP processes (``torchrun``); in this
    process when ``config.processes`` is 1.  Same arguments and result; ``on_epoch`` is called here, in
    the calling process, with the metrics rank 0 reports."""
    from astrid_assets.ml.training import train

    config = config or TrainingConfig()
    if config.processes == 1:
        return train(train_set, val_set, config, checkpoint_dir, on_epoch=on_epoch, resume=resume)
    with tempfile.TemporaryDirectory(prefix="astrid-ddp-") as run_dir:
        job = start_training(train_set, val_set, config, run_dir, checkpoint_dir, resume)
        return job.wait(on_epoch)


# ---------------------------------------------------------------------------------------------- worker


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when its ``torchrun`` agent dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the agent died before prctl
            os._exit(1)


def _atomic_write(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    temporary.replace(path)


def main(argv: list[str] | None = None) -> None:
    """One DDP worker, started by ``torchrun`` (which sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--checkpoint-dir", type=Path)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    _die_with_parent()

    import torch
    import torch.distributed as dist

    from astrid_assets.ml.training import train
    from astrid_assets.ml.unet import save_weights

    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    (args.run_dir / f"rank{rank}.pid").write_text(str(os.getpid()))
    torch.set_num_threads(args.threads)
    config = TrainingConfig.from_dict(json.loads((args.run_dir / CONFIG).read_text()))
    if config.device.startswith("cuda"):
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        config, backend = config.replace(device=f"cuda:{local_rank}"), "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend)
    try:
        epochs = args.run_dir / EPOCHS

        def report(epoch: int, metrics: dict) -> None:
            with open(epochs, "a") as stream:
                stream.write(json.dumps({"epoch": epoch, "metrics": metrics}) + "\n")

        result = train(_read_set(args.run_dir, "train"), _read_set(args.run_dir, "val"), config,
                       args.checkpoint_dir, on_epoch=report if rank == 0 else None, resume=args.resume)
        if rank == 0:
            save_weights(result.model, args.run_dir / WEIGHTS)
            summary = {name: getattr(result, name) for name in (
                "history", "best_epoch", "best_val_loss", "stopped_early", "epochs_completed", "epochs_run",
                "resumed_from", "train_seconds", "config")}
            _atomic_write(args.run_dir / RESULT, json.dumps(summary))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
