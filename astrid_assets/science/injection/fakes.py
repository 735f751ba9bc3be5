"""Fakes in a whole frame: where to put them, and what the differencing makes of them.

:func:`injection_recovery` injects point sources with the frame's measured PSF into a copy of a
calibrated frame, differences and searches it exactly as the night's pipeline does, and matches
what it finds to what it injected. The same outcome serves two purposes: the nightly
completeness test (which fakes were recovered, at what S/N), and injection training examples for
the real/bogus model (the recovered fakes' science / reference / difference stamps, labelled real,
with the injected footprint as their per-pixel mask), as GOTO's classifier learns from its own
images (Killestein et al. 2021, MNRAS 503, 4838).

Conventions: frame pixels ``(x, y)`` 0-based, arrays ``[y, x]``; S/N is PSF-optimal against the
frame's variance (:mod:`~astrid_assets.science.injection.inject`); stamps are
:data:`~astrid_assets.science.products.STAMP_SIZE` square, centred on the
candidate's nearest pixel, in new-frame e-.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from astrid_assets.science import masks
from astrid_assets.science.injection.inject import inject_sources, match_catalogues, psf_optimal_snr
from astrid_assets.science.pipeline import difference_frame, find_candidates, on_reference_sky
from astrid_assets.science.products import STAMP_SIZE, CalibratedFrame, Difference, Reference
from astrid_assets.science.psf.analytic import estimate_frame_psf
from astrid_assets.science.psf.stars import PSF_STAR_LIMITS
from astrid_assets.science.sources import star_catalogue

__all__ = [
    "FWHM_TO_SIGMA",
    "InjectionRecovery",
    "fake_positions",
    "clean_position",
    "footprint_masks",
    "injection_recovery",
]

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


@dataclass
class InjectionRecovery:
    """Outcome of injecting fake point sources into one frame and searching for them.

    Per fake: ``snr``, ``recovered``, ``position_error``, ``hosted``, ``sign``. Per recovered fake (in the
    order of ``np.flatnonzero(recovered)``): ``stamps`` and ``masks``.
    """

    snr: np.ndarray  #: expected PSF-optimal S/N of each fake
    recovered: np.ndarray  #: bool per fake
    position_error: np.ndarray  #: px on the reference grid, NaN where not recovered
    false_detections: int  #: detections matching neither a fake nor a detection of the untouched frame
    hosted: np.ndarray  #: bool per fake: placed on or beside a source of the frame (a star or a galaxy)
    sign: np.ndarray  #: per fake: +1 a source that appeared or brightened, −1 a star that faded
    stamps: np.ndarray  #: (m, 3, STAMP_SIZE, STAMP_SIZE) float32 stamps of the recovered fakes' candidates
    masks: np.ndarray  #: (m, STAMP_SIZE, STAMP_SIZE) float32 injected footprints (1 inside)


def fake_positions(
    frame: CalibratedFrame, reference: Reference, n: int, rng: np.random.Generator, margin: int = 40,
    min_separation: float = 20.0, hosts: np.ndarray | None = None, host_fraction: float = 0.0,
    host_radius: float = 6.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``n`` positions (frame pixels, ``(x, y)``) on clean pixels inside the reference's overlap.

    A draw is uniform over the frame, or, with probability ``host_fraction`` (when ``hosts`` are
    given), a host source's position offset by a distance uniform in ``[0, host_radius]`` px at a
    random angle: on a galaxy or beside a star, where real transients sit. At most ``20 n`` draws; one
    is kept when no pixel of the 7 × 7 box around it is ``UNUSABLE``, it lies at least ``margin`` px
    inside both the frame and the reference (through the WCS), and at least ``min_separation`` px
    from the positions kept.

    Parameters
    ----------
    frame : CalibratedFrame
        The frame, with a WCS.
    reference : Reference
        The reference, with a WCS.
    n : int
        Positions wanted.
    rng : numpy.random.Generator
        Random generator.
    margin : int, default 40
        Distance from the frame's and the reference's borders, px.
    min_separation : float, default 20.0
        Smallest distance between two positions, px.
    hosts : numpy.ndarray or None, default None
        ``(k, 2)`` positions ``(x, y)`` of the frame's sources, px.
    host_fraction : float, default 0.0
        Probability that a draw is placed by a host.
    host_radius : float, default 6.0
        Largest offset from the host, px.

    Returns
    -------
    positions : numpy.ndarray
        ``(m, 2)`` positions ``(x, y)``, frame px (0-based), ``m ≤ n``.
    hosted : numpy.ndarray of bool
        ``(m,)``: placed by a host.
    """
    ny, nx = frame.science.shape
    hosts = np.empty((0, 2)) if hosts is None else np.asarray(hosts, float).reshape(-1, 2)
    positions: list[tuple[float, float]] = []
    hosted: list[bool] = []
    for _ in range(n * 20):
        if len(positions) == n:
            break
        by_host = len(hosts) > 0 and rng.random() < host_fraction
        if by_host:
            radius, angle = rng.uniform(0.0, host_radius), rng.uniform(0.0, 2 * np.pi)
            x, y = hosts[rng.integers(len(hosts))] + radius * np.array([np.cos(angle), np.sin(angle)])
        else:
            x, y = rng.uniform(margin, nx - margin), rng.uniform(margin, ny - margin)
        if not clean_position(frame, reference, x, y, margin):
            continue
        if positions and np.min(np.hypot(*(np.array(positions) - (x, y)).T)) < min_separation:
            continue
        positions.append((x, y))
        hosted.append(by_host)
    return np.array(positions).reshape(-1, 2), np.array(hosted, bool)


