"""Confirmation by the night's other frames: a candidate that every other frame of its field rules out is flagged.

A transient shines in every frame of the field taken that night; a cosmic ray or a hot pixel that the
calibration left unmasked, a satellite glint, or a noise excursion is in one frame only. L.A.Cosmic cannot catch
the faint hits (a few hundred e- over two to four pixels, 5–7 σ per pixel, below the ≈ 9 σ its Laplacian
threshold needs), and below S/N 20 the difference's shape does not tell them from a point source; a second look
does, and it is what surveys do (ATLAS's quads, Pan-STARRS's pairs, ZTF's two detections for a new object).

The frames of one field are all differenced on the reference's grid, so a candidate's position is the same
pixel in each. At it, each other frame's difference gets forced PSF photometry with its own ``P_D`` (blended
at the position where the PSF varied) and variance, :func:`look_at`. The candidate's flux, carried to that
frame's flux scale (``F_n/F_r`` of the two frames: ``f_o = f · ratio_o / ratio``), is what a steady source would
show there; the frame *refutes* the candidate when its forced flux falls short by more than
``k = CandidateRules.unconfirmed_sigma`` of the combined error, noise and a systematic part
``s = CandidateRules.unconfirmed_flux_systematic`` of the flux (PSF-model and flux-ratio errors, which two frames'
forced photometry shows beyond the noise at high S/N):
``sign · (f_o,measured − f_o) < −k · sqrt(σ_o² + (σ · ratio_o / ratio)² + (s f_o)²)``. The candidate is flagged
UNCONFIRMED when at least one other frame covers it and every covering frame refutes it. A frame shallower than
the candidate's own, or taken through clouds, can confirm or stay silent but rarely refute, so it does not flag a
real transient; one that varies within hours (a flare) or moves (an asteroid: the flag says it is not a steady
new source at that position) may be flagged, which is what the flag tells the scanner.
For a steady transient the false-flag rate is ``Φ(−k)`` per covering frame (0.13 % at ``k = 3`` with one other
frame, less with more, since all must refute). Single-frame nights are never flagged.

Conventions: positions are 0-based pixels of the reference grid, fluxes in each frame's own new-frame e-.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from astrid_assets.science import masks
from astrid_assets.science.detection.flags import FLAG_UNCONFIRMED, CandidateRules
from astrid_assets.science.photometry.forced import psf_photometry
from astrid_assets.science.subtraction.tiles import blend_stamps

__all__ = ["look_at", "refuted_by", "flag_unconfirmed"]


def look_at(difference: np.ndarray, variance: np.ndarray, psf: np.ndarray, mask: np.ndarray | None,
            x: np.ndarray, y: np.ndarray, psf_tiles: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Forced PSF photometry of a difference at positions ``(x, y)`` px: ``(flux, flux_err)`` in its e-.

    ``psf`` is its ``P_D``; with ``psf_tiles`` (a PSF varying over the frame) their blend at each position.
    NaN where the frame does not cover a position: off the grid, on a NO_DATA pixel, or under half the PSF on
    usable pixels (:func:`~astrid_assets.science.photometry.forced.psf_photometry`).
    """
    x, y = np.atleast_1d(np.asarray(x, np.float64)), np.atleast_1d(np.asarray(y, np.float64))
    if psf_tiles is None:
        flux, flux_err = psf_photometry(difference, variance, psf, x, y, mask)
    else:
        flux, flux_err = np.full(x.size, np.nan), np.full(x.size, np.nan)
        for k in range(x.size):
            local = blend_stamps(psf_tiles, x[k], y[k], difference.shape)
            flux[k : k + 1], flux_err[k : k + 1] = psf_photometry(difference, variance, local, x[k], y[k], mask)
    if mask is not None:
        ny, nx = difference.shape
        j = np.clip(np.rint(y), 0, ny - 1).astype(int)
        i = np.clip(np.rint(x), 0, nx - 1).astype(int)
        no_data = (np.asarray(mask)[j, i] & masks.NO_DATA) != 0
        flux[no_data] = flux_err[no_data] = np.nan
    return flux, flux_err


