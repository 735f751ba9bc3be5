"""A field's stable pixel grid: the grid of its first reference, which never moves.

References are rebuilt (a deeper co-add, a new anchor frame) and each version has its own grid; a
candidate's ``x, y`` are on the grid of the reference its difference used. Objects must keep their
positions across versions, also on a field without a WCS, so each version's grid is mapped onto the
field's first reference grid by the stars the two share (triangle-pattern matching, as frames without
a WCS are registered: :func:`~astrid_assets.science.astrometry.align.pixel_transform`).

Conventions: pixel positions 0-based, ``(x, y)`` with pixel centres at integers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from astrid_assets.science.astrometry.align import AlignmentError, pixel_transform

__all__ = ["GridMap", "grid_map"]


@dataclass(frozen=True)
class GridMap:
    """``(x_s, y_s, 1)ᵀ = matrix @ (x, y, 1)ᵀ``: a reference version's pixels on the field's stable grid."""

    matrix: np.ndarray  #: (3, 3) float64 homogeneous similarity
    n_stars: int  #: stars matched (0: identity, the stable version itself)

    @classmethod
    def identity(cls) -> GridMap:
        return cls(np.eye(3), 0)

    def to_stable(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Positions on the version's grid → the stable grid (px)."""
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        m = self.matrix
        return m[0, 0] * x + m[0, 1] * y + m[0, 2], m[1, 0] * x + m[1, 1] * y + m[1, 2]

    def from_stable(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Positions on the stable grid → the version's grid (px)."""
        inverse = np.linalg.inv(self.matrix)
        return GridMap(inverse, self.n_stars).to_stable(x, y)

    @property
    def scale(self) -> float:
        """Stable-grid pixels per version pixel (the similarity's scale)."""
        return float(np.sqrt(abs(np.linalg.det(self.matrix[:2, :2]))))


def grid_map(version_stars_xy: np.ndarray, stable_stars_xy: np.ndarray) -> GridMap:
    """The map of a reference version's grid onto the stable grid, from their star lists.

    Parameters
    ----------
    version_stars_xy, stable_stars_xy : numpy.ndarray
        ``(n, 2)`` star positions ``(x, y)`` on each reference, px (0-based), brightest first.

    Returns
    -------
    GridMap
        The similarity found by triangle-pattern matching (Beroiz, Cabral & Sanchez 2020).

    Raises
    ------
    AlignmentError
        Too few stars or no consistent pattern: the two grids cannot be tied.
    """
    matrix, matched = pixel_transform(np.asarray(version_stars_xy, float), np.asarray(stable_stars_xy, float))
    if matched < 3:
        raise AlignmentError(f"only {matched} stars tie the reference grid to the stable grid")
    return GridMap(matrix, matched)
