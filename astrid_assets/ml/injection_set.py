"""Training examples without human labels: fakes injected into the user's own frames are ``real``,
the detections of the untouched frames are ``bogus``.

This is how GOTO's classifier reaches false-positive and false-negative rates below 1 % with no
human labels (Killestein et al. 2021, MNRAS 503, 4838): the real class is point sources injected
with each frame's measured PSF and found by the same differencing and detection (so they carry that
telescope's PSF, noise, resampling and subtraction residuals), the bogus class is whatever that
pipeline detects on frames without injections. The bogus class is contaminated by the frames' own
real transients; where catalogue context (known variables, minor planets) is available those are
excluded, and otherwise the contamination is the price of needing no labels (a few per cent in
survey data, where artefacts outnumber transients).

Everything here is plain numpy on top of :func:`astrid_assets.science.injection.fakes.injection_recovery`;
the Dagster asset (``training_datasets``) reads frames and writes the arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from astrid_assets.ml.dataset import CHANNELS, STAMP_SIZE, transient_masks
from astrid_assets.science.detection.flags import FLAG_BRIGHT_STAR, FLAG_EDGE, FLAG_SHAPE
from astrid_assets.science.injection.fakes import injection_recovery
from astrid_assets.science.products import CalibratedFrame, Reference

#: where an example came from: a fake injected by AstrID, a detection of an untouched frame, a person's label
ORIGINS = ("injection", "detection", "human")


@dataclass
class Examples:
    """Labelled stamps with their provenance, one row per example (all arrays of length N)."""

    stamps: np.ndarray  #: (N, 3, 63, 63) float32 e-: science, reference, difference
    masks: np.ndarray  #: (N, 63, 63) float32 per-pixel target (1: the transient's footprint)
    labels: np.ndarray  #: (N,) int64, 1 real / 0 bogus
    ids: np.ndarray  #: (N,) str, unique
    nights: np.ndarray  #: (N,) str, YYYY-MM-DD
    frames: np.ndarray  #: (N,) str, frame id
    origin: np.ndarray  #: (N,) str, one of :data:`ORIGINS`
    snr: np.ndarray  #: (N,) float, expected S/N of an injected fake; NaN otherwise
    weights: np.ndarray  #: (N,) float32, weight of the example in the classification loss

    def __len__(self) -> int:
        return int(self.labels.size)

    @classmethod
    def empty(cls) -> Examples:
        return cls(np.empty((0, len(CHANNELS), STAMP_SIZE, STAMP_SIZE), np.float32),
                   np.empty((0, STAMP_SIZE, STAMP_SIZE), np.float32), np.empty(0, np.int64), np.empty(0, str),
                   np.empty(0, str), np.empty(0, str), np.empty(0, str), np.empty(0), np.empty(0, np.float32))

    @classmethod
    def concatenate(cls, parts: list[Examples]) -> Examples:
        parts = [p for p in parts if len(p)] or [cls.empty()]
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)})

    def subset(self, index: np.ndarray) -> Examples:
        return Examples(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays a stored dataset keeps (``fwhm`` and ``split`` are added by the caller)."""
        return {"stamps": self.stamps, "masks": self.masks, "labels": self.labels, "ids": self.ids.astype(str),
                "nights": self.nights.astype(str), "frames": self.frames.astype(str),
                "origin": self.origin.astype(str), "snr": self.snr.astype(np.float64), "weights": self.weights}


def cap_injections(examples: Examples, max_real_per_bogus: float, seed: int) -> Examples:
    """At most ``max_real_per_bogus`` recovered fakes per bogus example of the whole set (people's bogus
    labels included), drawn at random: the classes stay within what the class_balance gate accepts."""
    fakes = np.flatnonzero(examples.origin == "injection")
    most = int(max_real_per_bogus * max(int((examples.labels == 0).sum()), 1))
    if fakes.size <= most:
        return examples
    dropped = np.random.default_rng(seed).choice(fakes, fakes.size - most, replace=False)
    return examples.subset(np.setdiff1d(np.arange(len(examples)), dropped))


