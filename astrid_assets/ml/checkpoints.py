"""Training checkpoints: what they hold, how they are written and read, and resuming a run from them.

In a run's checkpoint directory: ``last.pt`` after every epoch, ``best.pt`` whenever the validation
loss improves, ``epoch_NNNN.pt`` every ``checkpoint_every`` epochs.  Each holds the model,
optimiser, scheduler and gradient-scaler states, the epoch, the best validation loss and its
epoch, the early-stopping counter, the metric history, the resolved configuration and the RNG
states (torch, numpy, python, CUDA).  When several processes train (:mod:`astrid_assets.ml.distributed`)
rank 0 writes them and every process resumes from the same files; the weights are the bare
U-Net's (no ``DistributedDataParallel`` prefix), so one checkpoint serves one process or several.
Files are written to a temporary name and renamed (a crash never leaves a half-written checkpoint).
They load with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from astrid_assets.io.object_store import ObjectStore
from astrid_assets.ml.config import TrainingConfig
from astrid_assets.ml.unet import UNet

CHECKPOINT_FORMAT = "astrid-unet-checkpoint/1"
BEST, LAST = "best.pt", "last.pt"
ARCHITECTURE_KEYS = ("base_channels", "depth")  #: parameters a run cannot change when it resumes

log = logging.getLogger(__name__)


@dataclass
class TrainingState:
    """The objects a run trains with, whose states a checkpoint saves."""

    model: UNet
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    lr_factor: Callable[[int], float]  #: the schedule: learning-rate factor at a step
    device: torch.device
    amp: bool  #: mixed precision (autocast)
    use_scaler: bool  #: fp16 loss scaling (mixed precision without bf16)
    #: the model wrapped in ``DistributedDataParallel`` (training forward passes), or None in one process
    replica: torch.nn.Module | None = None
    rank: int = 0  #: this process's rank in the process group (0 in one process)
    world_size: int = 1  #: processes training together


@dataclass
class Progress:
    """How far a run has come: the early-stopping state and metric history that checkpoints record."""

    epoch: int = 0  #: last completed epoch
    history: list[dict] = field(default_factory=list)
    best_val_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped_early: bool = False
    best_state: dict | None = None  #: the best epoch's weights, on the CPU


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict:
    """A training checkpoint as saved by :func:`~astrid_assets.ml.training.train` (``weights_only`` load)."""
    payload = torch.load(Path(path), map_location=device, weights_only=True)
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not an AstrID training checkpoint")
    return payload


def _save_checkpoint(path: Path, payload: dict) -> None:
    temporary = path.with_name(path.name + ".tmp")
    torch.save(payload, temporary)
    temporary.replace(path)


def _rng_states() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


def write_checkpoints(directory: Path, state: TrainingState, progress: Progress, config: TrainingConfig) -> None:
    """Checkpoint the epoch just completed: ``last.pt``, ``best.pt`` if it is the best, ``epoch_NNNN.pt``.

    Called by rank 0 alone when several processes train: the weights, optimiser and schedule are the
    same in every process, and each process's shuffling comes from ``(seed, epoch, rank)``, not from
    the RNG states saved here."""
    epoch = progress.epoch
    payload = {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "model": state.model.state_dict(),
        "model_config": state.model.config(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "scaler": state.scaler.state_dict(),
        "best_val_loss": progress.best_val_loss,
        "best_epoch": progress.best_epoch,
        "bad_epochs": progress.bad_epochs,
        "stopped_early": progress.stopped_early,
        "history": progress.history,
        "config": config.to_dict(),
        "rng": _rng_states(),
    }
    if progress.best_epoch == epoch:
        _save_checkpoint(directory / BEST, payload)
    if config.checkpoint_every and epoch % config.checkpoint_every == 0:
        _save_checkpoint(directory / f"epoch_{epoch:04d}.pt", payload)
    _save_checkpoint(directory / LAST, payload)


def restore_checkpoint(directory: Path, state: TrainingState, config: TrainingConfig) -> Progress:
    """Load ``directory/last.pt`` into ``state`` (and the global RNGs) and return its progress.

    The learning rate follows ``config``'s schedule (so that a raised ``epochs`` moves the cosine
    horizon).  ValueError if the architecture differs; without a ``last.pt`` a warning and a fresh start.
    """
    last = directory / LAST
    if not last.exists():
        log.warning("resume=True but there is no checkpoint %s: training from the start", last)
        return Progress()
    checkpoint = load_checkpoint(last, "cpu")  # RNG states must stay on the CPU; states are copied over
    saved = checkpoint["config"]
    mismatched = [k for k in ARCHITECTURE_KEYS if saved.get(k) != getattr(config, k)]
    if mismatched:
        raise ValueError(f"cannot resume {last}: architecture differs ({mismatched})")
    changed = sorted(k for k, v in config.to_dict().items() if saved.get(k, v) != v)
    if changed:
        log.warning("resuming %s with changed parameters %s", last, changed)
    state.model.load_state_dict(checkpoint["model"])
    state.optimizer.load_state_dict(checkpoint["optimizer"])
    state.scheduler.load_state_dict(checkpoint["scheduler"])
    for group, base in zip(state.optimizer.param_groups, state.scheduler.base_lrs, strict=True):
        group["lr"] = base * state.lr_factor(state.scheduler.last_epoch)  # the (possibly new) horizon
    if state.use_scaler and checkpoint["scaler"]:  # empty when saved without loss scaling (CPU, bf16)
        state.scaler.load_state_dict(checkpoint["scaler"])
    _restore_rng_states(checkpoint["rng"])
    progress = Progress(
        epoch=checkpoint["epoch"],
        history=list(checkpoint["history"]),
        best_val_loss=checkpoint["best_val_loss"],
        best_epoch=checkpoint["best_epoch"],
        bad_epochs=checkpoint["bad_epochs"],
        stopped_early=checkpoint["stopped_early"],
    )
    if (directory / BEST).exists():
        progress.best_state = load_checkpoint(directory / BEST, "cpu")["model"]
    log.info("resuming from %s at epoch %d", last, progress.epoch + 1)
    return progress


def download_checkpoints(store: ObjectStore, prefix: str, directory: Path) -> None:
    """Copy ``last.pt`` and ``best.pt`` (where present) under ``prefix`` in the object store to ``directory``."""
    for name in (LAST, BEST):
        key = f"{prefix}/{name}"
        if store.exists(key):
            (directory / name).write_bytes(store.get(key))


def upload_checkpoints(store: ObjectStore, prefix: str, directory: Path) -> None:
    """Copy every checkpoint of ``directory`` to ``prefix`` in the object store ``store``."""
    for checkpoint in directory.glob("*.pt"):
        store.put(f"{prefix}/{checkpoint.name}", checkpoint.read_bytes())
