"""Which alert packets are notable: filters read from YAML or run configuration and applied to packets as a
broker would, with the fields a ZTF consumer reads (``candidate.rb``, ``magpsf``, ``isdiffpos``,
``prv_candidates``, ``fp_hists``).

A filter file::

    filters:
      - name: bright-rising
        min_real_probability: 0.8     # candidate.rb, the champion's real probability
        max_magpsf: 19.5              # mag: brighter than this (packets without a magnitude fail it)
        min_snr: 8                    # or a S/N floor (psfflux / psffluxerr)
        gaia_star_radius_arcsec: 2.0  # not within this of a Gaia star (context.is_star)
        solar_system_radius_arcsec: 10  # not within this of a known solar-system object; never a moving object
        rising: true                  # brighter than the previous measurement of the same filter
        rise_sigma: 1.0

Every condition left out (or null) is not applied; a packet matches when it passes all the others.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import yaml

__all__ = ["DEFAULT_FILTERS", "NotificationFilter", "is_rising", "load_filters"]


@dataclass(frozen=True)
class NotificationFilter:
    """One notification filter (module docstring); :meth:`rejections` says why a packet fails it."""

    name: str
    min_real_probability: float | None = None  #: candidate.rb at least this (an unscored packet fails)
    max_magpsf: float | None = None  #: mag: candidate.magpsf at most this (brighter)
    min_snr: float | None = None  #: candidate.snr at least this
    positive_only: bool = True  #: only brightenings (isdiffpos 't')
    gaia_star_radius_arcsec: float | None = None  #: reject a Gaia star within this (context.is_star)
    solar_system_radius_arcsec: float | None = None  #: reject a known solar-system object within this, and movers
    rising: bool = False  #: require a rise over the previous measurement of the filter
    rise_sigma: float = 1.0  #: the rise, in combined σ of the two fluxes
    min_detections: int = 1  #: candidate.ndethist at least this

    def rejections(self, packet: dict) -> list[str]:
        """Why ``packet`` fails this filter (empty: it matches)."""
        candidate, context, obj = packet["candidate"], packet.get("context") or {}, packet.get("object") or {}
        why = []
        if self.min_real_probability is not None and not (candidate.get("rb") or 0) >= self.min_real_probability:
            why.append(f"rb {candidate.get('rb')} < {self.min_real_probability}")
        if self.max_magpsf is not None and not (candidate.get("magpsf") or math.inf) <= self.max_magpsf:
            why.append(f"magpsf {candidate.get('magpsf')} fainter than {self.max_magpsf}")
        if self.min_snr is not None and not abs(candidate.get("snr") or 0) >= self.min_snr:
            why.append(f"S/N {candidate.get('snr')} < {self.min_snr}")
        if self.positive_only and candidate.get("isdiffpos") != "t":
            why.append("a fading source (isdiffpos 'f')")
        if self.gaia_star_radius_arcsec is not None and context.get("is_star") and \
                (candidate.get("neargaia") or math.inf) <= self.gaia_star_radius_arcsec:
            why.append(f"a Gaia star {candidate['neargaia']:.2f}\" away")
        if self.solar_system_radius_arcsec is not None:
            if obj.get("moving"):
                why.append("a moving object")
            elif candidate.get("ssnamenr") and (candidate.get("ssdistnr") or 0) <= self.solar_system_radius_arcsec:
                why.append(f"known solar-system object {candidate['ssnamenr']}")
        if self.rising and not is_rising(packet, self.rise_sigma):
            why.append("not rising")
        if (candidate.get("ndethist") or 0) < self.min_detections:
            why.append(f"{candidate.get('ndethist')} detections < {self.min_detections}")
        return why

    def matches(self, packet: dict) -> bool:
        return not self.rejections(packet)


def is_rising(packet: dict, sigma: float = 1.0) -> bool:
    """Whether the detection's flux exceeds the latest earlier measurement of its filter by ``sigma`` combined σ.

    Earlier measurements are the packet's ``prv_candidates`` (signed ``psfflux``) and ``fp_hists`` (forced
    photometry, ``forcediffimflux``, upper limits included: a new transient rises above the zero flux of its
    epochs before it appeared). A packet with no earlier measurement of its filter is not called rising.
    """
    candidate = packet["candidate"]
    flux, error = candidate["psfflux"], candidate["psffluxerr"]
    earlier = [(p["jd"], p.get("psfflux"), p.get("psffluxerr")) for p in packet.get("prv_candidates") or []
               if p.get("fid") == candidate["fid"]]
    earlier += [(p["jd"], p.get("forcediffimflux"), p.get("forcediffimfluxunc")) for p in packet.get("fp_hists") or []
                if p.get("fid") == candidate["fid"]]
    earlier = [e for e in earlier if e[0] < candidate["jd"] - 1e-6 and e[1] is not None and e[2] is not None]
    if not earlier:
        return False
    _, before, before_error = max(earlier, key=lambda e: e[0])
    return flux - before > sigma * math.hypot(error, before_error)


#: The filter used when none is configured: a likely-real brightening at S/N ≥ 5, not a star or a minor planet.
DEFAULT_FILTERS = (NotificationFilter(name="notable", min_real_probability=0.8, min_snr=5.0,
                                      gaia_star_radius_arcsec=2.0, solar_system_radius_arcsec=10.0),)


def load_filters(source: str | Path | list | dict | None) -> tuple[NotificationFilter, ...]:
    """Filters from a YAML file path, YAML text, or already-parsed ``{"filters": [...]}`` / ``[...]``.

    None or an empty list gives :data:`DEFAULT_FILTERS`. An unknown key or a repeated name is an error naming it.
    """
    if source is None:
        return DEFAULT_FILTERS
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source and Path(source).exists()):
        source = yaml.safe_load(Path(source).read_text())
    elif isinstance(source, str):
        source = yaml.safe_load(source)
    entries = source.get("filters", []) if isinstance(source, dict) else list(source or [])
    if not entries:
        return DEFAULT_FILTERS
    known = {f.name for f in fields(NotificationFilter)}
    filters = []
    for entry in entries:
        unknown = sorted(set(entry) - known)
        if unknown or "name" not in entry:
            raise ValueError(f"notification filter {entry.get('name', '(no name)')!r}: "
                             + (f"unknown key(s) {unknown}" if unknown else "needs a name")
                             + f"; known keys: {', '.join(sorted(known))}")
        filters.append(NotificationFilter(**entry))
    names = [f.name for f in filters]
    if len(set(names)) != len(names):
        raise ValueError(f"notification filter names must be unique: {names}")
    return tuple(filters)


def describe(notification_filter: NotificationFilter) -> dict:
    """The filter's settings that are in force (for metadata)."""
    return {k: v for k, v in asdict(notification_filter).items() if v is not None}
