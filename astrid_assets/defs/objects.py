"""``object_detections``, ``transient_objects`` and ``forced_photometry``: candidates become objects with
light curves.

Each night's candidates are placed on their field's stable pixel grid (the grid of the field's first
reference; later reference versions are tied to it by their stars: :mod:`astrid_assets.science.objects.grid`)
and associated with the field's objects of earlier nights (:mod:`astrid_assets.science.objects.association`);
tracklets are moving objects of their own. ``transient_objects`` holds, per night, the objects detected that
night with their history so far; ``forced_photometry`` measures every confirmed static object of a field on
each difference of the night, and a newly confirmed one on the field's earlier differences too (its baseline).
"""


from datetime import date, timedelta

import numpy as np
import pandas as pd
from astropy.wcs.utils import proj_plane_pixel_scales
from dagster import AssetExecutionContext, Config, MetadataValue

from astrid_assets.defs.nightly import for_each_night, night_rows, nightly_asset
from astrid_assets.io import schema
from astrid_assets.io.object_store import ObjectStore
from astrid_assets.resources import DatabaseResource, ObjectStoreResource
from astrid_assets.science.detection.flags import FLAG_EDGE
from astrid_assets.science.frames.files import read_extensions
from astrid_assets.science.objects.association import AssociationRules, associate_night, centroid_error, static_objects
from astrid_assets.science.objects.grid import GridMap, grid_map
from astrid_assets.science.products import Reference

EARLIEST = "0001-01-01"


def night_before(night: str, days: int = 1) -> str:
    return str(date.fromisoformat(night) - timedelta(days=days))


def no_checks(nights, rows):
    return iter(())


class ObjectsConfig(Config):
    """How candidates are associated into objects (radii in arcsec; px where the field has no WCS)."""

    radius_min_arcsec: float = 1.0  #: smallest association radius (Rubin, ZTF: 1.0–1.5″)
    radius_max_arcsec: float = 1.5  #: largest association radius
    n_sigma: float = 4.0  #: radius in units of the combined position error
    max_rate_arcsec_per_min: float = 30.0  #: fastest tracklet searched
    exclude_flags: int = FLAG_EDGE  #: candidates with any of these flags are not associated (at the border)
    min_real_probability: float | None = None  #: scored candidates below this are not associated
    lookback_nights: int = 3650  #: earlier nights whose objects a detection may join


class GridCache:
    """Each (field, reference version) grid tied once to the field's stable grid, for the run."""

    def __init__(self, store: ObjectStore, database: DatabaseResource):
        self.store, self.database = store, database
        self.stable: dict[str, tuple[str, Reference]] = {}
        self.maps: dict[tuple[str, str], GridMap] = {}

    def stable_reference(self, field: str, night: str) -> tuple[str, Reference]:
        """The field's first ``ok`` reference (version, reference): its grid is the stable grid."""
        if field not in self.stable:
            rows = self.database.read_night_range("reference_images", EARLIEST, night, field=field)
            rows = rows[rows.status == "ok"].sort_values("night")
            if rows.empty:
                raise ValueError(f"field {field} has no reference up to {night}: no stable grid")
            first = rows.iloc[0]
            self.stable[field] = (first.version, self._load(first.path))
        return self.stable[field]

    def _load(self, path: str) -> Reference:
        return Reference.from_extensions(read_extensions(self.store.get(path)))

    def map_for(self, field: str, version: str, path: str, night: str) -> GridMap:
        """The map of reference ``version`` (stored at ``path``) onto the field's stable grid."""
        key = (field, version)
        if key not in self.maps:
            stable_version, stable = self.stable_reference(field, night)
            if version == stable_version:
                self.maps[key] = GridMap.identity()
            else:
                self.maps[key] = grid_map(self._load(path).sources.control_stars(),
                                          stable.sources.control_stars())
        return self.maps[key]

    def pixel_scale(self, field: str, night: str) -> float:
        """Arcsec per stable-grid pixel (the stable reference's WCS; a placeholder grid's nominal scale)."""
        _, stable = self.stable_reference(field, night)
        return float(np.mean(proj_plane_pixel_scales(stable.wcs)) * 3600.0)


