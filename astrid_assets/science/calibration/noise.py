"""Noise maps of a calibrated frame: the Poisson model, the measured-noise model, and the choice
between them for the frame's state (step 6 of
:func:`~astrid_assets.science.calibration.calibrate.calibrate_frame`).

Conventions
-----------
* Frames are electrons (e-) per pixel with the sky included (or their own units when the gain is
  unknown); pixel arrays are indexed ``[y, x]`` (0-based).
* Variance is e-², background and its rms are e-; the maps are float32.

References
----------
* CCD noise model (sky, sources, dark current and read noise through the flat field): Howell
  2006, *Handbook of CCD Astronomy*, 2nd ed., §4.4 (the CCD equation); Janesick 2007, *Photon
  Transfer* (SPIE Press).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

__all__ = ["variance_map", "empirical_variance", "NoiseModel", "SKY_NOISE_TOLERANCE"]

#: The Poisson model is trusted while its sky noise is within this factor (rms) of the measured one: SEP's
#: clipped rms of a correct model agrees to a few per cent; a header gain that does not describe the data
#: (binning, a gain for another readout mode) misses by tens of per cent.
SKY_NOISE_TOLERANCE = 1.10
#: Pixels (about) whose medians compare the two: a regular subsample of the usable ones.
SKY_NOISE_SAMPLE = 250_000


def variance_map(
    science: np.ndarray,
    background: np.ndarray,
    flat: np.ndarray,
    dark_electrons: np.ndarray,
    read_noise: float,
    photon_scale: float = 1.0,
) -> np.ndarray:
    """Per-pixel variance (e-²) of a calibrated raw frame (Poisson model).

    ``(read_noise² + dark + flat · S) / flat²`` with ``S = background + max(science -
    background, 0)``: photon noise of sky (from the smooth background map, so the noise does
    not follow its own fluctuations) plus sources, dark-current shot noise and read noise,
    propagated through the flat-field division.  Noise of the master calibrations is neglected.

    Parameters
    ----------
    science : numpy.ndarray
        Calibrated frame, e- (flat-fielded, sky included).
    background : numpy.ndarray
        Its smooth sky background, e-.
    flat : numpy.ndarray
        Master flat the frame was divided by (dimensionless, median 1; positive).
    dark_electrons : numpy.ndarray
        Dark current subtracted from the frame, e- per pixel (before the flat division).
    read_noise : float
        Read noise, e- rms.
    photon_scale : float, default 1
        Variance per electron of the shot-noise terms (sky, sources, dark): 1 for a true gain; ``g_header /
        g_effective`` when the header's gain does not describe the data (:meth:`NoiseModel.matched_to_sky`).

    Returns
    -------
    numpy.ndarray
        float32 variance map, e-².
    """
    # one plane, updated in place, in the precision of the inputs
    variance = np.subtract(science, background, dtype=np.result_type(science, background, flat, dark_electrons))
    np.clip(variance, 0.0, None, out=variance)
    variance += background  # the signal S
    variance *= flat
    np.clip(variance, 0.0, None, out=variance)
    variance += np.clip(dark_electrons, 0.0, None)  # shot-noise electrons
    variance *= photon_scale
    variance += read_noise**2
    variance /= np.asarray(flat) ** 2
    return variance.astype(np.float32)


def empirical_variance(
    science: np.ndarray, background: np.ndarray, background_rms: np.ndarray, gain: float | None = None
) -> np.ndarray:
    """Variance from the measured noise: the sky variance ``background_rms²`` plus the sources'
    Poisson noise ``max(science - background, 0) / gain``.

    ``gain`` is in electrons per unit of ``science`` (1 for a frame in electrons; ``math.inf``
    leaves the source term out, as for sky-subtracted data of unknown gain: sky-limited
    approximation).  Without ``gain`` the effective gain ``median(background) /
    median(background_rms²)`` is used, which assumes the sky noise is Poisson; when the sky
    level is not positive (a sky-subtracted image) the source term is then left out.

    Parameters
    ----------
    science : numpy.ndarray
        Frame with sky, e- (or its own units).
    background, background_rms : numpy.ndarray
        Sky level and its per-pixel noise, units of ``science`` (rms floored at 1e-12).
    gain : float or None, default None
        Electrons per unit of ``science``; None estimates it from the sky; ``math.inf``,
        non-finite or non-positive values leave the source term out.

    Returns
    -------
    numpy.ndarray
        float32 variance map, units of ``science`` squared (e-²).
    """
    sky_variance = np.maximum(background_rms.astype(np.float64), 1e-12) ** 2
    if gain is None:
        sky_level = float(np.median(background))
        if sky_level <= 0:
            return sky_variance.astype(np.float32)
        gain = sky_level / float(np.median(sky_variance))
    if not np.isfinite(gain) or gain <= 0:
        return sky_variance.astype(np.float32)
    source = np.clip(science - background, 0.0, None)
    return (sky_variance + source / gain).astype(np.float32)


@dataclass(frozen=True)
class NoiseModel:
    """The variance model of one calibrated frame, for any background maps of it.

    The Poisson model (:func:`variance_map`) when ``poisson`` (a raw frame calibrated with the
    night's masters, gain and read noise known); else the measured sky variance plus the sources'
    Poisson noise (:func:`empirical_variance` with ``source_gain``).  Called twice by
    :func:`~astrid_assets.science.calibration.calibrate.calibrate_frame`: with the first-pass
    background (for the cosmic-ray search) and with the final one.

    Attributes
    ----------
    science : numpy.ndarray
        Calibrated frame, e- (sky included), ``[y, x]``.
    flat : numpy.ndarray
        Flat the frame was divided by (dimensionless; 1 where left undivided).
    dark_electrons : numpy.ndarray
        Dark current subtracted, e- per pixel (before the flat division).
    read_noise : float or None
        Read noise, e- rms; None when unknown (then ``poisson`` is False).
    poisson : bool
        Use the Poisson model.
    source_gain : float
        Electrons per unit of ``science`` for the sources' Poisson term of the measured model: 1,
        or ``math.inf`` (term left out) when the gain is unknown.
    photon_scale : float, default 1
        Shot-noise variance per electron of the Poisson model (:meth:`matched_to_sky`).
    """

    science: np.ndarray
    flat: np.ndarray
    dark_electrons: np.ndarray
    read_noise: float | None
    poisson: bool
    source_gain: float
    photon_scale: float = 1.0

    def variance(self, background: np.ndarray, background_rms: np.ndarray) -> np.ndarray:
        """float32 variance map, e-², for sky ``background`` and its noise ``background_rms`` (e-)."""
        if self.poisson:
            return variance_map(self.science, background, self.flat, self.dark_electrons, self.read_noise,
                                self.photon_scale)
        return empirical_variance(self.science, background, background_rms, self.source_gain)

    def matched_to_sky(self, background: np.ndarray, background_rms: np.ndarray, usable: np.ndarray,
                       gain: float) -> tuple[NoiseModel, str | None]:
        """The Poisson model checked against the measured sky noise (photon-transfer check on the frame itself).

        The model's sky variance ``(RN² + dark + flat·sky) / flat²`` is compared with SEP's clipped sky
        variance ``background_rms²`` (medians over ``usable`` pixels, at most about :data:`SKY_NOISE_SAMPLE` of them
        taken at a regular step: the medians then move by a small fraction of a per cent, far inside the
        tolerance). Where their rms differ by more than
        :data:`SKY_NOISE_TOLERANCE`, the header's gain does not describe the data: the shot-noise terms are
        scaled by ``k = (σ²_measured − RN²/flat²) / ((dark + flat·sky)/flat²)`` (the variance per electron,
        ``g_header / g_effective``; Janesick 2007, ch. 3), so sky *and* sources get the measured noise, and
        the read noise is kept. Measured on the real M51 raw set (QSI 532, 2×2 binned, ``EGAIN = 2.4``): the
        sky noise is 1.47× the header model's, ``k`` ≈ 2.2 (effective gain ≈ 1.1 e-/ADU).

        Parameters
        ----------
        background, background_rms : numpy.ndarray
            Sky level and its measured per-pixel noise, e-.
        usable : numpy.ndarray
            bool, pixels to compare over.
        gain : float
            The gain the frame was converted with, e-/ADU (for the note).

        Returns
        -------
        model : NoiseModel
            This model, or a copy with ``photon_scale = k``.
        note : str or None
            What was changed and why (for ``assumptions``), None when the model agrees.
        """
        if not self.poisson or not usable.any():
            return self, None
        pixels = np.flatnonzero(usable)
        pixels = pixels[:: max(1, len(pixels) // SKY_NOISE_SAMPLE)]  # medians of a regular subsample (speed)

        def sample(array: np.ndarray) -> np.ndarray:
            return np.asarray(array, np.float64).ravel()[pixels]

        flat = sample(np.broadcast_to(self.flat, usable.shape))
        flat2 = flat**2
        read = float(np.median(self.read_noise**2 / flat2))
        shot = float(np.median((np.clip(sample(np.broadcast_to(self.dark_electrons, usable.shape)), 0, None)
                                + np.clip(flat * sample(background), 0, None)) / flat2))
        measured = float(np.median(sample(background_rms) ** 2))
        ratio = math.sqrt(measured / (read + shot)) if read + shot > 0 else math.nan
        if not math.isfinite(ratio) or 1 / SKY_NOISE_TOLERANCE <= ratio <= SKY_NOISE_TOLERANCE or shot <= 0:
            return self, None
        scale = (measured - read) / shot
        if not math.isfinite(scale) or scale <= 0:
            return self, (f"sky noise {ratio:.2f}× the Poisson model's, below the read noise alone: "
                          "Poisson model kept")
        return replace(self, photon_scale=scale), (
            f"sky noise {ratio:.2f}× what the gain {gain:.3g} e-/ADU and read noise predict: shot noise scaled "
            f"×{scale:.2f} (effective gain {gain / scale:.3g} e-/ADU) to the measured sky noise")

    @property
    def description(self) -> str:
        """The model in words (``CalibratedFrame.info["noise_model"]``)."""
        if self.poisson and self.photon_scale != 1.0:
            return (f"Poisson model: sky + sources + dark + read noise, shot noise ×{self.photon_scale:.3g} "
                    "(gain checked against the measured sky noise)")
        if self.poisson:
            return "Poisson model: sky + sources + dark + read noise (header or photon-transfer gain)"
        if math.isinf(self.source_gain):
            return "measured background variance (source Poisson noise left out: gain unknown)"
        return "measured sky variance + source Poisson noise"