def labelled_examples(stamps: np.ndarray, candidates: pd.DataFrame, labels: np.ndarray, origin: str,
                      weight: float = 1.0) -> Examples:
    """Examples of stored candidates (``candidate_id``, ``night``, ``frame_id``, ``fwhm`` columns) with ``labels``.

    Real candidates' masks are their measured footprints (:func:`~astrid_assets.ml.dataset.transient_masks`,
    with the candidate's FWHM, 3 px where unknown); bogus ones are empty.
    """
    labels = np.asarray(labels, np.int64)
    fwhm = candidates.fwhm.astype(float).fillna(3.0).clip(1.5, 8.0).to_numpy() if len(candidates) else 3.0
    return Examples(stamps.astype(np.float32), transient_masks(stamps, labels, fwhm), labels,
                    candidates.candidate_id.to_numpy().astype(str), candidates.night.to_numpy().astype(str),
                    candidates.frame_id.to_numpy().astype(str), np.full(len(labels), origin),
                    np.full(len(labels), np.nan), np.full(len(labels), weight, np.float32))


def _positions(candidates: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(u, v, on_sky)``: positions in px, on the sky (tangent-plane offsets over ``pixel_scale``) where
    ``ra``, ``dec`` and ``pixel_scale`` are known (a field's reference grid changes with its version),
    else the reference grid's ``x``, ``y``."""
    n = len(candidates)
    x, y = candidates.x.to_numpy(float), candidates.y.to_numpy(float)
    scale = candidates.pixel_scale.to_numpy(float) if "pixel_scale" in candidates else np.full(n, np.nan)
    ra, dec = (candidates[c].to_numpy(float) if c in candidates else np.full(n, np.nan) for c in ("ra", "dec"))
    on_sky = np.isfinite(ra) & np.isfinite(dec) & np.isfinite(scale)
    centre = np.nanmedian(ra) if on_sky.any() else 0.0
    u = np.where(on_sky, (ra - centre) * np.cos(np.radians(np.nan_to_num(dec))) * 3600 / scale, x)
    v = np.where(on_sky, dec * 3600 / scale, y)
    return u, v, on_sky


def moving_objects(candidates: pd.DataFrame, radius: float = 1.5, min_detections: int = 3) -> np.ndarray:
    """Candidates on a tracklet: a new source moving at a constant rate through one night's exposures.

    Solar-system objects are real sources that no reference holds; without catalogue context
    (SkyBoT, the MPC) they are found from the night's own frames, as surveys link intra-night
    detections (e.g. ATLAS, Tonry et al. 2018, PASP 130, 064505). Within one night and field,
    every pair of positive candidates of different exposure times gives a rate; a candidate of a
    third exposure within ``radius`` px of the position that rate predicts makes the three a
    tracklet. Stationary changes are not tracklets here (they move less than ``radius`` between
    the first and last detection; :func:`recurring_changes` takes them). A chance alignment of
    three bogus detections needs the third to fall in a circle of ``radius`` px: with tens of
    candidates per frame, about 1e-4 per pair on a 1000² px frame.

    Parameters
    ----------
    candidates : pandas.DataFrame
        ``night``, ``field``, ``x``, ``y``, ``sign`` and ``mjd`` (the exposure's time, d) per
        candidate; ``ra``, ``dec``, ``pixel_scale`` where known (:func:`recurring_changes`).
        Without ``mjd`` nothing is flagged.
    radius : float, default 1.5
        Tolerance on the predicted position, px.
    min_detections : int, default 3
        Detections in distinct exposures that make a tracklet (3: two define the rate, the third
        confirms it).

    Returns
    -------
    numpy.ndarray of bool
    """
    n = len(candidates)
    flagged = np.zeros(n, bool)
    if n == 0 or "mjd" not in candidates:
        return flagged
    u, v, _ = _positions(candidates)
    mjd = candidates.mjd.to_numpy(float)
    usable = (candidates.sign.to_numpy() > 0) & np.isfinite(mjd)
    keys = candidates.night.astype(str).to_numpy() + "|" + candidates.field.astype(str).to_numpy()
    for key in np.unique(keys[usable]):
        members = np.flatnonzero((keys == key) & usable)
        times = mjd[members]
        if len(np.unique(times)) < min_detections:
            continue
        for a in range(members.size):
            for b in range(members.size):
                dt = times[b] - times[a]
                if dt <= 0:
                    continue
                i, j = members[a], members[b]
                rate = np.array([u[j] - u[i], v[j] - v[i]]) / dt  # px / d
                predicted_u, predicted_v = u[i] + rate[0] * (times - times[a]), v[i] + rate[1] * (times - times[a])
                on_track = np.hypot(u[members] - predicted_u, v[members] - predicted_v) <= radius
                span = np.ptp(times[on_track]) * np.hypot(*rate)
                if len(np.unique(times[on_track])) >= min_detections and span > radius:
                    flagged[members[on_track]] = True
    return flagged


def recurring_changes(
    candidates: pd.DataFrame, stamps: np.ndarray, radius: float = 1.5, min_frames: int = 2,
    min_change: float = 0.05, detection_sigma: float = 3.0,
) -> np.ndarray:
    """Candidates that look astrophysical: the same change at the same place in several exposures.

    A candidate is flagged when (a) a candidate of the same sign lies within ``radius`` px (reference
    grid, same field) in at least ``min_frames`` distinct frames (``frame_id``; nights where frames
    are not given), itself included, and (b) its change
    is large for what the reference holds there: the point-source flux of the difference is at least
    ``min_change`` of the reference's point-source flux there, or the reference holds no point source
    (below ``detection_sigma``). Point-source fluxes are fits of a Gaussian of the candidate's FWHM,
    the reference's above the median of an annulus 2–3 FWHM out, so a galaxy's smooth light under a
    transient does not count as the source that changed. Artefacts rarely pass both: cosmic rays and
    hot pixels do not come back to the same sky position (frames dither), and the residuals of static
    stars, which do, are a per cent or two of the star's flux. Real transients and variables recur with
    large changes: without catalogue context they are the contamination of an injection set's bogus
    class, and this is how it is removed.

    Parameters
    ----------
    candidates : pandas.DataFrame
        ``night``, ``field``, ``x``, ``y`` (reference px), ``sign``, ``fwhm`` (px) per candidate, and
        ``flags`` where known (a candidate flagged at an edge, in a saturated star's wings or with a
        shape far from the PSF's stays bogus);
        ``ra``, ``dec`` (deg) and ``pixel_scale`` (arcsec/px) where known: positions are then
        compared on the sky (a field's reference grid may change from one reference version to
        the next), else on the reference grid.
    stamps : numpy.ndarray
        ``(N, 3, 63, 63)`` stamps, e- (reference scaled to the new frame).
    radius : float, default 1.5
        Match radius, px.
    min_frames : int, default 2
        Distinct frames (or nights) with the change.
    min_change : float, default 0.05
        Smallest difference flux as a fraction of the reference flux: above the residuals a static
        star leaves (the PSF-model error ε is 1–3 %), below a galaxy-hosted transient's change
        over the galaxy's central light.
    detection_sigma : float, default 3.0
        Reference point-source flux below this many sigma (from the stamp's robust pixel noise) is no source.

    Returns
    -------
    numpy.ndarray of bool
    """
    n = len(candidates)
    if n == 0:
        return np.zeros(0, bool)
    size = stamps.shape[-1]
    grid = np.arange(size) - size // 2
    r2 = grid[None, :] ** 2 + grid[:, None] ** 2
    fwhm = candidates.fwhm.astype(float).fillna(3.0).clip(1.5, 6.0).to_numpy()
    sigma = fwhm / 2.3548
    weight = np.exp(-r2[None] / (2 * sigma[:, None, None] ** 2))  # a point source's profile
    weight *= r2[None] <= (1.5 * fwhm)[:, None, None] ** 2
    annulus = (r2[None] >= (2.0 * fwhm)[:, None, None] ** 2) & (r2[None] <= (3.0 * fwhm)[:, None, None] ** 2)

    def point_flux(images: np.ndarray, local_level: bool) -> tuple[np.ndarray, np.ndarray]:
        """Profile-weighted flux above the stamp's median, or above the local level (the annulus median: a
        galaxy's smooth light), and its noise."""
        local = (np.array([np.nanmedian(image[ring]) for image, ring in zip(images, annulus, strict=True)])
                 if local_level else np.nanmedian(images, axis=(1, 2)))
        above = np.nan_to_num(images - local[:, None, None])
        pixel_noise = 1.4826 * np.nanmedian(np.abs(images - np.nanmedian(images, axis=(1, 2))[:, None, None]),
                                            axis=(1, 2))
        norm = np.sum(weight**2, axis=(1, 2))
        return np.sum(weight * above, axis=(1, 2)) / norm, pixel_noise / np.sqrt(norm)

    reference_flux, noise = point_flux(stamps[:, 1], local_level=True)
    change = np.abs(point_flux(stamps[:, 2], local_level=False)[0])
    large = (reference_flux < detection_sigma * noise) | (change >= min_change * reference_flux)
    u, v, on_sky = _positions(candidates)
    recurring = np.zeros(n, bool)
    keys = (candidates.field.astype(str).to_numpy() + "|" + candidates.sign.astype(str).to_numpy() + "|"
            + on_sky.astype(str))
    exposures = candidates["frame_id" if "frame_id" in candidates else "night"].astype(str).to_numpy()
    for key in np.unique(keys):
        members = np.flatnonzero(keys == key)
        close = np.hypot(u[members, None] - u[None, members], v[members, None] - v[None, members]) <= radius
        for row, k in enumerate(members):
            recurring[k] = len(set(exposures[members[close[row]]])) >= min_frames
    artefact_flags = FLAG_EDGE | FLAG_SHAPE | FLAG_BRIGHT_STAR
    plausible = ((candidates["flags"].fillna(0).astype(int).to_numpy() & artefact_flags) == 0 if "flags" in candidates
                 else np.ones(n, bool))
    return recurring & large & plausible


def injected_examples(
    frame: CalibratedFrame, reference: Reference, original: pd.DataFrame, night: str, frame_id: str,
    rng: np.random.Generator, rounds: int = 2, fakes_per_round: int = 50,
    snr_range: tuple[float, float] = (4.0, 100.0), host_fraction: float = 0.3, change_fraction: float = 0.4,
    threshold: float = 5.0,
) -> Examples:
    """``real`` examples of one frame: recovered fakes over ``rounds`` independent injections.

    Each round injects ``fakes_per_round`` point sources with the frame's measured PSF at S/N drawn
    log-uniformly in ``snr_range`` (faint fakes are as common per decade as bright ones; those not
    recovered at ``threshold`` give no example), ``host_fraction`` of them on or beside the frame's
    sources, ``change_fraction`` of them changes of its stars (brightening or fading), and differences and
    searches the copy as the nightly pipeline does. The example is the
    stamp stack of the candidate that recovered the fake, its mask the injected footprint
    (:func:`~astrid_assets.science.injection.fakes.footprint_masks`).

    Parameters
    ----------
    frame, reference : CalibratedFrame, Reference
        A calibrated frame and its field's reference.
    original : pandas.DataFrame
        Candidates of the untouched frame (``x``, ``y`` on the reference grid).
    night, frame_id : str
        Provenance, used in the examples' ids (``<frame_id>-f<round><k>``).
    rng : numpy.random.Generator
        Random generator (positions, S/N, Poisson noise).
    rounds, fakes_per_round : int
        Independent injections into the frame, and fakes in each.
    snr_range : tuple of float, default (4, 100)
        PSF-optimal S/N range of the fakes (log-uniform).
    host_fraction : float, default 0.3
        Share of new sources placed within 2 FWHM of a source.
    change_fraction : float, default 0.4
        Share of fakes that are changes of the frame's own sources (brightening or fading by 20–100 %
        of their flux; :func:`~astrid_assets.science.injection.fakes.injection_recovery`).
    threshold : float, default 5.0
        Detection threshold on ``|S_corr|``.

    Returns
    -------
    Examples
        Label 1, origin ``injection``, ``snr`` the fake's expected S/N.
    """
    parts = []
    low, high = np.log(snr_range[0]), np.log(snr_range[1])
    for round_index in range(rounds):
        outcome = injection_recovery(frame, reference, original, rng, n_fakes=fakes_per_round, snr_range=(low, high),
                                     threshold=threshold, host_fraction=host_fraction, log_snr=True,
                                     change_fraction=change_fraction)
        kept = np.flatnonzero(outcome.recovered)
        n = kept.size
        parts.append(Examples(
            outcome.stamps, outcome.masks, np.ones(n, np.int64),
            np.array([f"{frame_id}-f{round_index}{k:03d}" for k in kept]), np.full(n, night), np.full(n, frame_id),
            np.full(n, "injection"), outcome.snr[kept].astype(float), np.ones(n, np.float32)))
    return Examples.concatenate(parts)
