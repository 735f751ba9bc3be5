"""Cosmic rays without star cores: L.A.Cosmic tuned to the measured PSF, and a PSF test.

L.A.Cosmic (van Dokkum 2001, PASP 113, 1420; through ``astroscrappy``, McCully et al., Zenodo
1482019) finds hits by the Laplacian of the image. An undersampled star's core looks like a hit to
it, so its object-contrast limit is raised for small FWHMs (§3 of the paper; :func:`lacosmic_objlim`
from :func:`quick_fwhm`), and candidates whose 3×3 pixels are a scaled, pixel-integrated PSF are
returned to the image (:func:`spare_psf_like`). Images in e- (sky included), ``[y, x]``, 0-based;
variances e-²; FWHM in pixels.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import sep
from scipy import ndimage
from scipy.ndimage import median_filter
from scipy.special import erf

from astrid_assets.science.calibration.lacosmic import lacosmic

__all__ = [
    "COSMIC_PAD",
    "COSMIC_SIGCLIP",
    "COSMIC_SIGFRAC",
    "COSMIC_OBJLIM",
    "COSMIC_NITER",
    "UNDERSAMPLED_FWHM",
    "OBJLIM_NODES",
    "PSF_TEST_CHI2",
    "PSF_TEST_TOLERANCE",
    "PSF_TEST_SCALES",
    "PSF_OFFSET_STEP",
    "FWHM_DETECT_SIGMA",
    "FWHM_MAX_STARS",
    "FWHM_MIN_STARS",
    "FWHM_GRID",
    "quick_fwhm",
    "lacosmic_objlim",
    "spare_psf_like",
    "cosmic_ray_mask",
]

#: Pixels mirrored around the frame before L.A.Cosmic so that its filters reach the edges.
COSMIC_PAD = 8
#: L.A.Cosmic parameters (van Dokkum 2001): Laplacian-to-noise limit, its fraction for the
#: neighbours of a hit, and the object-contrast limit for well-sampled PSFs.
COSMIC_SIGCLIP = 4.5
COSMIC_SIGFRAC = 0.3


COSMIC_OBJLIM = 5.0
COSMIC_NITER = 4


#: Below this FWHM (pixels) the PSF is undersampled: star cores look like hits to the
#: Laplacian, and the object-contrast limit rises (:func:`lacosmic_objlim`).
UNDERSAMPLED_FWHM = 2.5
#: ``(FWHM px, objlim)`` nodes of :func:`lacosmic_objlim`, interpolated linearly.
OBJLIM_NODES = ((1.0, 20.0), (1.5, 15.0), (UNDERSAMPLED_FWHM, COSMIC_OBJLIM))
#: PSF test of cosmic-ray candidates (:func:`spare_psf_like`): a candidate whose 3×3 pixels around
#: its peak fit a scaled, pixel-integrated PSF (plus a linear gradient from neighbours) with χ²
#: at most this (≈ the 99.5 % point of χ² for the ≈ 4 degrees of freedom left) is a star.
PSF_TEST_CHI2 = 15.0
#: Fractional error allowed to the PSF model in that test (shape of the true PSF vs the model).
PSF_TEST_TOLERANCE = 0.15
#: FWHMs tried in that test, relative to the measured one (the PSF varies over the field).
PSF_TEST_SCALES = (0.8, 0.9, 1.0, 1.12, 1.25)
#: Sub-pixel centre offsets (pixels) tried in the PSF fits.
PSF_OFFSET_STEP = 0.125
#: Quick FWHM: detections at this S/N, at most this many, fitted over this grid (pixels).
FWHM_DETECT_SIGMA = 10.0
FWHM_MAX_STARS = 80


FWHM_MIN_STARS = 3
FWHM_GRID = tuple(np.round(np.geomspace(0.6, 8.0, 45), 4))


_SIGMA_PER_FWHM = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
_SEP_REJECT = sep.OBJ_MERGED | sep.OBJ_TRUNC


def _pixel_gaussian(offsets: np.ndarray, fwhms: np.ndarray, half: int) -> np.ndarray:
    """``[fwhm, offset, pixel]`` fractions of a 1-D Gaussian of unit flux integrated over the
    pixels ``-half..half`` (centre at ``offset``)."""
    sigma = np.asarray(fwhms, float)[:, None, None] * _SIGMA_PER_FWHM
    edges = np.arange(-half, half + 2) - 0.5
    scaled = (edges[None, None, :] - np.asarray(offsets, float)[None, :, None]) / (math.sqrt(2.0) * sigma)
    return np.diff(0.5 * erf(scaled), axis=2)


@lru_cache(maxsize=32)
def _template_bank(fwhms: tuple[float, ...], half: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pixel-integrated circular Gaussians on a ``(2 half + 1)²`` stamp, for every FWHM and
    sub-pixel centre offset: ``(templates [K, N], fwhm [K], dy [K], dx [K])``."""
    offsets = np.arange(-0.5, 0.5 + 1e-9, PSF_OFFSET_STEP)
    profile = _pixel_gaussian(offsets, np.asarray(fwhms), half)
    bank = profile[:, :, None, :, None] * profile[:, None, :, None, :]
    n_f, n_o = len(fwhms), len(offsets)
    templates = bank.reshape(n_f * n_o * n_o, (2 * half + 1) ** 2)
    fwhm = np.repeat(np.asarray(fwhms, float), n_o * n_o)
    dy = np.tile(np.repeat(offsets, n_o), n_f)
    dx = np.tile(offsets, n_f * n_o)
    return templates, fwhm, dy, dx


