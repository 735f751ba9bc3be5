"""Candidate stamps as model inputs: normalisation, transient masks, night splits, content digest.

The contract
------------
A candidate arrives as a ``(3, 63, 63)`` float32 stack in electrons — science, reference and
difference, in that channel order (:data:`~astrid_assets.science.products.STAMP_SIZE` and
``STAMP_CHANNELS``, the one definition that detection writes and the model reads) — with
``NaN`` beyond the image edge (and on masked pixels),
and a label 1 (real) / 0 (bogus).  A batch is ``(N, 3, 63, 63)``.  The candidate's position is
the central pixel ``[31, 31]`` (to within ±0.5 px).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from astrid_assets.science.products import STAMP_CHANNELS as CHANNELS
from astrid_assets.science.products import STAMP_SIZE

CENTRE = STAMP_SIZE // 2  #: index of the central pixel (the candidate's position)
DIFFERENCE = CHANNELS.index("difference")
MAD_TO_SIGMA = 1.482602218505602  #: sigma / median absolute deviation for Gaussian noise
ASINH_SOFTENING = 3.0  #: normalised values are arcsinh(z / ASINH_SOFTENING), z in noise sigmas
SPLITS = ("train", "val", "test")  #: in the order of their codes in a stored dataset's ``split`` array


def _check_stamps(stamps: np.ndarray) -> np.ndarray:
    stamps = np.asarray(stamps)
    if stamps.ndim != 4 or stamps.shape[1] != len(CHANNELS):
        raise ValueError(f"stamps must be (N, 3, H, W) (science, reference, difference); got shape {stamps.shape}")
    return stamps


def robust_background(stamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per stamp and channel: median and robust noise sigma (1.4826 × MAD) of the finite pixels.

    Returns two ``(N, C)`` float64 arrays (computed in float32).  A channel with no finite pixels gets median 0 and
    sigma 1; a channel whose MAD is zero (flat, or mostly one value) falls back to the standard
    deviation of its finite pixels, and to 1 if that is zero too.
    """
    stamps = _check_stamps(stamps)
    return _robust_background(stamps.reshape(*stamps.shape[:2], stamps.shape[2] * stamps.shape[3]))


