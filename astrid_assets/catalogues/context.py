"""One night's catalogue context of a field's objects: the ``object_context`` rows.

Per field and night, each archive is asked once per cone (:func:`~astrid_assets.catalogues.cones.cover_cones`;
Gaia: one ADQL union of small circles), the answer is kept in the object store under
``object_context/cache/<night>/<field>/<archive>.<hash of the query>.json`` and a re-run of the night reads
it back instead of asking again. An archive that fails (any exception: unreachable, timeout, a garbled answer)
gives no context for that archive, and a note saying so in ``context_note``; it never fails the night, and
its failure is not cached (a re-run asks again). Objects without sky coordinates (fields without a WCS) get
a note and no query.
"""

import hashlib
import io
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from astrid_assets.catalogues.cones import cover_cones, nearest
from astrid_assets.catalogues.gaia import gaia_context, query_gaia
from astrid_assets.catalogues.panstarrs import panstarrs_context, query_panstarrs
from astrid_assets.catalogues.skybot import query_skybot

__all__ = ["CatalogueOptions", "ContextCache", "context_rows"]

COLUMNS = ["object_id", "gaia_source_id", "gaia_distance_arcsec", "gaia_g", "gaia_parallax_snr", "gaia_pm_snr",
           "is_star", "sgscore", "ps1_distance_arcsec", "ssnamenr", "ssdistnr", "ssmagnr", "context_note"]
#: Epochs closer than this (days, ~1.4 min: < 1″ of a main-belt asteroid's motion) share a SkyBoT query.
EPOCH_ROUND_DAYS = 0.001


@dataclass(frozen=True)
class CatalogueOptions:
    """Which archives are asked, how far, and for how long."""

    gaia: bool = True  #: ask the Gaia archive
    panstarrs: bool = True  #: ask MAST's Pan-STARRS1 DR2 catalogue
    skybot: bool = True  #: ask SkyBoT
    gaia_radius_arcsec: float = 10.0  #: nearest Gaia DR3 source searched this far
    ps1_radius_arcsec: float = 30.0  #: nearest PS1 source searched this far (ZTF's distpsnr1: 30″)
    skybot_radius_arcsec: float = 30.0  #: nearest known solar-system object searched this far (ZTF: 30″)
    max_cone_arcsec: float = 360.0  #: largest cone asked of Pan-STARRS or SkyBoT (larger spreads are split)
    observatory_code: str = "500"  #: MPC code SkyBoT computes positions from (500: the geocentre)
    timeout_s: float = 60.0  #: per request, seconds


class ContextCache:
    """Archive answers of a night and field in an :class:`~astrid_assets.io.object_store.ObjectStore`."""

    def __init__(self, store, night: str, field: str):
        self.store, self.prefix = store, f"object_context/cache/{night}/{field}/"
        self.hits = self.misses = 0

    def fetch(self, archive: str, query: str, ask: Callable[[], pd.DataFrame]) -> pd.DataFrame:
        """The rows ``ask()`` gave for ``query`` (text that names it), from the cache when there."""
        key = f"{self.prefix}{archive}.{hashlib.sha256(query.encode()).hexdigest()[:16]}.json"
        try:
            rows = pd.read_json(io.BytesIO(self.store.get(key)), orient="table")
            self.hits += 1
            return rows
        except KeyError:
            pass
        rows = ask()
        self.misses += 1
        self.store.put(key, rows.reset_index(drop=True).to_json(orient="table", index=False).encode())
        return rows


def _failure(archive: str, error: BaseException) -> str:
    return f"{archive}: no context, archive unreachable or failed ({type(error).__name__}: {error})"[:300]


def _gaia(objects, cache, options) -> tuple[pd.DataFrame, list[str]]:
    query = json.dumps([options.gaia_radius_arcsec, *objects[["ra", "dec"]].round(7).to_numpy().tolist()])
    sources = cache.fetch("gaia", query, lambda: query_gaia(objects, options.gaia_radius_arcsec,
                                                            options.timeout_s))
    return gaia_context(nearest(objects, sources, options.gaia_radius_arcsec)), []


def _panstarrs(objects, cache, options) -> tuple[pd.DataFrame, list[str]]:
    tables = [cache.fetch("panstarrs", cone.key(), lambda cone=cone: query_panstarrs(cone, options.timeout_s))
              for cone in cover_cones(objects, options.ps1_radius_arcsec, options.max_cone_arcsec)]
    sources = pd.concat([t for t in tables if len(t)], ignore_index=True) if any(len(t) for t in tables) else \
        tables[0]
    return panstarrs_context(nearest(objects, sources, options.ps1_radius_arcsec)), []


