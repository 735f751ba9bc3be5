"""The loss of the real/bogus U-Net, its metrics on a labelled set and batched prediction.

Loss
----
``mask_bce_weight · BCE(mask) + dice_weight · (1 − soft dice(mask)) + label_weight · BCE(real/bogus logit)``:
per-pixel BCE and soft dice (pooled over the batch, smoothing 1) of the predicted transient mask
against :func:`~astrid_assets.ml.dataset.transient_masks`, plus BCE of the candidate logit
(:func:`~astrid_assets.ml.unet.real_bogus_logit`, derived from the mask) against the label.
:func:`~astrid_assets.ml.training.train` minimises it; :func:`evaluate` reports it.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from astrid_assets.ml.config import TrainingConfig, resolve_device
from astrid_assets.ml.dataset import StampSet, normalise_stamps
from astrid_assets.ml.metrics import classification_metrics
from astrid_assets.ml.unet import UNet, real_bogus_logit

__all__ = ["combined_loss", "evaluate", "predict"]


def combined_loss(
    mask_logits: torch.Tensor,
    target_masks: torch.Tensor,
    labels: torch.Tensor,
    mask_bce_weight: float = 1.0,
    dice_weight: float = 1.0,
    label_weight: float = 1.0,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(total loss, candidate logits)`` for mask logits ``(N, 1, H, W)``, target masks ``(N, 1, H, W)``
    and labels ``(N,)`` (see the module docstring); ``weights`` ``(N,)`` weigh each example's
    classification term (a human label counting more than an injection, say), normalised to their sum."""
    mask_logits = mask_logits.float()
    candidate_logits = real_bogus_logit(mask_logits)
    if weights is None:
        classification = F.binary_cross_entropy_with_logits(candidate_logits, labels)
    else:
        per_example = F.binary_cross_entropy_with_logits(candidate_logits, labels, reduction="none")
        classification = (per_example * weights).sum() / weights.sum().clamp_min(1e-12)
    total = label_weight * classification
    if mask_bce_weight:
        total = total + mask_bce_weight * F.binary_cross_entropy_with_logits(mask_logits, target_masks)
    if dice_weight:
        probabilities = torch.sigmoid(mask_logits)
        overlap = (probabilities * target_masks).sum()
        soft_dice = (2.0 * overlap + 1.0) / (probabilities.sum() + target_masks.sum() + 1.0)
        total = total + dice_weight * (1.0 - soft_dice)
    return total, candidate_logits


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _autocast(device: torch.device, enabled: bool):
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


@torch.no_grad()
def _evaluate(model: UNet, dataset: StampSet, config: TrainingConfig, device: torch.device, amp: bool) -> dict:
    was_training = model.training
    model.eval()
    n = len(dataset)
    if n == 0:
        raise ValueError("cannot evaluate on an empty set")
    probabilities = np.empty(n, np.float64)
    loss_sum, overlap, predicted_pixels, target_pixels = 0.0, 0, 0, 0
    for start in range(0, n, config.eval_batch_size):
        stop = min(start + config.eval_batch_size, n)
        inputs = torch.from_numpy(dataset.inputs[start:stop]).to(device)
        masks = torch.from_numpy(dataset.masks[start:stop]).to(device)[:, None]
        labels = torch.from_numpy(dataset.labels[start:stop]).to(device)
        with _autocast(device, amp):
            mask_logits = model(inputs)
        loss, candidate_logits = combined_loss(
            mask_logits, masks, labels, config.mask_bce_weight, config.dice_weight, config.label_weight
        )
        loss_sum += float(loss) * (stop - start)
        probabilities[start:stop] = torch.sigmoid(candidate_logits).double().cpu().numpy()
        predicted = mask_logits.float() > 0  # sigmoid > 0.5
        truth = masks > 0.5
        overlap += int((predicted & truth).sum())
        predicted_pixels += int(predicted.sum())
        target_pixels += int(truth.sum())
    model.train(was_training)
    metrics = {"loss": loss_sum / n}
    metrics.update(classification_metrics(dataset.labels, probabilities, config.threshold))
    total = predicted_pixels + target_pixels
    metrics["dice"] = 1.0 if total == 0 else 2.0 * overlap / total
    metrics["n"] = n
    return metrics


# ---------------------------------------------------------------------------------------------- public API


def evaluate(
    model: UNet, dataset: StampSet, config: TrainingConfig | None = None, device: str | torch.device | None = None
) -> dict:
    """Metrics of ``model`` on ``dataset``: ``loss`` (the training loss), ``roc_auc``, ``precision``,
    ``recall``, ``f1``, ``accuracy``, ``dice`` (pixel masks at 0.5, pooled) and the confusion counts
    ``tp``, ``fp``, ``tn``, ``fn`` at ``config.threshold`` (0.5), and ``n``.

    ``device`` None: where the model is; otherwise the model is moved there."""
    config = config or TrainingConfig()
    if device is not None:
        model.to(resolve_device(device))
    device = _model_device(model)
    return _evaluate(model, dataset, config, device, amp=False)


@torch.no_grad()
def predict(
    model: UNet,
    stamps: np.ndarray | StampSet,
    batch_size: int = 256,
    device: str | torch.device = "auto",
    return_masks: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Real probability ``(N,)`` float32 of each candidate, batched, without gradients.

    ``stamps`` are raw ``(N, 3, 63, 63)`` stamps in electrons (normalised here with
    :func:`~astrid_assets.ml.dataset.normalise_stamps`) or a :class:`StampSet` (already normalised).
    ``device``: 'auto' (CUDA when available), or any torch device; the model is moved there and
    put in eval mode.  ``return_masks=True`` also returns the per-pixel mask probabilities
    ``(N, 63, 63)`` float32 (for previews)."""
    inputs = stamps.inputs if isinstance(stamps, StampSet) else normalise_stamps(stamps)
    device = resolve_device(device)
    model.to(device).eval()
    n = inputs.shape[0]
    probabilities = np.empty(n, np.float32)
    mask_probabilities = np.empty((n, *inputs.shape[2:]), np.float32) if return_masks else None
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        mask_logits = model(torch.from_numpy(inputs[start:stop]).to(device)).float()
        probabilities[start:stop] = torch.sigmoid(real_bogus_logit(mask_logits)).cpu().numpy()
        if return_masks:
            mask_probabilities[start:stop] = torch.sigmoid(mask_logits[:, 0]).cpu().numpy()
    return (probabilities, mask_probabilities) if return_masks else probabilities