def _stamps(image: np.ndarray, ys: np.ndarray, xs: np.ndarray, half: int) -> np.ndarray:
    dy, dx = np.mgrid[-half : half + 1, -half : half + 1]
    return image[ys[:, None] + dy.ravel()[None, :], xs[:, None] + dx.ravel()[None, :]]


def quick_fwhm(signal: np.ndarray, rms: np.ndarray, unusable: np.ndarray) -> float | None:
    """A quick FWHM (pixels, before pixelisation) of the frame's point sources.

    The :data:`FWHM_MAX_STARS` brightest SEP detections at :data:`FWHM_DETECT_SIGMA` (not
    blended or truncated, no unusable pixel in their 7×7 stamp) are each fitted by a
    pixel-integrated circular Gaussian (exact, through ``erf``) over :data:`FWHM_GRID` and
    sub-pixel centres, amplitude free, on the background-subtracted ``signal``; the median of
    the best FWHMs is returned, leaving out fits at the grid's lower end (cosmic rays).  It
    measures the core, which is what separates stars from cosmic rays.  None with fewer than
    :data:`FWHM_MIN_STARS` such stars.

    Parameters
    ----------
    signal : numpy.ndarray
        Background-subtracted frame, e-, indexed ``[y, x]``.
    rms : numpy.ndarray
        Per-pixel background noise map, e-, shape of ``signal``.
    unusable : numpy.ndarray of bool
        Pixels excluded from detection and from the stamps (True).

    Returns
    -------
    float or None
        Median FWHM of the continuous Gaussian (before pixelisation), px; None with too few
        stars or when SEP refuses the frame.
    """
    image = np.ascontiguousarray(signal, dtype=np.float32)
    try:
        objects = sep.extract(image, FWHM_DETECT_SIGMA, err=np.ascontiguousarray(rms, dtype=np.float32),
                              mask=np.ascontiguousarray(unusable), minarea=5)
    except Exception:  # SEP refuses pathological frames (too many pixels above threshold)
        return None
    half = 3
    ny, nx = image.shape
    xs, ys = objects["xpeak"].astype(int), objects["ypeak"].astype(int)
    keep = ((objects["flag"] & _SEP_REJECT) == 0) & (xs >= half) & (xs < nx - half) & (ys >= half) & (ys < ny - half)
    order = np.flatnonzero(keep)[np.argsort(-objects["peak"][keep])]
    if len(order) == 0:
        return None
    xs, ys = xs[order], ys[order]
    clean = ~_stamps(unusable, ys, xs, half).any(axis=1)
    xs, ys = xs[clean][:FWHM_MAX_STARS], ys[clean][:FWHM_MAX_STARS]
    if len(xs) < FWHM_MIN_STARS:
        return None
    stamps = _stamps(image, ys, xs, half).astype(np.float64)
    templates, fwhm, _, _ = _template_bank(FWHM_GRID, half)
    projection = stamps @ templates.T  # [stars, templates]
    chi2 = (stamps**2).sum(axis=1)[:, None] - projection**2 / (templates**2).sum(axis=1)[None, :]
    chi2 = np.where(projection > 0, chi2, np.inf)
    best = fwhm[np.argmin(chi2, axis=1)]
    stars = best > FWHM_GRID[1]
    if stars.sum() < FWHM_MIN_STARS:
        return None
    return float(np.median(best[stars]))


