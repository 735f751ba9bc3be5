"""Master calibrations: sigma-clipped combines of a night's bias, dark and flat frames, with bad-pixel
maps (flat defects, hot pixels) and the gain and read noise by photon transfer of their pairs.

Master bias: ADU. Master dark: ADU/s, bias-subtracted. Master flat: dimensionless, normalised to
median 1. Arrays ``[y, x]``, 0-based.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from astropy.stats import mad_std, sigma_clip
from scipy.ndimage import median_filter

from astrid_assets.science.calibration.detector import photon_transfer

__all__ = [
    "FLAT_DEVIATION",
    "FLAT_RANGE",
    "MIN_FLAT",
    "HOT_SIGMA",
    "FLAT_REFERENCE_WIDTH",
    "MasterCalibrations",
    "ROW_BLOCK",
    "sigma_clipped_combine",
    "flat_defects",
    "hot_pixels",
    "build_masters",
]

#: A master-flat pixel more than this fraction away from its row neighbourhood is bad.
FLAT_DEVIATION = 0.1
#: Master-flat values outside this range are bad whatever their neighbours.
FLAT_RANGE = (0.5, 1.5)
#: Flat values below this are not divided by (the pixel is flagged and left uncorrected).
MIN_FLAT = 0.01
#: A master-dark pixel this many robust sigmas above the median dark rate is hot.
HOT_SIGMA = 10.0
#: Width (pixels) of the running median along rows that a flat pixel is compared to; wider
#: than any bad-column group, narrower than the vignetting scale.
FLAT_REFERENCE_WIDTH = 15


@dataclass
class MasterCalibrations:
    """Master calibration frames of one night.

    ``bias`` ADU; ``dark`` ADU/s (bias-subtracted); ``flat`` normalised to median 1;
    ``bad_pixels`` True for dead, low-response or hot pixels found in the masters.  ``gain``
    (e-/ADU) and ``read_noise`` (e-) by photon transfer of the night's flat and bias pairs
    (:func:`photon_transfer`), None where there were not two of each.

    Attributes
    ----------
    bias : numpy.ndarray
        Master bias, ADU, indexed ``[y, x]``.
    dark : numpy.ndarray
        Master dark rate, ADU/s, bias-subtracted (zeros without darks).
    flat : numpy.ndarray
        Master flat, dimensionless, median 1.
    bad_pixels : numpy.ndarray of bool
        Dead, low/high-response (:func:`flat_defects`) or hot (:func:`hot_pixels`) pixels.
    gain : float or None
        e-/ADU by photon transfer, or None.
    read_noise : float or None
        e- by photon transfer, or None.
    """

    bias: np.ndarray
    dark: np.ndarray
    flat: np.ndarray
    bad_pixels: np.ndarray
    gain: float | None = None
    read_noise: float | None = None

    @property
    def identity(self) -> bool:
        """True for the identity calibrations of frames reduced elsewhere (no calibration frames)."""
        return bool(not np.any(self.bias) and not np.any(self.dark) and np.all(self.flat == 1)
                    and not np.any(self.bad_pixels))


#: Rows a master is computed in at a time (:func:`sigma_clipped_combine`, :func:`flat_defects`): blocks small enough
#: for the caches (a 2048² stack of 7 frames combines 1.8× faster in blocks of 256 rows than whole), and the unit
#: their threads share.
ROW_BLOCK = 256


def _by_row_blocks(function, n_rows: int, threads: int) -> np.ndarray:
    """``function(rows)`` over blocks of :data:`ROW_BLOCK` rows (``threads`` at a time), concatenated along axis 0:
    for computations of which each row depends on that row alone (astropy's clipping and scipy's filters release
    the GIL, so the threads share the cores)."""
    blocks = [slice(start, start + ROW_BLOCK) for start in range(0, n_rows, ROW_BLOCK)]
    if threads > 1 and len(blocks) > 1:
        with ThreadPoolExecutor(min(threads, len(blocks))) as executor:
            return np.concatenate(list(executor.map(function, blocks)))
    return np.concatenate([function(rows) for rows in blocks])


def sigma_clipped_combine(frames: Sequence[np.ndarray], sigma: float = 3.0, threads: int = 1) -> np.ndarray:
    """Pixel-wise mean of a stack after ``sigma`` clipping along the stack (axis 0).

    Clipping is about the median with the MAD-based standard deviation (robust for the
    small stacks of calibration frames, where one cosmic ray inflates a plain standard
    deviation so much that it is never clipped).  Pixels where every value was clipped
    take the median.  Returns float32. Each pixel is combined on its own, so the stack is
    combined in blocks of :data:`ROW_BLOCK` rows, ``threads`` at a time (astropy's
    clipping releases the GIL): the same values as one call on the whole stack.

    Parameters
    ----------
    frames : sequence of numpy.ndarray
        Frames of one shape (any unit; e.g. ADU), indexed ``[y, x]``.
    sigma : float, default 3.0
        Clipping threshold in robust standard deviations; at most 3 iterations.
    threads : int, default 1
        Blocks combined at once (the cores the caller may use).

    Returns
    -------
    numpy.ndarray
        float32 combined frame, units of ``frames``.

    Raises
    ------
    ValueError
        For an empty ``frames`` or frames of different shapes.
    """
    frames = [np.asarray(frame) for frame in frames]
    if not frames:
        raise ValueError("sigma_clipped_combine needs at least one frame")
    if len({frame.shape for frame in frames}) != 1:
        raise ValueError(f"sigma_clipped_combine: frames of different shapes {sorted({f.shape for f in frames})}")

    def combine(rows: slice) -> np.ndarray:
        stack = np.stack([np.asarray(frame[rows], dtype=np.float64) for frame in frames])
        kept = ~np.ma.getmaskarray(sigma_clip(stack, sigma=sigma, axis=0, cenfunc="median", stdfunc="mad_std",
                                             maxiters=3))
        count = kept.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(kept, stack, 0.0).sum(axis=0) / count  # numpy.ma.mean's sum and count
        none_kept = count == 0
        if none_kept.any():  # rare: the median of the pixel's whole stack
            mean[none_kept] = np.median(stack[:, none_kept], axis=0)
        return mean.astype(np.float32)

    return _by_row_blocks(combine, frames[0].shape[0], threads)


def _check_shapes(named: dict[str, Sequence[np.ndarray]]) -> tuple[int, int]:
    shapes = {name: {np.shape(frame) for frame in frames} for name, frames in named.items()}
    distinct = set().union(*shapes.values())
    if len(distinct) != 1:
        described = ", ".join(f"{name}: {sorted(found)}" for name, found in shapes.items())
        raise ValueError(f"calibration frames differ in shape ({described})")
    return distinct.pop()


def flat_defects(flat: np.ndarray, threads: int = 1) -> np.ndarray:
    """Dead or low/high-response pixels of a normalised master flat.

    A pixel is bad if outside :data:`FLAT_RANGE` or more than :data:`FLAT_DEVIATION` away
    from the running median of its row over :data:`FLAT_REFERENCE_WIDTH` pixels (which
    follows vignetting but not a bad column).

    Parameters
    ----------
    flat : numpy.ndarray
        Master flat normalised to median 1 (dimensionless), indexed ``[y, x]``.
    threads : int, default 1
        Row blocks filtered at once (the result does not depend on it).

    Returns
    -------
    numpy.ndarray of bool
        True for bad pixels (also where the ratio to the running median is not finite).
    """
    reference = _by_row_blocks(lambda rows: median_filter(flat[rows], size=(1, FLAT_REFERENCE_WIDTH), mode="reflect"),
                               flat.shape[0], threads)
    with np.errstate(divide="ignore", invalid="ignore"):
        deviation = np.abs(flat / reference - 1.0)
    outside = (flat < FLAT_RANGE[0]) | (flat > FLAT_RANGE[1])
    return outside | ~(deviation <= FLAT_DEVIATION)


def hot_pixels(dark: np.ndarray) -> np.ndarray:
    """Pixels whose dark rate is more than :data:`HOT_SIGMA` robust sigmas (MAD) above the
    median rate.  A master dark of all zeros (no darks) has no hot pixels.

    Parameters
    ----------
    dark : numpy.ndarray
        Master dark rate, ADU/s (any unit: only ratios to its spread matter).

    Returns
    -------
    numpy.ndarray of bool
        True for hot pixels; all False when the robust spread is 0 or not finite.
    """
    spread = mad_std(dark)
    if not np.isfinite(spread) or spread == 0:
        return np.zeros(dark.shape, dtype=bool)
    return dark - np.median(dark) > HOT_SIGMA * spread


def build_masters(
    bias: Sequence[np.ndarray],
    darks: Sequence[tuple[np.ndarray, float]],
    flats: Sequence[np.ndarray],
    threads: int = 1,
) -> MasterCalibrations:
    """Master bias (ADU), dark (ADU/s) and flat (median 1) with their bad-pixel map.

    ``darks`` are ``(raw frame, exposure time in s)``; an empty sequence gives a zero dark.
    Each dark is bias-subtracted and divided by its exposure time before combining.  Each
    flat is bias-subtracted and scaled to median 1 before combining (dark current in the
    short flat exposures is neglected); the combined flat is scaled to median 1 again.
    ``bad_pixels`` marks :func:`flat_defects` and :func:`hot_pixels`; ``gain`` and
    ``read_noise`` come from :func:`photon_transfer`.

    Parameters
    ----------
    bias : sequence of numpy.ndarray
        Raw bias frames, ADU (at least one).
    darks : sequence of tuple of (numpy.ndarray, float)
        ``(raw dark frame in ADU, exposure time in s)``; may be empty.
    flats : sequence of numpy.ndarray
        Raw flat frames, ADU (at least one).
    threads : int, default 1
        Threads of the combines and the flat's defect search (the result does not depend on it).

    Returns
    -------
    MasterCalibrations
        The masters of the night.

    Raises
    ------
    ValueError
        No bias or no flat, frames of different shapes, a dark without a positive exposure
        time, or a flat whose median is not above the bias.
    """
    if not bias or not flats:
        raise ValueError("build_masters needs at least one bias and one flat frame")
    shape = _check_shapes({"bias": bias, "dark": [frame for frame, _ in darks], "flat": flats})
    master_bias = sigma_clipped_combine(bias, threads=threads)
    if darks:
        if any(exptime is None or not np.isfinite(exptime) or exptime <= 0 for _, exptime in darks):
            raise ValueError("dark frames need a positive exposure time")
        rates = [(np.asarray(frame, dtype=np.float64) - master_bias) / exptime for frame, exptime in darks]
        master_dark = sigma_clipped_combine(rates, threads=threads)
    else:
        master_dark = np.zeros(shape, dtype=np.float32)
    normalised = []
    for frame in flats:
        signal = np.asarray(frame, dtype=np.float64) - master_bias
        level = np.median(signal)
        if not level > 0:
            raise ValueError("a flat frame has no signal above the bias (median <= 0)")
        normalised.append(signal / level)
    master_flat = sigma_clipped_combine(normalised, threads=threads)
    master_flat = (master_flat / np.median(master_flat)).astype(np.float32)
    bad = flat_defects(master_flat, threads) | hot_pixels(master_dark)
    gain, read_noise = photon_transfer(bias, flats)
    return MasterCalibrations(bias=master_bias, dark=master_dark, flat=master_flat, bad_pixels=bad,
                              gain=gain, read_noise=read_noise)