def associate_objects_night(
    night: str, config: ObjectsConfig, candidates: pd.DataFrame, scored: pd.DataFrame,
    grids: GridCache, database: DatabaseResource, earlier_in_run: dict[str, pd.DataFrame], first_run_night: str,
) -> tuple[pd.DataFrame, dict]:
    """One night's ``object_detections`` rows and metadata."""
    columns = list(schema.object_detections.c.keys())
    if candidates.empty:
        return pd.DataFrame(columns=columns), {"detections": 0, "objects": 0, "note": "no candidates tonight"}
    candidates = candidates.merge(scored[["candidate_id", "real_probability", "model_version"]],
                                  on="candidate_id", how="left") if len(scored) else candidates.assign(
        real_probability=np.nan, model_version=None)
    keep = (candidates["flags"].fillna(0).astype(int) & config.exclude_flags) == 0
    if config.min_real_probability is not None:
        keep &= ~(candidates.real_probability < config.min_real_probability)
    candidates = candidates[keep]
    differences = database.read_nights("difference_images", [night]).set_index("frame_id")
    frames = database.read_nights("calibrated_frames", [night]).set_index("frame_id")
    tables, problems = [], []
    for field, group in candidates.groupby("field"):
        try:
            scale = grids.pixel_scale(field, night)
            xs, ys, errs = [], [], []
            for frame_id, rows in group.groupby("frame_id", sort=False):
                difference = differences.loc[frame_id]
                gmap = grids.map_for(field, difference.reference_version, difference.reference_path, night)
                x, y = gmap.to_stable(rows.x, rows.y)
                xs.append(pd.Series(x, rows.index))
                ys.append(pd.Series(y, rows.index))
                errs.append(pd.Series(gmap.scale * centroid_error(rows.fwhm, rows.snr, difference.registration_rms),
                                      rows.index))
        except Exception as error:  # one field's failure must not sink the night
            problems.append(f"{field}: {type(error).__name__}: {error}")
            continue
        detections = group.assign(x=pd.concat(xs), y=pd.concat(ys), position_err_px=pd.concat(errs),
                                  mjd_obs=group.frame_id.map(frames.mjd_obs))
        earlier = database.read_night_range("object_detections", night_before(night, config.lookback_nights),
                                            night_before(first_run_night), field=field)
        earlier = pd.concat([t for t in (earlier, earlier_in_run.get(field)) if t is not None and len(t)],
                            ignore_index=True) if len(earlier) or field in earlier_in_run else earlier
        rules = AssociationRules(radius_min=config.radius_min_arcsec / scale,
                                 radius_max=config.radius_max_arcsec / scale, n_sigma=config.n_sigma,
                                 max_rate=config.max_rate_arcsec_per_min / scale)
        associated = associate_night(detections, static_objects(earlier), field, night, rules)
        associated["night"] = night
        table = associated[columns]
        earlier_in_run[field] = pd.concat([t for t in (earlier_in_run.get(field), table) if t is not None],
                                          ignore_index=True)
        tables.append(table)
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=columns)
    metadata = {"detections": len(table), "objects": int(table.object_id.nunique()),
                "moving_objects": int(table[table.moving.astype(bool)].object_id.nunique()) if len(table) else 0,
                "candidates_left_out": int((~keep).sum())}
    if problems:
        metadata["fields_not_associated"] = MetadataValue.md("\n".join(f"- {p}" for p in problems))
    return table, metadata


@nightly_asset(kinds={"sql"})
def object_detections(
    context: AssetExecutionContext, config: ObjectsConfig, candidate_detections: pd.DataFrame,
    scored_detections: pd.DataFrame, object_store: ObjectStoreResource, database: DatabaseResource,
):
    """Each candidate placed on its field's stable grid and associated with an object.

    A static object (same place within 1.0–1.5″, the radius from the astrometric errors) across frames
    and nights, or a moving one (a tracklet of the night); ids stable across nights and re-runs.
    Candidates flagged at the image border are left out.
    """
    grids = GridCache(object_store.open(), database)
    earlier_in_run: dict[str, pd.DataFrame] = {}
    first = min(context.partition_keys)
    yield from for_each_night(context, lambda night: associate_objects_night(
        night, config, night_rows(candidate_detections, night), night_rows(scored_detections, night), grids,
        database, earlier_in_run, first), no_checks,
        upstream={"candidate_detections": candidate_detections}, database=database)


def summarise_objects(detections: pd.DataFrame) -> pd.DataFrame:
    """One row per object from all its detections so far (``object_detections`` rows)."""
    detections = detections.sort_values("mjd_obs")
    weight = 1.0 / np.clip(detections.position_err_px.fillna(0.5).to_numpy(float), 0.02, None) ** 2
    detections = detections.assign(w=weight, wx=weight * detections.x, wy=weight * detections.y)
    scored = detections[detections.real_probability.notna()]
    latest = scored.groupby("object_id").last()[["real_probability", "model_version"]]
    grouped = detections.groupby("object_id")
    table = grouped.agg(field=("field", "first"), ra=("ra", "mean"), dec=("dec", "mean"), w=("w", "sum"),
                        wx=("wx", "sum"), wy=("wy", "sum"), first_mjd=("mjd_obs", "min"), last_mjd=("mjd_obs", "max"),
                        first_night=("night", "min"), last_night=("night", "max"),
                        n_detections=("candidate_id", "nunique"), moving=("moving", "any"))
    table = table.assign(x=table.wx / table.w, y=table.wy / table.w, position_err_px=1 / np.sqrt(table.w))
    table = table.join(latest).reset_index()
    return table.assign(ssnamenr=None)


def objects_night(night: str, detections: pd.DataFrame, database: DatabaseResource,
                  lookback_nights: int) -> tuple[pd.DataFrame, dict]:
    """One night's ``transient_objects``: the objects detected tonight, with their whole history."""
    columns = list(schema.transient_objects.c.keys())
    if detections.empty:
        return pd.DataFrame(columns=columns), {"objects": 0}
    history = [detections]
    for field in detections.field.unique():
        earlier = database.read_night_range("object_detections", night_before(night, lookback_nights),
                                            night_before(night), field=field)
        history.append(earlier[earlier.object_id.isin(detections.object_id)])
    table = summarise_objects(pd.concat([h for h in history if len(h)], ignore_index=True)).assign(night=night)
    table["moving"] = table.moving.astype(bool)
    new = table.first_night == night
    return table[columns], {
        "objects": len(table), "new_objects": int(new.sum()), "moving_objects": int(table.moving.sum()),
        "objects_with_3_or_more_detections": int((table.n_detections >= 3).sum()),
        "scored_objects": int(table.real_probability.notna().sum()),
    }


@nightly_asset(kinds={"sql"})
def transient_objects(
    context: AssetExecutionContext, config: ObjectsConfig, object_detections: pd.DataFrame,
    database: DatabaseResource,
):
    """The objects detected tonight: mean position (sky and stable grid), first and last detection, number of
    detections, the champion's latest real probability and its model version, moving or static."""
    yield from for_each_night(context, lambda night: objects_night(
        night, night_rows(object_detections, night), database, config.lookback_nights), no_checks,
        upstream={"object_detections": object_detections}, database=database)
