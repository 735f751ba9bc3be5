"""A compact U-Net that segments the transient in a candidate stamp, and the real probability from it.

Architecture
------------
Input ``(N, 3, 63, 63)`` normalised stamps (:func:`astrid_assets.ml.dataset.normalise_stamps`),
zero-padded (the background level) on the right and bottom to 64×64 so that ``depth`` (3)
halvings are exact.  Each level is two 3×3 convolutions with GroupNorm and ReLU; the encoder
halves the resolution with 2×2 max-pooling and doubles the channels (``base_channels`` ·
1, 2, 4, bottleneck 8); the decoder upsamples with 2×2 transposed convolutions and concatenates
the skip connection.  A 1×1 convolution gives one mask logit per pixel; the output is cropped
back to 63×63.  GroupNorm (not BatchNorm) keeps the output independent of the batch and
identical in training and evaluation mode.  Every operation has a deterministic CUDA kernel.
Weights and activations are kept channels-last (NHWC), which is faster on CPU (oneDNN) and GPU.

Real/bogus probability
----------------------
The candidate's real probability is derived from the mask alone, with no extra parameters: it is
the sigmoid (:func:`real_bogus_probability`) of the real/bogus logit (:func:`real_bogus_logit`),
the log-sum-exp mean ("LSE pooling") of the mask logits within :data:`CENTRAL_RADIUS` px of the
stamp centre, ``τ · log(mean(exp(l / τ)))`` with τ = 1 — a smooth maximum, close to the largest
central logit when one stands out and to the mean when the map is flat.  A candidate is real
when the network finds a transient footprint at the candidate's position.  The same logit is
trained end to end: the loss is BCE + soft dice on the mask plus BCE of this logit against the
candidate label (see :mod:`astrid_assets.ml.training`), so the mask and the real probability
cannot disagree and every real probability can be explained by its mask.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

CENTRAL_RADIUS = 4.0  #: px; the mask logits within this radius of the centre decide the real probability
LSE_TEMPERATURE = 1.0  #: τ of the log-sum-exp pooling
WEIGHTS_FORMAT = "astrid-unet/1"


def _groups(channels: int) -> int:
    for groups in (8, 4, 2):
        if channels % groups == 0 and channels // groups >= 2:
            return groups
    return 1


class _DoubleConv(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.GroupNorm(_groups(out_channels), out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.GroupNorm(_groups(out_channels), out_channels),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """``(N, 3, H, W)`` normalised stamps → ``(N, 1, H, W)`` transient-mask logits."""

    def __init__(self, in_channels: int = 3, base_channels: int = 16, depth: int = 3) -> None:
        super().__init__()
        if depth < 1 or base_channels < 1 or in_channels < 1:
            raise ValueError("in_channels, base_channels and depth must be positive")
        self.in_channels, self.base_channels, self.depth = in_channels, base_channels, depth
        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.encoders = nn.ModuleList()
        previous = in_channels
        for width in widths[:-1]:
            self.encoders.append(_DoubleConv(previous, width))
            previous = width
        self.bottleneck = _DoubleConv(widths[-2], widths[-1])
        self.upsamplers = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in reversed(range(depth)):
            self.upsamplers.append(nn.ConvTranspose2d(widths[level + 1], widths[level], 2, stride=2))
            self.decoders.append(_DoubleConv(2 * widths[level], widths[level]))
        self.head = nn.Conv2d(widths[0], 1, 1)
        nn.init.constant_(self.head.bias, -3.0)  # start near "no transient anywhere" (pixel prior ~5 %)
        self.to(memory_format=torch.channels_last)  # faster convolutions on CPU (oneDNN) and GPU

    def config(self) -> dict:
        """Constructor arguments (saved with the weights)."""
        return {"in_channels": self.in_channels, "base_channels": self.base_channels, "depth": self.depth}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        multiple = 2**self.depth
        pad_h, pad_w = (-height) % multiple, (-width) % multiple
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        if self.encoders[0][0].weight.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for upsample, decoder, skip in zip(self.upsamplers, self.decoders, reversed(skips), strict=True):
            x = decoder(torch.cat([upsample(x), skip], dim=1))
        return self.head(x)[..., :height, :width]


def central_region(height: int, width: int, radius: float = CENTRAL_RADIUS, device=None) -> torch.Tensor:
    """Boolean ``(H, W)`` disc of ``radius`` px around the central pixel ``[H // 2, W // 2]``."""
    rows = torch.arange(height, device=device) - height // 2
    cols = torch.arange(width, device=device) - width // 2
    return rows[:, None] ** 2 + cols[None, :] ** 2 <= radius**2


def real_bogus_logit(mask_logits: torch.Tensor, radius: float = CENTRAL_RADIUS) -> torch.Tensor:
    """Candidate logit ``(N,)`` from mask logits ``(N, 1, H, W)`` or ``(N, H, W)``: LSE pooling
    ``τ · log(mean(exp(l / τ)))`` over the disc of ``radius`` px around the centre (differentiable)."""
    if mask_logits.ndim == 4:
        mask_logits = mask_logits[:, 0]
    region = central_region(*mask_logits.shape[-2:], radius=radius, device=mask_logits.device)
    # masked_fill rather than boolean indexing: an elementwise backward, deterministic on CUDA
    central = (mask_logits.float() / LSE_TEMPERATURE).masked_fill(~region, -math.inf)
    pooled = torch.logsumexp(central.flatten(1), dim=1) - math.log(int(region.sum()))
    return LSE_TEMPERATURE * pooled


def real_bogus_probability(mask_logits: torch.Tensor, radius: float = CENTRAL_RADIUS) -> torch.Tensor:
    """Probability ``(N,)`` that each candidate is real: ``sigmoid(real_bogus_logit(mask_logits))``."""
    return torch.sigmoid(real_bogus_logit(mask_logits, radius))


def save_weights(model: UNet, path: str | Path, metadata: dict | None = None) -> Path:
    """Write the model's weights and constructor arguments (CPU tensors) to ``path``; returns it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"format": WEIGHTS_FORMAT, "model_config": model.config(), "state_dict": state}
    if metadata:
        payload["metadata"] = dict(metadata)
    temporary = path.with_name(path.name + ".tmp")
    torch.save(payload, temporary)
    temporary.replace(path)
    return path


def load_weights(path: str | Path, device: str | torch.device = "cpu") -> UNet:
    """A :class:`UNet` rebuilt from a :func:`save_weights` file (or a training checkpoint), in eval mode."""
    payload = torch.load(Path(path), map_location=device, weights_only=True)
    if "state_dict" in payload:
        state = payload["state_dict"]
    elif "model" in payload:  # a training checkpoint
        state = payload["model"]
    else:
        raise ValueError(f"{path}: not an AstrID U-Net weights file")
    model = UNet(**payload["model_config"])
    model.load_state_dict(state)
    return model.to(device).eval()