def clean_position(frame: CalibratedFrame, reference: Reference, x: float, y: float, margin: int = 40) -> bool:
    """Whether frame pixel ``(x, y)`` lies ``margin`` px inside the frame and the reference (through the
    WCS) with no ``UNUSABLE`` pixel in the 7 × 7 box around it."""
    ny, nx = frame.science.shape
    if not (margin <= x < nx - margin and margin <= y < ny - margin):
        return False
    iy, ix = int(round(y)), int(round(x))
    if (frame.mask[iy - 3: iy + 4, ix - 3: ix + 4] & masks.UNUSABLE).any():
        return False
    rx, ry = reference.wcs.world_to_pixel(frame.wcs.pixel_to_world(x, y))
    return bool(margin <= rx < reference.image.shape[1] - margin and margin <= ry < reference.image.shape[0] - margin)


def footprint_masks(
    offsets: np.ndarray, flux: np.ndarray, fwhm: float, sigma: np.ndarray, threshold: float = 2.0,
    size: int = STAMP_SIZE, min_pixels: int = 3,
) -> np.ndarray:
    """Per-pixel footprints of injected point sources on their stamps: where the source stands above the noise.

    The source is modelled on the stamp as a circular Gaussian of ``fwhm`` and total ``flux``
    centred at ``offsets`` from the stamp's central pixel; its footprint is every pixel whose
    expected significance ``flux · G(r) / sigma`` reaches ``threshold``. Where fewer than
    ``min_pixels`` do (a faint fake), the footprint is the disc of radius ``fwhm`` — as
    :func:`astrid_assets.ml.dataset.transient_masks` does for measured transients.

    Parameters
    ----------
    offsets : numpy.ndarray
        ``(m, 2)`` true position ``(dx, dy)`` relative to the stamp centre, px.
    flux : numpy.ndarray
        ``(m,)`` injected flux, e- (the stamp's units).
    fwhm : float
        FWHM of the image's PSF on the stamp's grid, px.
    sigma : numpy.ndarray
        ``(m,)`` noise per pixel at the source, e-.
    threshold : float, default 2.0
        Significance per pixel inside the footprint.
    size : int, default STAMP_SIZE
        Stamp side, px (odd).
    min_pixels : int, default 3
        Fewest pixels of a significance footprint.

    Returns
    -------
    numpy.ndarray
        ``(m, size, size)`` float32, 1 inside the footprint.
    """
    offsets = np.asarray(offsets, float).reshape(-1, 2)
    grid = np.arange(size) - size // 2
    r2 = (grid[None, None, :] - offsets[:, 0, None, None]) ** 2 + (grid[None, :, None] - offsets[:, 1, None, None]) ** 2
    s = fwhm * FWHM_TO_SIGMA
    significance = (np.asarray(flux, float)[:, None, None] / (2 * np.pi * s * s) * np.exp(-r2 / (2 * s * s))
                    / np.asarray(sigma, float)[:, None, None])
    footprint = significance >= threshold
    faint = footprint.sum(axis=(1, 2)) < min_pixels
    footprint[faint] = r2[faint] <= fwhm**2
    return footprint.astype(np.float32)