def lacosmic_objlim(fwhm: float | None) -> float:
    """L.A.Cosmic's object-contrast limit for a PSF of ``fwhm`` pixels.

    The fine-structure contrast ``L⁺/F`` of a star grows as its PSF becomes undersampled (van
    Dokkum 2001, §3 and Fig. 4: the default limit suits FWHM ≳ 2-2.5 pixels), so below
    :data:`UNDERSAMPLED_FWHM` the limit rises along :data:`OBJLIM_NODES` (20 at 1 pixel); the
    default :data:`COSMIC_OBJLIM` otherwise, and when the FWHM is unknown.

    Parameters
    ----------
    fwhm : float or None
        PSF FWHM, px (:func:`quick_fwhm`, before pixelisation); None or NaN when unknown.

    Returns
    -------
    float
        Object-contrast limit ``objlim`` (20 at and below 1 px, linear between the nodes).
    """
    if fwhm is None or not np.isfinite(fwhm) or fwhm >= UNDERSAMPLED_FWHM:
        return COSMIC_OBJLIM
    nodes = np.array(OBJLIM_NODES)
    return float(np.interp(fwhm, nodes[:, 0], nodes[:, 1]))


def _fit_psf_3x3(stamps: np.ndarray, variance: np.ndarray, templates: np.ndarray) -> tuple[np.ndarray, ...]:
    """Weighted least squares of ``a · T_k + g_x · dx + g_y · dy`` to 3×3 stamps for every
    template ``k`` (the gradient takes light of neighbours; no constant: the background is
    known).  Returns the best χ², the index of the best template and its amplitude per stamp;
    fits with ``a <= 0`` are not taken.

    The gradient is eliminated in closed form (the Schur complement of its 2×2 block, which is the
    same for every template of a stamp): with ``G`` that block, ``g_k`` the template's column against
    it and ``r`` the gradient's right-hand side, ``a = (t·d − g_kᵀG⁻¹r) / (t·t − g_kᵀG⁻¹g_k)`` and
    ``χ² = d·d − rᵀG⁻¹r − a (t·d − g_kᵀG⁻¹r)`` (all products weighted), the least-squares minimum."""
    dy, dx = (grid.ravel().astype(float) for grid in np.mgrid[-1:2, -1:2])
    weight = 1.0 / variance
    wd = weight * stamps
    s_xx, s_yy, s_xy = weight @ (dx * dx), weight @ (dy * dy), weight @ (dx * dy)
    s_xd, s_yd = wd @ dx, wd @ dy
    det = s_xx * s_yy - s_xy**2
    # G⁻¹ = [[s_yy, -s_xy], [-s_xy, s_xx]] / det, per stamp
    i_xx, i_yy, i_xy = (s_yy / det)[:, None], (s_xx / det)[:, None], (-s_xy / det)[:, None]
    s_tt, s_td = weight @ (templates.T**2), wd @ templates.T
    s_tx, s_ty = weight @ (templates.T * dx[:, None]), weight @ (templates.T * dy[:, None])
    r_x, r_y = s_xd[:, None], s_yd[:, None]
    g_r = s_tx * (i_xx * r_x + i_xy * r_y) + s_ty * (i_xy * r_x + i_yy * r_y)
    g_g = s_tx * (i_xx * s_tx + i_xy * s_ty) + s_ty * (i_xy * s_tx + i_yy * s_ty)
    numerator = s_td - g_r
    amplitude = numerator / (s_tt - g_g)
    base = (wd * stamps).sum(axis=1) - (r_x * (i_xx * r_x + i_xy * r_y) + r_y * (i_xy * r_x + i_yy * r_y))[:, 0]
    chi2 = np.where(amplitude > 0, base[:, None] - amplitude * numerator, np.inf)
    best = np.argmin(chi2, axis=1)
    rows = np.arange(len(stamps))
    return chi2[rows, best], best, amplitude[rows, best]


