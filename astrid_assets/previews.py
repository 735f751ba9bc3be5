"""Small PNG previews for asset metadata: what a person would rather look at than read."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from astropy.visualization import ZScaleInterval  # noqa: E402


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def markdown_image(png: bytes, alt: str) -> str:
    """Markdown embedding a PNG (Dagster's UI renders it in the metadata panel)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def _zscale(image: np.ndarray) -> tuple[float, float]:
    finite = image[np.isfinite(image)]
    return ZScaleInterval().get_limits(finite) if finite.size else (0.0, 1.0)


def difference_preview(new: np.ndarray, difference: np.ndarray, s_corr: np.ndarray, title: str) -> bytes:
    """New frame, difference and S_corr side by side (zscale; S_corr from -5 to +5)."""
    figure, axes = plt.subplots(1, 3, figsize=(9, 3.3))
    for axis, (name, image, limits) in zip(axes, [
        ("new (e-)", new, _zscale(new)), ("difference (e-)", difference, _zscale(difference)),
        ("S_corr", s_corr, (-5, 5)),
    ], strict=True):
        axis.imshow(image, origin="lower", cmap="gray", vmin=limits[0], vmax=limits[1])
        axis.set_title(name, fontsize=9)
        axis.set_axis_off()
    figure.suptitle(title, fontsize=10)
    return _png(figure)


def triplet_grid(stamps: np.ndarray, labels: list[str], max_rows: int = 6) -> bytes:
    """Science / reference / difference stamps of up to ``max_rows`` candidates."""
    rows = min(len(stamps), max_rows)
    figure, axes = plt.subplots(rows, 3, figsize=(4.5, 1.5 * rows), squeeze=False)
    for row in range(rows):
        for column, name in enumerate(("science", "reference", "difference")):
            stamp = stamps[row, column]
            low, high = _zscale(stamp)
            axes[row, column].imshow(stamp, origin="lower", cmap="gray", vmin=low, vmax=high)
            axes[row, column].set_xticks([])
            axes[row, column].set_yticks([])
            if row == 0:
                axes[row, column].set_title(name, fontsize=8)
        axes[row, 0].set_ylabel(labels[row], fontsize=7)
    return _png(figure)


def completeness_curve(bin_centres: list[float], fraction: list[float], snr_50: float, title: str) -> bytes:
    """Recovered fraction of injected sources against their expected S/N."""
    figure, axis = plt.subplots(figsize=(4.5, 3))
    centres, values = np.asarray(bin_centres), np.asarray(fraction)
    valid = values >= 0
    axis.plot(centres[valid], values[valid], "o-")
    axis.axhline(0.95, color="grey", ls=":", lw=1)
    if np.isfinite(snr_50):
        axis.axvline(snr_50, color="C1", ls="--", lw=1, label=f"50 % at S/N {snr_50:.1f}")
        axis.legend(fontsize=8)
    axis.set_xlabel("injected S/N (PSF-optimal)")
    axis.set_ylabel("completeness")
    axis.set_ylim(-0.02, 1.05)
    axis.set_title(title, fontsize=9)
    return _png(figure)


def training_curves(history: list[dict]) -> bytes:
    """Train and validation loss, and validation ROC AUC, F1 and dice, per epoch of a training run."""
    epochs = [h["epoch"] for h in history]
    figure, (losses, metrics) = plt.subplots(1, 2, figsize=(8, 3))
    losses.plot(epochs, [h["train_loss"] for h in history], label="train")
    losses.plot(epochs, [h["val_loss"] for h in history], label="validation")
    losses.set_xlabel("epoch")
    losses.set_ylabel("loss")
    losses.legend()
    for key in ("val_roc_auc", "val_f1", "val_dice"):
        metrics.plot(epochs, [h[key] for h in history], label=key.removeprefix("val_"))
    metrics.set_xlabel("epoch")
    metrics.legend()
    return _png(figure)
