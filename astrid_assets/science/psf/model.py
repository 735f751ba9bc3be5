"""PSF models: a stamp that sums to 1 with its FWHM and the stars it came from, sub-pixel shifts of it,
and its FWHM measured from the pixels.

A PSF stamp is an odd-sized square array whose light centroid lies on the central pixel
``[size // 2, size // 2]`` and whose pixels sum to 1 (the flux of a star is the flux inside the
stamp footprint). Pixels in px, ``[y, x]``, 0-based. Estimation from stars is in
:mod:`~astrid_assets.science.psf.empirical`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

__all__ = ["PSF_SOURCES", "PSFError", "PSFModel", "ShiftablePSF", "as_psf_image", "measure_fwhm"]

#: How a frame's PSF was made: the rungs of :func:`~astrid_assets.science.psf.analytic.estimate_frame_psf` (an
#: empirical stack of stars, or a Moffat or Gaussian profile fitted to one to a few stars), or, for a crowded frame's
#: difference, the reference's PSF through a kernel fitted to the pixels
#: (:func:`~astrid_assets.science.subtraction.crowded.crowded_retry`).
PSF_SOURCES = ("empirical", "moffat", "gaussian", "kernel")


class PSFError(ValueError):
    """The PSF could not be estimated (e.g. too few isolated, unsaturated stars)."""


@dataclass(frozen=True)
class PSFModel:
    """A frame's PSF: an empirical stack of stars or an analytic profile fitted to a few.

    Attributes
    ----------
    image : numpy.ndarray
        ``(size, size)`` float32 stamp, sums to 1, centroid on the central pixel
        ``[size // 2, size // 2]``.
    fwhm : float
        Full width at half maximum, pixels (from the area above half maximum of the
        pixel-integrated stamp, i.e. after pixelisation; :func:`measure_fwhm`).
    n_stars : int
        Number of stars stacked (empirical) or fitted (analytic profile).
    star_xy : numpy.ndarray
        ``(n_stars, 2)`` windowed centroids ``(x, y)`` of the stars used, pixels (0-based,
        pixel centres at integers); empty by default.
    star_flux : numpy.ndarray
        PSF-fit fluxes of those stars, e- (background subtracted); empty by default.
    psf_source : str, default "empirical"
        How the stamp was made (:data:`PSF_SOURCES`): ``"empirical"`` (a stack of stars,
        :func:`~astrid_assets.science.psf.empirical.estimate_psf`), ``"moffat"`` or ``"gaussian"`` (a
        pixel-integrated profile fitted to the stars, :func:`~astrid_assets.science.psf.analytic.fit_analytic_psf`), or
        ``"kernel"`` (``K ⊗ P_r / ΣK``, a crowded frame's difference:
        :func:`~astrid_assets.science.subtraction.crowded.crowded_retry`).
    """

    image: np.ndarray
    fwhm: float
    n_stars: int
    star_xy: np.ndarray = field(default_factory=lambda: np.empty((0, 2)))
    star_flux: np.ndarray = field(default_factory=lambda: np.empty(0))
    psf_source: str = "empirical"

    @property
    def size(self) -> int:
        """Side of the stamp, pixels (odd)."""
        return int(self.image.shape[0])


class ShiftablePSF:
    """A PSF stamp that can be evaluated at any sub-pixel centre by the Fourier shift theorem.

    The stamp is zero-padded before its transform so that the periodic wrap of the shift
    does not fold the wings back onto the core.

    Parameters
    ----------
    psf : numpy.ndarray
        Odd square PSF stamp, centred on its central pixel ``[size // 2, size // 2]``; used as
        given (not normalised).
    pad : int, default 4
        Zero padding added on each side before the transform, px.

    Attributes
    ----------
    size : int
        Side of the stamp, px.
    pad : int
        Zero padding on each side, px.

    Raises
    ------
    ValueError
        If ``psf`` is not a 2-d, odd, square array.
    """

    def __init__(self, psf: np.ndarray, pad: int = 4) -> None:
        psf = np.asarray(psf, dtype=np.float64)
        if psf.ndim != 2 or psf.shape[0] != psf.shape[1] or psf.shape[0] % 2 != 1:
            raise ValueError(f"PSF must be an odd square stamp, got shape {psf.shape}")
        self.size = psf.shape[0]
        self.pad = pad
        padded = np.pad(psf, pad)
        self._transform = np.fft.fft2(padded)
        n = padded.shape[0]
        self._freq = np.fft.fftfreq(n)

    def at(self, dx: float, dy: float) -> np.ndarray:
        """The stamp with its centre moved by ``(dx, dy)`` pixels (size × size, float64).

        Parameters
        ----------
        dx, dy : float
            Shift of the centre along x (columns) and y (rows), px; positive moves the
            profile towards larger indices. The shift is periodic over the padded box (side
            ``size + 2 pad``): shifts beyond ``2 pad`` px bring light back in on the other side.

        Returns
        -------
        numpy.ndarray
            ``(size, size)`` float64 shifted stamp (light moved beyond the stamp is cut off).
        """
        return self.at_many(dx, dy)[0]

    def at_many(self, dx: np.ndarray, dy: np.ndarray, chunk: int = 256) -> np.ndarray:
        """:meth:`at` for ``n`` shifts ``(dx[k], dy[k])`` px at once: ``(n, size, size)`` float64 stamps, the
        transforms batched ``chunk`` at a time (the same values as :meth:`at`, to round-off)."""
        dx, dy = np.atleast_1d(np.asarray(dx, np.float64)), np.atleast_1d(np.asarray(dy, np.float64))
        p = self.pad
        out = np.empty((dx.size, self.size, self.size))
        for start in range(0, dx.size, chunk):
            stop = min(start + chunk, dx.size)
            phase_x = np.exp(-2j * np.pi * self._freq[None, :] * dx[start:stop, None])
            phase_y = np.exp(-2j * np.pi * self._freq[None, :] * dy[start:stop, None])
            spectra = self._transform[None] * phase_y[:, :, None] * phase_x[:, None, :]
            out[start:stop] = np.fft.ifft2(spectra, axes=(-2, -1)).real[:, p : p + self.size, p : p + self.size]
        return out


def as_psf_image(psf: PSFModel | np.ndarray) -> np.ndarray:
    """The unit-sum stamp of a :class:`PSFModel` or of a bare array.

    Parameters
    ----------
    psf : PSFModel or numpy.ndarray
        A PSF model or a PSF stamp (any positive normalisation).

    Returns
    -------
    numpy.ndarray
        ``float64`` copy of the stamp divided by its sum.

    Raises
    ------
    PSFError
        If the stamp's sum is not positive and finite.
    """
    image = psf.image if isinstance(psf, PSFModel) else np.asarray(psf)
    image = np.asarray(image, dtype=np.float64)
    total = image.sum()
    if not np.isfinite(total) or total <= 0:
        raise PSFError("PSF stamp must have a positive, finite sum")
    return image / total


def measure_fwhm(psf_image: np.ndarray, upsample: int = 8) -> float:
    """FWHM (px) of a pixel-integrated PSF stamp: diameter of the circle with the area above half max.

    The stamp is upsampled ``upsample`` times with a cubic spline (zeros beyond the stamp, the fine
    grid tiling each pixel: ``scipy.ndimage.zoom`` with ``order=3, mode="grid-constant",
    grid_mode=True``, evaluated as four-tap sums along each axis) so that the area is measured to a few per
    cent of a pixel even for FWHM ≈ 2 px. The result is the FWHM after
    pixelisation (the stamp's pixel values, not the underlying continuous profile).

    Parameters
    ----------
    psf_image : numpy.ndarray
        2-d PSF stamp (any normalisation), indexed ``[y, x]``.
    upsample : int, default 8
        Upsampling factor per axis.

    Returns
    -------
    float
        FWHM, px: ``2 sqrt(A / π)`` with ``A`` the area above half the peak, px²; NaN if the
        peak is not positive.
    """
    image = np.asarray(psf_image, dtype=np.float64)
    coefficients = ndimage.spline_filter(np.pad(image, _SPLINE_PAD), 3, output=np.float64, mode="grid-constant")
    rows, row_weights = _spline_taps(image.shape[0], upsample)
    columns, column_weights = _spline_taps(image.shape[1], upsample)
    partial = np.einsum("yax,ya->yx", coefficients[rows][:, :, columns.min():columns.max() + 1], row_weights)
    fine = np.einsum("yxa,xa->yx", partial[:, columns - columns.min()], column_weights)
    peak = fine.max()
    if peak <= 0:
        return float("nan")
    area = np.count_nonzero(fine >= 0.5 * peak) / upsample**2
    return float(2.0 * np.sqrt(area / np.pi))


#: Zeros around a stamp before its spline coefficients are computed (as ``scipy.ndimage.zoom`` pads for
#: ``mode="grid-constant"``), px.
_SPLINE_PAD = 12


@functools.lru_cache(maxsize=32)
def _spline_taps(n: int, upsample: int) -> tuple[np.ndarray, np.ndarray]:
    """Cubic B-spline taps from the spline coefficients of a zero-padded axis of ``n`` pixels to its fine grid.

    Fine point ``o`` (``n · upsample`` of them, tiling each pixel: ``grid_mode=True``) sits at pixel
    coordinate ``(o + ½) / upsample − ½``; its value is ``Σ_a w[o, a] c[index[o, a]]`` over the four
    coefficients around it, ``c`` those of the axis padded with :data:`_SPLINE_PAD` zeros on each side
    (``scipy.ndimage.spline_filter``, ``mode="grid-constant"``). Applied along both axes this is
    ``scipy.ndimage.zoom(stamp, upsample, order=3, mode="grid-constant", grid_mode=True)`` to rounding.

    Returns
    -------
    index : numpy.ndarray
        ``(n · upsample, 4)`` int indices into the padded axis (read-only).
    weights : numpy.ndarray
        ``(n · upsample, 4)`` float64 cubic B-spline weights, summing to 1 per row (read-only).
    """
    position = (np.arange(n * upsample) + 0.5) / upsample - 0.5 + _SPLINE_PAD
    first = np.floor(position)
    t = (position - first)[:, None]
    weights = np.hstack([(1.0 - t) ** 3, 3.0 * t**3 - 6.0 * t**2 + 4.0, -3.0 * t**3 + 3.0 * t**2 + 3.0 * t + 1.0,
                         t**3]) / 6.0
    index = first.astype(int)[:, None] - 1 + np.arange(4)[None, :]
    index.setflags(write=False)
    weights.setflags(write=False)
    return index, weights


def _centroid(stamp: np.ndarray, radius: float) -> tuple[float, float]:
    """First-moment centroid offset ``(dx, dy)`` from the centre within ``radius`` pixels."""
    half = stamp.shape[0] // 2
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    inside = (xx**2 + yy**2 <= radius**2) & (stamp > 0)
    weights = np.where(inside, stamp, 0.0)
    total = weights.sum()
    if total <= 0:
        return 0.0, 0.0
    return float((weights * xx).sum() / total), float((weights * yy).sum() / total)
