"""``object_context``: the catalogue context of the night's objects — the nearest Gaia DR3 source ("a star"),
a Pan-STARRS1 star–galaxy score and the known solar-system object at the epoch (:mod:`astrid_assets.catalogues`).

Per field and night, archive answers are cached in the object store (a re-run asks nothing again); an archive
that cannot be reached gives "no context" with a note (``context_note``), never a failed night.
"""

import pandas as pd
from dagster import AssetExecutionContext, Config

from astrid_assets.catalogues.context import CatalogueOptions, ContextCache, context_rows
from astrid_assets.defs.nightly import for_each_night, night_rows, nightly_asset
from astrid_assets.defs.objects import no_checks
from astrid_assets.io import schema
from astrid_assets.resources import DatabaseResource, ObjectStoreResource


class ContextConfig(Config):
    """Which archives are asked, how far (arcsec) and for how long (:class:`~astrid_assets.catalogues.context.
    CatalogueOptions`)."""

    gaia: bool = True  #: nearest Gaia DR3 source (Gaia archive TAP)
    panstarrs: bool = True  #: Pan-STARRS1 DR2 star–galaxy score (MAST)
    skybot: bool = True  #: known solar-system objects at the epoch (IMCCE SkyBoT)
    gaia_radius_arcsec: float = 10.0
    ps1_radius_arcsec: float = 30.0
    skybot_radius_arcsec: float = 30.0
    max_cone_arcsec: float = 360.0
    observatory_code: str = "500"  #: MPC code of the observatory, for SkyBoT (500: geocentre)
    timeout_s: float = 60.0


def object_epochs(objects: pd.DataFrame) -> pd.Series:
    """UTC MJD each object's mean position refers to: a moving object's tracklet midpoint, else its latest
    detection (a static object's position does not move; an asteroid over it is matched at that epoch)."""
    moving = objects.moving.fillna(False).astype(bool)
    return ((objects.first_mjd + objects.last_mjd) / 2).where(moving, objects.last_mjd).astype(float)


def context_night(night: str, objects: pd.DataFrame, store, options: CatalogueOptions) -> tuple[pd.DataFrame, dict]:
    """One night's ``object_context`` rows and metadata."""
    columns = list(schema.object_context.c.keys())
    if objects.empty:
        return pd.DataFrame(columns=columns), {"objects": 0}
    objects = objects.assign(epoch_mjd=object_epochs(objects))
    tables, totals = [], {}
    for field, group in objects.groupby("field"):
        rows, counts = context_rows(group.reset_index(drop=True), ContextCache(store, night, field), options)
        tables.append(rows)
        totals = {k: totals.get(k, 0) + v for k, v in counts.items()}
    table = pd.concat(tables, ignore_index=True).assign(night=night)
    return table[columns], {"objects": len(table), **totals}


@nightly_asset(kinds={"sql"})
def object_context(
    context: AssetExecutionContext, config: ContextConfig, transient_objects: pd.DataFrame,
    object_store: ObjectStoreResource, database: DatabaseResource,
):
    """Catalogue context of the night's objects: nearest Gaia DR3 source (distance, G, parallax and proper-motion
    significance, ``is_star``), Pan-STARRS1 star–galaxy score, known solar-system object at the epoch (SkyBoT);
    cached per field and night; an unreachable archive leaves a note, never a failed night."""
    options = CatalogueOptions(**config.model_dump())
    store = object_store.open()
    yield from for_each_night(context, lambda night: context_night(
        night, night_rows(transient_objects, night), store, options), no_checks,
        upstream={"transient_objects": transient_objects}, database=database)
