"""Frames without a WCS: a WCS borrowed from the reference through star patterns.

Method
------
:func:`align_frame` finds the similarity transform (rotation, scale, shift) from frame pixels to
reference pixels in three steps, and says which one succeeded (``method``, recorded per frame as
``difference_images.registration``):

1. ``star-pattern`` / ``sparse-stars``: control stars chosen for matching (isolated, unsaturated,
   spread over the frame, windowed centroids: :mod:`~astrid_assets.science.astrometry.control`) are
   matched by triangle invariants and star pairs with a consensus count over all the stars
   (:mod:`~astrid_assets.science.astrometry.match`); ``sparse-stars`` when three to five stars match
   (a sparse field), accepted under the tighter tests of that module;
2. ``star-pattern`` again, with astroalign's RANSAC on triangles (Beroiz, Cabral & Sanchez 2020,
   Astronomy and Computing 32, 100384) over the brightest detections, should the first fail;
3. ``correlation``: the shift from phase correlation of the two images
   (:mod:`~astrid_assets.science.astrometry.xcorr`), refined by the stars it pairs — for frames that
   differ by a shift and have too few stars for a pattern.

The frame's WCS is then the reference's composed with that transform: for a reference pixel
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

from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from astrid_assets.science.astrometry.control import choose_control_stars
from astrid_assets.science.astrometry.match import (
    MatchError,
    match_star_lists,
    similarity_fit,
)
from astrid_assets.science.astrometry.residuals import match_positions
from astrid_assets.science.astrometry.xcorr import CorrelationError, phase_correlation
from astrid_assets.science.sources import MAX_CONTROL_POINTS, Sources, star_positions

__all__ = [
    "PLACEHOLDER_CARD",
    "AlignmentError",
    "placeholder_wcs",
    "is_placeholder",
    "pixel_transform",
    "wcs_through",
    "align_to_reference",
    "REGISTRATION_METHODS",
    "Alignment",
    "align_frame",
]

#: Values of ``difference_images.registration``: how a frame was put on the reference grid.
REGISTRATION_METHODS = ("wcs", "star-pattern", "sparse-stars", "correlation")

#: Header card marking a placeholder WCS (pixel grid only, no sky position).
PLACEHOLDER_CARD = "WCSPLACE"


class AlignmentError(ValueError):
    """The frame's stars could not be matched to the reference's by pattern."""


def placeholder_wcs(shape: tuple[int, int], pixel_scale_arcsec: float = 1.0) -> WCS:
    """A TAN WCS at RA = Dec = 0 for a frame of ``shape`` ``(ny, nx)``: a pixel grid, not the sky.

    ``pixel_scale_arcsec`` (arcsec/px) keeps seeing in arcsec meaningful where the scale is known.
    The reference pixel is the frame's centre (``CRPIX = ((nx + 1)/2, (ny + 1)/2)``, FITS 1-based);
    RA increases to −x (``CD1_1 < 0``), Dec to +y. The caller marks the header with
    :data:`PLACEHOLDER_CARD`; this function does not.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` of the frame, px.
    pixel_scale_arcsec : float, default 1.0
        Pixel scale, arcsec/px.

    Returns
    -------
    astropy.wcs.WCS
        Two-axis ``RA---TAN`` / ``DEC--TAN`` WCS with a diagonal CD matrix, deg/px.
    """
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [0.0, 0.0]
    wcs.wcs.crpix = [(shape[1] + 1) / 2.0, (shape[0] + 1) / 2.0]
    scale = pixel_scale_arcsec / 3600.0
    wcs.wcs.cd = [[-scale, 0.0], [0.0, scale]]
    return wcs


def is_placeholder(header: fits.Header) -> bool:
    """Whether a header's WCS is a :func:`placeholder_wcs` (no sky coordinates).

    Parameters
    ----------
    header : astropy.io.fits.Header
        FITS header to test for a true :data:`PLACEHOLDER_CARD` (``WCSPLACE``).

    Returns
    -------
    bool
        True if the card is present and true.
    """
    return bool(header.get(PLACEHOLDER_CARD, False))


def pixel_transform(frame_xy: np.ndarray, reference_xy: np.ndarray) -> tuple[np.ndarray, int]:
    """The 3 × 3 similarity matrix mapping frame pixels to reference pixels, and the stars it matched.

    Triangle and pair matching with a consensus count
    (:func:`~astrid_assets.science.astrometry.match.match_star_lists`), then astroalign (Beroiz, Cabral &
    Sanchez 2020) should it fail, using at most
    :data:`~astrid_assets.science.sources.MAX_CONTROL_POINTS` stars of each list.

    Parameters
    ----------
    frame_xy : numpy.ndarray
        ``(n, 2)`` star positions ``(x, y)`` in the frame, px (0-based), brightest first.
    reference_xy : numpy.ndarray
        ``(m, 2)`` star positions ``(x, y)`` in the reference, px (0-based), brightest first.

    Returns
    -------
    matrix : numpy.ndarray
        ``(3, 3)`` float64 homogeneous matrix: ``(x_ref, y_ref, 1)ᵀ = matrix @ (x, y, 1)ᵀ``.
    n_matched : int
        Number of stars matched by the transform.

    Raises
    ------
    AlignmentError
        Fewer than 3 stars in either list, or no consistent triangle match.
    """
    if len(frame_xy) < 3 or len(reference_xy) < 3:
        raise AlignmentError(
            f"too few stars for pattern matching ({len(frame_xy)} in the frame, {len(reference_xy)} in the reference)")
    try:
        match = match_star_lists(frame_xy[:MAX_CONTROL_POINTS], reference_xy[:MAX_CONTROL_POINTS])
        return match.matrix, match.n_matched
    except MatchError:
        return _astroalign(frame_xy, reference_xy)


def _astroalign(frame_xy: np.ndarray, reference_xy: np.ndarray) -> tuple[np.ndarray, int]:
    """astroalign's triangle RANSAC (Beroiz et al. 2020) on the brightest stars of each list."""
    import astroalign

    try:
        transform, (matched, _) = astroalign.find_transform(
            frame_xy, reference_xy, max_control_points=MAX_CONTROL_POINTS)
    except (astroalign.MaxIterError, ValueError, TypeError) as error:
        raise AlignmentError(f"star patterns of the frame and the reference do not match ({error})") from None
    return np.asarray(transform.params, dtype=np.float64), len(matched)


def wcs_through(reference_wcs: WCS, matrix: np.ndarray) -> WCS:
    """The reference's (linear) celestial WCS pulled back through ``q = A p + t`` (``matrix`` 3 × 3).

    ``CD_frame = CD_ref · A`` and ``CRPIX_frame = A⁻¹ (CRPIX_ref − t)`` with 0-based pixels
    (module docstring); CTYPE, CRVAL and LONPOLE are copied, distortion terms are not.

    Parameters
    ----------
    reference_wcs : astropy.wcs.WCS
        WCS of the reference; its celestial part is used.
    matrix : numpy.ndarray
        ``(3, 3)`` homogeneous matrix mapping frame pixels ``p`` to reference pixels ``q`` (0-based,
        :func:`pixel_transform`).

    Returns
    -------
    astropy.wcs.WCS
        Two-axis linear celestial WCS of the frame (CD matrix, deg/px).
    """
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
    *, frame_xy: np.ndarray | None = None, reference_xy: np.ndarray | None = None,
) -> tuple[WCS, int]:
    """A WCS for a frame without one, on the reference's sky (or placeholder) grid, and the stars matched.

    Parameters
    ----------
    image : numpy.ndarray
        The frame, e-, with sky, indexed ``[y, x]``.
    background, rms : numpy.ndarray or float
        Its background and noise, e- (map or scalar).
    mask : numpy.ndarray or None
        Its uint16 mask, or None.
    reference : numpy.ndarray
        The reference (background-subtracted e-).
    reference_rms : numpy.ndarray or float
        The reference's noise, e- (map or scalar).
    reference_mask : numpy.ndarray or None
        The reference's uint16 mask, or None.
    reference_wcs : astropy.wcs.WCS
        The reference's celestial WCS.
    frame_xy, reference_xy : numpy.ndarray or None, default None
        Control stars ``(x, y)`` of each image, brightest first, when already measured
        (:func:`~astrid_assets.science.sources.star_positions` of their stored detections); None finds them.

    Returns
    -------
    wcs : astropy.wcs.WCS
        The frame's WCS (:func:`wcs_through`).
    n_matched : int
        Stars matched between the frame and the reference.

    Raises
    ------
    AlignmentError
        The star patterns could not be matched.
    """
    if frame_xy is None:
        frame_xy = star_positions(image, background, rms, mask)
    if reference_xy is None:
        reference_xy = star_positions(reference, 0.0, reference_rms, reference_mask)
    matrix, n_matched = pixel_transform(frame_xy, reference_xy)
    return wcs_through(reference_wcs, matrix), n_matched


@dataclass(frozen=True)
class Alignment:
    """How a frame without a usable WCS was put on the reference's pixel grid.

    Attributes
    ----------
    matrix : numpy.ndarray
        ``(3, 3)`` homogeneous matrix, frame px → reference px (0-based).
    n_matched : int
        Stars that confirm the transform.
    method : str
        ``star-pattern``, ``sparse-stars`` or ``correlation`` (module docstring).
    detail : str
        What each step found, in words (why earlier steps failed).
    """

    matrix: np.ndarray
    n_matched: int
    method: str
    detail: str = ""


def _match_tolerance(fwhm_a: float, fwhm_b: float) -> float:
    """Matching radius, px: 2 px, or 0.4 FWHM of the broader image where that is larger."""
    widths = [w for w in (fwhm_a, fwhm_b) if np.isfinite(w)]
    return float(max(2.0, 0.4 * max(widths))) if widths else 2.0


def align_frame(frame_sources: Sources, reference_sources: Sources, *, scale: float = 1.0) -> Alignment:
    """The transform of a frame's pixels onto the reference's, by the steps of the module docstring.

    Parameters
    ----------
    frame_sources, reference_sources : Sources
        Each image's detections and background-subtracted pixels (stored catalogues serve).
    scale : float, default 1.0
        Expected scale, reference px per frame px (the pixel-scale ratio where known).

    Returns
    -------
    Alignment

    Raises
    ------
    AlignmentError
        No step found a transform; the message says what each found.
    """
    frame_stars = choose_control_stars(frame_sources, MAX_CONTROL_POINTS)
    reference_stars = choose_control_stars(reference_sources, MAX_CONTROL_POINTS)
    tolerance = _match_tolerance(frame_stars.fwhm, reference_stars.fwhm)
    problems = []
    try:
        match = match_star_lists(frame_stars.xy, reference_stars.xy, tolerance=tolerance, scale=scale,
                                 frame_flux=frame_stars.flux, reference_flux=reference_stars.flux)
        method = "star-pattern" if match.n_matched >= 6 else "sparse-stars"
        return Alignment(match.matrix, match.n_matched, method,
                         f"{match.n_matched} of {len(frame_stars)} control stars ({frame_stars.cuts}), "
                         f"rms {match.rms:.2f} px")
    except MatchError as error:
        problems.append(f"control stars: {error}")
    try:
        matrix, n = _astroalign(frame_sources.control_stars(), reference_sources.control_stars())
        if n >= 6:
            return Alignment(matrix, n, "star-pattern", f"astroalign: {n} stars")
        problems.append(f"astroalign: only {n} stars")
    except (AlignmentError, ValueError) as error:
        problems.append(f"astroalign: {error}")
    try:
        widths = [w for w in (frame_stars.fwhm, reference_stars.fwhm) if np.isfinite(w)]
        return _by_correlation(frame_sources, reference_sources, frame_stars.xy, reference_stars.xy, tolerance,
                               max(widths) if widths else None)
    except CorrelationError as error:
        problems.append(f"cross-correlation: {error}")
    raise AlignmentError("star patterns of the frame and the reference do not match (" + "; ".join(problems) + ")")


def _by_correlation(frame_sources: Sources, reference_sources: Sources, frame_xy: np.ndarray,
                    reference_xy: np.ndarray, tolerance: float, fwhm: float | None = None) -> Alignment:
    """A pure shift from phase correlation, refined by the stars it pairs (mean offset of the pairs)."""
    limit = 0.45 * min(*frame_sources.frame.shape, *reference_sources.frame.shape)
    shift = phase_correlation(frame_sources.frame, reference_sources.frame, bad=frame_sources.bad,
                              reference_bad=reference_sources.bad, max_shift=limit, fwhm=fwhm)
    matrix = np.array([[1.0, 0.0, shift.dx], [0.0, 1.0, shift.dy], [0.0, 0.0, 1.0]])
    n = 0
    if len(frame_xy) and len(reference_xy):
        index, ref_index = match_positions(frame_xy + (shift.dx, shift.dy), reference_xy, tolerance)
        n = int(index.size)
        if n >= 1:  # the stars' offsets are more precise than the correlation grid
            offset = np.mean(reference_xy[ref_index] - frame_xy[index], axis=0)
            if n >= 3:
                a, b = similarity_fit(frame_xy[index], reference_xy[ref_index])
                if abs(abs(a) - 1.0) < 0.01:
                    matrix = np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag], [0.0, 0.0, 1.0]])
                    offset = None
            if offset is not None:
                matrix[:2, 2] = offset
    return Alignment(matrix, n, "correlation",
                     f"shift ({shift.dx:.2f}, {shift.dy:.2f}) px at {shift.significance:.0f} sigma, {n} stars paired")
