"""Detections of one night associated with a field's objects by position on its stable grid.

Conventions: positions ``x, y`` in px on the field's stable grid (:mod:`.grid`), times MJD, rates in
px per minute. An object is *static* (supernova, variable, nucleus: one place on the sky) or *moving*
(a tracklet: a solar-system body). Detections join a static object within the association radius;
a tracklet — detections of one night, in different frames, along a straight line at a constant rate —
becomes a moving object of its own and is never merged into a static object, nor is a moving
object ever matched on a later night.

The radius comes from the astrometric errors, as ZTF and Rubin associate (1.0–1.5″):
``r = clip(n_sigma · sqrt(σ_1² + σ_2²), r_min, r_max)`` with ``σ`` a detection's centroid error per axis,
``√2 · (FWHM / 2.355) / (S/N)`` ⊕ the registration scatter (the centroid of a Gaussian PSF on a
background-limited image; e.g. King 1983, PASP 95, 163), or the error of an object's mean position.
``n_sigma`` is 4 because a faint transient's centroid on a host galaxy's residuals scatters more than the
photon noise alone says.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

__all__ = ["AssociationRules", "associate_night", "centroid_error", "find_tracklets", "object_id_for"]

FWHM_TO_SIGMA = 2.3548


@dataclass(frozen=True)
class AssociationRules:
    """Cuts of the association; radii in px of the stable grid (the asset converts arcsec)."""

    radius_min: float = 1.0  #: px, smallest association radius
    radius_max: float = 1.5  #: px, largest association radius
    n_sigma: float = 4.0  #: radius in units of the combined position error
    min_rate: float = 0.0  #: px/min; a tracklet moves more than twice radius_max between its ends anyway
    max_rate: float = 30.0  #: px/min, fastest tracklet searched (NEOs excluded at 1″/px: ~30″/min)
    tracklet_tolerance: float = 2.0  #: px, a detection supports a tracklet within this of its prediction
    max_flux_ratio: float = 3.0  #: the detections of a tracklet agree in flux within this factor


def centroid_error(fwhm: np.ndarray, snr: np.ndarray, registration_rms: np.ndarray | float = 0.0) -> np.ndarray:
    """1-σ error per axis of a detection's position, px: ``√2 · FWHM / (2.355 · S/N)`` ⊕ registration scatter."""
    fwhm = np.nan_to_num(np.asarray(fwhm, float), nan=3.0)
    snr = np.clip(np.nan_to_num(np.asarray(snr, float), nan=5.0), 1.0, None)
    return np.hypot(np.sqrt(2.0) * fwhm / (FWHM_TO_SIGMA * snr), np.nan_to_num(registration_rms))


def object_id_for(field: str, night: str, founding_candidate: str, moving: bool = False) -> str:
    """A stable object id: field, night of first detection and a digest of the founding candidate's id.

    The same candidates (a deterministic pipeline re-run) give the same ids.
    """
    digest = hashlib.sha1(founding_candidate.encode()).hexdigest()[:8]
    return f"{field}-{night.replace('-', '')}-{'m' if moving else ''}{digest}"


def _radius(sigma: np.ndarray, rules: AssociationRules) -> np.ndarray:
    return np.clip(rules.n_sigma * sigma, rules.radius_min, rules.radius_max)


