"""Training of the real/bogus U-Net: the epoch loop, its schedule, early stopping and resuming.

Loss
----
:func:`~astrid_assets.ml.evaluation.combined_loss` (mask BCE, soft dice and the real/bogus BCE), which
:func:`~astrid_assets.ml.evaluation.evaluate` reports; evaluation and batched prediction:
:mod:`astrid_assets.ml.evaluation`.

Schedule
--------
AdamW (weight decay on convolution weights only), learning rate warmed up linearly over
``warmup_epochs`` then decayed along a cosine to ``min_lr_fraction · learning_rate`` at
``epochs``; stepped every batch.  Gradients are clipped to a global norm of ``grad_clip``.
Early stopping watches the validation loss: an epoch improves when it is below the best so far
by more than ``min_delta``; after ``patience`` epochs without improvement training stops.

Reproducibility
---------------
With ``deterministic=True`` (the default) training runs under
``torch.use_deterministic_algorithms(True)`` (cuDNN deterministic, no benchmark; on CUDA
``CUBLAS_WORKSPACE_CONFIG=:4096:8`` is set if unset — it must be set before cuBLAS starts, so set
it in the environment when the process uses CUDA earlier); the previous global settings are
restored afterwards.  Python, numpy and torch are seeded with ``seed``; each epoch's shuffling and
augmentation come from a generator seeded with ``(seed, epoch)``, so an epoch draws the same
batches whether the run was interrupted or not.  A resumed run on the same device and thread count
therefore ends with the same weights, bit for bit (checked on CPU in the tests).

Several processes
-----------------
Called inside a ``torch.distributed`` process group of more than one process (set up by
:mod:`astrid_assets.ml.distributed`, which launches them with ``torchrun``), :func:`train` trains the
same U-Net wrapped in ``DistributedDataParallel``: each epoch's order comes from a
``DistributedSampler`` seeded with ``seed`` and set to the epoch (every process draws its own
equal-length shard of one permutation), each process runs ``ceil(batch_size / processes)``
stamps a step — the global batch, the number of steps and the learning-rate schedule stay those
of one process — and augments its stamps from a generator seeded with ``(seed, epoch, rank)``;
gradients are averaged across processes before the optimiser steps.  Rank 0 validates, writes
the checkpoints and calls ``on_epoch``; it hands the validation metrics to the others, so every
process takes the same early-stopping decision.  The same number of processes on the same
device type resumes bit for bit; a different number trains on different batches (same
schedule, not the same weights).

Checkpoints
-----------
Written after every epoch when a ``checkpoint_dir`` is given; what they hold and how a run resumes
from them: :mod:`astrid_assets.ml.checkpoints`.  The parameters: :mod:`astrid_assets.ml.config`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from astrid_assets.ml.checkpoints import (
    BEST,
    LAST,
    Progress,
    TrainingState,
    load_checkpoint,
    restore_checkpoint,
    write_checkpoints,
)
from astrid_assets.ml.config import TrainingConfig, resolve_device
from astrid_assets.ml.dataset import StampSet
from astrid_assets.ml.evaluation import _autocast, _evaluate, combined_loss
from astrid_assets.ml.unet import UNet, load_weights, save_weights

__all__ = [
    "TrainingConfig",
    "TrainingResult",
    "load_checkpoint",
    "load_weights",
    "resolve_device",
    "save_weights",
    "train",
]

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict], None]


@dataclass
class TrainingResult:
    """What :func:`train` returns."""

    model: UNet  #: best-epoch weights (``restore_best``) or the last epoch's, in eval mode
    history: list[dict]  #: per-epoch metrics of the whole run (resumed epochs included), with "epoch"
    best_epoch: int  #: epoch with the lowest validation loss (0 if none)
    best_val_loss: float
    stopped_early: bool
    epochs_completed: int  #: last completed epoch
    epochs_run: list[int] = field(default_factory=list)  #: epochs run by this call
    resumed_from: int = 0  #: epoch of the checkpoint this call resumed from (0: started afresh)
    train_seconds: float = 0.0  #: wall time of this call
    checkpoint_dir: Path | None = None
    config: dict = field(default_factory=dict)  #: resolved configuration

    @property
    def best_checkpoint(self) -> Path | None:
        return None if self.checkpoint_dir is None else self.checkpoint_dir / BEST

    @property
    def last_checkpoint(self) -> Path | None:
        return None if self.checkpoint_dir is None else self.checkpoint_dir / LAST


# ---------------------------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _deterministic_mode(enabled: bool, device: torch.device) -> Iterator[None]:
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    if enabled:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = previous[2], previous[3]


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**63)


def _augment(inputs: torch.Tensor, masks: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Per-stamp random element of the square's symmetry group (flips and a transpose).

    The stamps are odd-sized with the candidate on the central pixel, which every such
    operation keeps in place; labels and the real probability (from the centre) are invariant."""
    n = inputs.shape[0]
    flags = torch.rand((3, n), generator=generator) < 0.5
    for k, transform in enumerate((lambda t: t.flip(-1), lambda t: t.flip(-2), lambda t: t.transpose(-1, -2))):
        chosen = flags[k].to(inputs.device)[:, None, None, None]
        inputs = torch.where(chosen, transform(inputs), inputs)
        masks = torch.where(chosen, transform(masks), masks)
    return inputs, masks