def _robust_background(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`robust_background` of ``(N, C, P)`` pixel lists (np.median where no NaN: much faster)."""
    flat = flat.astype(np.float32, copy=False)
    finite = np.isfinite(flat)
    median = np.median(flat, axis=2)
    deviation = np.abs(flat - median[..., None])
    sigma = MAD_TO_SIGMA * np.median(deviation, axis=2)
    std = np.sqrt(np.mean(deviation**2, axis=2))
    holed = ~finite.all(axis=2)
    if holed.any():
        some = np.where(finite[holed], flat[holed], np.nan)
        median[holed] = _nanmedian_rows(some)
        deviation = np.abs(some - median[holed][:, None])
        sigma[holed] = MAD_TO_SIGMA * _nanmedian_rows(deviation)
        with warnings.catch_warnings():  # all-NaN channels are handled below
            warnings.simplefilter("ignore", RuntimeWarning)
            std[holed] = np.sqrt(np.nanmean(deviation**2, axis=1))
    sigma = np.where(sigma > 0, sigma, std)  # NaN compares False
    sigma = np.where(sigma > 0, sigma, 1.0)
    median = np.where(np.isfinite(median), median, 0.0)
    return median.astype(np.float64), sigma.astype(np.float64)


def _nanmedian_rows(values: np.ndarray) -> np.ndarray:
    """Median of the non-NaN values of each row of a 2-D array (NaN for all-NaN rows); faster than
    ``np.nanmedian`` along an axis."""
    ordered = np.sort(values, axis=1)  # NaN sorts last
    count = np.sum(~np.isnan(values), axis=1)
    low = np.take_along_axis(ordered, np.maximum((count - 1) // 2, 0)[:, None], axis=1)[:, 0]
    high = np.take_along_axis(ordered, np.maximum(count // 2, 0)[:, None], axis=1)[:, 0]
    return np.where(count > 0, 0.5 * (low + high), np.nan)


def normalise_stamps(stamps: np.ndarray) -> np.ndarray:
    """Model input from raw stamps: ``(N, 3, H, W)`` e- → ``(N, 3, H, W)`` float32, C-contiguous.

    Per stamp and per channel independently:

    1. subtract the median of the finite pixels (the sky level; ~0 in the difference);
    2. divide by the robust noise sigma, 1.4826 × median absolute deviation — so the values are
       significances, comparable across surveys, exposure times and sky brightness;
    3. compress with ``arcsinh(z / 3)``: linear (z / 3) within a few sigma, logarithmic beyond,
       so a 10⁴ σ star core (≈ 8.8) and a 5 σ transient (≈ 1.3) both stay within a range a
       network handles (|y| < 14 below 10⁶ σ); signs are kept (fading sources are negative in
       the difference);
    4. replace NaN (beyond the image edge, masked pixels) by 0, the background level.

    Robust statistics make the scaling insensitive to the candidate itself and to bright stars
    in the stamp.  The operation is deterministic and per stamp, so it needs no fitted state
    (nothing to save next to the weights).
    """
    stamps = _check_stamps(stamps)
    median, sigma = robust_background(stamps)
    centre = median[..., None, None].astype(np.float32)
    scale = (ASINH_SOFTENING * sigma[..., None, None]).astype(np.float32)
    out = np.arcsinh((stamps.astype(np.float32, copy=False) - centre) / scale)
    out[~np.isfinite(out)] = 0.0
    return np.ascontiguousarray(out, dtype=np.float32)


def _radius2(size: int = STAMP_SIZE) -> np.ndarray:
    offsets = np.arange(size) - size // 2
    return offsets[:, None] ** 2 + offsets[None, :] ** 2


def transient_masks(
    stamps: np.ndarray,
    labels: np.ndarray,
    fwhm: float | np.ndarray,
    threshold: float = 2.0,
    min_pixels: int = 3,
) -> np.ndarray:
    """Per-pixel target masks ``(N, H, W)`` float32 (1 = the transient's footprint).

    Bogus candidates (label 0) get an empty mask.  For a real candidate the footprint is the
    set of finite difference-stamp pixels within one FWHM of the centre whose significance
    ``s · (d − median) / sigma`` exceeds ``threshold`` (2 σ), where ``s`` is the sign of the
    summed difference flux within that disc (+1 brightening, −1 fading) and median/sigma are the
    robust background of the difference stamp (see :func:`robust_background`).  When fewer than
    ``min_pixels`` pass (a faint transient whose pixels are individually below 2 σ), the footprint
    is the whole disc of radius FWHM (its finite pixels).

    ``fwhm`` (px) is a scalar or one value per candidate (the science-image PSF FWHM).
    """
    stamps = _check_stamps(stamps)
    n, _, height, width = stamps.shape
    if height != width:
        raise ValueError(f"stamps must be square; got {height}×{width}")
    labels = np.asarray(labels).reshape(-1)
    if labels.size != n:
        raise ValueError(f"{labels.size} labels for {n} stamps")
    fwhm = np.broadcast_to(np.asarray(fwhm, dtype=np.float64), (n,))
    if not np.all(fwhm > 0):
        raise ValueError("fwhm must be positive")
    masks = np.zeros((n, height, width), np.float32)
    real = np.flatnonzero(labels == 1)
    if real.size == 0:
        return masks
    difference = stamps[real, DIFFERENCE].astype(np.float64)
    median, sigma = _robust_background(difference.reshape(real.size, 1, height * width))
    z = (difference - median[:, :, None]) / sigma[:, :, None]
    finite = np.isfinite(z)
    z = np.where(finite, z, 0.0)
    disc = (_radius2(height)[None] <= fwhm[real, None, None] ** 2) & finite
    sign = np.where(np.sum(np.where(disc, z, 0.0), axis=(1, 2)) < 0, -1.0, 1.0)
    footprint = disc & (sign[:, None, None] * z > threshold)
    faint = footprint.sum(axis=(1, 2)) < min_pixels
    footprint[faint] = disc[faint]
    masks[real] = footprint
    return masks


@dataclass(frozen=True)
class StampSet:
    """A labelled set ready for training/evaluation: normalised inputs, labels, target masks."""

    inputs: np.ndarray  #: (N, 3, H, W) float32, from :func:`normalise_stamps`
    labels: np.ndarray  #: (N,) float32, 1 real / 0 bogus
    masks: np.ndarray  #: (N, H, W) float32, from :func:`transient_masks`
    ids: np.ndarray | None = None  #: (N,) candidate ids, optional
    weights: np.ndarray | None = None  #: (N,) float32 loss weight per example, optional (None: all 1)

    def __post_init__(self) -> None:
        n = self.inputs.shape[0]
        if self.inputs.ndim != 4 or self.inputs.shape[1] != len(CHANNELS):
            raise ValueError(f"inputs must be (N, 3, H, W); got {self.inputs.shape}")
        if self.labels.shape != (n,) or self.masks.shape != (n, *self.inputs.shape[2:]):
            raise ValueError(
                f"inconsistent shapes: inputs {self.inputs.shape}, labels {self.labels.shape}, masks {self.masks.shape}"
            )
        if not np.isin(self.labels, (0, 1)).all():
            raise ValueError("labels must be 0 (bogus) or 1 (real)")
        if self.ids is not None and len(self.ids) != n:
            raise ValueError(f"{len(self.ids)} ids for {n} stamps")
        if self.weights is not None and (self.weights.shape != (n,) or not (self.weights >= 0).all()):
            raise ValueError(f"weights must be {n} non-negative numbers; got shape {self.weights.shape}")

    @classmethod
    def from_stamps(
        cls, stamps: np.ndarray, labels: np.ndarray, fwhm: float | np.ndarray, ids: Sequence | None = None
    ) -> StampSet:
        """Normalise raw stamps (e-) and derive the target masks."""
        labels = np.asarray(labels)
        return cls(
            inputs=normalise_stamps(stamps),
            labels=labels.astype(np.float32).reshape(-1),
            masks=transient_masks(stamps, labels, fwhm),
            ids=None if ids is None else np.asarray(ids),
        )

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def subset(self, index: np.ndarray) -> StampSet:
        return StampSet(
            self.inputs[index], self.labels[index], self.masks[index], None if self.ids is None else self.ids[index],
            None if self.weights is None else self.weights[index],
        )

    def loss_weights(self) -> np.ndarray:
        """``weights`` as float32, all 1 when there are none."""
        return np.ones(len(self), np.float32) if self.weights is None else self.weights.astype(np.float32)


class NightSplit(NamedTuple):
    """Row indices (sorted) of each split, and the nights each holds."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    train_nights: np.ndarray
    val_nights: np.ndarray
    test_nights: np.ndarray


def split_by_night(
    nights: np.ndarray | Sequence, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), seed: int = 0
) -> NightSplit:
    """Assign whole nights to train/val/test so that no night is in two splits.

    Candidates from one night share conditions (seeing, sky, reference, artefacts), so splitting
    candidates of one night across splits would leak.  ``nights`` holds one night label per
    candidate (any sortable type: dates, strings, integers).  The distinct nights are shuffled
    with ``seed`` and cut where the cumulative *candidate* count crosses the fractions (each night
    goes to the split holding the midpoint of its candidates); every split with a non-zero
    fraction then gets at least one night, taken from the split with the most nights.

    Raises ``ValueError`` when there are fewer distinct nights than splits with a non-zero
    fraction, or when the fractions are not non-negative numbers summing to 1.
    """
    fractions_array = np.asarray(fractions, dtype=np.float64)
    if fractions_array.shape != (3,) or (fractions_array < 0).any() or not np.isclose(fractions_array.sum(), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1; got {fractions}")
    nights = np.asarray(nights)
    if nights.ndim != 1:
        raise ValueError("nights must be one-dimensional (one night per candidate)")
    unique, inverse, counts = np.unique(nights, return_inverse=True, return_counts=True)
    wanted = np.flatnonzero(fractions_array > 0)
    if unique.size < wanted.size:
        raise ValueError(
            f"too few nights to split by night: {unique.size} distinct night(s) for {wanted.size} non-empty splits "
            f"(fractions {tuple(fractions)}); each split needs at least one whole night"
        )
    order = np.random.default_rng(seed).permutation(unique.size)
    midpoints = (np.cumsum(counts[order]) - counts[order] / 2.0) / counts.sum()
    edges = np.cumsum(fractions_array)[:-1]
    assigned = np.empty(unique.size, np.int64)
    assigned[order] = np.searchsorted(edges, midpoints, side="right")
    for split in wanted:  # every non-empty split gets a night
        if not (assigned == split).any():
            sizes = np.array([(assigned == s).sum() for s in range(3)])
            donor = int(np.argmax(sizes))
            candidates = np.flatnonzero(assigned == donor)
            assigned[candidates[np.argmin(counts[candidates])]] = split
    row_split = assigned[inverse]
    rows = [np.flatnonzero(row_split == s) for s in range(3)]
    held = [unique[assigned == s] for s in range(3)]
    return NightSplit(*rows, *held)


def split_codes(split: NightSplit, n: int) -> np.ndarray:
    """Each of ``n`` rows' split as its index in :data:`SPLITS` (int8): a stored dataset's ``split`` array."""
    codes = np.empty(n, np.int8)
    for code, name in enumerate(SPLITS):
        codes[getattr(split, name)] = code
    return codes


def split_sets(arrays: dict[str, np.ndarray]) -> dict[str, StampSet]:
    """A stored dataset's arrays (``stamps``, ``labels``, ``fwhm``, ``ids`` and ``split`` codes; ``masks``
    and loss ``weights`` where stored) as a :class:`StampSet` per split name.

    Stored masks are used as they are (an injected fake's mask is its injected footprint); a dataset
    without them gets :func:`transient_masks` with its ``fwhm``."""
    stamps, labels = arrays["stamps"], np.asarray(arrays["labels"])
    masks = arrays.get("masks")
    full = StampSet(
        inputs=normalise_stamps(stamps), labels=labels.astype(np.float32).reshape(-1),
        masks=(transient_masks(stamps, labels, arrays["fwhm"]) if masks is None else masks.astype(np.float32)),
        ids=np.asarray(arrays["ids"]),
        weights=None if arrays.get("weights") is None else np.asarray(arrays["weights"], np.float32),
    )
    return {name: full.subset(np.flatnonzero(arrays["split"] == code)) for code, name in enumerate(SPLITS)}


def content_digest(stamps: np.ndarray, labels: np.ndarray, ids: Sequence) -> str:
    """SHA-256 (hex) of a labelled stamp set, independent of row order.

    Rows are ordered by id (stably), then the digest covers the ids, the labels (as int8) and
    the stamps as little-endian float32 with every NaN written as the same bit pattern — so it
    changes when any pixel, label or id changes, and identifies the data a model was trained on.
    """
    stamps = _check_stamps(stamps)
    labels = np.asarray(labels).reshape(-1)
    ids = np.asarray([str(i) for i in ids])
    if not (len(ids) == labels.size == stamps.shape[0]):
        raise ValueError(f"{stamps.shape[0]} stamps, {labels.size} labels and {len(ids)} ids")
    order = np.argsort(ids, kind="stable")
    digest = hashlib.sha256()
    digest.update(f"astrid-stamps/1 shape={stamps.shape[1:]} n={stamps.shape[0]}\n".encode())
    for k in order:
        digest.update(ids[k].encode("utf-8") + b"\x00")
    digest.update(labels[order].astype(np.int8).tobytes())
    canonical = np.ascontiguousarray(stamps[order], dtype="<f4")
    canonical = np.where(np.isnan(canonical), np.float32(np.nan), canonical).astype("<f4")
    digest.update(canonical.tobytes())
    return digest.hexdigest()
