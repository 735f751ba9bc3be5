"""Frames without a WCS: a WCS borrowed from the reference through star patterns.

Method
------
Bright stars are found with SEP in the frame and in the reference, and the similarity transform
(rotation, scale, shift) from frame pixels to reference pixels is found by matching triangles of
stars with astroalign (Beroiz, Cabral & Sanchez 2020, Astronomy and Computing 32, 100384). The
frame's WCS is then the reference's composed with that transform: for a reference pixel
``q = A p + t`` of frame pixel ``p``, ``CD_frame = CD_ref · A`` and
``CRPIX_frame = A⁻¹ (CRPIX_ref − t)`` (0-based pixels inside, FITS 1-based in the header). It is
exact for the linear part of the reference WCS; distortion terms of the reference are not carried
over, which leaves the residual offsets that the registration's star-residual refinement removes.

A field whose first frames have no WCS gets a **placeholder** celestial WCS (:func:`placeholder_wcs`):
a TAN projection at RA = Dec = 0 with the frame's pixel scale, marked by the header card
``WCSPLACE = T``. Positions on it are pixels, not sky coordinates: candidates on such a grid carry
pixel positions and no RA/Dec.
"""

from __future__ import annotations

import numpy as np
import sep
from astropy.io import fits
from astropy.wcs import WCS

from astrid_assets.science.psf import find_sources, frame_for_sep, noise_for_sep, unusable_pixels

#: Header card marking a placeholder WCS (pixel grid only, no sky position).
PLACEHOLDER_CARD = "WCSPLACE"
#: Stars used for pattern matching (brightest first); astroalign's own default is 50.
MAX_CONTROL_POINTS = 60


class AlignmentError(ValueError):
    """The frame's stars could not be matched to the reference's by pattern."""


def placeholder_wcs(shape: tuple[int, int], pixel_scale_arcsec: float = 1.0) -> WCS:
    """A TAN WCS at RA = Dec = 0 for a frame of ``shape`` ``(ny, nx)``: a pixel grid, not the sky.

    ``pixel_scale_arcsec`` (arcsec/px) keeps seeing in arcsec meaningful where the scale is known.
    """
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [0.0, 0.0]
    wcs.wcs.crpix = [(shape[1] + 1) / 2.0, (shape[0] + 1) / 2.0]
    scale = pixel_scale_arcsec / 3600.0
    wcs.wcs.cd = [[-scale, 0.0], [0.0, scale]]
    return wcs


def is_placeholder(header: fits.Header) -> bool:
    """Whether a header's WCS is a :func:`placeholder_wcs` (no sky coordinates)."""
    return bool(header.get(PLACEHOLDER_CARD, False))


def star_catalogue(
    image: np.ndarray, background, rms, mask: np.ndarray | None, n: int = MAX_CONTROL_POINTS,
    aperture: float | None = None,
) -> np.ndarray:
    """``(x, y, flux)`` rows of the ``n`` brightest unflagged SEP detections at 5σ, brightest first.

    Pixels are 0-based; ``flux`` is SEP's isophotal flux (image units), or with ``aperture`` (px) the
    background-subtracted sum in a circle of that radius, stars whose circle touches an unusable
    pixel or the frame's edge left out.
    """
    frame, nonfinite = frame_for_sep(image, background)
    bad = unusable_pixels(mask, frame.shape) | nonfinite
    objects = find_sources(frame, noise_for_sep(rms, frame.shape), bad, threshold=5.0)
    if objects.size == 0:
        return np.empty((0, 3))
    objects = objects[objects["flag"] == 0]
    x, y, flux = objects["x"], objects["y"], objects["flux"]
    if aperture is not None and len(objects):
        flux, _, flags = sep.sum_circle(frame, x, y, aperture, mask=bad)
        ny, nx = frame.shape
        inside = (x >= aperture) & (y >= aperture) & (x < nx - 1 - aperture) & (y < ny - 1 - aperture)
        keep = inside & ((flags & sep.APER_HASMASKED) == 0) & (flux > 0)
        x, y, flux = x[keep], y[keep], flux[keep]
    brightest = np.argsort(-flux)[:n]
    return np.column_stack([x[brightest], y[brightest], flux[brightest]]).astype(np.float64)


def star_positions(
    image: np.ndarray, background, rms, mask: np.ndarray | None, n: int = MAX_CONTROL_POINTS
) -> np.ndarray:
    """``(x, y)`` of the ``n`` brightest unflagged SEP detections at 5σ (0-based pixels)."""
    return star_catalogue(image, background, rms, mask, n)[:, :2]


def pixel_transform(frame_xy: np.ndarray, reference_xy: np.ndarray) -> tuple[np.ndarray, int]:
    """The 3 × 3 similarity matrix mapping frame pixels to reference pixels, and the stars it matched.

    Raises
    ------
    AlignmentError : fewer than 3 stars in either list, or no consistent triangle match.
    """
    import astroalign

    if len(frame_xy) < 3 or len(reference_xy) < 3:
        raise AlignmentError(
            f"too few stars for pattern matching ({len(frame_xy)} in the frame, {len(reference_xy)} in the reference)")
    try:
        transform, (matched, _) = astroalign.find_transform(
            frame_xy, reference_xy, max_control_points=MAX_CONTROL_POINTS)
    except (astroalign.MaxIterError, ValueError, TypeError) as error:
        raise AlignmentError(f"star patterns of the frame and the reference do not match ({error})") from None
    return np.asarray(transform.params, dtype=np.float64), len(matched)


def wcs_through(reference_wcs: WCS, matrix: np.ndarray) -> WCS:
    """The reference's (linear) celestial WCS pulled back through ``q = A p + t`` (``matrix`` 3 × 3)."""
    linear, shift = matrix[:2, :2], matrix[:2, 2]
    ref = reference_wcs.celestial
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = list(ref.wcs.ctype)
    wcs.wcs.crval = list(ref.wcs.crval)
    wcs.wcs.cd = ref.pixel_scale_matrix @ linear
    crpix_ref = np.asarray(ref.wcs.crpix, dtype=np.float64) - 1.0  # 0-based
    wcs.wcs.crpix = np.linalg.solve(linear, crpix_ref - shift) + 1.0
    if ref.wcs.lonpole is not None and np.isfinite(ref.wcs.lonpole):
        wcs.wcs.lonpole = ref.wcs.lonpole
    return wcs


def align_to_reference(
    image: np.ndarray, background, rms, mask: np.ndarray | None,
    reference: np.ndarray, reference_rms, reference_mask: np.ndarray | None, reference_wcs: WCS,
) -> tuple[WCS, int]:
    """A WCS for a frame without one, on the reference's sky (or placeholder) grid, and the stars matched.

    Parameters
    ----------
    image, background, rms, mask : the frame (e-), its background and noise (e-, map or scalar), uint16 mask.
    reference, reference_rms, reference_mask : the reference (background-subtracted e-), noise, mask.
    reference_wcs : the reference's celestial WCS.

    Raises
    ------
    AlignmentError : the star patterns could not be matched.
    """
    frame_xy = star_positions(image, background, rms, mask)
    reference_xy = star_positions(reference, 0.0, reference_rms, reference_mask)
    matrix, n_matched = pixel_transform(frame_xy, reference_xy)
    return wcs_through(reference_wcs, matrix), n_matched
