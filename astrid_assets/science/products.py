"""The image products of the nightly chain and the stamp contract, in one place.

* :class:`CalibratedFrame` — a reduced science frame (``calibrated_frames``);
* :class:`Reference` — a field's co-added reference with its PSF (``reference_images``);
* :class:`Difference` — a frame differenced against its reference (``difference_images``);
* :data:`STAMP_SIZE`, :data:`STAMP_CHANNELS` — the cut-outs of a candidate that detection writes
  and the classifier reads.

Each knows its FITS layout (``to_hdus`` / ``from_extensions``). Images are ``float32`` in e-,
variances e-², masks ``uint16`` bit flags (:mod:`~astrid_assets.science.masks`); arrays ``[y, x]``, 0-based.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from astrid_assets.science import masks
from astrid_assets.science.frames.files import astropy_warnings_silenced, header_wcs
from astrid_assets.science.measurements import (
    psf_field_from,
    psf_field_hdus,
    psf_model_from,
    psf_model_hdus,
    stars_from,
    stars_hdu,
)
from astrid_assets.science.psf.field import PSFField
from astrid_assets.science.psf.model import PSFModel
from astrid_assets.science.sources import Sources

__all__ = ["STAMP_SIZE", "STAMP_CHANNELS", "CalibratedFrame", "Reference", "Difference"]

#: Side of a candidate's cut-out stamps, px (odd: the candidate sits on the central pixel).
STAMP_SIZE = 63
#: Channels of a candidate's stamp stack, in order (what the classifier sees).
STAMP_CHANNELS = ("science", "reference", "difference")


@dataclass
class CalibratedFrame:
    """A reduced science frame, as ``calibrated_frames`` stores it and the differencing reads it.

    ``science`` e- (sky included), ``mask`` uint16 flags (:mod:`~astrid_assets.science.masks`), ``variance`` e-²,
    ``background`` and ``background_rms`` e- (SEP mesh maps), ``header`` (WCS and cards of the
    frame). ``info`` says what the reduction found and assumed (keys of the ``calibrated_frames``
    row): ``data_state``, ``gain`` (e-/ADU applied), ``gain_source``, ``read_noise`` (e-),
    ``read_noise_source``, ``saturation`` (ADU), ``saturation_source``, ``pedestal`` (ADU
    subtracted without a master bias), ``noise_model``, ``cr_fwhm_px`` (the quick FWHM the
    cosmic-ray search used), ``cr_objlim``, ``cr_pixels``, ``cr_spared`` (candidates returned as
    PSF-like) and ``assumptions`` (list of sentences).

    Attributes
    ----------
    science : numpy.ndarray
        float32 frame, e- (sky included), indexed ``[y, x]``.
    mask : numpy.ndarray
        uint16 flags (:mod:`~astrid_assets.science.masks`).
    variance : numpy.ndarray
        float32, e-².
    background, background_rms : numpy.ndarray
        float32 SEP mesh sky level and its noise, e-.
    header : astropy.io.fits.Header
        WCS and cards of the frame.
    info : dict
        What the reduction found and assumed (keys above); not stored in the FITS file.
    stars : numpy.ndarray or None
        The frame's star catalogue, measured once when it was calibrated (SEP detections at 5σ of
        ``science − background``, :data:`~astrid_assets.science.sources.STARS_COLUMNS`; ``STARS``).
    psf : PSFModel or None
        The frame's PSF, measured once from those detections (``PSF``); None when it has too few stars.
    """

    science: np.ndarray
    mask: np.ndarray
    variance: np.ndarray
    background: np.ndarray
    background_rms: np.ndarray
    header: fits.Header = field(default_factory=fits.Header)
    info: dict = field(default_factory=dict)
    stars: np.ndarray | None = field(default=None, repr=False)
    psf: PSFModel | None = field(default=None, repr=False)

    @classmethod
    def from_extensions(cls, extensions: dict) -> CalibratedFrame:
        """The frame from its FITS extensions (:func:`~astrid_assets.science.frames.files.read_extensions`).

        Parameters
        ----------
        extensions : dict
            ``EXTNAME`` → ``(data, header)`` with ``SCI`` (whose header becomes the frame's),
            ``MASK``, ``VARIANCE``, ``BKG`` and ``BKGRMS``, and ``STARS``, ``PSF`` when measured.

        Returns
        -------
        CalibratedFrame
            Arrays cast to float32 (mask uint16); ``info`` empty.
        """
        science, header = extensions["SCI"]
        return cls(
            science=science.astype(np.float32), mask=extensions["MASK"][0].astype(np.uint16),
            variance=extensions["VARIANCE"][0].astype(np.float32),
            background=extensions["BKG"][0].astype(np.float32),
            background_rms=extensions["BKGRMS"][0].astype(np.float32), header=header,
            stars=stars_from(extensions), psf=psf_model_from(extensions),
        )

    def measurement_hdus(self) -> list:
        """``STARS`` and ``PSF`` / ``PSFSTARS`` HDUs of what was measured (none when nothing was).

        Returns
        -------
        list of astropy.io.fits HDUs
        """
        return ([stars_hdu(self.stars)] if self.stars is not None else []) + (
            psf_model_hdus(self.psf) if self.psf is not None else [])

    @cached_property
    def sources(self) -> Sources:
        """The frame's stored detections with its pixels (:class:`~astrid_assets.science.sources.Sources`), or a
        new extraction when the frame was stored without them."""
        if self.stars is None:
            return Sources.extract(self.science, self.background, self.background_rms, self.mask)
        return Sources.from_catalogue(self.stars, self.science, self.background, self.background_rms, self.mask)

    @cached_property
    def wcs(self) -> WCS:
        """Celestial WCS of the header (:func:`~astrid_assets.science.frames.files.header_wcs`; errors on a malformed
        one propagate), parsed once: change a frame's WCS with :meth:`with_wcs`, not in its header."""
        return header_wcs(self.header)

    @property
    def has_wcs(self) -> bool:
        """Whether the header holds a celestial WCS (its own, or one borrowed by star patterns)."""
        try:
            return bool(self.wcs.has_celestial)
        except Exception:  # a malformed WCS counts as none
            return False

    @cached_property
    def sky_sigma(self) -> float:
        """Median background noise per pixel, e-."""
        return float(np.median(self.background_rms))

    def with_wcs(self, wcs: WCS, how: str) -> CalibratedFrame:
        """A copy whose header carries ``wcs`` (celestial cards replaced) and ``WCSALIGN = how``.

        Parameters
        ----------
        wcs : astropy.wcs.WCS
            Celestial WCS of the frame's pixels.
        how : str
            How it was obtained (e.g. ``"star-pattern"``), stored in ``WCSALIGN``.

        Returns
        -------
        CalibratedFrame
            A new frame sharing the arrays and ``info``, with a new header.
        """
        header = self.header.copy()
        with astropy_warnings_silenced():
            for key in list(WCS(header).celestial.to_header(relax=True)) + ["CD1_1", "CD1_2", "CD2_1", "CD2_2"]:
                header.remove(key, ignore_missing=True, remove_all=True)
        header.update(wcs.to_header(relax=True))
        header["WCSALIGN"] = (how, "how this frame's WCS was obtained")
        return CalibratedFrame(self.science, self.mask, self.variance, self.background, self.background_rms, header,
                               self.info, self.stars, self.psf)


@dataclass
class Reference:
    """A field's deep reference: background-subtracted co-add (e-), variance, mask and PSF, and its
    stars and PSF field measured once when it was built
    (:func:`~astrid_assets.science.measurements.measure_reference`)."""

    image: np.ndarray  #: float32 background-subtracted co-add, e- of the anchor frame, ``[y, x]``
    variance: np.ndarray  #: float32 variance of ``image``, e-²
    mask: np.ndarray  #: uint16 flags (:mod:`~astrid_assets.science.masks`)
    psf: np.ndarray  #: unit-sum odd PSF stamp of ``image``
    header: fits.Header  #: carries the reference grid's WCS
    #: SEP detections at 5σ of ``image`` (noise :attr:`sky_sigma`), ``STARS``; None until measured
    stars: np.ndarray | None = field(default=None, repr=False)
    #: the PSF and its variation over the grid (``psf`` its frame PSF); None until measured
    psf_field: PSFField | None = field(default=None, repr=False)

    @cached_property
    def wcs(self) -> WCS:
        """Celestial WCS of the reference grid (:func:`~astrid_assets.science.frames.files.header_wcs`), parsed once."""
        return header_wcs(self.header)

    @cached_property
    def sky_sigma(self) -> float:
        """Noise per pixel, e-: square root of the median variance over usable pixels."""
        usable = (self.mask & masks.UNUSABLE) == 0
        return float(np.sqrt(np.nanmedian(self.variance[usable])))

    @cached_property
    def sources(self) -> Sources:
        """The stored detections with the reference's pixels (:class:`~astrid_assets.science.sources.Sources`);
        a new extraction when it was stored without them."""
        if self.stars is None:
            return Sources.extract(self.image, 0.0, self.sky_sigma, self.mask)
        return Sources.from_catalogue(self.stars, self.image, 0.0, self.sky_sigma, self.mask)

    def to_hdus(self) -> list:
        """FITS HDUs: primary ``REF`` (image, with ``header``), ``VARIANCE``, ``MASK`` and ``PSF``, and
        once measured ``STARS`` and the PSF field (:func:`~astrid_assets.science.measurements.psf_field_hdus`).

        Returns
        -------
        list of astropy.io.fits HDUs
            float32 images (mask uint16), tables.
        """
        primary = fits.PrimaryHDU(self.image.astype(np.float32), self.header)
        primary.name = "REF"
        psf = (psf_field_hdus(self.psf_field) if self.psf_field is not None
               else [fits.ImageHDU(self.psf.astype(np.float32), name="PSF")])
        return [
            primary,
            fits.ImageHDU(self.variance.astype(np.float32), name="VARIANCE"),
            fits.ImageHDU(self.mask.astype(np.uint16), name="MASK"),
            *psf,
            *([stars_hdu(self.stars)] if self.stars is not None else []),
        ]

    @classmethod
    def from_extensions(cls, extensions: dict) -> Reference:
        """The reference from its FITS extensions (:meth:`to_hdus` layout).

        Parameters
        ----------
        extensions : dict
            ``EXTNAME`` → ``(data, header)`` with ``REF`` (whose header becomes the reference's),
            ``VARIANCE``, ``MASK`` and ``PSF``, and ``STARS`` and the PSF field once measured.

        Returns
        -------
        Reference
            Arrays cast to float32 (mask uint16).
        """
        image, header = extensions["REF"]
        return cls(
            image=image.astype(np.float32), variance=extensions["VARIANCE"][0].astype(np.float32),
            mask=extensions["MASK"][0].astype(np.uint16), psf=extensions["PSF"][0].astype(np.float32),
            header=header, stars=stars_from(extensions), psf_field=psf_field_from(extensions, image.shape),
        )


@dataclass
class Difference:
    """A frame differenced against its reference, on the reference grid."""

    new: np.ndarray  #: registered, background-subtracted science frame, e-
    reference: np.ndarray  #: the reference co-add, reference e- (unscaled; × flux_ratio scales it to the new frame)
    difference: np.ndarray  #: difference in new-frame e- (ZOGY: D · F_n / F_D)
    variance: np.ndarray  #: variance of ``difference``, e-²
    s_corr: np.ndarray  #: detection significance, unit variance: ZOGY's S_corr, or classic's difference / its noise
    mask: np.ndarray  #: uint16 flags (:mod:`~astrid_assets.science.masks`) on the reference grid
    psf: np.ndarray  #: PSF of ``difference``
    psf_fwhm: float  #: px
    new_fwhm: float  #: PSF FWHM of the registered new frame, px
    flux_ratio: float  #: ``F_n / F_r``: new-frame counts per reference count
    s_corr_std: float  #: robust std of ``s_corr`` on blank sky (1 when the noise model holds)
    registration_rms: float  #: px, bright-star residuals after registration
    method: str  #: ``zogy`` or ``classic``
    registration: str = "wcs"  #: ``wcs``, or how a frame without a WCS was matched (``astrometry.align``)
    varying_psf: bool = False  #: the PSF varied over the frame: ZOGY on blended tiles (subtraction.tiles)
    psf_error: float = 0.0  #: PSF-model error ε in the variance of S_corr (:mod:`~astrid_assets.science.psf.field`)
    psf_tiles: np.ndarray | None = None  #: ``(n, n, s, s)`` PSFs of ``difference`` at the tile nodes, or None
    #: ``(dx, dy)`` px added to the WCS mapping when the frame was resampled (its measured pointing offset)
    pixel_offset: tuple[float, float] = (0.0, 0.0)
    #: ``(σ_x, σ_y)`` px, the bright-star registration scatter ZOGY's astrometric terms used
    astrometric_sigma: tuple[float, float] = (0.0, 0.0)
    #: PSF field of the registered new frame the subtraction used (stored as ``NEWPSF…``), or None
    new_psf_field: PSFField | None = field(default=None, repr=False)
    #: ``white`` or ``measured``: the inputs' noise correlation ZOGY used (science.subtraction.noise_power)
    noise_correlation: str = "white"
    #: how much the measured noise correlation widened S's noise beyond the variance maps' (1: white)
    s_corr_norm: float = 1.0
    #: ``(c_new, c_ref)``: variance each input's part of S sees over its map's independent-pixel value
    noise_factors: tuple[float, float] = (1.0, 1.0)
    #: FFT back end the subtraction ran on: ``numpy`` (scipy), ``torch-cuda`` (a GPU) or ``torch-cpu``
    fft_backend: str = "numpy"

    def to_hdus(self, header: fits.Header) -> list:
        """FITS HDUs: primary ``DIFF`` (difference), ``SCORR``, ``VARIANCE``, ``MASK``, ``NEW``, ``PSF``.

        The scalars go into the primary header as ``METHOD``, ``FLUXRAT``, ``PSFFWHM``,
        ``NEWFWHM``, ``SCORRSTD``, ``REGRMS``, ``REGISTER``, ``VARPSF``, ``PSFERR``, ``REGDX`` /
        ``REGDY``, ``ASTSIGX`` / ``ASTSIGY``, and the noise correlation ``NOISECOR`` (method), ``SCORNORM``,
        ``NCORNEW`` / ``NCORREF``, and the FFT back end ``FFTBACK``. With a varying PSF the per-node
        difference PSFs follow as ``PSFTILES``; the new frame's PSF field as ``NEWPSF…``. The reference is not stored.

        Parameters
        ----------
        header : astropy.io.fits.Header
            Base primary header (e.g. the reference grid's WCS); copied, not modified.

        Returns
        -------
        list of astropy.io.fits.PrimaryHDU or astropy.io.fits.ImageHDU
            float32 images (mask uint16).
        """
        header = header.copy()
        for key, value, comment in [
            ("METHOD", self.method, "subtraction method"), ("FLUXRAT", self.flux_ratio, "F_new / F_ref"),
            ("PSFFWHM", self.psf_fwhm, "FWHM of the difference PSF, px"),
            ("NEWFWHM", self.new_fwhm, "FWHM of the new frame's PSF, px"),
            ("SCORRSTD", self.s_corr_std, "robust std of S_corr on blank sky"),
            ("REGRMS", self.registration_rms, "registration residual rms, px"),
            ("REGISTER", self.registration, "wcs, star-pattern, sparse-stars, correlation"),
            ("VARPSF", bool(self.varying_psf), "PSF varies over the frame: tiled ZOGY"),
            ("PSFERR", float(self.psf_error), "PSF-model error in the S_corr variance"),
            ("REGDX", float(self.pixel_offset[0]), "x offset added to the WCS mapping, px"),
            ("REGDY", float(self.pixel_offset[1]), "y offset added to the WCS mapping, px"),
            ("ASTSIGX", float(self.astrometric_sigma[0]), "registration scatter in x, px"),
            ("ASTSIGY", float(self.astrometric_sigma[1]), "registration scatter in y, px"),
            ("NOISECOR", self.noise_correlation, "input noise correlation: white or measured"),
            ("SCORNORM", float(self.s_corr_norm), "std of S over what the variance maps predict"),
            ("NCORNEW", float(self.noise_factors[0]), "new image: filter variance over its map's"),
            ("NCORREF", float(self.noise_factors[1]), "reference: filter variance over its map's"),
            ("FFTBACK", self.fft_backend, "FFT back end: numpy, torch-cuda or torch-cpu"),
        ]:
            header[key] = (value, comment)
        primary = fits.PrimaryHDU(self.difference.astype(np.float32), header)
        primary.name = "DIFF"
        return [
            primary,
            fits.ImageHDU(self.s_corr.astype(np.float32), name="SCORR"),
            fits.ImageHDU(self.variance.astype(np.float32), name="VARIANCE"),
            fits.ImageHDU(self.mask.astype(np.uint16), name="MASK"),
            fits.ImageHDU(self.new.astype(np.float32), name="NEW"),
            fits.ImageHDU(self.psf.astype(np.float32), name="PSF"),
        ] + ([fits.ImageHDU(self.psf_tiles.astype(np.float32), name="PSFTILES")] if self.psf_tiles is not None else []
             ) + (psf_field_hdus(self.new_psf_field, "NEWPSF") if self.new_psf_field is not None else [])

    @classmethod
    def from_extensions(cls, extensions: dict, reference: np.ndarray) -> Difference:
        """The difference from its FITS extensions (:meth:`to_hdus` layout).

        Parameters
        ----------
        extensions : dict
            ``EXTNAME`` → ``(data, header)`` with ``DIFF`` (whose header holds the scalars),
            ``NEW``, ``VARIANCE``, ``SCORR``, ``MASK`` and ``PSF``.
        reference : numpy.ndarray
            The reference co-add, e- (not stored with the difference).

        Returns
        -------
        Difference
            ``new_fwhm`` from ``NEWFWHM``, else ``PSFFWHM``; ``registration`` ``"wcs"`` when absent.
        """
        difference, header = extensions["DIFF"]
        return cls(
            new=extensions["NEW"][0], reference=reference, difference=difference,
            variance=extensions["VARIANCE"][0], s_corr=extensions["SCORR"][0],
            mask=extensions["MASK"][0].astype(np.uint16), psf=extensions["PSF"][0],
            psf_fwhm=float(header["PSFFWHM"]), new_fwhm=float(header.get("NEWFWHM", header["PSFFWHM"])),
            flux_ratio=float(header["FLUXRAT"]), s_corr_std=float(header["SCORRSTD"]),
            registration_rms=float(header["REGRMS"]), method=str(header["METHOD"]),
            registration=str(header.get("REGISTER", "wcs")),
            varying_psf=bool(header.get("VARPSF", False)), psf_error=float(header.get("PSFERR", 0.0)),
            psf_tiles=extensions["PSFTILES"][0] if "PSFTILES" in extensions else None,
            pixel_offset=(float(header.get("REGDX", 0.0)), float(header.get("REGDY", 0.0))),
            astrometric_sigma=(float(header.get("ASTSIGX", 0.0)), float(header.get("ASTSIGY", 0.0))),
            new_psf_field=psf_field_from(extensions, difference.shape, "NEWPSF"),
            noise_correlation=str(header.get("NOISECOR", "white")), s_corr_norm=float(header.get("SCORNORM", 1.0)),
            noise_factors=(float(header.get("NCORNEW", 1.0)), float(header.get("NCORREF", 1.0))),
            fft_backend=str(header.get("FFTBACK", "numpy")),
        )