def injection_recovery(
    frame: CalibratedFrame, reference: Reference, original: pd.DataFrame, rng: np.random.Generator,
    n_fakes: int = 60, snr_range: tuple[float, float] = (3.0, 30.0), match_radius: float = 1.5,
    threshold: float = 5.0, method: str = "zogy", host_fraction: float = 0.0, log_snr: bool = False,
    change_fraction: float = 0.0, min_change: float = 0.2, like: Difference | None = None,
) -> InjectionRecovery:
    """Inject fakes with the frame's measured PSF into a copy of it, difference, detect, match.

    Fakes get S/N uniform in ``snr_range`` (PSF-optimal against the frame's variance) on clean
    pixels, a fraction ``host_fraction`` of them on or beside the frame's sources (SEP detections
    at 5σ); a fake is recovered when a positive candidate lies within ``match_radius`` px of its
    position on the reference grid. False detections are candidates matching neither a fake nor
    a candidate of the untouched frame (``original``).

    Parameters
    ----------
    frame : CalibratedFrame
        The calibrated frame (e-, sky included); put on the reference's sky first
        (:func:`~astrid_assets.science.pipeline.on_reference_sky`).
    reference : Reference
        Its field's reference.
    original : pandas.DataFrame
        Candidates of the untouched frame (columns ``x``, ``y``, reference px).
    rng : numpy.random.Generator
        Random generator for positions, S/N and Poisson noise.
    n_fakes : int, default 60
        Fakes wanted (fewer when too few clean positions are found).
    snr_range : tuple of float, default (3.0, 30.0)
        Range of the uniform S/N distribution (of ln S/N with ``log_snr``).
    match_radius : float, default 1.5
        Match radius, reference px.
    threshold : float, default 5.0
        Detection threshold on ``|S_corr|`` (``Difference.s_corr``).
    method : {"zogy", "classic"}, default "zogy"
        Subtraction method (:func:`~astrid_assets.science.pipeline.difference_frame`).
    host_fraction : float, default 0.0
        Share of the fakes placed within 2 FWHM of a source of the frame.
    log_snr : bool, default False
        Draw ln S/N uniformly in ``snr_range`` (log-uniform S/N) instead of S/N.
    change_fraction : float, default 0.0
        Share of the fakes that are changes of the frame's own stars instead of new sources: at a
        star's position exactly, a flux change of the drawn S/N, brightening or fading (half each) —
        what a variable star, or a transient that was already in the reference, does. Each goes to a
        star (aperture flux, 2 FWHM) the change is ``min_change`` to 100 % of, each star once; a
        change with no such star is not injected. A fading star keeps the Poisson noise of its full
        flux in the image; its variance map is lowered by the flux taken away.
    min_change : float, default 0.2
        Smallest change of a star, as a fraction of its flux.
    like : Difference or None, default None
        The untouched frame's difference: its registration, new-frame PSF field and flux ratio are
        reused for the frame with fakes (:func:`~astrid_assets.science.pipeline.difference_frame`), so
        the fakes change nothing but the pixels; None measures them again on the frame with fakes.

    Returns
    -------
    InjectionRecovery
        Expected S/N, recovery, position error and placement per fake, the false-detection count,
        and the recovered fakes' stamps and injected footprints.

    Raises
    ------
    RegistrationError, PSFError
        As :func:`~astrid_assets.science.pipeline.difference_frame` and
        :func:`~astrid_assets.science.psf.analytic.estimate_frame_psf` raise them.
    """
    frame, _ = on_reference_sky(frame, reference)
    psf = frame.psf or estimate_frame_psf(frame.science, frame.background, frame.background_rms, frame.mask,
                                          **PSF_STAR_LIMITS)
    stars = (star_catalogue(frame.science, frame.background, frame.background_rms, frame.mask, n=500,
                            aperture=2.0 * psf.fwhm, sources=frame.sources)
             if host_fraction > 0 or change_fraction > 0 else np.empty((0, 3)))
    n_changes = int(rng.binomial(n_fakes, change_fraction)) if len(stars) else 0
    changeable = stars[[clean_position(frame, reference, x, y) for x, y in stars[:, :2]]] if n_changes else stars
    n_changes = min(n_changes, len(changeable))
    xy, hosted = fake_positions(frame, reference, n_fakes - n_changes, rng, hosts=stars[:, :2],
                                host_fraction=host_fraction, host_radius=2.0 * psf.fwhm)
    snr = rng.uniform(*snr_range, size=len(xy))
    snr = np.exp(snr) if log_snr else snr
    weight = psf_optimal_snr(1.0, psf, frame.variance, xy[:, 0], xy[:, 1])
    flux, sign = snr / weight, np.ones(len(xy))
    if n_changes:
        change_snr = rng.uniform(*snr_range, size=n_changes)
        change_snr = np.exp(change_snr) if log_snr else change_snr
        star_weight = psf_optimal_snr(1.0, psf, frame.variance, changeable[:, 0], changeable[:, 1])
        chosen: list[int] = []
        change = []
        for target in change_snr:  # a star the change is 20–100 % of, not yet used
            needed = target / star_weight
            eligible = np.flatnonzero((changeable[:, 2] >= needed) & (min_change * changeable[:, 2] <= needed))
            eligible = np.setdiff1d(eligible, chosen)
            if eligible.size:
                k = int(rng.choice(eligible))
                chosen.append(k)
                change.append(needed[k] * rng.choice([-1.0, 1.0]))
        xy = np.vstack([xy, changeable[chosen, :2]])
        hosted = np.concatenate([hosted, np.ones(len(chosen), bool)])
        flux, sign = np.concatenate([flux, change]), np.concatenate([sign, np.sign(change)])
    injected = inject_sources(frame.science, frame.variance, psf, xy[:, 0], xy[:, 1], flux=flux, rng=rng)
    fake_frame = replace(frame, science=injected.image, variance=injected.variance)
    difference = difference_frame(fake_frame, reference, method=method, like=like)
    candidates, stamps = find_candidates(difference, reference.wcs, threshold)
    ref_x, ref_y = reference.wcs.world_to_pixel(frame.wcs.pixel_to_world(xy[:, 0], xy[:, 1]))
    truth_xy = np.column_stack([ref_x, ref_y])
    match = np.full(len(xy), -1)
    for direction in (1, -1):  # a fake is found by a candidate of its own sign
        fakes, same = np.flatnonzero(sign == direction), np.flatnonzero(candidates.sign.to_numpy() == direction)
        if len(fakes) and len(same):
            found_same = match_catalogues(truth_xy[fakes], candidates.iloc[same][["x", "y"]].to_numpy(),
                                          radius=match_radius)
            match[fakes] = np.where(found_same >= 0, same[found_same], -1)
    recovered = match >= 0
    error = np.full(len(xy), np.nan)
    found = candidates.iloc[match[recovered]]
    if recovered.any():
        error[recovered] = np.hypot(found.x.to_numpy() - ref_x[recovered], found.y.to_numpy() - ref_y[recovered])
    others = candidates.drop(index=found.index)
    if len(others) and len(original):
        known = match_catalogues(others[["x", "y"]].to_numpy(), original[["x", "y"]].to_numpy(), radius=match_radius)
        false_detections = int((known < 0).sum())
    else:
        false_detections = len(others)
    centres = np.rint(found[["x", "y"]].to_numpy(float)).reshape(-1, 2)
    sigma = np.sqrt(np.maximum(difference.variance[centres[:, 1].astype(int), centres[:, 0].astype(int)], 1e-12))
    footprints = footprint_masks(truth_xy[recovered] - centres, np.abs(injected.flux[recovered]), difference.new_fwhm,
                                 sigma)
    return InjectionRecovery(snr=np.abs(injected.snr), recovered=recovered, position_error=error,
                             false_detections=false_detections, hosted=hosted, sign=sign,
                             stamps=stamps[candidates.index.get_indexer(found.index)], masks=footprints)
