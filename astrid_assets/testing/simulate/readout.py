"""Charge effects and readout of a frame.

Cosmic-ray charge (e-, deposited after the flat-field response), full-well saturation with
charge bleeding along columns (e-), and readout: read noise (e- rms), gain (e- / ADU), bias,
integer ADU and the ADC ceiling ``SATURATE`` (ADU).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import label

from astrid_assets.testing.simulate.ccd import Detector
from astrid_assets.testing.simulate.config import SurveyConfig


def _cosmic_ray_charge(
    rng: np.random.Generator, shape: tuple[int, int], exptime: float, config: SurveyConfig
) -> np.ndarray:
    """Charge (e-) deposited by cosmic rays: 40 % single-pixel hits, the rest straight
    tracks 2-12 pixels long at random angles; log-normal charge per pixel (median
    ``cosmic_ray_charge``, σ_ln = 0.5, at least 1/4 of the median)."""
    ny, nx = shape
    n_events = rng.poisson(config.cosmic_ray_rate * ny * nx * exptime)
    charge = np.zeros(ny * nx)
    if n_events == 0:
        return charge.reshape(shape)
    start_x = rng.uniform(-0.5, nx - 0.5, n_events)
    start_y = rng.uniform(-0.5, ny - 0.5, n_events)
    length = np.where(rng.uniform(size=n_events) < 0.4, 0.0, rng.uniform(2.0, 12.0, n_events))
    angle = rng.uniform(0, np.pi, n_events)
    steps = np.linspace(0.0, 1.0, 49)[None, :]
    xs = np.floor(start_x[:, None] + steps * length[:, None] * np.cos(angle)[:, None] + 0.5).astype(np.int64)
    ys = np.floor(start_y[:, None] + steps * length[:, None] * np.sin(angle)[:, None] + 0.5).astype(np.int64)
    inside = (xs >= 0) & (xs < nx) & (ys >= 0) & (ys < ny)
    event = np.broadcast_to(np.arange(n_events)[:, None], xs.shape)
    hits = np.unique(np.stack([event[inside], ys[inside] * nx + xs[inside]]), axis=1)
    deposit = np.maximum(
        config.cosmic_ray_charge * np.exp(0.5 * rng.standard_normal(hits.shape[1])),
        config.cosmic_ray_charge / 4,
    )
    charge += np.bincount(hits[1], weights=deposit, minlength=ny * nx)
    return charge.reshape(shape)


def _bleed_column(column: np.ndarray, full_well: float) -> np.ndarray:
    """Cap one column at ``full_well`` (in place), spilling each saturated run's excess
    charge half up and half down the column; returns the mask of pixels that were capped
    or received spilled charge.  Charge spilled off the detector is lost."""
    runs, n_runs = label(column > full_well)
    touched = np.zeros(column.size, dtype=bool)
    for run in range(1, n_runs + 1):
        members = np.flatnonzero(runs == run)
        excess = float(np.sum(column[members] - full_well))
        column[members] = full_well
        touched[members] = True
        for direction, start in ((-1, members[0] - 1), (1, members[-1] + 1)):
            path = np.arange(start, -1 if direction < 0 else column.size, direction)
            if path.size == 0:
                continue
            room = np.clip(full_well - column[path], 0, None)
            filled = np.cumsum(room)
            spill = excess / 2
            full = filled <= spill
            partial = np.flatnonzero(~full)[:1]
            column[path[full]] = np.maximum(column[path[full]], full_well)  # another run keeps its excess
            touched[path[full]] = True
            if partial.size:
                left = spill - (filled[partial[0] - 1] if partial[0] > 0 else 0.0)
                column[path[partial]] += left
                touched[path[partial]] = left > 0
    return touched


def bleed(electrons: np.ndarray, full_well: float) -> np.ndarray:
    """Apply full-well saturation with charge bleeding along columns (axis 0) in place;
    returns the boolean mask of saturated or bled pixels.

    Each saturated run's excess spills half up and half down its column; charge spilled off
    the detector is lost.

    Parameters
    ----------
    electrons : numpy.ndarray
        Float image in e-, ``[y, x]``; modified in place.
    full_well : float
        Full-well capacity, e-.

    Returns
    -------
    numpy.ndarray of bool
        Pixels capped at the full well or that received spilled charge.
    """
    touched = np.zeros(electrons.shape, dtype=bool)
    for col in np.unique(np.nonzero(electrons > full_well)[1]):
        touched[:, col] = _bleed_column(electrons[:, col], full_well)
    return touched


def _readout(electrons: np.ndarray, rng: np.random.Generator, det: Detector, config: SurveyConfig) -> np.ndarray:
    """Add read noise, convert to integer ADU with the bias, clip at the ADC ceiling."""
    electrons = electrons + rng.normal(0.0, config.read_noise, electrons.shape)
    adu = np.floor(electrons / config.gain + det.bias + 0.5)
    return np.clip(adu, 0.0, config.saturate).astype(np.float32)
