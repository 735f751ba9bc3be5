"""The configuration of a training run: every parameter, its default, its checks and its resolved form.

The single place where training parameters and their defaults are defined: the Dagster run
configuration of ``unet_models`` is generated from :class:`TrainingConfig`.  Importing this module
does not import torch (the Dagster definitions load it); resolving the device does.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass

import yaml

if typing.TYPE_CHECKING:
    import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``'auto'`` → ``cuda`` when available, else ``cpu``; anything else as ``torch.device``."""
    import torch

    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return resolved


@dataclass(frozen=True)
class TrainingConfig:
    """Everything that defines a training run (and is logged as its parameters)."""

    epochs: int = 30  #: maximum number of epochs
    batch_size: int = 64
    learning_rate: float = 3e-3  #: peak learning rate (AdamW)
    weight_decay: float = 1e-4  #: AdamW decoupled weight decay, convolution weights only
    warmup_epochs: float = 1.0  #: linear warm-up length (may be fractional)
    min_lr_fraction: float = 0.02  #: cosine floor, as a fraction of learning_rate
    grad_clip: float | None = 1.0  #: maximum global gradient norm; None disables clipping
    patience: int | None = 6  #: epochs without val-loss improvement before stopping; None disables
    min_delta: float = 1e-4  #: smallest val-loss decrease that counts as an improvement
    seed: int = 0
    deterministic: bool = True  #: torch.use_deterministic_algorithms + seeded generators
    mixed_precision: bool = True  #: autocast (bf16, else fp16 with loss scaling) — on CUDA only
    device: str = "auto"  #: 'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:N'
    #: training processes: 1 trains in the calling process; N > 1 runs N DistributedDataParallel processes
    #: (torchrun; gloo on CPUs, NCCL and one GPU each on CUDA) — :mod:`astrid_assets.ml.distributed`
    processes: int = 1
    base_channels: int = 16  #: U-Net width at full resolution
    depth: int = 3  #: number of U-Net halvings
    mask_bce_weight: float = 1.0
    dice_weight: float = 1.0
    label_weight: float = 1.0
    augment: bool = True  #: random flips/transposes (the 8 symmetries of the square) per stamp
    checkpoint_every: int = 5  #: also keep epoch_NNNN.pt every this many epochs; 0 disables
    eval_batch_size: int = 256
    threshold: float = 0.5  #: probability threshold for precision/recall/F1/confusion counts
    restore_best: bool = True  #: return the best-epoch weights (else the last epoch's)

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "learning_rate": self.learning_rate >= 0,
            "weight_decay": self.weight_decay >= 0,
            "warmup_epochs": self.warmup_epochs >= 0,
            "min_lr_fraction": 0 <= self.min_lr_fraction <= 1,
            "grad_clip": self.grad_clip is None or self.grad_clip > 0,
            "patience": self.patience is None or self.patience >= 1,
            "min_delta": self.min_delta >= 0,
            "base_channels": self.base_channels >= 1,
            "depth": self.depth >= 1,
            "mask_bce_weight": self.mask_bce_weight >= 0,
            "dice_weight": self.dice_weight >= 0,
            "label_weight": self.label_weight >= 0,
            "checkpoint_every": self.checkpoint_every >= 0,
            "eval_batch_size": self.eval_batch_size >= 1,
            "processes": self.processes >= 1,
            "threshold": 0 <= self.threshold <= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError("invalid training configuration: " + ", ".join(f"{n}={getattr(self, n)!r}" for n in bad))
        if self.device != "auto":
            import torch

            try:
                torch.device(self.device)
            except RuntimeError as error:
                raise ValueError(f"invalid device {self.device!r}") from error

    @classmethod
    def field_types(cls) -> dict[str, type]:
        """Each parameter's value type (``int`` for ``int | None``)."""
        return {name: _value_type(hint) for name, hint in typing.get_type_hints(cls).items()}

    @classmethod
    def defaults(cls) -> dict[str, typing.Any]:
        """Each parameter's default."""
        return {field.name: field.default for field in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, overrides: Mapping[str, typing.Any] | None = None) -> TrainingConfig:
        """Defaults with ``overrides`` applied (values coerced to the field types: ``"1e-3"`` → 0.001,
        ``"true"`` → True, ``None``/``"none"`` for optional fields).  Unknown keys raise ValueError."""
        overrides = dict(overrides or {})
        hints = typing.get_type_hints(cls)
        unknown = sorted(set(overrides) - set(hints))
        if unknown:
            raise ValueError(f"unknown training parameter(s) {unknown}; known: {sorted(hints)}")
        return cls(**{name: _coerce(name, value, hints[name]) for name, value in overrides.items()})

    def replace(self, **changes) -> TrainingConfig:
        return dataclasses.replace(self, **changes)

    def resolved(self) -> TrainingConfig:
        """This configuration as it will run here: ``device`` resolved, ``mixed_precision`` off unless CUDA."""
        device = resolve_device(self.device)
        name = device.type if device.index is None else f"{device.type}:{device.index}"
        return dataclasses.replace(self, device=name, mixed_precision=self.mixed_precision and device.type == "cuda")

    def to_dict(self) -> dict:
        """The resolved configuration as a plain dict."""
        return dataclasses.asdict(self.resolved())

    def to_yaml(self) -> str:
        """The resolved configuration as YAML (sorted keys): the run's parameter snapshot."""
        return yaml.safe_dump(self.to_dict(), sort_keys=True)


def _value_type(hint):
    """The type of a parameter's value when it is not None (``int`` for ``int | None``)."""
    return next((t for t in typing.get_args(hint) if t is not type(None)), hint)


def _coerce(name: str, value, hint):
    optional = type(None) in typing.get_args(hint)
    base = _value_type(hint)
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
        if optional:
            return None
        raise ValueError(f"{name} may not be None")
    try:
        if base is bool:
            if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
                return value.strip().lower() in ("true", "yes", "1")
            if isinstance(value, bool | int) and value in (0, 1):
                return bool(value)
            raise ValueError
        if base is int:
            number = float(value)
            if isinstance(value, bool) or number != int(number):
                raise ValueError
            return int(number)
        if base is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        return base(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name}: cannot read {value!r} as {base.__name__}") from error
