"""What a subtraction takes: each image with what belongs to it, and the knobs in one frozen object.

An image of a pair travels as a :class:`SubtractionImage` (pixels, PSF, noise, variance, mask, WCS),
so the two images cannot be crossed over argument by argument; the choices that are not properties
of either image live in :class:`ZogyOptions` (:func:`~astrid_assets.science.subtraction.zogy.zogy`,
:func:`~astrid_assets.science.subtraction.tiles.zogy_field`,
:func:`~astrid_assets.science.subtraction.tiles.zogy_tiled`) or :class:`ClassicOptions`
(:func:`~astrid_assets.science.subtraction.classic.classic_subtraction`), validated when made, in the
manner of the task configs of LSST's ``ip_diffim``.

Conventions: images background-subtracted, e-, on one pixel grid, ``[y, x]`` 0-based; variances e-²;
PSF stamps odd and centred on their central pixel; ``flux_ratio`` is ``F_n / F_r``
(:mod:`~astrid_assets.science.subtraction.zogy`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from astrid_assets.science.subtraction.fft_backends import BACKENDS
from astrid_assets.science.subtraction.image_pair import BACKGROUND_MODELS
from astrid_assets.science.subtraction.noise_power import NOISE_CORRELATION_MODELS

if TYPE_CHECKING:
    from astropy.wcs import WCS

    from astrid_assets.science.psf.field import PSFField
    from astrid_assets.science.psf.model import PSFModel
    from astrid_assets.science.subtraction.noise_power import NoiseCorrelation

__all__ = ["SubtractionImage", "ZogyOptions", "ClassicOptions", "CLASSIC_METHODS", "pair_mask"]

#: Matching-kernel methods of :func:`~astrid_assets.science.subtraction.classic.classic_subtraction`.
CLASSIC_METHODS = ("fourier", "alard_lupton")


def _check_flux_ratio(flux_ratio: float | None) -> None:
    if flux_ratio is not None and not (np.isfinite(flux_ratio) and flux_ratio > 0):
        raise ValueError(f"flux_ratio must be positive and finite, got {flux_ratio}")


@dataclass(frozen=True, eq=False)
class SubtractionImage:
    """One image of a subtraction pair on the common pixel grid, with what belongs to it.

    Attributes
    ----------
    image : numpy.ndarray
        Background-subtracted pixels, e-, indexed ``[y, x]``; non-finite pixels are unusable.
    psf : PSFModel, numpy.ndarray or PSFField
        The image's PSF: a :class:`~astrid_assets.science.psf.model.PSFModel` or an odd stamp centred on
        its central pixel (any sum: normalised where used) for :func:`~astrid_assets.science.subtraction.zogy.zogy`
        and :func:`~astrid_assets.science.subtraction.classic.classic_subtraction`; a
        :class:`~astrid_assets.science.psf.field.PSFField` for
        :func:`~astrid_assets.science.subtraction.tiles.zogy_field` and
        :func:`~astrid_assets.science.subtraction.tiles.zogy_tiled`. A model that carries its stars
        lends them to the flux-ratio fit.
    sigma : float
        Background noise per pixel, e- (rms): the noise the ZOGY filters are built for, and the
        uniform variance ``sigma²`` where ``variance`` is None. Positive and finite.
    variance : numpy.ndarray or None, default None
        Per-pixel variance, e-², of the image's shape (background, source Poisson and read noise): the
        source-noise terms of ``S_corr`` (ZOGY eqs. 26–27) and the difference's noise map. None: uniform
        ``sigma²`` (no source-noise term).
    mask : numpy.ndarray or None, default None
        uint16 flags (:mod:`~astrid_assets.science.masks`) on the grid. A subtraction uses the two
        images' masks combined (:func:`pair_mask`), so a mask already combined for the pair may be
        given on either image or on both; ``UNUSABLE`` pixels are filled from their neighbours before
        filtering and are 0 in the outputs.
    wcs : astropy.wcs.WCS or None, default None
        Celestial WCS of the grid. Not used by the subtractions: carried for provenance.
    noise : NoiseCorrelation or None, default None
        The image's noise correlation relative to ``variance``
        (:func:`~astrid_assets.science.subtraction.noise_power.measure_noise_correlation`): ZOGY builds its
        filters for the noise power ``sigma² Â(k)`` and scales the variances of ``S`` and ``D``. None: white noise
        that ``variance`` describes, unless ``ZogyOptions.noise_correlation="measured"`` measures it.

    Raises
    ------
    ValueError
        A non-positive or non-finite ``sigma``.
    """

    image: np.ndarray
    psf: PSFModel | np.ndarray | PSFField
    sigma: float
    variance: np.ndarray | None = None
    mask: np.ndarray | None = None
    wcs: WCS | None = None
    noise: NoiseCorrelation | None = None

    def __post_init__(self) -> None:
        if not (np.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError(f"sigma must be positive and finite, got {self.sigma}")


def pair_mask(new: SubtractionImage, ref: SubtractionImage) -> np.ndarray | None:
    """The mask of a pair: ``new.mask | ref.mask`` (the one given when only one is; None without either)."""
    given = [mask for mask in (new.mask, ref.mask) if mask is not None]
    if len(given) < 2:
        return given[0] if given else None
    return np.bitwise_or(given[0], given[1])


@dataclass(frozen=True, eq=False)
class ZogyOptions:
    """The knobs of ZOGY (:func:`~astrid_assets.science.subtraction.zogy.zogy`,
    :func:`~astrid_assets.science.subtraction.tiles.zogy_field`,
    :func:`~astrid_assets.science.subtraction.tiles.zogy_tiled`); the defaults suit a single pass on a
    well-registered pair.

    Attributes
    ----------
    flux_ratio : float or None, default None
        ``F_n / F_r`` (new-image counts per reference count of a source). None: fitted — by PSF
        photometry of stars in both images in :func:`~astrid_assets.science.subtraction.zogy.zogy`
        (:func:`~astrid_assets.science.photometry.flux_ratio.fit_flux_ratio`), which follows
        transparency changes that header zero points miss; by large-aperture photometry in
        :func:`~astrid_assets.science.subtraction.tiles.zogy_field` when a PSF varies.
        :func:`~astrid_assets.science.subtraction.tiles.zogy_tiled` needs it given.
    flux_ratio_err : float or None, default None
        1σ error of a given ``flux_ratio`` (replaced by the fit's when fitted). ``(σ_β / β)² S_R²``
        joins the variance of ``S``, so bright static stars are not scored as changes for a ratio
        known to a per cent; None or 0 leaves the term out.
    flux_ratio_stars : numpy.ndarray or None, default None
        ``(n, 2)`` star positions ``(x, y)``, px, for the flux-ratio fit (e.g. the reference's stored
        detections, measured once). None: the PSF models' stars, else SEP detections on the reference.
    astrometric_sigma : tuple of float, default (0.0, 0.0)
        Registration noise ``(σ_x, σ_y)``, px (e.g. the rms of the star residuals after resampling):
        ``σ² (∂S/∂x)²`` terms (ZOGY eqs. 30–33) keep the dipoles a misregistration leaves at bright
        stars out of ``S_corr``. Zero leaves them out.
    backend : {"auto", "numpy", "torch", "torch-cpu"}, default "auto"
        FFT back end (:func:`~astrid_assets.science.subtraction.fft_backends.select_backend`): ``"auto"``
        takes torch on CUDA when available, else numpy (whose path never imports torch).
    background : {"plane", "constant", "none"}, default "plane"
        Differential background fitted to ``D`` on source-free pixels and removed from ``D`` and ``S``:
        a sky offset or gradient left between the images would otherwise bias ``S_corr`` (a 0.05σ
        offset moved its mean by 0.3).
    renormalise : bool, default False
        Divide ``S_corr`` by its robust standard deviation, absorbing noise correlations (e.g. from
        resampling) that the variance maps do not describe. Off: ``S_corr`` keeps its absolute
        normalisation, and ``s_corr_std`` reports it.
    psf_error : float, "auto" or None, default None
        Relative PSF-model error ``ε``: ``ε² max(S_N S_R, 0)`` joins the variance of ``S`` (the residual
        a PSF error leaves at a source present in both images; nothing for a new or vanished source).
        ``"auto"`` calibrates ``ε`` at bright stars
        (:func:`~astrid_assets.science.psf.field.calibrate_psf_error`; what the pipeline does, and what
        makes :func:`~astrid_assets.science.subtraction.tiles.zogy_field` keep tiles only where they
        leave less error); None or 0 leaves the term out (no calibration cost).
    psf_error_stars : numpy.ndarray or None, default None
        ``(n, 2)`` star positions ``(x, y)``, px, at which ``psf_error="auto"`` is calibrated. None: the
        PSF models' stars (the PSF fields' in ``zogy_field``), else SEP detections on the reference.
    keep_parts : bool, default False
        Return ``S_N``, ``S_R`` and the variance of ``S`` in ``ZogyResult.parts`` (three more
        full-frame float32 images).
    noise_correlation : {"white", "measured", "difference"}, default "white"
        Noise correlation (:mod:`~astrid_assets.science.subtraction.noise_power`), so drizzled, resampled and
        co-added inputs, whose per-pixel variance understates what a PSF-sized filter sees, get an ``S_corr``
        of unit variance. ``"difference"`` (what the pipeline does): the autocorrelation of ``D`` on pixels
        away from the sources of both inputs scales the variance of ``S`` and of the difference
        (:func:`~astrid_assets.science.subtraction.noise_power.difference_noise`; static faint sky cancels
        there). ``"measured"``: each image without a ``noise`` gets its noise power spectrum measured on its
        source-free pixels and folded into the filters (exact for clean skies, biased by faint static sources).
        ``"white"``: the variance maps are taken to describe the noise (an image's given ``noise`` is used
        with any choice).

    Raises
    ------
    ValueError
        An unknown ``backend``, ``background`` or ``noise_correlation``, a non-positive or non-finite ``flux_ratio``, a
        negative ``flux_ratio_err``, or a ``psf_error`` that is neither ``"auto"``, None nor a
        non-negative number.
    """

    flux_ratio: float | None = None
    flux_ratio_err: float | None = None
    flux_ratio_stars: np.ndarray | None = None
    astrometric_sigma: tuple[float, float] = (0.0, 0.0)
    backend: str = "auto"
    background: str = "plane"
    renormalise: bool = False
    psf_error: float | str | None = None
    psf_error_stars: np.ndarray | None = None
    keep_parts: bool = False
    noise_correlation: str = "white"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; use one of {BACKENDS}")
        if self.noise_correlation not in NOISE_CORRELATION_MODELS:
            raise ValueError(f"noise_correlation must be one of {NOISE_CORRELATION_MODELS}, "
                             f"got {self.noise_correlation!r}")
        if self.background not in BACKGROUND_MODELS:
            raise ValueError(f"background must be one of {BACKGROUND_MODELS}, got {self.background!r}")
        _check_flux_ratio(self.flux_ratio)
        if self.flux_ratio_err is not None and self.flux_ratio_err < 0:
            raise ValueError(f"flux_ratio_err must be non-negative, got {self.flux_ratio_err}")
        if isinstance(self.psf_error, str) and self.psf_error != "auto":
            raise ValueError(f"psf_error must be 'auto', None or a number >= 0, got {self.psf_error!r}")
        if self.psf_error is not None and not isinstance(self.psf_error, str) and not self.psf_error >= 0:
            raise ValueError(f"psf_error must be 'auto', None or a number >= 0, got {self.psf_error!r}")


@dataclass(frozen=True, eq=False)
class ClassicOptions:
    """The knobs of the classic PSF-matched subtraction
    (:func:`~astrid_assets.science.subtraction.classic.classic_subtraction`).

    Attributes
    ----------
    flux_ratio : float or None, default None
        ``F_n / F_r``; None: fitted by PSF photometry of the PSF models' stars (else SEP detections on
        the reference), as for ZOGY.
    method : {"fourier", "alard_lupton"}, default "fourier"
        How the matching kernel is made: the Wiener-regularised Fourier ratio of the two PSF models
        (exact where the models are), or a least-squares combination of Gaussian × polynomial basis
        functions fitted to them (Alard & Lupton 1998, ApJ 503, 325; spatially constant, no background
        term), the classic method's usual form.
    regularisation : float, default 1e-3
        Wiener regularisation ``λ`` of the Fourier-ratio kernel, relative to ``|P̂|² ≤ 1``: it keeps
        the ratio finite where the sharper PSF's spectrum vanishes (ignored for Alard–Lupton).

    Raises
    ------
    ValueError
        An unknown ``method``, a non-positive or non-finite ``flux_ratio`` or ``regularisation``.
    """

    flux_ratio: float | None = None
    method: str = "fourier"
    regularisation: float = 1e-3

    def __post_init__(self) -> None:
        if self.method not in CLASSIC_METHODS:
            raise ValueError(f"unknown method {self.method!r}; use 'fourier' or 'alard_lupton'")
        _check_flux_ratio(self.flux_ratio)
        if not (np.isfinite(self.regularisation) and self.regularisation > 0):
            raise ValueError(f"regularisation must be positive and finite, got {self.regularisation}")