def find_tracklets(detections: pd.DataFrame, rules: AssociationRules = AssociationRules()) -> list[list[int]]:
    """Detections of one night that move: straight lines at a constant rate through different frames.

    Every pair of positive detections in two frames of the night that moved more than
    ``2 · radius_max`` at a rate of at most ``max_rate`` predicts a position in each other frame; the
    detections within ``tracklet_tolerance`` of the predictions support it. With three or more frames a
    tracklet needs three detections; with two, a pair whose fluxes agree within ``max_flux_ratio``.
    The best supported (then the straightest) tracklets are taken first, each detection once.

    Parameters
    ----------
    detections : pandas.DataFrame
        ``x``, ``y`` (px), ``mjd_obs``, ``frame_id``, ``flux`` (e-), ``sign``; the night's detections of one
        field that no other detection of the night repeats at the same place.

    Returns
    -------
    list of list of int
        Row positions in ``detections`` of each tracklet.
    """
    positive = np.flatnonzero(detections["sign"].to_numpy() > 0)
    frames = detections.frame_id.to_numpy()
    n_frames = len(np.unique(frames[positive])) if len(positive) else 0
    need = 3 if n_frames >= 3 else 2
    if n_frames < 2:
        return []
    x, y = detections.x.to_numpy(float), detections.y.to_numpy(float)
    t = detections.mjd_obs.to_numpy(float) * 1440.0  # minutes
    flux = np.abs(detections.flux.to_numpy(float))
    proposals = []
    for a_pos, a in enumerate(positive):
        for b in positive[a_pos + 1:]:
            if frames[a] == frames[b] or t[a] == t[b]:
                continue
            dt = t[b] - t[a]
            vx, vy = (x[b] - x[a]) / dt, (y[b] - y[a]) / dt
            moved = np.hypot(x[b] - x[a], y[b] - y[a])
            rate = moved / abs(dt)
            if moved <= 2 * rules.radius_max or not rules.min_rate <= rate <= rules.max_rate:
                continue
            members, residuals = [a, b], []
            for frame in np.unique(frames[positive]):
                if frame in (frames[a], frames[b]):
                    continue
                in_frame = positive[frames[positive] == frame]
                px, py = x[a] + vx * (t[in_frame] - t[a]), y[a] + vy * (t[in_frame] - t[a])
                offsets = np.hypot(x[in_frame] - px, y[in_frame] - py)
                if offsets.size and offsets.min() <= rules.tracklet_tolerance:
                    members.append(int(in_frame[np.argmin(offsets)]))
                    residuals.append(float(offsets.min()))
            ratio = flux[members].max() / max(flux[members].min(), 1e-9)
            if len(members) >= need and ratio <= rules.max_flux_ratio:
                proposals.append((-len(members), float(np.mean(residuals)) if residuals else 0.0, sorted(members)))
    used: set[int] = set()
    tracklets = []
    for _, _, members in sorted(proposals):
        if used.isdisjoint(members):
            tracklets.append(members)
            used.update(members)
    return tracklets


def _clusters(x: np.ndarray, y: np.ndarray, sigma: np.ndarray, rules: AssociationRules) -> np.ndarray:
    """Friends-of-friends labels: detections closer than their pair's radius are one group."""
    labels = np.arange(len(x))
    if len(x) < 2:
        return labels
    tree = cKDTree(np.column_stack([x, y]))

    def root(i: int) -> int:
        while labels[i] != i:
            labels[i] = labels[labels[i]]
            i = labels[i]
        return i

    for i, j in tree.query_pairs(rules.radius_max):
        if np.hypot(x[i] - x[j], y[i] - y[j]) <= _radius(np.hypot(sigma[i], sigma[j]), rules):
            labels[root(i)] = root(j)
    return np.array([root(i) for i in range(len(x))])


