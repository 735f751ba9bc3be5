"""A light curve as a PNG: detections with error bars, upper limits as downward triangles."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

__all__ = ["light_curve_png"]


def light_curve_png(curves: list[tuple[pd.DataFrame, str, float | None]]) -> bytes:
    """Flux (e-) against MJD, one panel per object: detections (``detected``) with 1σ bars, the other epochs as
    5σ upper limits, the first detection as a dotted line.

    Parameters
    ----------
    curves : list of (pandas.DataFrame, str, float or None)
        Per object: its epochs (``mjd_obs``, ``flux``, ``flux_err``, ``flux_limit_5sigma`` in e-, ``detected``),
        the panel title (the object id) and the MJD of its first detection.
    """
    figure, axes = plt.subplots(len(curves), 1, figsize=(5, 2.2 * len(curves)), squeeze=False)
    for axis, (rows, title, first_mjd) in zip(axes[:, 0], curves, strict=True):
        detected = rows.detected.fillna(False).astype(bool).to_numpy()
        axis.errorbar(rows.mjd_obs[detected], rows.flux[detected], rows.flux_err[detected], fmt="o", ms=3,
                      color="tab:blue", label="detection (S/N ≥ 5)")
        axis.plot(rows.mjd_obs[~detected], rows.flux_limit_5sigma[~detected], "v", ms=4, color="0.5",
                  label="5σ upper limit")
        if first_mjd is not None and np.isfinite(first_mjd):
            axis.axvline(first_mjd, ls=":", color="tab:red", lw=1)
        axis.axhline(0, color="0.8", lw=0.8)
        axis.set_ylabel("flux (e-)")
        axis.set_title(title, fontsize=8)
    axes[-1, 0].set_xlabel("MJD")
    axes[0, 0].legend(fontsize=6)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=60, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()
