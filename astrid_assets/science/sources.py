"""Finding sources and measuring the background of a frame: the SEP set-up that calibration,
registration, PSF estimation, alignment and photometry share.

SEP (Barbary 2016, JOSS 1, 58) is the library form of SExtractor (Bertin & Arnouts 1996, A&AS
117, 393); the background is its mesh estimate (median-filtered grid of clipped box statistics).
Frames searched are background-subtracted ``float32`` in e- (or the frame's own units), indexed
``[y, x]``, 0-based: pixel ``[j, i]`` has its centre at ``(x, y) = (i, j)``. Unusable pixels
(``masks.UNUSABLE``) and non-finite ones are excluded from detection.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import sep

from astrid_assets.science import masks

__all__ = [
    "MAX_CONTROL_POINTS",
    "frame_for_sep",
    "noise_for_sep",
    "unusable_pixels",
    "find_sources",
    "Sources",
    "STARS_COLUMNS",
    "star_catalogue",
    "star_positions",
    "BACKGROUND_MESH",
    "BACKGROUND_FILTER",
    "background_maps",
]

#: Bright stars kept for pattern matching and zero points (brightest first); astroalign's own default is 50.
MAX_CONTROL_POINTS = 60


def frame_for_sep(image: np.ndarray, background: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Background-subtracted float32 C-contiguous frame for SEP, and its non-finite pixels (set to 0).

    Parameters
    ----------
    image : numpy.ndarray
        Frame, e- (or the frame's own units), indexed ``[y, x]``.
    background : numpy.ndarray or float
        Background to subtract, same units (map of ``image``'s shape or scalar; 0 for an image
        already background-subtracted).

    Returns
    -------
    frame : numpy.ndarray
        ``image − background`` as C-contiguous float32, non-finite pixels set to 0.
    nonfinite : numpy.ndarray of bool
        Pixels where ``image − background`` was not finite.
    """
    frame = np.asarray(image, dtype=np.float32) - np.asarray(background, dtype=np.float32)
    nonfinite = ~np.isfinite(frame)
    if nonfinite.any():
        frame = np.where(nonfinite, np.float32(0.0), frame)
    return np.ascontiguousarray(frame, dtype=np.float32), nonfinite


def noise_for_sep(background_rms: np.ndarray | float, shape: tuple[int, ...]) -> np.ndarray | float:
    """Noise (e- rms) for SEP: a scalar, or a float32 map with non-finite / non-positive values
    replaced by the largest valid one (so they cannot trigger detections).

    Parameters
    ----------
    background_rms : numpy.ndarray or float
        Per-pixel noise (standard deviation), e- (or the frame's units); map or scalar. A scalar
        is passed through unchecked.
    shape : tuple of int
        ``(ny, nx)`` the map is reshaped to.

    Returns
    -------
    numpy.ndarray or float
        The scalar as ``float``, or a C-contiguous float32 copy of the map (all 1.0 if no value
        is valid).
    """
    if np.ndim(background_rms) == 0:
        return float(background_rms)
    rms = np.array(background_rms, dtype=np.float32, copy=True)
    bad = ~np.isfinite(rms) | (rms <= 0)
    if bad.any():
        rms[bad] = np.float32(np.nanmax(np.where(bad, np.nan, rms))) if (~bad).any() else 1.0
    return np.ascontiguousarray(rms.reshape(shape))


