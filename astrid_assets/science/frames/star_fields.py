"""Fields of frames that name no field and give no pointing: grouped by their star pattern.

A science frame without ``FIELD``/``OBJECT``, WCS or pointing cards can still be placed: frames of one
target share their stars. Each such frame's control stars (bright, unsaturated, isolated, spread:
:func:`~astrid_assets.science.astrometry.control.choose_control_stars`, found with SEP on the frame's
own pixels after a mesh background) are matched with those of the first frame of each group formed so
far (:func:`~astrid_assets.science.astrometry.match.match_star_lists`; a dither, a rotation, a
different night all match); a frame that matches none founds a new group. A group is named
``S-<file stem of its first frame>`` (path-safe, at most 64 characters), so the name says it was
grouped by stars and from which frame; a later night's frame that matches an earlier night's group
keeps that name (the groups are carried from night to night, oldest first).

Frames with fewer than three detectable stars are not grouped by pattern (the caller keeps its
fallback).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits

from astrid_assets.science.astrometry.control import ControlStars, choose_control_stars
from astrid_assets.science.astrometry.match import MatchError, match_star_lists
from astrid_assets.science.sources import Sources, background_maps

__all__ = ["STAR_FIELD_PREFIX", "frame_stars", "StarFieldGroups"]

#: Prefix of a field named after the star pattern of its first frame.
STAR_FIELD_PREFIX = "S-"
#: Control stars compared per frame.
PATTERN_STARS = 40


def frame_stars(data: np.ndarray) -> ControlStars:
    """Control stars of a frame's pixels (raw or calibrated, any units), for grouping.

    Parameters
    ----------
    data : numpy.ndarray
        The image, indexed ``[y, x]``.

    Returns
    -------
    ControlStars
        Up to :data:`PATTERN_STARS` stars (may be fewer than three: then the frame cannot be grouped).
    """
    image = np.asarray(data, dtype=np.float32)
    bad = ~np.isfinite(image)
    background, rms = background_maps(np.where(bad, np.nanmedian(image), image), bad)
    return choose_control_stars(Sources.extract(image, background, rms, bad.astype(np.uint16)), PATTERN_STARS)


def _read_stars(path: Path) -> ControlStars | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fits.open(path, memmap=False) as hdus:
            data = next((hdu.data for hdu in hdus if getattr(hdu, "data", None) is not None
                         and np.ndim(hdu.data) == 2), None)
    return None if data is None else frame_stars(data)


@dataclass
class StarFieldGroups:
    """The star-pattern groups seen so far (carried from night to night) and what a frame joins.

    Attributes
    ----------
    groups : dict
        Field name → the control stars of the group's first frame.
    cache : dict
        ``(path, size, mtime)`` → control stars, so a folder re-read night after night is measured once.
    """

    groups: dict[str, ControlStars] = field(default_factory=dict)
    cache: dict[tuple, ControlStars | None] = field(default_factory=dict)

    def stars_of(self, path: Path) -> ControlStars | None:
        """The file's control stars (measured once per file version); None when it holds no 2-D image."""
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in self.cache:
            self.cache[key] = _read_stars(path)
        return self.cache[key]

    def assign(self, path: Path) -> tuple[str, str] | None:
        """``(field, reason)`` for the frame in ``path``: the first group whose stars it matches, else a new group;
        None when the frame has fewer than three stars to match."""
        stars = self.stars_of(path)
        if stars is None or len(stars) < 3:
            return None
        tolerance = max(2.0, 0.4 * stars.fwhm) if np.isfinite(stars.fwhm) else 2.0
        for name, exemplar in self.groups.items():
            try:
                match = match_star_lists(stars.xy, exemplar.xy, tolerance=tolerance, frame_flux=stars.flux,
                                         reference_flux=exemplar.flux)
            except MatchError:
                continue
            return name, (f"no FIELD/OBJECT card and no pointing: star pattern matches field {name} "
                          f"({match.n_matched} stars, rotation {match.rotation_deg:.2f} deg)")
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.name.split(".")[0]).strip("._") or "frame"
        name = (STAR_FIELD_PREFIX + stem)[:64]
        while name in self.groups:
            name = name[:60] + f"-{len(self.groups) % 1000}"
        self.groups[name] = stars
        return name, (f"no FIELD/OBJECT card and no pointing: new field named after the star pattern of this "
                      f"frame ({len(stars)} stars)")