def _group_peaks(values: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of each labelled group's largest value, groups ``1 … n`` in order (the first such
    pixel in C order on ties, which ``scipy.ndimage.maximum_position`` leaves to its sort), looking only at
    labelled pixels."""
    pixels = np.flatnonzero(labels)
    group, value = labels.ravel()[pixels], values.ravel()[pixels]
    order = np.lexsort((pixels, -value, group))
    first = order[np.r_[0, np.flatnonzero(np.diff(group[order])) + 1]]
    ys, xs = np.divmod(pixels[first], values.shape[1])
    return ys.astype(int), xs.astype(int)


def _spare_once(crmask: np.ndarray, signal: np.ndarray, variance: np.ndarray, fwhm: float) -> tuple[np.ndarray, int]:
    labels, n = ndimage.label(crmask, structure=np.ones((3, 3), bool))
    if n == 0:
        return crmask, 0
    ys, xs = _group_peaks(signal, labels)
    ny, nx = signal.shape
    for _ in range(2):  # a group beside a star's peak (an undersampled core's wing) is tested at that peak
        inside = np.flatnonzero((xs >= 1) & (xs < nx - 1) & (ys >= 1) & (ys < ny - 1))
        step = np.nan_to_num(_stamps(signal, ys[inside], xs[inside], 1), nan=-np.inf).argmax(axis=1)
        ys[inside] += step // 3 - 1
        xs[inside] += step % 3 - 1
    inside = np.flatnonzero((xs >= 1) & (xs < nx - 1) & (ys >= 1) & (ys < ny - 1))
    if len(inside) == 0:
        return crmask, 0
    stamps = _stamps(signal, ys[inside], xs[inside], 1).astype(np.float64)
    noise = _stamps(variance, ys[inside], xs[inside], 1).astype(np.float64)
    finite = np.isfinite(noise).all(axis=1) & (noise > 0).all(axis=1) & np.isfinite(stamps).all(axis=1)
    inside, stamps, noise = inside[finite], stamps[finite], noise[finite]
    if len(inside) == 0:
        return crmask, 0
    noise = noise + (PSF_TEST_TOLERANCE * np.clip(stamps, 0.0, None)) ** 2
    scales = tuple(round(fwhm * scale, 4) for scale in PSF_TEST_SCALES)
    templates, t_fwhm, t_dy, t_dx = _template_bank(scales, 1)
    chi2, best, amplitude = _fit_psf_3x3(stamps, noise, templates)
    star = (chi2 <= PSF_TEST_CHI2) & (stamps[:, 4] >= stamps.max(axis=1))
    if not star.any():
        return crmask, 0
    spared = crmask.copy()
    slices = ndimage.find_objects(labels)
    for j in np.flatnonzero(star):
        k = inside[j]
        cy, cx = ys[k] + t_dy[best[j]], xs[k] + t_dx[best[j]]
        box = slices[k]
        y0, y1 = max(box[0].start - 1, 0), min(box[0].stop + 1, ny)
        x0, x1 = max(box[1].start - 1, 0), min(box[1].stop + 1, nx)
        sigma = t_fwhm[best[j]] * _SIGMA_PER_FWHM
        py = np.diff(0.5 * erf((np.arange(y0, y1 + 1) - 0.5 - cy) / (math.sqrt(2.0) * sigma)))
        px = np.diff(0.5 * erf((np.arange(x0, x1 + 1) - 0.5 - cx) / (math.sqrt(2.0) * sigma)))
        model = amplitude[j] * np.outer(py, px)
        allowed = variance[y0:y1, x0:x1] + (PSF_TEST_TOLERANCE * model) ** 2
        excess = (signal[y0:y1, x0:x1] - model) > COSMIC_SIGCLIP * np.sqrt(allowed)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        excess &= np.hypot(yy - cy, xx - cx) > max(1.5, t_fwhm[best[j]])
        group = labels[y0:y1, x0:x1] == k + 1
        spared[y0:y1, x0:x1][group & ~excess] = False
    return spared, int(star.sum())


def spare_psf_like(
    crmask: np.ndarray, signal: np.ndarray, variance: np.ndarray, fwhm: float, iterations: int = 3
) -> tuple[np.ndarray, int]:
    """Return to the image the cosmic-ray candidates whose pixels are a scaled PSF (star cores).

    Each connected candidate group is tested at the local maximum of ``signal`` reached from its
    brightest pixel (up to two steps uphill: L.A.Cosmic may flag a pixel beside an undersampled
    star's peak and not the peak itself): if that pixel is the maximum of its 3×3 neighbourhood
    and those 9 pixels of ``signal`` (background-subtracted)
    fit ``a · PSF + linear gradient`` — a pixel-integrated circular Gaussian of FWHM
    :data:`PSF_TEST_SCALES` × ``fwhm`` at any sub-pixel centre — with χ² ≤
    :data:`PSF_TEST_CHI2` (noise ``variance`` plus :data:`PSF_TEST_TOLERANCE` × the signal for
    the model's shape error), the group is a star: its pixels within ``max(1.5, FWHM)`` of the
    fitted centre are unflagged, and so are its farther pixels unless they exceed the PSF model
    by :data:`COSMIC_SIGCLIP` σ (a hit on the star's wing).  A cosmic ray fails the test because
    its neighbours do not carry the light a PSF of that width puts there (for a single-pixel hit
    of ``A`` the misfit grows as ``A²``, so hits of ≳ 10 σ are kept).  Repeated up to
    ``iterations`` times, as sparing one star splits groups that held two.

    Returns ``(mask, number of groups spared)``.

    Parameters
    ----------
    crmask : numpy.ndarray of bool
        Cosmic-ray candidates (True), indexed ``[y, x]``; groups are 8-connected.
    signal : numpy.ndarray
        Background-subtracted frame, e-.
    variance : numpy.ndarray
        Per-pixel variance, e-² (stamps with a non-finite or non-positive value are not tested).
    fwhm : float
        PSF FWHM, px, of the continuous profile (before pixelisation; :func:`quick_fwhm`).
    iterations : int, default 3
        Most passes.

    Returns
    -------
    mask : numpy.ndarray of bool
        ``crmask`` with the star-like pixels unflagged (a copy when anything was spared).
    n_spared : int
        Number of groups spared over all passes.
    """
    spared, total = crmask, 0
    for _ in range(iterations):
        updated, count = _spare_once(spared, signal, variance, fwhm)
        total += count
        if count == 0:
            break
        spared = updated
    return spared, total


def _fill_from_rows(image: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """``image`` with its ``bad`` pixels set to the median of the 5 pixels centred on them in their row (edges
    repeated): ``median_filter(image, size=(1, 5), mode="nearest")`` there, computed at those pixels only."""
    filled = np.array(image, copy=True)
    ys, xs = np.nonzero(bad)
    if len(ys):
        nx = image.shape[1]
        row = np.stack([image[ys, np.clip(xs + dx, 0, nx - 1)] for dx in range(-2, 3)], axis=1)
        filled[ys, xs] = np.median(row, axis=1)
    return filled


def cosmic_ray_mask(
    science: np.ndarray,
    bad: np.ndarray,
    saturated: np.ndarray,
    read_noise: float,
    satlevel: float,
    variance: np.ndarray | None = None,
    fwhm: float | None = None,
    background: np.ndarray | None = None,
    details: dict | None = None,
) -> np.ndarray:
    """L.A.Cosmic (van Dokkum 2001) with a noise model and object limit for the data at hand.

    ``science`` is in electrons (gain 1) with or without its sky.  ``bad`` pixels are first
    filled with the median of their row neighbours (so that a bad column does not hide cosmic
    rays beside it) and ``saturated`` pixels are passed to astroscrappy as ignored; the frame is
    mirrored by :data:`COSMIC_PAD` pixels at its borders so that hits near the edges are found.
    Neither bad nor saturated pixels are returned as cosmic rays.

    Noise model: ``variance`` (e-², e.g. the measured sky variance plus source Poisson noise)
    when given — required for sky-subtracted data, whose values are not photon counts — else
    Poisson in electrons plus ``read_noise``.  Parameters: ``sigclip`` :data:`COSMIC_SIGCLIP`,
    ``sigfrac`` :data:`COSMIC_SIGFRAC`, ``objlim`` :func:`lacosmic_objlim` of ``fwhm`` (pixels;
    5 for a well-sampled or unknown PSF, up to 20 for an undersampled one), 4 iterations.  With
    a ``fwhm``, candidates consistent with a scaled PSF are returned to the image
    (:func:`spare_psf_like`, on ``science - background`` with ``variance``, or with the Poisson
    model's variance where none is given).  ``details``, if given, receives ``objlim`` and
    ``spared`` (groups returned).

    Parameters
    ----------
    science : numpy.ndarray
        Frame, e- (gain 1), with or without sky, indexed ``[y, x]``.
    bad : numpy.ndarray of bool
        Bad pixels (filled from row neighbours, never returned as hits).
    saturated : numpy.ndarray of bool
        Saturated pixels (ignored by L.A.Cosmic, never returned as hits).
    read_noise : float
        Read noise, e- (used by the Poisson noise model, i.e. when ``variance`` is None).
    satlevel : float
        Saturation level, e- (astroscrappy's ``satlevel``).
    variance : numpy.ndarray or None, default None
        Per-pixel variance, e-²; None: Poisson in e- plus ``read_noise²``.
    fwhm : float or None, default None
        PSF FWHM, px (before pixelisation); sets ``objlim`` and enables the PSF test. None:
        default ``objlim``, no PSF test.
    background : numpy.ndarray or None, default None
        Sky, e-, subtracted for the PSF test; None: a 31 × 31 px running median of the frame.
    details : dict or None, default None
        Receives ``objlim`` and ``spared`` when given (updated in place).

    Returns
    -------
    numpy.ndarray of bool
        Cosmic-ray pixels, shape of ``science``.
    """
    filled = _fill_from_rows(science, bad)
    pad = COSMIC_PAD
    objlim = lacosmic_objlim(fwhm)

    def mirrored(array: np.ndarray, dtype: type) -> np.ndarray:
        return np.ascontiguousarray(np.pad(array, pad, mode="reflect"), dtype=dtype)

    crmask = lacosmic(
        mirrored(filled, np.float32),
        mirrored(saturated, bool),
        None if variance is None else mirrored(variance, np.float32),
        sigclip=COSMIC_SIGCLIP,
        sigfrac=COSMIC_SIGFRAC,
        objlim=objlim,
        readnoise=float(read_noise),
        satlevel=float(satlevel),
        niter=COSMIC_NITER,
    )
    cosmic = np.asarray(crmask, dtype=bool)[pad:-pad, pad:-pad] & ~(bad | saturated)
    spared = 0
    if fwhm is not None and np.isfinite(fwhm) and cosmic.any():
        sky = background if background is not None else median_filter(filled, size=31, mode="nearest")
        signal = np.asarray(filled, np.float64) - sky
        noise = variance if variance is not None else np.clip(filled, 0.0, None) + float(read_noise) ** 2
        cosmic, spared = spare_psf_like(cosmic, signal, np.asarray(noise, np.float64), float(fwhm))
    if details is not None:
        details.update(objlim=objlim, spared=spared)
    return cosmic
