"""``forced_photometry``: PSF photometry at every confirmed static object's position on each difference of its
field — the light curve, with upper limits and a baseline from the epochs before the object appeared.

Tonight's differences measure every static object of their field with at least ``min_detections``
detections; an object confirmed tonight is also measured on the field's differences of the
``history_nights`` before (its pre-discovery epochs, which set its baseline: :mod:`astrid_assets.science.objects.
lightcurve`). Positions come from the field's stable grid, mapped onto each difference's reference grid.
"""


import io

import numpy as np
import pandas as pd
from astropy.io import fits
from dagster import AssetExecutionContext, Config, MetadataValue

from astrid_assets.defs.nightly import for_each_night, night_rows, nightly_asset
from astrid_assets.defs.objects import EARLIEST, GridCache, night_before, no_checks
from astrid_assets.io import schema
from astrid_assets.io.object_store import ObjectStore
from astrid_assets.previews import markdown_image
from astrid_assets.resources import DatabaseResource, ObjectStoreResource
from astrid_assets.science.objects.lightcurve import baseline_correct, to_magnitudes
from astrid_assets.science.objects.plot import light_curve_png
from astrid_assets.science.photometry.forced import psf_photometry


class ForcedPhotometryConfig(Config):
    min_detections: int = 2  #: objects detected fewer times are not measured (single detections: mostly noise)
    history_nights: int = 60  #: a newly confirmed object is measured on the field's differences this far back
    min_baseline_epochs: int = 2  #: fewest pre-discovery epochs of a reference version that set its baseline
    detection_snr: float = 5.0  #: an epoch below this S/N is an upper limit
    max_plots: int = 4  #: light curves drawn per night (objects detected tonight, most detections first)


def measure_difference(store: ObjectStore, row, objects: pd.DataFrame, grids: GridCache, night: str) -> pd.DataFrame:
    """Raw forced PSF fluxes of ``objects`` (stable-grid ``x, y``) on one difference (a ``difference_images`` row).

    The error is the PSF fit's (the difference's variance map) with the difference's PSF-model error ε
    (``PSFERR``, calibrated on its bright stars) times the flux added in quadrature.
    """
    with fits.open(io.BytesIO(store.get(row.path))) as hdus:  # only the extensions photometry needs
        header = hdus["DIFF"].header
        image, variance, mask, psf = (hdus[name].data for name in ("DIFF", "VARIANCE", "MASK", "PSF"))
    gmap = grids.map_for(row.field, row.reference_version, row.reference_path, night)
    x, y = gmap.from_stable(objects.x.to_numpy(float), objects.y.to_numpy(float))
    flux, flux_err = psf_photometry(image.astype(np.float32), variance.astype(np.float32), psf.astype(np.float64),
                                    x, y, mask.astype(np.uint16))
    # the difference's calibrated PSF-model error ε (PSFERR) scales with the source: added in quadrature
    flux_err = np.hypot(flux_err, float(header.get("PSFERR", 0.0)) * np.abs(flux))
    return pd.DataFrame({
        "object_id": objects.object_id.to_numpy(), "frame_id": row.frame_id, "field": row.field,
        "mjd_obs": header.get("MJD-OBS", np.nan), "filter": header.get("FILTER"), "flux": flux, "flux_err": flux_err,
        "zero_point": header.get("MAGZP", np.nan), "exptime": header.get("EXPTIME", np.nan),
        "reference_version": row.reference_version,
    })


