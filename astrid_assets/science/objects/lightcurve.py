"""Forced-photometry light curves: baseline correction, S/N, 5σ limits and magnitudes.

Conventions: fluxes in e- of the new frame (PSF fit on the difference image, so the reference's
light is already removed), MJD times, AB-like magnitudes on the frame's zero point
``m = MAGZP − 2.5 log10(flux / EXPTIME)`` (``MAGZP``: magnitude of 1 e-/s). An epoch is an upper limit
when ``S/N < detection_snr``; its 5σ limit is ``5 · flux_err`` (ZTF's ``diffmaglim`` for the position).

The baseline (Masci et al. 2019, PASP 131, 018003, §3.6; ZTF forced-photometry service): a difference
image against a reference that holds some of the object's light (a host nucleus, or a transient whose
light went into a co-add) is offset by a constant. The inverse-variance mean flux of the epochs
*before* the object was first detected, measured against the same reference version, estimates that
offset and is subtracted from every epoch of that version; an epoch more than ``clip`` of its own errors from
their median (a cosmic ray, a satellite) is left out of it. A version with fewer than
``min_epochs`` such epochs is left uncorrected (baseline 0).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["baseline_correct", "to_magnitudes"]


def baseline_correct(rows: pd.DataFrame, first_mjd: float, min_epochs: int = 2, clip: float = 4.0) -> pd.DataFrame:
    """Subtract, per reference version, the mean flux of the epochs before ``first_mjd``.

    Parameters
    ----------
    rows : pandas.DataFrame
        One object's epochs: ``mjd_obs``, ``flux`` (raw, e-), ``flux_err`` (e-), ``reference_version``.
    first_mjd : float
        MJD of the object's first detection.
    min_epochs : int, default 2
        Fewest earlier epochs of a version that define its baseline.
    clip : float, default 4
        Earlier epochs farther than ``clip · flux_err`` from their median are left out of the baseline.

    Returns
    -------
    pandas.DataFrame
        ``rows`` with ``flux`` corrected, ``baseline`` (e-, subtracted) and ``before_first_detection``.
    """
    out = rows.copy()
    out["before_first_detection"] = out.mjd_obs.to_numpy(float) < first_mjd - 1e-6
    out["baseline"] = 0.0
    for _version, group in out.groupby(out.reference_version.fillna(""), sort=False):
        before = group[group.before_first_detection & np.isfinite(group.flux) & (group.flux_err > 0)]
        before = before[np.abs(before.flux - before.flux.median()) <= clip * before.flux_err]
        if len(before) < min_epochs:
            continue
        weight = 1.0 / before.flux_err.to_numpy(float) ** 2
        out.loc[group.index, "baseline"] = float((weight * before.flux.to_numpy(float)).sum() / weight.sum())
    out["flux"] = out.flux - out.baseline
    return out


def to_magnitudes(rows: pd.DataFrame, detection_snr: float = 5.0) -> pd.DataFrame:
    """S/N, 5σ flux limit, and magnitudes where a zero point is known.

    Parameters
    ----------
    rows : pandas.DataFrame
        ``flux``, ``flux_err`` (e-), ``zero_point`` (``MAGZP``, mag of 1 e-/s; NaN unknown), ``exptime`` (s).
    detection_snr : float, default 5
        S/N from which an epoch is a detection rather than an upper limit.

    Returns
    -------
    pandas.DataFrame
        ``rows`` with ``snr``, ``flux_limit_5sigma`` (e-), ``detected``, ``mag``/``mag_err`` (detections with a
        zero point), ``maglim_5sigma`` (with a zero point).
    """
    out = rows.copy()
    flux, err = out.flux.to_numpy(float), out.flux_err.to_numpy(float)
    zero_point = out.zero_point.to_numpy(float)
    exptime = np.where(np.isfinite(out.exptime.to_numpy(float)), out.exptime.to_numpy(float), 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["snr"] = flux / err
        out["flux_limit_5sigma"] = 5.0 * err
        out["detected"] = out.snr.to_numpy(float) >= detection_snr
        positive = out.detected.to_numpy() & (flux > 0)
        out["mag"] = np.where(positive, zero_point - 2.5 * np.log10(flux / exptime), np.nan)
        out["mag_err"] = np.where(positive, 2.5 / np.log(10) * err / flux, np.nan)
        out["maglim_5sigma"] = zero_point - 2.5 * np.log10(5.0 * err / exptime)
    return out