def unusable_pixels(mask: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """Boolean map of pixels carrying any ``masks.UNUSABLE`` flag (all False without a mask).

    Parameters
    ----------
    mask : numpy.ndarray or None
        ``uint16`` bit mask (:mod:`~astrid_assets.science.masks`), or None for no mask.
    shape : tuple of int
        ``(ny, nx)`` of the all-False map returned when ``mask`` is None.

    Returns
    -------
    numpy.ndarray of bool
        True where a pixel is ``UNUSABLE``.
    """
    if mask is None:
        return np.zeros(shape, dtype=bool)
    return (np.asarray(mask) & masks.UNUSABLE) != 0


def find_sources(
    frame: np.ndarray,
    rms: np.ndarray | float,
    bad: np.ndarray,
    threshold: float = 5.0,
    min_area: int = 5,
) -> np.ndarray:
    """SEP extraction (Barbary 2016) on a background-subtracted frame; masked pixels ignored.

    Raises SEP's global pixel-stack (to the frame size, at most 2 × 10⁷) and sub-object limits
    (to 4096) when they are lower; the change stays for the process.

    Parameters
    ----------
    frame : numpy.ndarray
        Background-subtracted C-contiguous float32 frame (:func:`frame_for_sep`), indexed ``[y, x]``.
    rms : numpy.ndarray or float
        Per-pixel noise in the frame's units (:func:`noise_for_sep`), map or scalar.
    bad : numpy.ndarray of bool
        Pixels to ignore (True), on the frame's grid.
    threshold : float, default 5.0
        Detection threshold, in units of ``rms``.
    min_area : int, default 5
        Minimum number of connected pixels above threshold, px.

    Returns
    -------
    numpy.ndarray
        SEP's structured object array (``x``, ``y`` 0-based px, ``flux`` isophotal in frame
        units, ``a``, ``b``, ``flag``, ...).
    """
    npix = frame.size
    if sep.get_extract_pixstack() < min(npix, 20_000_000):
        sep.set_extract_pixstack(min(npix, 20_000_000))
    if sep.get_sub_object_limit() < 4096:
        sep.set_sub_object_limit(4096)
    return sep.extract(frame, threshold, err=rms, mask=np.ascontiguousarray(bad), minarea=min_area)


#: Columns of SEP's object array a stored star catalogue keeps (what PSF star selection, registration
#: and photometry read: position, isophotal flux, shape, flags).
STARS_COLUMNS = ("x", "y", "flux", "a", "b", "theta", "flag", "npix")


@dataclass(frozen=True)
class Sources:
    """One image's SEP extraction at 5σ, made once and handed to every step that needs its stars.

    PSF estimation (:func:`~astrid_assets.science.psf.field.estimate_psf_field`), the registration
    residuals (:func:`~astrid_assets.science.astrometry.residuals.measure_registration_residuals`), the
    flux-ratio stars and the zero-point stars all start from these detections; each step then
    re-measures at their positions (windowed centroids, apertures) on ``frame``.

    Attributes
    ----------
    frame : numpy.ndarray
        Background-subtracted C-contiguous float32 image the detections were made on
        (:func:`frame_for_sep`), indexed ``[y, x]``.
    rms : numpy.ndarray or float
        Per-pixel noise of ``frame`` (:func:`noise_for_sep`), map or scalar.
    bad : numpy.ndarray of bool
        Pixels excluded (``UNUSABLE`` or non-finite).
    objects : numpy.ndarray
        SEP's structured object array (:func:`find_sources` at 5σ; 0-based ``x``, ``y``).
    measured : dict
        What steps measured at these detections, by key (e.g. bright-star centroids per S/N cut),
        so that an image differenced again is not measured again.
    """

    frame: np.ndarray
    rms: np.ndarray | float
    bad: np.ndarray
    objects: np.ndarray
    measured: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def extract(cls, image: np.ndarray, background, rms, mask: np.ndarray | None) -> Sources:
        """Detect the sources of ``image − background`` at 5σ (the one extraction of that image).

        Parameters
        ----------
        image : numpy.ndarray
            Image, e- (or its own units), indexed ``[y, x]``.
        background, rms : numpy.ndarray or float
            Background and per-pixel noise, image units (maps or scalars).
        mask : numpy.ndarray or None
            ``uint16`` mask (``UNUSABLE`` pixels excluded), or None.

        Returns
        -------
        Sources
        """
        frame, nonfinite = frame_for_sep(image, background)
        bad = unusable_pixels(mask, frame.shape) | nonfinite
        noise = noise_for_sep(rms, frame.shape)
        return cls(frame, noise, bad, find_sources(frame, noise, bad, threshold=5.0))

    @classmethod
    def from_catalogue(cls, objects: np.ndarray, image: np.ndarray, background, rms, mask: np.ndarray | None
                       ) -> Sources:
        """Detections made earlier (a stored catalogue, positions on ``image``'s grid) with ``image``'s pixels.

        Parameters
        ----------
        objects : numpy.ndarray
            Structured array with at least :data:`STARS_COLUMNS`.
        image, background, rms, mask
            As for :meth:`extract`.

        Returns
        -------
        Sources
        """
        frame, nonfinite = frame_for_sep(image, background)
        return cls(frame, noise_for_sep(rms, frame.shape), unusable_pixels(mask, frame.shape) | nonfinite, objects)

    def unflagged(self) -> np.ndarray:
        """The detections SEP did not flag (``flag == 0``)."""
        return self.objects[self.objects["flag"] == 0]

    def unflagged_xy(self) -> np.ndarray:
        """``(n, 2)`` float64 positions ``(x, y)``, px, of the unflagged detections."""
        stars = self.unflagged()
        return np.column_stack([stars["x"], stars["y"]]).astype(np.float64).reshape(-1, 2)

    def control_stars(self, n: int = MAX_CONTROL_POINTS) -> np.ndarray:
        """``(m, 2)`` positions of the ``n`` brightest unflagged detections (isophotal flux), brightest first:
        what :func:`star_positions` returns for this image."""
        return star_catalogue(None, None, None, None, n, sources=self)[:, :2]


def star_catalogue(
    image: np.ndarray, background, rms, mask: np.ndarray | None, n: int = MAX_CONTROL_POINTS,
    aperture: float | None = None, sources: Sources | None = None,
) -> np.ndarray:
    """``(x, y, flux)`` rows of the ``n`` brightest unflagged SEP detections at 5σ, brightest first.

    Pixels are 0-based; ``flux`` is SEP's isophotal flux (image units), or with ``aperture`` (px) the
    background-subtracted sum in a circle of that radius, stars whose circle touches an unusable
    pixel or the frame's edge left out.

    Parameters
    ----------
    image : numpy.ndarray
        Frame, e- (or its own units), indexed ``[y, x]``.
    background : numpy.ndarray or float
        Background subtracted before detection, image units (map or scalar).
    rms : numpy.ndarray or float
        Per-pixel noise, image units (map or scalar).
    mask : numpy.ndarray or None
        ``uint16`` mask; ``UNUSABLE`` pixels are excluded. None: no mask.
    n : int, default MAX_CONTROL_POINTS
        Most rows returned.
    aperture : float or None, default None
        Aperture radius, px; None keeps SEP's isophotal fluxes and all unflagged detections.
    sources : Sources or None, default None
        The image's extraction when already made (then ``image``, ``background``, ``rms`` and
        ``mask`` are not read again).

    Returns
    -------
    numpy.ndarray
        ``(m, 3)`` float64 rows ``(x, y, flux)``, ``m ≤ n``, brightest first; ``(0, 3)`` if none.
    """
    sources = sources or Sources.extract(image, background, rms, mask)
    frame, bad, objects = sources.frame, sources.bad, sources.objects
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
    image: np.ndarray, background, rms, mask: np.ndarray | None, n: int = MAX_CONTROL_POINTS,
    sources: Sources | None = None,
) -> np.ndarray:
    """``(x, y)`` of the ``n`` brightest unflagged SEP detections at 5σ (0-based pixels).

    Parameters
    ----------
    image : numpy.ndarray
        Frame, e- (or its own units), indexed ``[y, x]``.
    background, rms : numpy.ndarray or float
        Background and per-pixel noise, image units (maps or scalars).
    mask : numpy.ndarray or None
        ``uint16`` mask (``UNUSABLE`` pixels excluded), or None.
    n : int, default MAX_CONTROL_POINTS
        Most positions returned.
    sources : Sources or None, default None
        The image's detections when already made (the other arguments are then not read).

    Returns
    -------
    numpy.ndarray
        ``(m, 2)`` float64 positions ``(x, y)``, px, brightest (isophotal flux) first.
    """
    return star_catalogue(image, background, rms, mask, n, sources=sources)[:, :2]


