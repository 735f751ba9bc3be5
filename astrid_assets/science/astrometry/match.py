"""The similarity transform between two star lists: triangle invariants and star pairs, with consensus.

Method
------
A similarity ``w = a z + b`` (complex ``z = x + i y``: rotation and scale ``a``, shift ``b``) maps
frame pixels to reference pixels. Hypotheses come from two sources:

* **triangles** (Groth 1986, AJ 91, 1244; Beroiz, Cabral & Sanchez 2020, Astronomy and Computing
  32, 100384): each star with every pair of its :data:`NEIGHBOURS` nearest neighbours makes a
  triangle, described by the invariants ``(L₂/L₁, L₁/L₀)`` of its sorted sides; triangles of the
  two lists whose invariants agree within :data:`INVARIANT_TOLERANCE` give a hypothesis each (vertices
  paired by the side they face);
* **pairs** of the :data:`PAIR_LIMIT` brightest stars of each list: every pair of frame stars with
  every ordered pair of reference stars (a sparse field with three stars in common has one triangle
  in common, which a triangle vote cannot confirm, but three consistent pairs).

Every hypothesis is scored on *all* the stars (where no hypothesis reaches :data:`CONFIDENT_MATCHES`,
only those of the expected scale): the number of frame stars landing within ``tolerance``
px of a reference star (one reference star per frame star). The best hypothesis (most stars, then the
smallest scatter) is refined by least squares on its matches, twice. Unlike RANSAC on triangle
matches (astroalign), the search is exhaustive and deterministic, the tolerance follows the
stars' FWHM, and no count of consistent triangles is needed.

Acceptance: at least :data:`CONFIDENT_MATCHES` stars, or three to five stars (a sparse field) with a
scale within :data:`SPARSE_SCALE_TOLERANCE` of the expected one, every star within
:data:`SPARSE_TOLERANCE` × ``tolerance`` of its match, a flux ratio consistent over the
matched stars (a range of at most 2 × :data:`SPARSE_FLUX_SCATTER` in log₁₀) and no other such
transform matching as many.

Positions are 0-based pixels ``(x, y)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy.spatial import cKDTree

__all__ = [
    "NEIGHBOURS",
    "INVARIANT_TOLERANCE",
    "PAIR_LIMIT",
    "CONFIDENT_MATCHES",
    "SPARSE_SCALE_TOLERANCE",
    "SPARSE_TOLERANCE",
    "SPARSE_FLUX_SCATTER",
    "StarMatch",
    "MatchError",
    "similarity_fit",
    "apply_matrix",
    "match_star_lists",
]

#: Nearest neighbours each star makes triangles with.
NEIGHBOURS = 6
#: Largest distance between two triangles' invariants ``(L₂/L₁, L₁/L₀)`` for them to be paired.
INVARIANT_TOLERANCE = 0.03
#: The brightest stars of each list also matched pair by pair.
PAIR_LIMIT = 12
#: A transform matching this many stars is accepted without further tests.
CONFIDENT_MATCHES = 6
#: A transform matching fewer stars must have a scale within this fraction of the expected one.
SPARSE_SCALE_TOLERANCE = 0.03
#: … with its stars within this fraction of the matching tolerance (bright, isolated stars' centroids agree to
#: a few hundredths of a pixel; a chance coincidence rarely comes that close) …
SPARSE_TOLERANCE = 0.4
#: … and a flux ratio (frame / reference) with at most this scatter over its stars, log₁₀.
SPARSE_FLUX_SCATTER = 0.1
#: Most hypotheses scored.
MAX_HYPOTHESES = 20000


class MatchError(ValueError):
    """The two star lists could not be matched."""


@dataclass(frozen=True)
class StarMatch:
    """A similarity transform between two star lists.

    Attributes
    ----------
    matrix : numpy.ndarray
        ``(3, 3)`` homogeneous matrix: ``(x_ref, y_ref, 1)ᵀ = matrix @ (x, y, 1)ᵀ``.
    frame_index, reference_index : numpy.ndarray
        Indices of the matched stars in the two lists.
    rms : float
        Root-mean-square distance of the matched stars after the transform, px.
    scale, rotation_deg : float
        Scale (reference px per frame px) and rotation (degrees, counter-clockwise) of the transform.
    """

    matrix: np.ndarray
    frame_index: np.ndarray
    reference_index: np.ndarray
    rms: float
    scale: float
    rotation_deg: float

    @property
    def n_matched(self) -> int:
        return int(len(self.frame_index))


def _complex(xy: np.ndarray) -> np.ndarray:
    return xy[..., 0] + 1j * xy[..., 1]


def similarity_fit(frame_xy: np.ndarray, reference_xy: np.ndarray) -> tuple[complex, complex]:
    """Least-squares similarity ``w = a z + b`` from paired points (at least two).

    Parameters
    ----------
    frame_xy, reference_xy : numpy.ndarray
        ``(n, 2)`` paired positions, px.

    Returns
    -------
    a, b : complex
        Rotation-scale and shift: ``x_ref + i y_ref = a (x + i y) + b``.
    """
    z, w = _complex(np.asarray(frame_xy, float)), _complex(np.asarray(reference_xy, float))
    zc, wc = z - z.mean(), w - w.mean()
    a = np.sum(wc * np.conj(zc)) / max(np.sum(np.abs(zc) ** 2), 1e-12)
    return complex(a), complex(w.mean() - a * z.mean())


def _matrix(a: complex, b: complex) -> np.ndarray:
    return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag], [0.0, 0.0, 1.0]])


def apply_matrix(matrix: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """``(n, 2)`` positions mapped through a ``(3, 3)`` homogeneous matrix."""
    xy = np.asarray(xy, float).reshape(-1, 2)
    return xy @ matrix[:2, :2].T + matrix[:2, 2]


def _triangles(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Triangles of each star with pairs of its nearest neighbours: vertex indices ``(t, 3)`` ordered by
    the side they face (shortest, middle, longest), and invariants ``(t, 2)``."""
    n = len(xy)
    if n < 3:
        return np.empty((0, 3), int), np.empty((0, 2))
    _, neighbours = cKDTree(xy).query(xy, k=min(n, NEIGHBOURS + 1))
    triples = {tuple(sorted((i, int(j), int(k)))) for i, row in enumerate(neighbours)
               for j, k in combinations(row[1:], 2)}
    tri = np.array(sorted(triples), dtype=int)
    p = xy[tri]  # (t, 3, 2)
    opposite = np.stack([np.hypot(*(p[:, 1] - p[:, 2]).T), np.hypot(*(p[:, 0] - p[:, 2]).T),
                         np.hypot(*(p[:, 0] - p[:, 1]).T)], axis=1)  # side facing each vertex
    order = np.argsort(opposite, axis=1, kind="stable")
    sides = np.take_along_axis(opposite, order, axis=1)
    tri = np.take_along_axis(tri, order, axis=1)
    ok = sides[:, 0] > 1.0  # degenerate (coincident) points carry no pattern
    with np.errstate(divide="ignore", invalid="ignore"):
        invariants = np.column_stack([sides[:, 2] / sides[:, 1], sides[:, 1] / sides[:, 0]])
    ok &= np.all(np.isfinite(invariants), axis=1) & (invariants[:, 1] < 10)  # needle-like: unstable
    return tri[ok], invariants[ok]


