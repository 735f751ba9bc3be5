"""An image's stars and PSF, measured once and stored with the image: :func:`measure_frame` (when a
frame is calibrated), :func:`measure_reference` (when a reference is built), and their FITS
extensions for a star catalogue, a PSF model and a PSF field.

A calibrated frame carries the star catalogue (``STARS``) and PSF (``PSF``, ``PSFSTARS``) measured
once when it was calibrated; a reference carries its catalogue and its PSF field (``PSF`` with the
FWHM plane in its header, ``PSFCOEF`` / ``PSFCVAR`` when the PSF varies, ``PSFXY``), so that
differencing never measures the reference again; a difference carries the registered new frame's
PSF field the same way (``NEWPSF…``), for the injection check to reuse. Positions are 0-based pixels of the image's own
grid (pixel ``[j, i]`` centred at ``(x, y) = (i, j)``); fluxes in the image's units (e-).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
from astropy.io import fits
from astropy.table import Table

from astrid_assets.science.psf.analytic import estimate_frame_psf
from astrid_assets.science.psf.field import PSFField, estimate_psf_field
from astrid_assets.science.psf.model import PSFError, PSFModel, measure_fwhm
from astrid_assets.science.psf.stars import PSF_STAR_LIMITS
from astrid_assets.science.sources import STARS_COLUMNS, Sources

if TYPE_CHECKING:  # the products import this module to store what it measures
    from astrid_assets.science.products import CalibratedFrame, Reference

__all__ = [
    "measure_frame",
    "measure_reference",
    "stars_hdu",
    "stars_from",
    "psf_model_hdus",
    "psf_model_from",
    "psf_field_hdus",
    "psf_field_from",
]


def measure_frame(frame: CalibratedFrame) -> CalibratedFrame:
    """The frame with its star catalogue and PSF, measured once (when it is calibrated) and stored with it.

    One SEP extraction at 5σ of ``science − background`` (noise ``background_rms``) gives the
    catalogue (:class:`~astrid_assets.science.sources.Sources`); the PSF is estimated from it by the
    ladder (:func:`~astrid_assets.science.psf.analytic.estimate_frame_psf` with
    :data:`~astrid_assets.science.psf.stars.PSF_STAR_LIMITS`: the empirical stack, else a Moffat or
    Gaussian fitted to the one to ten best stars; ``psf.psf_source`` says which, ``psf.n_stars`` and
    ``psf.star_xy`` the stars used). Reference building (zero points), the first registration check and
    the injection check reuse both.

    Parameters
    ----------
    frame : CalibratedFrame
        The calibrated frame (e-, sky included).

    Returns
    -------
    CalibratedFrame
        A copy with ``stars`` and ``psf`` (None only when the frame has no usable star at all).
    """
    sources = Sources.extract(frame.science, frame.background, frame.background_rms, frame.mask)
    try:
        psf = estimate_frame_psf(frame.science, frame.background, frame.background_rms, frame.mask,
                           objects=sources.objects, **PSF_STAR_LIMITS)
    except PSFError:
        psf = None
    return replace(frame, stars=sources.objects, psf=psf)


def measure_reference(reference: Reference) -> Reference:
    """The reference with its star catalogue and PSF field, measured once (when it is built); as it is if
    it carries them already.

    Detections at 5σ with the noise :attr:`~astrid_assets.science.products.Reference.sky_sigma`; the PSF
    field (:func:`~astrid_assets.science.psf.field.estimate_psf_field`) around the co-add's own PSF stamp.

    Parameters
    ----------
    reference : Reference

    Returns
    -------
    Reference
    """
    if reference.stars is not None and reference.psf_field is not None:
        return reference
    sources = reference.sources
    psf_field = estimate_psf_field(
        reference.image, 0.0, reference.sky_sigma, reference.mask, size=reference.psf.shape[0],
        constant=PSFModel(reference.psf, measure_fwhm(reference.psf), 0), sources=sources, **PSF_STAR_LIMITS)
    return replace(reference, stars=sources.objects, psf_field=psf_field)


def stars_hdu(objects: np.ndarray, name: str = "STARS") -> fits.BinTableHDU:
    """A star catalogue (SEP objects, :data:`~astrid_assets.science.sources.STARS_COLUMNS`) as a table HDU.

    Parameters
    ----------
    objects : numpy.ndarray
        SEP's structured object array (or any with those columns).
    name : str, default "STARS"
        ``EXTNAME``.

    Returns
    -------
    astropy.io.fits.BinTableHDU
    """
    table = Table({column: np.asarray(objects[column]) for column in STARS_COLUMNS})
    hdu = fits.BinTableHDU(table, name=name)
    hdu.header["COMMENT"] = "SEP detections at 5 sigma: x, y 0-based px; flux isophotal, e-"
    return hdu


def stars_from(extensions: dict, name: str = "STARS") -> np.ndarray | None:
    """The catalogue stored by :func:`stars_hdu` as a native-endian structured array, or None.

    Parameters
    ----------
    extensions : dict
        ``EXTNAME`` → ``(data, header)`` (:func:`~astrid_assets.science.frames.files.read_extensions`).
    name : str, default "STARS"

    Returns
    -------
    numpy.ndarray or None
    """
    if name not in extensions:
        return None
    data = extensions[name][0]
    dtype = [(column, data.dtype[column].newbyteorder("=")) for column in STARS_COLUMNS]
    out = np.empty(len(data), dtype=dtype)
    for column in STARS_COLUMNS:
        out[column] = data[column]
    return out


def psf_model_hdus(psf: PSFModel, name: str = "PSF") -> list:
    """A PSF model as its stamp (``FWHM`` px, ``NSTARS`` and ``PSFSRC`` cards) and a ``PSFSTARS`` table (x, y, flux).

    ``PSFSRC`` is :attr:`~astrid_assets.science.psf.model.PSFModel.psf_source` (``empirical``, ``moffat``,
    ``gaussian`` or ``kernel``); a stamp stored without it reads back as ``empirical``.

    Parameters
    ----------
    psf : PSFModel
    name : str, default "PSF"

    Returns
    -------
    list of astropy.io.fits HDUs
    """
    image = fits.ImageHDU(np.asarray(psf.image, dtype=np.float32), name=name)
    image.header["FWHM"] = (float(psf.fwhm), "PSF FWHM after pixelisation, px")
    image.header["NSTARS"] = (int(psf.n_stars), "stars stacked or fitted")
    image.header["PSFSRC"] = (str(psf.psf_source), "PSF from: empirical, moffat, gaussian or kernel")
    xy = np.asarray(psf.star_xy, dtype=np.float64).reshape(-1, 2)
    flux = np.asarray(psf.star_flux, dtype=np.float64)
    if len(flux) != len(xy):
        flux = np.full(len(xy), np.nan)
    stars = fits.BinTableHDU(Table({"x": xy[:, 0], "y": xy[:, 1], "flux": flux}), name=f"{name}STARS")
    return [image, stars]


def psf_model_from(extensions: dict, name: str = "PSF") -> PSFModel | None:
    """The PSF model stored by :func:`psf_model_hdus`, or None when the image has none.

    Parameters
    ----------
    extensions : dict
        ``EXTNAME`` → ``(data, header)``.
    name : str, default "PSF"

    Returns
    -------
    PSFModel or None
    """
    if name not in extensions or "FWHM" not in extensions[name][1]:
        return None
    image, header = extensions[name]
    stars = extensions.get(f"{name}STARS")
    xy, flux = np.empty((0, 2)), np.empty(0)
    if stars is not None and len(stars[0]):
        xy = np.column_stack([np.asarray(stars[0]["x"], float), np.asarray(stars[0]["y"], float)])
        flux = np.asarray(stars[0]["flux"], float)
    return PSFModel(np.asarray(image, dtype=np.float32), float(header["FWHM"]), int(header["NSTARS"]), xy, flux,
                    psf_source=str(header.get("PSFSRC", "empirical")))


#: Header cards of a stored PSF field: the FWHM plane, its errors, whether it varies, the polynomial degree.
_FIELD_CARDS = ("PLANE0", "PLANEX", "PLANEY", "PLANE0E", "PLANEXE", "PLANEYE")


def psf_field_hdus(psf_field: PSFField, name: str = "PSF") -> list:
    """A PSF field as HDUs: the frame PSF (:func:`psf_model_hdus`) with the FWHM plane in its header,
    the spatial model's coefficients and variance when the PSF varies, and the stars of the plane.

    Parameters
    ----------
    psf_field : PSFField
    name : str, default "PSF"
        ``EXTNAME`` of the PSF stamp, and prefix of the others (``STARS``, ``COEF``, ``CVAR``, ``XY``).

    Returns
    -------
    list of astropy.io.fits HDUs
    """
    hdus = psf_model_hdus(psf_field.constant, name)
    header = hdus[0].header
    for key, value in zip(_FIELD_CARDS, (*psf_field.fwhm_plane, *psf_field.fwhm_plane_err), strict=True):
        header[key] = (float(value) if np.isfinite(value) else "inf", "FWHM plane f, g_x, g_y and errors, px")
    header["VARPSF"] = (bool(psf_field.varies), "spatial PSF model used")
    header["PSFDEG"] = (int(psf_field.degree), "polynomial degree of the spatial model")
    header["PSFNFIT"] = (int(psf_field.n_stars), "stars the spatial model was fitted to")
    if psf_field.coefficients is not None:
        hdus.append(fits.ImageHDU(np.asarray(psf_field.coefficients, np.float64), name=f"{name}COEF"))
    if psf_field.variance is not None:
        hdus.append(fits.ImageHDU(np.asarray(psf_field.variance, np.float64), name=f"{name}CVAR"))
    xy = np.asarray(psf_field.star_xy, dtype=np.float64).reshape(-1, 2)
    hdus.append(fits.BinTableHDU(Table({"x": xy[:, 0], "y": xy[:, 1]}), name=f"{name}XY"))
    return hdus


def psf_field_from(extensions: dict, shape: tuple[int, int], name: str = "PSF") -> PSFField | None:
    """The PSF field stored by :func:`psf_field_hdus` for an image of ``shape``, or None.

    Parameters
    ----------
    extensions : dict
        ``EXTNAME`` → ``(data, header)``.
    shape : tuple of int
        ``(ny, nx)`` of the image.
    name : str, default "PSF"
        As for :func:`psf_field_hdus`.

    Returns
    -------
    PSFField or None
        None when the stored PSF has no field cards (an image stored before fields were kept).
    """
    constant = psf_model_from(extensions, name)
    if constant is None or "PLANE0" not in extensions[name][1]:
        return None
    header = extensions[name][1]
    values = [np.inf if header[key] == "inf" else float(header[key]) for key in _FIELD_CARDS]
    stars = extensions.get(f"{name}XY")
    xy = (np.column_stack([np.asarray(stars[0]["x"], float), np.asarray(stars[0]["y"], float)])
          if stars is not None and len(stars[0]) else np.empty((0, 2)))
    coefficients = extensions.get(f"{name}COEF")
    variance = extensions.get(f"{name}CVAR")
    return PSFField(
        constant, (int(shape[0]), int(shape[1])), tuple(values[:3]), tuple(values[3:]),
        varies=bool(header["VARPSF"]),
        coefficients=None if coefficients is None else np.asarray(coefficients[0], np.float64),
        variance=None if variance is None else np.asarray(variance[0], np.float64),
        degree=int(header["PSFDEG"]), n_stars=int(header["PSFNFIT"]), star_xy=xy,
    )