def _skybot(objects, cache, options) -> tuple[pd.DataFrame, list[str]]:
    out = pd.DataFrame(index=objects.index, columns=["ssnamenr", "ssdistnr", "ssmagnr"], dtype=object)
    epochs = (objects.epoch_mjd / EPOCH_ROUND_DAYS).round() * EPOCH_ROUND_DAYS
    for epoch, group in objects.groupby(epochs):
        for cone in cover_cones(group, options.skybot_radius_arcsec, options.max_cone_arcsec):
            found = cache.fetch("skybot", f"{cone.key()}@{epoch:.3f}/{options.observatory_code}",
                                lambda cone=cone, epoch=epoch: query_skybot(cone, epoch, options.observatory_code,
                                                                            options.timeout_s))
            match = nearest(group.loc[cone.index], found, options.skybot_radius_arcsec)
            named = match.Name.notna()
            out.loc[match.index[named], "ssnamenr"] = [
                f"{n} {name}" if int(n) else str(name) for n, name in zip(match.Number[named], match.Name[named],
                                                                         strict=True)]
            out.loc[match.index[named], "ssdistnr"] = match.distance_arcsec[named].astype(float)
            out.loc[match.index[named], "ssmagnr"] = match.V[named].astype(float)
    return out, []


ARCHIVES = {"gaia": _gaia, "panstarrs": _panstarrs, "skybot": _skybot}


def context_rows(objects: pd.DataFrame, cache: ContextCache, options: CatalogueOptions = CatalogueOptions(),
                 ask: dict[str, Callable] | None = None) -> tuple[pd.DataFrame, dict]:
    """The ``object_context`` rows (less ``night``) of one field's objects, and counts for the metadata.

    Parameters
    ----------
    objects : pandas.DataFrame
        ``object_id``, ``ra``, ``dec`` (deg; null without a WCS) and ``epoch_mjd`` (UTC MJD the object's
        position refers to, for SkyBoT).
    cache : ContextCache
        Where the field's and night's archive answers are kept.
    options : CatalogueOptions
        Archives, radii and timeouts.
    ask : dict, optional
        Archive name → function ``(objects, cache, options) -> (columns, notes)``; :data:`ARCHIVES` by default.
    """
    rows = pd.DataFrame({"object_id": objects.object_id.to_numpy()}, index=objects.index)
    rows = rows.reindex(columns=COLUMNS).astype(object)
    notes = pd.Series([[] for _ in range(len(objects))], index=objects.index, dtype=object)
    placed = objects.ra.notna() & objects.dec.notna()
    for index in objects.index[~placed]:
        notes[index].append("no sky position (field without WCS): no catalogue query")
    counts = {"archives_failed": 0}
    enabled = {"gaia": options.gaia, "panstarrs": options.panstarrs, "skybot": options.skybot}
    for name, function in (ask or ARCHIVES).items():
        if not enabled.get(name, True) or not placed.any():
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # astroquery's NoResultsWarning, VOTable unit warnings
                columns, _ = function(objects[placed], cache, options)
        except Exception as error:  # an archive's failure is a note, never a failed night
            counts["archives_failed"] += 1
            for index in objects.index[placed]:
                notes[index].append(_failure(name, error))
            continue
        for column in columns.columns:
            rows.loc[columns.index, column] = columns[column].to_numpy(dtype=object)
    rows["context_note"] = ["; ".join(n) if n else None for n in notes]
    for column in ("gaia_distance_arcsec", "gaia_g", "gaia_parallax_snr", "gaia_pm_snr", "sgscore",
                   "ps1_distance_arcsec", "ssdistnr", "ssmagnr"):
        rows[column] = pd.to_numeric(rows[column], errors="coerce").astype(float)
    counts.update({"near_gaia_star": int((rows.is_star == True).sum()),  # noqa: E712 (object column)
                   "near_solar_system_object": int(rows.ssnamenr.notna().sum()),
                   "without_sky_position": int((~placed).sum()), "cache_hits": cache.hits,
                   "archive_queries": cache.misses})
    rows["is_star"] = [None if pd.isna(v) else bool(v) for v in rows.is_star]
    for column in ("gaia_source_id", "ssnamenr"):
        rows[column] = [None if pd.isna(v) else str(v) for v in rows[column]]
    return rows.reset_index(drop=True), counts
