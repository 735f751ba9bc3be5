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
    """

    science: np.ndarray
    mask: np.ndarray
    variance: np.ndarray
    background: np.ndarray
    background_rms: np.ndarray
    header: fits.Header = field(default_factory=fits.Header)
    info: dict = field(default_factory=dict)

    @classmethod
    def from_extensions(cls, extensions: dict) -> CalibratedFrame:
        """The frame from its FITS extensions (:func:`~astrid_assets.science.frames.files.read_extensions`).

        Parameters
        ----------
        extensions : dict
            ``EXTNAME`` → ``(data, header)`` with ``SCI`` (whose header becomes the frame's),
            ``MASK``, ``VARIANCE``, ``BKG`` and ``BKGRMS``.

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
        )

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

    @property
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
                               self.info)


@dataclass
class Reference:
    """A field's deep reference: background-subtracted co-add (e-), variance, mask and PSF."""

    image: np.ndarray  #: float32 background-subtracted co-add, e- of the anchor frame, ``[y, x]``
    variance: np.ndarray  #: float32 variance of ``image``, e-²
    mask: np.ndarray  #: uint16 flags (:mod:`~astrid_assets.science.masks`)
    psf: np.ndarray  #: unit-sum odd PSF stamp of ``image``
    header: fits.Header  #: carries the reference grid's WCS

    @cached_property
    def wcs(self) -> WCS:
        """Celestial WCS of the reference grid (:func:`~astrid_assets.science.frames.files.header_wcs`), parsed once."""
        return header_wcs(self.header)

    @property
    def sky_sigma(self) -> float:
        """Noise per pixel, e-: square root of the median variance over usable pixels."""
        usable = (self.mask & masks.UNUSABLE) == 0
        return float(np.sqrt(np.nanmedian(self.variance[usable])))

    def to_hdus(self) -> list:
        """FITS HDUs: primary ``REF`` (image, with ``header``), ``VARIANCE``, ``MASK`` and ``PSF``.

        Returns
        -------
        list of astropy.io.fits.PrimaryHDU or astropy.io.fits.ImageHDU
            float32 images (mask uint16).
        """
        primary = fits.PrimaryHDU(self.image.astype(np.float32), self.header)
        primary.name = "REF"
        return [
            primary,
            fits.ImageHDU(self.variance.astype(np.float32), name="VARIANCE"),
            fits.ImageHDU(self.mask.astype(np.uint16), name="MASK"),
            fits.ImageHDU(self.psf.astype(np.float32), name="PSF"),
        ]

    @classmethod
    def from_extensions(cls, extensions: dict) -> Reference:
        """The reference from its FITS extensions (:meth:`to_hdus` layout).

        Parameters
        ----------
        extensions : dict
            ``EXTNAME`` → ``(data, header)`` with ``REF`` (whose header becomes the reference's),
            ``VARIANCE``, ``MASK`` and ``PSF``.

        Returns
        -------
        Reference
            Arrays cast to float32 (mask uint16).
        """
        image, header = extensions["REF"]
        return cls(
            image=image.astype(np.float32), variance=extensions["VARIANCE"][0].astype(np.float32),
            mask=extensions["MASK"][0].astype(np.uint16), psf=extensions["PSF"][0].astype(np.float32),
            header=header,
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
    registration: str = "wcs"  #: ``wcs`` or ``star-pattern`` (frame without a WCS, matched by its stars)
    varying_psf: bool = False  #: the PSF varied over the frame: ZOGY on blended tiles (subtraction.tiles)
    psf_error: float = 0.0  #: PSF-model error ε in the variance of S_corr (:mod:`~astrid_assets.science.psf.field`)
    psf_tiles: np.ndarray | None = None  #: ``(n, n, s, s)`` PSFs of ``difference`` at the tile nodes, or None

    def to_hdus(self, header: fits.Header) -> list:
        """FITS HDUs: primary ``DIFF`` (difference), ``SCORR``, ``VARIANCE``, ``MASK``, ``NEW``, ``PSF``.

        The scalars go into the primary header as ``METHOD``, ``FLUXRAT``, ``PSFFWHM``,
        ``NEWFWHM``, ``SCORRSTD``, ``REGRMS``, ``REGISTER``, ``VARPSF`` and ``PSFERR``. With a
        varying PSF the per-node difference PSFs follow as ``PSFTILES``. The reference is not stored.

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
            ("REGISTER", self.registration, "wcs or star-pattern"),
            ("VARPSF", bool(self.varying_psf), "PSF varies over the frame: tiled ZOGY"),
            ("PSFERR", float(self.psf_error), "PSF-model error in the S_corr variance"),
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
        ] + ([fits.ImageHDU(self.psf_tiles.astype(np.float32), name="PSFTILES")] if self.psf_tiles is not None else [])

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
        )