def _lr_lambda(config: TrainingConfig, steps_per_epoch: int) -> Callable[[int], float]:
    total = config.epochs * steps_per_epoch
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    floor = config.min_lr_fraction

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


# ---------------------------------------------------------------------------------------------- public API


def train(
    train_set: StampSet,
    val_set: StampSet,
    config: TrainingConfig | None = None,
    checkpoint_dir: str | Path | None = None,
    on_epoch: EpochCallback | None = None,
    resume: bool = False,
) -> TrainingResult:
    """Train a U-Net on ``train_set``, validating on ``val_set`` after every epoch.

    After each epoch (numbered from 1) the checkpoints are written, then ``on_epoch(epoch, metrics)``
    is called with ``train_loss``, ``val_loss``, ``val_precision``, ``val_recall``, ``val_f1``,
    ``val_roc_auc``, ``val_accuracy``, ``val_dice``, ``learning_rate`` (at the epoch's last step)
    and ``epoch_seconds`` — all floats, ready for ``mlflow.log_metrics(metrics, step=epoch)``.  An
    exception raised by the callback aborts training and propagates; the run can then be resumed.

    Inside a ``torch.distributed`` process group of several processes each trains its shard and rank 0
    alone validates, checkpoints and calls ``on_epoch`` (module docstring, *Several processes*); the
    launcher is :func:`astrid_assets.ml.distributed.train_in_processes`.

    ``resume=True`` continues from ``checkpoint_dir/last.pt`` at the next epoch (ValueError if the
    architecture differs); without a ``last.pt`` it logs a warning and starts afresh (so a retried
    run that died before its first checkpoint still trains) — ``result.resumed_from`` tells which.
    ``epochs`` and ``patience`` may be raised to extend a finished run (the cosine horizon follows
    the new ``epochs``); a run that stopped early stays stopped.  ``checkpoint_dir=None`` trains
    without writing checkpoints.
    """
    config = (config or TrainingConfig()).resolved()
    if len(train_set) == 0 or len(val_set) == 0:
        raise ValueError("train and validation sets must not be empty")
    directory = None if checkpoint_dir is None else Path(checkpoint_dir)
    if resume and directory is None:
        raise ValueError("resume=True needs a checkpoint_dir")
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    with _deterministic_mode(config.deterministic, torch.device(config.device)):
        state = _set_up(config, train_set)
        progress = restore_checkpoint(directory, state, config) if resume else Progress()
        resumed_from = progress.epoch
        epochs_run: list[int] = []
        for epoch in range(resumed_from + 1, config.epochs + 1):
            if progress.stopped_early:
                break
            metrics = _run_epoch(state, progress, epoch, train_set, val_set, config)
            epochs_run.append(epoch)
            if directory is not None and state.rank == 0:
                write_checkpoints(directory, state, progress, config)
            if on_epoch is not None and state.rank == 0:
                on_epoch(epoch, dict(metrics))
            if progress.stopped_early:
                log.info("early stopping at epoch %d (best epoch %d)", epoch, progress.best_epoch)
                break

        history = progress.history
        if config.restore_best and progress.best_state is not None:
            state.model.load_state_dict(progress.best_state)
        state.model.eval()
    return TrainingResult(
        model=state.model,
        history=history,
        best_epoch=progress.best_epoch,
        best_val_loss=progress.best_val_loss,
        stopped_early=progress.stopped_early,
        epochs_completed=history[-1]["epoch"] if history else 0,
        epochs_run=epochs_run,
        resumed_from=resumed_from,
        train_seconds=time.perf_counter() - started,
        checkpoint_dir=directory,
        config=config.to_dict(),
    )


