"""Profile fits of single stars: a pixel-integrated Moffat (or its Gaussian limit) fitted to a star's
stamp, for the FWHM, β and noise-equivalent area a frame's quality is judged by
(:mod:`~astrid_assets.science.calibration.quality`).

The fits are least squares by a bounded Levenberg–Marquardt (:func:`levenberg_marquardt`) with the
analytic Jacobian of the pixel-integrated profile
(:func:`~astrid_assets.science.psf.profiles.profile_images_jacobians`); many stars of one stamp size
are fitted together (:func:`fit_moffats`), each as it would be alone.

Stamps in e- (background-subtracted), variances e-², px; the profile family is
:mod:`~astrid_assets.science.psf.profiles`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from astrid_assets.science.psf.profiles import (
    GAUSSIAN_FWHM_PER_SIGMA,
    gaussian_noise_area,
    moffat_alpha,
    moffat_fwhm,
    moffat_noise_area,
    profile_images_jacobians,
)

__all__ = ["ProfileFit", "MoffatFit", "fit_moffat", "fit_moffats", "levenberg_marquardt"]

_BETA_BOUNDS = (1.1, 20.0)


@dataclass(frozen=True)
class ProfileFit:
    """A pixel-integrated circular profile fitted to one star (pixels, e-).

    ``beta`` is the Moffat index, or ``inf`` for the Gaussian limit; ``width`` is Moffat α or
    Gaussian σ (pixels).

    Attributes
    ----------
    x, y : float
        Fitted centre, px, in the pixel coordinates of the fitted stamp (0-based, pixel
        centres at integers), not of the frame.
    flux : float
        Total flux of the profile, e- (the integral of the continuous profile).
    width : float
        Moffat α or Gaussian σ of the continuous profile (before pixelisation), px.
    beta : float
        Moffat index β, or ``inf`` for the Gaussian.
    sky : float
        Fitted residual constant, e- per pixel.
    success : bool
        Whether the optimiser converged (and, for a Moffat, β is not at its lower bound).
    """

    x: float
    y: float
    flux: float
    width: float
    beta: float
    sky: float
    success: bool

    @property
    def model(self) -> str:
        """``"gaussian"`` when ``beta`` is infinite, else ``"moffat"``."""
        return "gaussian" if np.isinf(self.beta) else "moffat"

    @property
    def fwhm(self) -> float:
        """FWHM of the fitted continuous profile (before pixelisation), px."""
        if np.isinf(self.beta):
            return float(GAUSSIAN_FWHM_PER_SIGMA * self.width)
        return float(moffat_fwhm(self.width, self.beta))

    @property
    def noise_area(self) -> float:
        """Noise-equivalent area ``1/∫I²`` of the fitted profile, pixels (px²)."""
        if np.isinf(self.beta):
            return gaussian_noise_area(self.width)
        return moffat_noise_area(self.width, self.beta)


#: Kept for callers of the first version: every fit is a :class:`ProfileFit`.
MoffatFit = ProfileFit


#: Convergence of :func:`levenberg_marquardt`: the cost the Gauss–Newton step would still remove, as a
#: fraction of the cost (χ²).
CONVERGENCE = 1e-12
#: Most iterations (one evaluation each) of :func:`levenberg_marquardt`.
MAX_ITERATIONS = 200


def levenberg_marquardt(
    evaluate: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    start: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    max_iterations: int = MAX_ITERATIONS,
    convergence: float = CONVERGENCE,
) -> tuple[np.ndarray, np.ndarray]:
    """Bounded Levenberg–Marquardt least squares for ``K`` independent problems at once.

    Each iteration solves ``(JᵀJ + λ diag(JᵀJ)) δ = −Jᵀr`` (Marquardt's scaling: the steps do not
    depend on the parameters' units) for the problems still running, clips ``p + δ`` into the bounds
    and keeps it when the cost ``Σ r²`` drops (``λ`` divided by 10) or rejects it (``λ`` times 10).
    A parameter on a bound whose gradient points out of the box is held there for the step. A
    problem has converged when its undamped Gauss–Newton step would remove less than ``convergence``
    of its cost (``gᵀ (JᵀJ)⁻¹ g ≤ convergence · Σ r²`` over the free parameters), or when no damping
    lowers the cost any more (``λ > 1e15``: a minimum to rounding).

    Parameters
    ----------
    evaluate : callable
        ``evaluate(params, rows) -> (residuals, jacobian)``: for the ``(k, n)`` parameters of problems
        ``rows`` (``(k,)`` indices into the ``K``), the ``(k, m)`` residuals and their ``(k, m, n)``
        Jacobian ``∂r/∂p``.
    start : numpy.ndarray
        ``(K, n)`` starting parameters (clipped into the bounds).
    lower, upper : numpy.ndarray
        Bounds, broadcastable to ``(K, n)`` (``±inf`` for none).
    max_iterations : int, default 200
        Iterations (evaluations) after which a problem stops unconverged.
    convergence : float, default 1e-12
        Tolerance on the relative cost a Gauss–Newton step would still remove.

    Returns
    -------
    params : numpy.ndarray
        ``(K, n)`` best parameters found.
    converged : numpy.ndarray
        ``(K,)`` bool, whether each problem converged (False also when its cost was not finite).
    """
    params = np.array(start, dtype=np.float64)
    lower = np.broadcast_to(np.asarray(lower, dtype=np.float64), params.shape)
    upper = np.broadcast_to(np.asarray(upper, dtype=np.float64), params.shape)
    params = np.clip(params, lower, upper)
    n_problems, n_params = params.shape
    residuals, jacobian = evaluate(params, np.arange(n_problems))
    cost = np.einsum("km,km->k", residuals, residuals)
    damping = np.full(n_problems, 1e-3)
    converged = np.zeros(n_problems, dtype=bool)
    running = np.isfinite(cost)
    identity = np.eye(n_params)
    for _ in range(max_iterations):
        rows = np.flatnonzero(running)
        if rows.size == 0:
            break
        p, r, jac = params[rows], residuals[rows], jacobian[rows]
        normal = np.einsum("kmi,kmj->kij", jac, jac)
        gradient = np.einsum("kmi,km->ki", jac, r)
        free = ~(((p <= lower[rows]) & (gradient > 0)) | ((p >= upper[rows]) & (gradient < 0)))
        both = free[:, :, None] & free[:, None, :]
        diagonal = np.diagonal(normal, axis1=1, axis2=2)
        scale = np.maximum(diagonal, 1e-12 * np.max(diagonal, axis=1, keepdims=True) + 1e-300)
        rhs = np.where(free, -gradient, 0.0)
        held = identity * ~free[:, :, None]
        newton = _solve(np.where(both, normal + 1e-12 * scale[:, :, None] * identity, 0.0) + held, rhs)
        done = np.einsum("ki,ki->k", rhs, newton) <= convergence * cost[rows]
        converged[rows[done]] = True
        running[rows[done]] = False
        stepping, rows = ~done, rows[~done]
        if rows.size == 0:
            break
        damped = normal[stepping] + damping[rows, None, None] * scale[stepping, :, None] * identity
        step = _solve(np.where(both[stepping], damped, 0.0) + held[stepping], rhs[stepping])
        trial = np.clip(p[stepping] + step, lower[rows], upper[rows])
        trial_residuals, trial_jacobian = evaluate(trial, rows)
        trial_cost = np.einsum("km,km->k", trial_residuals, trial_residuals)
        better = np.isfinite(trial_cost) & (trial_cost < cost[rows]) & np.isfinite(trial_jacobian).all(axis=(1, 2))
        kept = rows[better]
        params[kept], residuals[kept], jacobian[kept] = trial[better], trial_residuals[better], trial_jacobian[better]
        cost[kept] = trial_cost[better]
        damping[rows] = np.where(better, np.maximum(damping[rows] / 10.0, 1e-15), damping[rows] * 10.0)
        stuck = rows[damping[rows] > 1e15]  # no step lowers the cost: a minimum, to rounding
        converged[stuck] = True
        running[stuck] = False
    return params, converged


def _solve(systems: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """``(k, n)`` solutions of ``(k, n, n)`` linear systems (least squares for a singular one)."""
    try:
        return np.linalg.solve(systems, rhs[:, :, None])[:, :, 0]
    except np.linalg.LinAlgError:
        return np.stack([np.linalg.lstsq(a, b, rcond=None)[0] for a, b in zip(systems, rhs, strict=True)])


def _fit_profiles(stamps, weights, start, lower, upper, oversample, gaussian: bool):
    """Weighted least squares of pixel-integrated profiles plus a constant to ``(K, ny, nx)`` stamps.

    Parameters per stamp are ``(flux, x, y, width, [beta,] sky)``; the residuals are
    ``(stamp − model) · weight`` and their Jacobian ``−weight · ∂model/∂p``
    (:func:`~astrid_assets.science.psf.profiles.profile_images_jacobians`). Returns
    :func:`levenberg_marquardt`'s ``(params, converged)``.
    """
    shape = stamps.shape[1:]

    def evaluate(params: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        flux, x, y, width = params[:, 0], params[:, 1], params[:, 2], params[:, 3]
        model, derivatives = profile_images_jacobians(shape, x, y, flux, width, None if gaussian else params[:, 4],
                                                      oversample)
        weight = weights[rows]
        residuals = (stamps[rows] - model - params[:, -1, None, None]) * weight
        sky = np.broadcast_to(weight[:, None], residuals[:, None].shape)  # ∂model/∂sky = 1
        jacobian = np.concatenate([derivatives * weight[:, None], sky], axis=1)
        return residuals.reshape(len(rows), -1), -jacobian.reshape(len(rows), jacobian.shape[1], -1).transpose(0, 2, 1)

    return levenberg_marquardt(evaluate, start, lower, upper)


def fit_moffat(stamp: np.ndarray, variance: np.ndarray, first_guess_fwhm: float, oversample: int = 5) -> ProfileFit:
    """Fit the Moffat family, Gaussian limit included, to a background-subtracted star stamp.

    Least squares with weights ``1/variance`` (pixels with infinite variance are ignored) of a
    pixel-integrated circular Moffat plus a constant, β free in :data:`_BETA_BOUNDS`
    (:func:`levenberg_marquardt` with the analytic Jacobian). When β runs
    to its upper bound the star is Gaussian-like (seeing-dominated cores, defocus, or a
    simulator's Gaussian): a pixel-integrated Gaussian (β = ∞) is fitted instead and returned
    with ``beta = inf``. A fit whose β sits at the *lower* bound (wings broader than β = 1.1)
    or whose optimiser did not converge is marked unsuccessful.

    Parameters
    ----------
    stamp : numpy.ndarray
        Star stamp, e-, sky subtracted (a residual constant is fitted), indexed ``[y, x]``;
        the fit starts at its centre ``((nx − 1)/2, (ny − 1)/2)``.
    variance : numpy.ndarray
        Per-pixel variance, e-², shape of ``stamp``; ``inf`` ignores a pixel.
    first_guess_fwhm : float
        Starting FWHM, px (at least 0.8 px is used).
    oversample : int, default 5
        Sub-pixel points per axis in the pixel integration.

    Returns
    -------
    ProfileFit
        The fit, centre in the stamp's pixel coordinates.
    """
    return fit_moffats(np.asarray(stamp)[None], np.asarray(variance)[None], first_guess_fwhm, oversample)[0]


def fit_moffats(
    stamps: np.ndarray, variances: np.ndarray, first_guess_fwhm: float, oversample: int = 5
) -> list[ProfileFit]:
    """:func:`fit_moffat` for ``K`` stamps of one shape, fitted together (one vectorised optimisation).

    Parameters
    ----------
    stamps : numpy.ndarray
        ``(K, ny, nx)`` star stamps, e-, sky subtracted, each centred near ``((nx − 1)/2, (ny − 1)/2)``.
    variances : numpy.ndarray
        ``(K, ny, nx)`` per-pixel variances, e-² (``inf`` ignores a pixel).
    first_guess_fwhm : float
        Starting FWHM of every fit, px (at least 0.8 px is used).
    oversample : int, default 5
        Sub-pixel points per axis in the pixel integration.

    Returns
    -------
    list of ProfileFit
        One fit per stamp, in order (:func:`fit_moffat`).
    """
    stamps = np.asarray(stamps, dtype=np.float64)
    n_stamps, ny, nx = stamps.shape
    weights = 1.0 / np.sqrt(np.clip(np.asarray(variances, dtype=np.float64), 1e-12, None))  # inf: pixel ignored
    fwhm0 = max(first_guess_fwhm, 0.8)
    centre = [(nx - 1) / 2, (ny - 1) / 2]
    totals = stamps.sum(axis=(1, 2))
    lower = np.array([0.0, 0.0, 0.0, 0.15, _BETA_BOUNDS[0], -np.inf])
    upper = np.array([np.inf, nx - 1.0, ny - 1.0, 4.0 * max(nx, ny), _BETA_BOUNDS[1], np.inf])
    start = np.array([[total, *centre, moffat_alpha(fwhm0, 3.0), 3.0, 0.0] for total in totals]).reshape(-1, 6)
    start = np.clip(start, lower + 1e-9, upper - 1e-9)
    params, converged = _fit_profiles(stamps, weights, start, lower, upper, oversample, gaussian=False)
    fits = [ProfileFit(*(float(v) for v in (x, y, flux, alpha, beta, sky)), bool(ok and beta > _BETA_BOUNDS[0] * 1.001))
            for (flux, x, y, alpha, beta, sky), ok in zip(params, converged, strict=True)]
    gaussian = np.flatnonzero(params[:, 4] >= _BETA_BOUNDS[1] * 0.999)
    if gaussian.size:
        g_lower = np.array([0.0, 0.0, 0.0, 0.1, -np.inf])
        g_upper = np.array([np.inf, nx - 1.0, ny - 1.0, 2.0 * max(nx, ny), np.inf])
        g_start = np.array([[total, *centre, fwhm0 / GAUSSIAN_FWHM_PER_SIGMA, 0.0]
                            for total in totals[gaussian]]).reshape(-1, 5)
        g_start = np.clip(g_start, g_lower + 1e-9, g_upper - 1e-9)
        g_params, g_converged = _fit_profiles(stamps[gaussian], weights[gaussian], g_start, g_lower, g_upper,
                                              oversample, gaussian=True)
        for k, (flux, x, y, sigma, sky), ok in zip(gaussian, g_params, g_converged, strict=True):
            fits[k] = ProfileFit(float(x), float(y), float(flux), float(sigma), float("inf"), float(sky), bool(ok))
    return fits