def _hypotheses(frame_xy: np.ndarray, reference_xy: np.ndarray, frame_rank: np.ndarray, reference_rank: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """Candidate ``(a, b)`` from triangle matches and from pairs of the :data:`PAIR_LIMIT` brightest stars."""
    a_list, b_list = [], []
    tri_f, inv_f = _triangles(frame_xy)
    tri_r, inv_r = _triangles(reference_xy)
    if len(tri_f) and len(tri_r):
        pairs = cKDTree(inv_r).query_ball_point(inv_f, INVARIANT_TOLERANCE)
        fi = np.array([i for i, hits in enumerate(pairs) for _ in hits], dtype=int)
        ri = np.array([k for hits in pairs for k in hits], dtype=int)
        if fi.size:
            z, w = _complex(frame_xy[tri_f[fi]]), _complex(reference_xy[tri_r[ri]])  # (h, 3)
            zc, wc = z - z.mean(axis=1, keepdims=True), w - w.mean(axis=1, keepdims=True)
            a = np.sum(wc * np.conj(zc), axis=1) / np.sum(np.abs(zc) ** 2, axis=1)
            a_list.append(a)
            b_list.append(w.mean(axis=1) - a * z.mean(axis=1))
    # pairs of the brightest stars of each list (lists are brightest first, or ordered by ``rank``)
    nf, nr = min(len(frame_xy), PAIR_LIMIT), min(len(reference_xy), PAIR_LIMIT)
    fp = np.array(list(combinations(frame_rank[:nf], 2)), dtype=int).reshape(-1, 2)
    rp = np.array([(k, m) for k in reference_rank[:nr] for m in reference_rank[:nr] if k != m], dtype=int)
    rp = rp.reshape(-1, 2)
    if len(fp) and len(rp):
        f = np.repeat(fp, len(rp), axis=0)
        r = np.tile(rp, (len(fp), 1))
        z0, z1 = _complex(frame_xy[f[:, 0]]), _complex(frame_xy[f[:, 1]])
        w0, w1 = _complex(reference_xy[r[:, 0]]), _complex(reference_xy[r[:, 1]])
        with np.errstate(divide="ignore", invalid="ignore"):
            a = (w1 - w0) / (z1 - z0)
        keep = np.isfinite(a)
        a_list.append(a[keep])
        b_list.append((w0 - a * z0)[keep])
    if not a_list:
        return np.empty(0, complex), np.empty(0, complex)
    return np.concatenate(a_list), np.concatenate(b_list)


def _score(a: np.ndarray, b: np.ndarray, frame_xy: np.ndarray, tree: cKDTree, tolerance: float
           ) -> tuple[np.ndarray, np.ndarray]:
    """Per hypothesis: frame stars landing within ``tolerance`` of a reference star, and their rms distance."""
    z = _complex(frame_xy)
    w = a[:, None] * z[None, :] + b[:, None]  # (h, n)
    distance, _ = tree.query(np.column_stack([w.real.ravel(), w.imag.ravel()]), distance_upper_bound=tolerance)
    distance = distance.reshape(w.shape)
    hit = np.isfinite(distance)
    count = hit.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rms = np.sqrt(np.where(hit, distance**2, 0.0).sum(axis=1) / np.maximum(count, 1))
    return count, rms


def _pairs(a: complex, b: complex, frame_xy: np.ndarray, tree: cKDTree, tolerance: float
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame / reference indices paired by the transform (each reference star once, its nearest) and distances."""
    w = a * _complex(frame_xy) + b
    distance, nearest = tree.query(np.column_stack([w.real, w.imag]), distance_upper_bound=tolerance)
    hit = np.flatnonzero(np.isfinite(distance))
    best: dict[int, int] = {}
    for i in hit[np.argsort(distance[hit])]:
        best.setdefault(int(nearest[i]), int(i))
    frame_index = np.array(sorted(best.values()), dtype=int)
    return frame_index, nearest[frame_index].astype(int), distance[frame_index]


def match_star_lists(
    frame_xy: np.ndarray, reference_xy: np.ndarray, *, tolerance: float = 2.0,
    frame_flux: np.ndarray | None = None, reference_flux: np.ndarray | None = None,
    scale: float = 1.0, scale_range: tuple[float, float] = (0.5, 2.0),
) -> StarMatch:
    """The similarity transform taking ``frame_xy`` onto ``reference_xy`` (module docstring).

    Parameters
    ----------
    frame_xy, reference_xy : numpy.ndarray
        ``(n, 2)`` and ``(m, 2)`` star positions, px; up to a few dozen each (control stars).
    tolerance : float, default 2.0
        Largest distance of a matched star after the transform, px (≈ half the FWHM for centroids of
        blended or faint stars; 2 px for sharp ones).
    frame_flux, reference_flux : numpy.ndarray or None, default None
        Star fluxes (any units, one per position); used to check a sparse match's consistency.
    scale : float, default 1.0
        Expected scale, reference px per frame px (the ratio of the pixel scales where known).
    scale_range : tuple of float, default (0.5, 2.0)
        Scales considered, as multiples of ``scale``.

    Returns
    -------
    StarMatch

    Raises
    ------
    MatchError
        Fewer than three stars in a list, or no transform that passes the acceptance tests.
    """
    frame_xy = np.asarray(frame_xy, float).reshape(-1, 2)
    reference_xy = np.asarray(reference_xy, float).reshape(-1, 2)
    if len(frame_xy) < 3 or len(reference_xy) < 3:
        raise MatchError(f"too few stars to match ({len(frame_xy)} in the frame, {len(reference_xy)} in the reference)")
    frame_rank = np.arange(len(frame_xy)) if frame_flux is None else np.argsort(-np.asarray(frame_flux, float))
    reference_rank = (np.arange(len(reference_xy)) if reference_flux is None
                      else np.argsort(-np.asarray(reference_flux, float)))
    a, b = _hypotheses(frame_xy, reference_xy, frame_rank, reference_rank)
    modulus = np.abs(a)
    keep = (modulus >= scale * scale_range[0]) & (modulus <= scale * scale_range[1])
    a, b = a[keep], b[keep]
    if a.size == 0:
        raise MatchError(f"no star pattern in common ({len(frame_xy)} frame and {len(reference_xy)} reference stars)")
    if a.size > MAX_HYPOTHESES:  # keep a deterministic, even subsample
        pick = np.linspace(0, a.size - 1, MAX_HYPOTHESES).astype(int)
        a, b = a[pick], b[pick]
    tree = cKDTree(reference_xy)
    counts, rms = np.empty(a.size, int), np.empty(a.size)
    for start in range(0, a.size, 2000):
        counts[start:start + 2000], rms[start:start + 2000] = _score(a[start:start + 2000], b[start:start + 2000],
                                                                     frame_xy, tree, tolerance)
    order = np.lexsort((rms, -counts))
    flux_f = None if frame_flux is None else np.asarray(frame_flux, float)
    flux_r = None if reference_flux is None else np.asarray(reference_flux, float)
    if counts[order[0]] >= CONFIDENT_MATCHES:
        a_best, b_best, fi, ri, distance = _refined(a[order[0]], b[order[0]], frame_xy, reference_xy, tree, tolerance)
    if counts[order[0]] < CONFIDENT_MATCHES or len(fi) < CONFIDENT_MATCHES:
        a_best, b_best, fi, ri, distance = _sparse_match(a, b, counts, rms, frame_xy, reference_xy, tree, tolerance,
                                                         scale, flux_f, flux_r)
    return StarMatch(_matrix(a_best, b_best), fi, ri, float(np.sqrt(np.mean(distance**2))), float(abs(a_best)),
                     float(np.degrees(np.angle(a_best))))


def _refined(a: complex, b: complex, frame_xy, reference_xy, tree, tolerance: float):
    """A hypothesis refined by least squares on the stars it pairs (three passes), with its pairs."""
    a, b = complex(a), complex(b)
    for _ in range(3):
        fi, ri, _ = _pairs(a, b, frame_xy, tree, tolerance)
        if len(fi) < 2:
            break
        a, b = similarity_fit(frame_xy[fi], reference_xy[ri])
    fi, ri, distance = _pairs(a, b, frame_xy, tree, tolerance)
    return a, b, fi, ri, distance


def _flux_spread(fi, ri, frame_flux, reference_flux) -> float:
    """Range of log₁₀(frame / reference flux) over the paired stars (0 without fluxes)."""
    if frame_flux is None or reference_flux is None:
        return 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.log10(frame_flux[fi] / reference_flux[ri])
    return float(np.ptp(ratio)) if np.all(np.isfinite(ratio)) else np.inf


def _sparse_match(a, b, counts, rms, frame_xy, reference_xy, tree, tolerance, scale, frame_flux, reference_flux):
    """The best match of three to five stars, under the sparse tests of the module docstring."""
    near = (np.abs(np.abs(a) / scale - 1.0) <= SPARSE_SCALE_TOLERANCE) & (counts >= 3)
    candidates = np.flatnonzero(near)
    if candidates.size == 0:
        raise MatchError(f"star patterns do not match: no transform of the expected scale ({scale:.3f}) puts three "
                         f"of {len(frame_xy)} frame stars on the {len(reference_xy)} reference stars")
    candidates = candidates[np.lexsort((rms[candidates], -counts[candidates]))][:500]
    solutions = []  # (n, rms, a, b, fi, ri, distance) of distinct transforms whose stars agree in flux
    z, tight = _complex(frame_xy), tolerance * SPARSE_TOLERANCE
    for k in candidates:
        a_k, b_k, fi, ri, distance = _refined(a[k], b[k], frame_xy, reference_xy, tree, tight)
        if len(fi) < 3 or abs(abs(a_k) / scale - 1.0) > SPARSE_SCALE_TOLERANCE:
            continue
        if _flux_spread(fi, ri, frame_flux, reference_flux) > 2.0 * SPARSE_FLUX_SCATTER:
            continue
        if any(np.abs((a_k - s[2]) * z + (b_k - s[3])).max() <= tolerance for s in solutions):
            continue
        solutions.append((len(fi), float(np.sqrt(np.mean(distance**2))), a_k, b_k, fi, ri, distance))
    if not solutions:
        raise MatchError(f"star patterns do not match: no transform of the expected scale puts three stars whose "
                         f"fluxes agree within {tight:.2f} px of the reference's ({len(frame_xy)} frame, "
                         f"{len(reference_xy)} reference stars)")
    solutions.sort(key=lambda s: (-s[0], s[1]))
    if len(solutions) > 1 and solutions[1][0] >= solutions[0][0]:
        raise MatchError(f"only {solutions[0][0]} stars matched and another transform matches as many: ambiguous")
    return solutions[0][2:]