def _process_group() -> tuple[int, int]:
    """``(rank, world size)`` of the ``torch.distributed`` process group this process is in; ``(0, 1)`` outside one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _local_batch(config: TrainingConfig, world_size: int) -> int:
    """Stamps per step in each process: the global ``batch_size`` shared out."""
    return math.ceil(config.batch_size / world_size)


def _set_up(config: TrainingConfig, train_set: StampSet) -> TrainingState:
    """A freshly seeded U-Net on the device, its AdamW optimiser (weight decay on convolution weights only),
    the per-batch learning-rate schedule and the gradient scaler; wrapped in ``DistributedDataParallel``
    inside a process group of several processes."""
    device = torch.device(config.device)
    rank, world_size = _process_group()
    _seed_everything(config.seed)
    model = UNet(in_channels=train_set.inputs.shape[1], base_channels=config.base_channels, depth=config.depth)
    model.to(device)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.learning_rate,
    )
    shard = math.ceil(len(train_set) / world_size)  # DistributedSampler's length per process
    lr_factor = _lr_lambda(config, math.ceil(shard / _local_batch(config, world_size)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    amp = config.mixed_precision and device.type == "cuda"
    use_scaler = amp and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    replica = None
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        replica = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return TrainingState(model, optimizer, scheduler, scaler, lr_factor, device, amp, use_scaler, replica, rank,
                         world_size)


def _shared_validation(state: TrainingState, validation: dict | None) -> dict:
    """Rank 0's validation metrics, in every process of the group (``validation`` itself in one process)."""
    if state.world_size == 1:
        return validation
    import torch.distributed as dist

    box = [validation]
    dist.broadcast_object_list(box, src=0, device=state.device if state.device.type == "cuda" else None)
    return box[0]


def _run_epoch(
    state: TrainingState,
    progress: Progress,
    epoch: int,
    train_set: StampSet,
    val_set: StampSet,
    config: TrainingConfig,
) -> dict:
    """Train one epoch, validate, update ``progress`` (best epoch, early stopping, history); the epoch's metrics."""
    epoch_started = time.perf_counter()
    train_loss, learning_rate = _train_epoch(state, epoch, train_set, config)
    validation = _evaluate(state.model, val_set, config, state.device, state.amp) if state.rank == 0 else None
    validation = _shared_validation(state, validation)
    val_loss = validation["loss"]
    if val_loss < progress.best_val_loss - config.min_delta:
        progress.best_val_loss, progress.best_epoch, progress.bad_epochs = val_loss, epoch, 0
        progress.best_state = {k: v.detach().cpu().clone() for k, v in state.model.state_dict().items()}
    else:
        progress.bad_epochs += 1
    progress.stopped_early = (
        config.patience is not None and progress.bad_epochs >= config.patience and epoch < config.epochs
    )
    metrics = {
        "train_loss": train_loss,
        "val_loss": val_loss,
        "val_precision": validation["precision"],
        "val_recall": validation["recall"],
        "val_f1": validation["f1"],
        "val_roc_auc": validation["roc_auc"],
        "val_accuracy": validation["accuracy"],
        "val_dice": validation["dice"],
        "learning_rate": float(learning_rate),
        "epoch_seconds": time.perf_counter() - epoch_started,
    }
    progress.epoch = epoch
    progress.history.append({"epoch": epoch, **metrics})
    return metrics