def associate_night(
    detections: pd.DataFrame, known: pd.DataFrame, field: str, night: str,
    rules: AssociationRules = AssociationRules(),
) -> pd.DataFrame:
    """Each detection of one night of one field with its object: a known static one, a new one, or a tracklet.

    1. Detections repeated tonight at the same place (another frame within the radius) or lying on a known
       static object are static; among the others, tracklets (:func:`find_tracklets`) are moving objects.
    2. The static detections join the nearest known static object within the radius.
    3. The rest are grouped friends-of-friends; each group (a single detection too) founds a new object,
       named after its earliest detection (:func:`object_id_for`).

    Parameters
    ----------
    detections : pandas.DataFrame
        ``candidate_id``, ``frame_id``, ``x``, ``y`` (stable grid, px), ``position_err_px``, ``mjd_obs``,
        ``flux``, ``sign``.
    known : pandas.DataFrame
        The field's static objects so far: ``object_id``, ``x``, ``y`` (px), ``position_err_px``.
    field, night : str
        The field, and the night (``YYYY-MM-DD``) new objects are founded on.

    Returns
    -------
    pandas.DataFrame
        ``detections`` with ``object_id`` and ``moving`` (bool) added, in the same order.
    """
    out = detections.reset_index(drop=True).copy()
    out["object_id"], out["moving"] = None, False
    if out.empty:
        return out
    x, y = out.x.to_numpy(float), out.y.to_numpy(float)
    sigma = out.position_err_px.to_numpy(float)
    # a known static object within the radius
    nearest = np.full(len(out), -1)
    if len(known):
        tree = cKDTree(known[["x", "y"]].to_numpy(float))
        distance, index = tree.query(np.column_stack([x, y]), k=1)
        obj_sigma = np.nan_to_num(known.position_err_px.to_numpy(float), nan=0.0)[index]
        within = distance <= _radius(np.hypot(sigma, obj_sigma), rules)
        nearest = np.where(within, index, -1)
    # repeated tonight in another frame
    repeated = np.zeros(len(out), bool)
    frames = out.frame_id.to_numpy()
    if len(out) > 1:
        tree = cKDTree(np.column_stack([x, y]))
        for i, j in tree.query_pairs(rules.radius_max):
            if frames[i] != frames[j] and np.hypot(x[i] - x[j], y[i] - y[j]) <= _radius(
                    np.hypot(sigma[i], sigma[j]), rules):
                repeated[i] = repeated[j] = True
    loose = np.flatnonzero(~repeated & (nearest < 0))
    order = np.argsort(out.mjd_obs.to_numpy(float), kind="stable")
    for members in find_tracklets(out.iloc[loose], rules):
        rows = loose[members]
        first = rows[np.argmin(out.mjd_obs.to_numpy(float)[rows])]
        out.loc[rows, "object_id"] = object_id_for(field, night, out.candidate_id[first], moving=True)
        out.loc[rows, "moving"] = True
    has_known = (nearest >= 0) & out.object_id.isna().to_numpy()
    out.loc[has_known, "object_id"] = known.object_id.to_numpy()[nearest[has_known]]
    rest = np.flatnonzero(out.object_id.isna().to_numpy())
    labels = _clusters(x[rest], y[rest], sigma[rest], rules)
    rank = np.empty(len(out), int)
    rank[order] = np.arange(len(out))
    for label in np.unique(labels):
        rows = rest[labels == label]
        first = rows[np.argmin(rank[rows])]
        out.loc[rows, "object_id"] = object_id_for(field, night, out.candidate_id[first])
    out["moving"] = out.moving.astype(bool)
    return out


def static_objects(detections: pd.DataFrame) -> pd.DataFrame:
    """The static objects of a field from their detections: inverse-variance mean position and its error.

    Parameters
    ----------
    detections : pandas.DataFrame
        ``object_id``, ``x``, ``y`` (px), ``position_err_px``, ``moving``.

    Returns
    -------
    pandas.DataFrame
        ``object_id``, ``x``, ``y``, ``position_err_px``, ``n`` (detections).
    """
    static = detections[~detections.moving.fillna(False).astype(bool)]
    if static.empty:
        return pd.DataFrame(columns=["object_id", "x", "y", "position_err_px", "n"])
    weight = 1.0 / np.clip(np.nan_to_num(static.position_err_px.to_numpy(float), nan=0.5), 0.02, None) ** 2
    frame = static.assign(w=weight, wx=weight * static.x.to_numpy(float), wy=weight * static.y.to_numpy(float))
    grouped = frame.groupby("object_id").agg(w=("w", "sum"), wx=("wx", "sum"), wy=("wy", "sum"), n=("w", "size"))
    return pd.DataFrame({"object_id": grouped.index, "x": grouped.wx / grouped.w, "y": grouped.wy / grouped.w,
                         "position_err_px": 1.0 / np.sqrt(grouped.w), "n": grouped.n}).reset_index(drop=True)