#: SEP background mesh (pixels) and median-filter size (meshes).
BACKGROUND_MESH = 64
BACKGROUND_FILTER = 3


def background_maps(science: np.ndarray, unusable: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SEP mesh background and rms (same units as ``science``), masking ``unusable``.

    The mesh is :data:`BACKGROUND_MESH` px, or a quarter of the shorter side (at least 8 px) on
    small frames; the mesh grid is median-filtered over :data:`BACKGROUND_FILTER` meshes.

    Parameters
    ----------
    science : numpy.ndarray
        Frame with sky, e- (or its own units), indexed ``[y, x]``; must be finite where not
        ``unusable``.
    unusable : numpy.ndarray of bool
        Pixels left out of the background statistics (True), on the frame's grid.

    Returns
    -------
    background, rms : numpy.ndarray
        float32 maps of the frame's shape: sky level and its per-pixel noise (standard deviation).
    """
    image = np.ascontiguousarray(science, dtype=np.float32)
    mesh = int(min(BACKGROUND_MESH, max(8, min(image.shape) // 4)))
    background = sep.Background(
        image,
        mask=np.ascontiguousarray(unusable),
        bw=mesh,
        bh=mesh,
        fw=BACKGROUND_FILTER,
        fh=BACKGROUND_FILTER,
    )
    return background.back().astype(np.float32), background.rms().astype(np.float32)