def _epoch_order(
    state: TrainingState, epoch: int, n: int, config: TrainingConfig
) -> tuple[torch.Tensor, torch.Generator]:
    """This process's stamps for ``epoch``, in order, and the generator that augments them.

    One process: a permutation from the ``(seed, epoch)`` generator, which then augments.  Several:
    this rank's shard of ``DistributedSampler``'s permutation (seeded with ``seed``, set to the epoch)
    and a generator seeded with ``(seed, epoch, rank)``."""
    if state.world_size == 1:
        generator = _epoch_generator(config.seed, epoch)
        return torch.randperm(n, generator=generator), generator
    from torch.utils.data.distributed import DistributedSampler

    sampler = DistributedSampler(range(n), num_replicas=state.world_size, rank=state.rank, shuffle=True,
                                 seed=config.seed, drop_last=False)
    sampler.set_epoch(epoch)
    generator = torch.Generator().manual_seed(((config.seed * 1_000_003 + epoch) * 1_009 + state.rank) % 2**63)
    return torch.tensor(list(sampler), dtype=torch.long), generator


def _train_epoch(state: TrainingState, epoch: int, train_set: StampSet, config: TrainingConfig) -> tuple[float, float]:
    """One pass over ``train_set`` in the epoch's seeded order: (mean training loss, learning rate of the last step).

    With several processes each passes over its shard; the loss is averaged over all of them."""
    model, optimizer, scaler, device = state.model, state.optimizer, state.scaler, state.device
    network = model if state.replica is None else state.replica
    batch_size = _local_batch(config, state.world_size)
    inputs = torch.from_numpy(train_set.inputs)
    masks = torch.from_numpy(train_set.masks)[:, None]
    labels = torch.from_numpy(train_set.labels)
    weights = None if train_set.weights is None else torch.from_numpy(train_set.loss_weights())
    network.train()
    order, generator = _epoch_order(state, epoch, len(train_set), config)
    loss_sum = torch.zeros((), device=device)  # accumulated on the device: no sync per step
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        x, m = inputs[index], masks[index]
        if config.augment:
            x, m = _augment(x, m, generator)
        x, m, y = x.to(device, non_blocking=True), m.to(device, non_blocking=True), labels[index].to(device)
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, state.amp):
            mask_logits = network(x)
        w = None if weights is None else weights[index].to(device)
        loss, _ = combined_loss(mask_logits, m, y, config.mask_bce_weight, config.dice_weight, config.label_weight, w)
        scaler.scale(loss).backward()
        if config.grad_clip is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        learning_rate = optimizer.param_groups[0]["lr"]
        scaler.step(optimizer)
        scaler.update()
        state.scheduler.step()
        loss_sum += loss.detach() * index.numel()
    if state.world_size == 1:
        train_loss = float(loss_sum) / len(train_set)
    else:  # the mean over every process's stamps (DistributedSampler repeats a few to make equal shards)
        import torch.distributed as dist

        totals = torch.stack([loss_sum, torch.tensor(float(len(order)), device=device)])
        dist.all_reduce(totals)
        train_loss = float(totals[0]) / float(totals[1])
    if not math.isfinite(train_loss):
        raise FloatingPointError(f"training loss is not finite at epoch {epoch}")
    return train_loss, learning_rate