def forced_night(
    night: str, config: ForcedPhotometryConfig, objects_tonight: pd.DataFrame, store: ObjectStore,
    grids: GridCache, database: DatabaseResource, in_run: dict[str, pd.DataFrame], first_run_night: str,
) -> tuple[pd.DataFrame, dict]:
    """One night's ``forced_photometry`` rows and metadata."""
    columns = list(schema.forced_photometry.c.keys())
    differences = database.read_nights("difference_images", [night])
    differences = differences[differences.status == "ok"]
    tables, plots, problems = [], [], []
    for field, tonight in differences.groupby("field"):
        objects = database.read_night_range("transient_objects", EARLIEST, night, field=field)
        objects = objects[~objects.moving.fillna(False).astype(bool)].sort_values("night").groupby("object_id").last()
        objects = objects[objects.n_detections >= config.min_detections].reset_index()
        if objects.empty:
            continue
        earlier = _earlier_rows(database, field, first_run_night, in_run)
        earlier = earlier[earlier.object_id.isin(objects.object_id)]
        new = objects[~objects.object_id.isin(earlier.object_id)]
        epochs = [tonight.assign(for_new_only=False)]
        if len(new):
            history = database.read_night_range("difference_images", night_before(night, config.history_nights),
                                                night_before(night), field=field)
            epochs.append(history[history.status == "ok"].assign(for_new_only=True))
        measured = []
        for row in pd.concat(epochs, ignore_index=True).itertuples():
            try:
                measured.append(measure_difference(store, row, new if row.for_new_only else objects, grids, night))
            except Exception as error:  # one unreadable difference or untied grid: the others still measure
                problems.append(f"{row.frame_id}: {type(error).__name__}: {error}")
        if not measured:
            continue
        raw = pd.concat(measured, ignore_index=True)
        # earlier rows back to raw fluxes, for the baseline of each reference version
        before = earlier.assign(flux=earlier.flux + earlier.baseline.fillna(0.0))
        first_mjd = objects.set_index("object_id").first_mjd
        for object_id, rows in raw.groupby("object_id"):
            history = pd.concat([before[before.object_id == object_id].assign(tonight=False),
                                 rows.assign(tonight=True)], ignore_index=True)
            corrected = baseline_correct(history, float(first_mjd[object_id]), config.min_baseline_epochs)
            tables.append(corrected[corrected.tonight.astype(bool)])
        detected_tonight = objects[objects.night == night].sort_values("n_detections", ascending=False)
        plots += [(o.object_id, o.first_mjd) for o in detected_tonight.head(config.max_plots).itertuples()]
    if not tables:
        return pd.DataFrame(columns=columns), {"epochs": 0, "objects": 0, **_problems(problems)}
    table = to_magnitudes(pd.concat(tables, ignore_index=True), config.detection_snr).assign(night=night)
    table = table.drop_duplicates(["object_id", "frame_id"])[columns]
    unmeasured = int(table.flux.isna().sum())  # off the difference, or on too few usable pixels
    table = table[table.flux.notna()].reset_index(drop=True)
    for field, rows in table.groupby("field"):
        in_run[field] = pd.concat([t for t in (in_run.get(field), rows) if t is not None], ignore_index=True)
    metadata = {"epochs": len(table), "objects": int(table.object_id.nunique()),
                "detections": int(table.detected.sum()), "upper_limits": int((~table.detected.astype(bool)).sum()),
                "positions_off_or_masked": unmeasured, **_problems(problems)}
    curves = []
    for object_id, first_mjd in plots[: config.max_plots]:
        field = table.loc[table.object_id == object_id, "field"].iloc[0]
        rows = _earlier_rows(database, field, first_run_night, in_run)
        curves.append((rows[rows.object_id == object_id].sort_values("mjd_obs"), object_id, first_mjd))
    if curves:
        key = f"forced_photometry/{night}/light_curves.png"
        png = light_curve_png(curves)
        store.put(key, png)
        metadata["light_curves"] = MetadataValue.md(markdown_image(png, "light curves of tonight's objects"))
        metadata["light_curves_key"] = key
    return table, metadata


def _earlier_rows(database: DatabaseResource, field: str, first_run_night: str,
                  in_run: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The field's forced photometry stored before the run, and of the run's nights measured so far."""
    stored = database.read_night_range("forced_photometry", EARLIEST, night_before(first_run_night), field=field)
    return pd.concat([t for t in (stored, in_run.get(field)) if t is not None and len(t)], ignore_index=True) \
        if field in in_run else stored


def _problems(problems: list[str]) -> dict:
    return {"not_measured": MetadataValue.md("\n".join(f"- {p}" for p in problems))} if problems else {}


@nightly_asset(kinds={"sql", "png"})
def forced_photometry(
    context: AssetExecutionContext, config: ForcedPhotometryConfig, transient_objects: pd.DataFrame,
    object_store: ObjectStoreResource, database: DatabaseResource,
):
    """PSF photometry at every confirmed static object's position on every difference of its field.

    Flux and error (e- of the new frame), S/N, 5σ limit and magnitudes where the frame has a zero point;
    epochs before the first detection are kept (upper limits unless the object was already there) and set
    the baseline subtracted from each reference version's epochs. A light-curve PNG per object detected
    tonight (up to ``max_plots``, most detected first) goes to the object store
    (``forced_photometry/<night>/light_curves.png``) and the metadata.
    """
    store = object_store.open()
    grids = GridCache(store, database)
    in_run: dict[str, pd.DataFrame] = {}
    first = min(context.partition_keys)

    def night_fn(night: str) -> tuple[pd.DataFrame, dict]:
        table, metadata = forced_night(night, config, night_rows(transient_objects, night), store, grids, database,
                                       in_run, first)
        if "light_curves" in metadata:  # each night's own materialization shows its light curves, in a range too
            context.add_asset_metadata({k: metadata[k] for k in ("light_curves", "light_curves_key")},
                                       partition_key=night)
        return table, metadata

    yield from for_each_night(context, night_fn, no_checks,
        upstream={"transient_objects": transient_objects}, database=database)