def refuted_by(flux: np.ndarray, flux_err: np.ndarray, sign: np.ndarray, ratio: np.ndarray,
               other_flux: np.ndarray, other_err: np.ndarray, other_ratio: np.ndarray,
               sigma: float, systematic: float = 0.0) -> np.ndarray:
    """Per candidate, whether another frame's forced flux rules it out (bool; False where that frame does not
    cover it).

    Parameters
    ----------
    flux, flux_err : numpy.ndarray
        The candidates' PSF-fit flux and error in their own frame, e- (signed flux).
    sign : numpy.ndarray
        +1 brightening, −1 fading.
    ratio, other_ratio : numpy.ndarray
        ``F_n / F_r`` of the candidate's frame and of the other frame (the same reference).
    other_flux, other_err : numpy.ndarray
        Forced flux and error at the candidates' positions in the other frame (:func:`look_at`), its e-.
    sigma : float
        ``k``: how many combined σ short the other frame's flux must fall.
    systematic : float, default 0
        Fractional flux error added in quadrature to the noise (``s``).
    """
    scale = np.asarray(other_ratio, np.float64) / np.asarray(ratio, np.float64)
    expected = np.asarray(flux, np.float64) * scale
    combined = np.sqrt(np.asarray(other_err, np.float64) ** 2 + (np.asarray(flux_err, np.float64) * scale) ** 2
                       + (systematic * expected) ** 2)
    with np.errstate(invalid="ignore"):
        short = np.asarray(sign) * (np.asarray(other_flux) - expected) < -sigma * combined
    return np.where(np.isfinite(other_flux) & np.isfinite(combined) & (combined > 0), short, False)


def flag_unconfirmed(candidates: pd.DataFrame, looks: pd.DataFrame, rules: CandidateRules) -> pd.DataFrame:
    """The candidates with UNCONFIRMED set where every other frame that covers them refutes them.

    Parameters
    ----------
    candidates : pandas.DataFrame
        One night's candidates (``detect_candidates`` rows with ``frame_id``), with ``ratio``: their frame's
        ``F_n / F_r``.
    looks : pandas.DataFrame
        One row per (candidate, other frame of its field): ``candidate`` (index into ``candidates``),
        ``flux``, ``flux_err`` (:func:`look_at` in the other frame) and ``ratio`` (the other frame's ``F_n / F_r``).
    rules : CandidateRules
        ``unconfirmed_sigma``, ``unconfirmed_flux_systematic`` and the rule-score factor of the flag
        (``rule_score_flag_factors``).

    Returns
    -------
    pandas.DataFrame
        ``candidates`` (without ``ratio``) with ``flags`` OR-ed with :data:`FLAG_UNCONFIRMED` and ``rule_score``
        multiplied by its factor where newly set.
    """
    out = candidates.drop(columns=["ratio"])
    if looks.empty or candidates.empty:
        return out
    mine = candidates.loc[looks.candidate.to_numpy()]
    refutes = refuted_by(mine.flux.to_numpy(), mine.flux_err.to_numpy(), mine.sign.to_numpy(),
                         mine.ratio.to_numpy(), looks.flux.to_numpy(), looks.flux_err.to_numpy(),
                         looks.ratio.to_numpy(), rules.unconfirmed_sigma, rules.unconfirmed_flux_systematic)
    covered = np.isfinite(looks.flux.to_numpy()) & np.isfinite(looks.flux_err.to_numpy())
    votes = pd.DataFrame({"candidate": looks.candidate.to_numpy(), "covered": covered, "refutes": refutes})
    tally = votes[votes.covered].groupby("candidate").refutes.agg(["size", "sum"])
    unconfirmed = tally.index[(tally["size"] > 0) & (tally["sum"] == tally["size"])]
    newly = out.index.isin(unconfirmed) & ((out["flags"].to_numpy().astype(np.int64) & FLAG_UNCONFIRMED) == 0)
    factor = dict(rules.rule_score_flag_factors).get(FLAG_UNCONFIRMED, 1.0)
    out.loc[newly, "flags"] = out.loc[newly, "flags"].astype(np.int64) | FLAG_UNCONFIRMED
    out.loc[newly, "rule_score"] = out.loc[newly, "rule_score"] * factor
    return out
