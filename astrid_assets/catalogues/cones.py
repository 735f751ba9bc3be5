"""Cones that cover a field's objects, and nearest-neighbour matching of objects to a catalogue."""

import numpy as np
import pandas as pd
from astropy import units as u
from astropy.coordinates import SkyCoord

__all__ = ["Cone", "cover_cones", "nearest"]


class Cone:
    """A cone search (centre ``ra``, ``dec`` in deg, ``radius_arcsec``) and the positions of ``index`` it covers."""

    def __init__(self, ra: float, dec: float, radius_arcsec: float, index: list):
        self.ra, self.dec, self.radius_arcsec, self.index = float(ra), float(dec), float(radius_arcsec), list(index)

    def key(self) -> str:
        """Stable text of the cone (0.01″ in position, 0.1″ in radius): what a cache key is made from."""
        return f"{self.ra:.7f},{self.dec:+.7f},{self.radius_arcsec:.1f}"


def cover_cones(positions: pd.DataFrame, match_arcsec: float, max_radius_arcsec: float) -> list[Cone]:
    """Cones covering every position of ``positions`` (columns ``ra``, ``dec``, deg) out to ``match_arcsec``.

    One cone over all of them (centred on their mean position, radius the largest distance plus
    ``match_arcsec``) when that is at most ``max_radius_arcsec``; otherwise the positions are split in two
    along the longer axis of their spread, recursively, so a cone never exceeds the limit (a single
    position's cone is ``match_arcsec``).
    """
    if positions.empty:
        return []
    coords = SkyCoord(positions.ra.to_numpy(float) * u.deg, positions.dec.to_numpy(float) * u.deg)
    centre = SkyCoord(coords.cartesian.mean(), representation_type="cartesian").spherical
    centre = SkyCoord(centre.lon, centre.lat)
    radius = float(np.max(coords.separation(centre).arcsec)) + match_arcsec
    if radius <= max_radius_arcsec or len(positions) == 1:
        return [Cone(centre.ra.deg, centre.dec.deg, radius, positions.index)]
    offsets = centre.spherical_offsets_to(coords)
    along = offsets[0].arcsec if np.ptp(offsets[0].arcsec) >= np.ptp(offsets[1].arcsec) else offsets[1].arcsec
    lower = along <= np.median(along)
    if lower.all():  # all on the median: split by order
        lower = np.arange(len(along)) < len(along) // 2
    return (cover_cones(positions[lower], match_arcsec, max_radius_arcsec)
            + cover_cones(positions[~lower], match_arcsec, max_radius_arcsec))


def nearest(positions: pd.DataFrame, catalogue: pd.DataFrame, radius_arcsec: float) -> pd.DataFrame:
    """For each row of ``positions`` (``ra``, ``dec``, deg), the nearest ``catalogue`` row (``ra``, ``dec``)
    within ``radius_arcsec``: the catalogue's columns and ``distance_arcsec``, indexed as ``positions``;
    all NaN/None where none is that close."""
    columns = [*catalogue.columns, "distance_arcsec"]
    out = pd.DataFrame(index=positions.index, columns=columns, dtype=object)
    if positions.empty or catalogue.empty:
        return out
    objects = SkyCoord(positions.ra.to_numpy(float) * u.deg, positions.dec.to_numpy(float) * u.deg)
    sources = SkyCoord(catalogue.ra.to_numpy(float) * u.deg, catalogue.dec.to_numpy(float) * u.deg)
    if len(sources) == 1:
        index, separation = np.zeros(len(objects), int), objects.separation(sources[0])
    else:
        index, separation, _ = objects.match_to_catalog_sky(sources)
    close = separation.arcsec <= radius_arcsec
    matched = catalogue.iloc[index[close]].reset_index(drop=True)
    matched["distance_arcsec"] = separation.arcsec[close]
    matched.index = positions.index[close]
    out.loc[matched.index, columns] = matched[columns].to_numpy(dtype=object)
    return out
