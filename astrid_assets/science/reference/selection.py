"""Which frames make a field's reference, and whether a new version is worth building.

Depths are magnitudes on one photometric scale made from the frames' own units (larger is deeper):
``MAGZP − 2.5 log10(F_lim / t)`` where every frame has a zero point (``F_lim`` the 5σ limiting flux
in e-, ``t`` the exposure time in s), else the relative zero points of the stars the frames share
(:mod:`~astrid_assets.science.photometry.zeropoints`). A reference is stable: the field keeps its
version until the best selection promises a co-add at least ``improvement_mag`` deeper, or a person
asks for a rebuild.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from astrid_assets.science.photometry import zeropoints
from astrid_assets.science.reference.coadd import select_best_frames

__all__ = [
    "relative_depth",
    "predicted_sensitivity",
    "Selection",
    "select_reference_frames",
    "version_decision",
]


def relative_depth(frames: pd.DataFrame) -> np.ndarray:
    """Depth per frame in magnitudes on a common scale, larger deeper, from the frames' own units.

    ``MAGZP − 2.5 log10(F_lim / t)`` where every frame has a zero point (``F_lim`` the 5σ limiting
    flux in e-, ``t`` the exposure time); otherwise ``Δzp − 2.5 log10 F_lim`` with ``Δzp`` the
    relative zero point from the stars the frames share (a frame dimmed by cloud ranks shallower
    although its sky noise is lower), falling back to ``2.5 log10 t`` for a frame whose stars match
    none of the others'.

    Parameters
    ----------
    frames : pandas.DataFrame
        ``calibrated_frames`` rows: ``limiting_flux`` (e-), ``exptime`` (s), ``zero_point`` (mag for
        1 e-/s) and ``stars`` (:func:`~astrid_assets.science.photometry.zeropoints.encode`), each optional.

    Returns
    -------
    numpy.ndarray
        Depth per row, mag (NaN where unknown).
    """
    limit = frames.limiting_flux.astype(float).to_numpy() if "limiting_flux" in frames else np.full(len(frames), np.nan)
    exptime = frames.exptime.astype(float).fillna(1.0).to_numpy() if "exptime" in frames else np.ones(len(frames))
    exptime = np.where(exptime > 0, exptime, 1.0)
    zero_points = frames.zero_point.astype(float).to_numpy() if "zero_point" in frames else np.full(len(frames), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        if len(frames) and np.isfinite(zero_points).all():
            return zero_points - 2.5 * np.log10(limit / exptime)
        stars = [zeropoints.decode(text) for text in frames.stars] if "stars" in frames else [
            np.empty((0, 3))] * len(frames)
        relative, _ = zeropoints.relative_zero_points(stars, exptime)
        return relative - 2.5 * np.log10(limit)


def predicted_sensitivity(depth: np.ndarray) -> float:
    """Relative point-source S/N of a co-add of frames of the given depths (mag): ``sqrt(Σ 10^(0.8 m_i))``.

    Parameters
    ----------
    depth : numpy.ndarray
        Depths, mag (non-finite ones ignored).

    Returns
    -------
    float
        NaN when no depth is finite.
    """
    depth = np.asarray(depth, dtype=float)
    depth = depth[np.isfinite(depth)]
    return float(np.sqrt(np.sum(10.0 ** (0.8 * (depth - 25.0))))) if depth.size else float("nan")


@dataclass(frozen=True)
class Selection:
    """The frames chosen for a reference (``frames`` rows with ``rel_depth``) and their predicted sensitivity."""

    frames: pd.DataFrame
    sensitivity: float


def select_reference_frames(frames: pd.DataFrame, max_frames: int, max_fwhm_ratio: float) -> tuple[pd.DataFrame,
                                                                                                  Selection | None]:
    """Rank a field's usable frames by depth and choose the best (sharp first, then deep).

    Parameters
    ----------
    frames : pandas.DataFrame
        The field's eligible ``calibrated_frames`` rows (``frame_id``, ``fwhm_px`` and the columns of
        :func:`relative_depth`).
    max_frames : int
        Most frames co-added.
    max_fwhm_ratio : float
        Frames blurrier than this multiple of the best FWHM are left out.

    Returns
    -------
    ranked : pandas.DataFrame
        All frames with ``rel_depth``, deepest first (ties by ``frame_id``).
    selection : Selection or None
        The chosen frames in rank order, or None when no frame has a FWHM and a depth.
    """
    frames = frames.assign(rel_depth=relative_depth(frames))
    order = np.lexsort((frames.frame_id.to_numpy(), -frames.rel_depth.fillna(-np.inf).to_numpy()))
    ranked = frames.iloc[order].reset_index(drop=True)
    chosen = select_best_frames(ranked.fwhm_px.astype(float).to_numpy(), ranked.rel_depth.to_numpy(), max_frames,
                                max_fwhm_ratio)
    if len(chosen) == 0:
        return ranked, None
    best = ranked.iloc[np.sort(chosen)]
    return ranked, Selection(best, predicted_sensitivity(best.rel_depth.to_numpy()))


def version_decision(
    selection: Selection, ranked: pd.DataFrame, current: dict | None, improvement_mag: float, rebuild: bool,
) -> tuple[bool, str]:
    """Whether the field keeps its current reference version, and why (the row's ``decision``).

    The current version's sensitivity is recomputed on today's photometric scale when all its input
    frames are still ranked, else taken as stored.

    Parameters
    ----------
    selection : Selection
        The best frames today.
    ranked : pandas.DataFrame
        Every eligible frame with ``rel_depth`` (:func:`select_reference_frames`).
    current : dict or None
        The field's latest earlier reference row (``version``, ``input_frames``, ``sensitivity``), or None.
    improvement_mag : float
        A new version only when the best selection is this much deeper, mag.
    rebuild : bool
        A person asks for a new version now.

    Returns
    -------
    keep : bool
        True: keep ``current`` (a caller still checks that its file exists).
    decision : str
        Why, in words.
    """
    if current is None:
        return False, "built: first reference of the field"
    current_inputs = set(str(current.get("input_frames") or "").split(","))
    if current_inputs <= set(ranked.frame_id):  # on today's photometric scale, else as stored
        current = {**current, "sensitivity": predicted_sensitivity(
            ranked.rel_depth[ranked.frame_id.isin(current_inputs)].to_numpy())}
    gain = 2.5 * np.log10(selection.sensitivity / current["sensitivity"]) if current.get("sensitivity") else np.inf
    if rebuild:
        return False, "rebuilt on request"
    if gain >= improvement_mag:
        return False, f"rebuilt: best frames {gain:.2f} mag deeper than version {current['version']}"
    return True, f"kept: best selection only {gain:+.2f} mag (< {improvement_mag}) deeper"
