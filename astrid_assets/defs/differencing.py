"""``reference_images`` and ``difference_images``: a reference per field, ZOGY differences per frame.

References are partitioned by night like the rest of the chain: partition N holds, for each field
observed on night N, the reference that night is differenced against. By default it is the co-add
of the field's best usable frames from *any* earlier night within a look-back (no dates to
configure); a field with a single earlier usable frame gets a shallow reference, marked as such.
References are stable: a field keeps its current reference version (the content hash of its input
frames) until a selection of frames promises a clearly deeper co-add, or a person asks for a
rebuild in run config; a pinned window of nights or a pinned list of frames is possible too. Every
difference records the reference version it used. A night whose frames could not be differenced
says why, frame by frame (``reason`` and ``problem``), and fails the ``frames_differenced`` check.
"""


import hashlib
import io
from datetime import date, timedelta

import numpy as np
import pandas as pd
from astropy.io import fits
from dagster import AssetExecutionContext, Config, MetadataValue

from astrid_assets.defs.frames import frame_store, log_failures, stored_reference
from astrid_assets.defs.nightly import for_each_night, night_rows, nightly_asset
from astrid_assets.defs.quality_checks import (
    DIFFERENCE_IMAGES_CHECKS,
    REFERENCE_IMAGES_CHECKS,
    S_CORR_STD_RANGE,
    difference_images_checks,
    reasons_by_night,
    reference_images_checks,
    s_corr_outside_range,
)
from astrid_assets.io import schema
from astrid_assets.io.object_store import ObjectStore
from astrid_assets.pool import FramePool, SerialPool
from astrid_assets.previews import difference_preview, markdown_image
from astrid_assets.resources import DatabaseResource, ObjectStoreResource
from astrid_assets.resources.pool import FramePoolResource
from astrid_assets.science import masks
from astrid_assets.science.astrometry.align import PLACEHOLDER_CARD, is_placeholder
from astrid_assets.science.astrometry.register import RegistrationError
from astrid_assets.science.frames.files import provenance_cards, read_extensions, to_fits_bytes
from astrid_assets.science.pipeline import build_reference, difference_frame
from astrid_assets.science.products import CalibratedFrame
from astrid_assets.science.psf.model import PSFError
from astrid_assets.science.reference.selection import select_reference_frames, version_decision


class ReferenceConfig(Config):
    """Which frames make a field's reference (defaults need no dates)."""

    lookback_nights: int = 3650  #: earlier nights searched for a field's frames
    max_frames: int = 10  #: best frames (FWHM, then depth) co-added
    min_frames: int = 3  #: fewer input frames than this: the reference is built but marked shallow
    improvement_mag: float = 0.2  #: a new version only when the best selection is this much deeper
    rebuild: bool = False  #: a person asks for a new version now
    window_start: str | None = None  #: pin a window of nights (UTC dates) instead of the look-back …
    window_end: str | None = None  #: … and its last night
    frames: list[str] = []  #: pin the exact frame ids to co-add
    #: ``mean`` (clipped weighted mean) or ``proper`` (Zackay & Ofek 2017: optimal depth, one PSF for
    #: frames of different seeing; :mod:`astrid_assets.science.reference.proper_coadd`)
    coadd_method: str = "mean"
    max_fwhm_ratio: float = 1.3  #: frames blurrier than this multiple of the best FWHM are left out


class DifferencingConfig(Config):
    method: str = "zogy"  #: ``zogy`` (Zackay, Ofek & Gal-Yam 2016) or ``classic`` (PSF-matched)


def earlier_nights(config: ReferenceConfig, night: str) -> tuple[str, str]:
    """First and last night (inclusive) searched for the reference frames of ``night``."""
    before = date.fromisoformat(night) - timedelta(days=1)
    if config.window_start or config.window_end:
        first = date.fromisoformat(config.window_start) if config.window_start else date.min
        last = min(date.fromisoformat(config.window_end), before) if config.window_end else before
        return first.isoformat(), last.isoformat()
    return (before - timedelta(days=config.lookback_nights - 1)).isoformat(), before.isoformat()


def load_calibrated(store: ObjectStore, path: str) -> CalibratedFrame:
    return CalibratedFrame.from_extensions(read_extensions(store.get(path)))


def reference_for_field(
    field: str, frames: pd.DataFrame, store: ObjectStore, config: ReferenceConfig, night: str,
    current: dict | None, selection_kind: str,
) -> dict:
    """The ``reference_images`` row for one field: keep the current version, reuse a stored one or build one.

    ``frames`` are the field's usable frames eligible for the reference; ``current`` is the field's
    latest earlier reference row (None if it has none).
    """
    row = {"night": night, "field": field, "selection": selection_kind}
    first, last = earlier_nights(config, night)
    if frames.empty:
        if current is not None and current.get("path") and store.exists(current["path"]):
            return {**row, **_carried(current), "decision": "kept: no newer usable frames"}
        return {**row, "status": "missing", "problem": (
            f"no reference yet: no usable frame of field {field} on an earlier night ({first} … {last}); "
            "this is the field's first usable night")}
    ranked, selection = select_reference_frames(frames, config.max_frames, config.max_fwhm_ratio)
    if selection is None:
        return {**row, "status": "missing", "problem": (
            f"no reference yet: none of {len(frames)} earlier frame(s) of field {field} has a measured FWHM and depth")}
    best, sensitivity = selection.frames, selection.sensitivity
    decision = "built: first reference of the field"
    if current is not None and selection_kind == "auto":
        keep, decision = version_decision(selection, ranked, current, config.improvement_mag, config.rebuild)
        if keep and store.exists(current["path"]):
            return {**row, **_carried(current), "decision": decision}
    elif selection_kind != "auto":
        decision = f"built from {selection_kind}"
    recipe = "" if config.coadd_method == "mean" else f";{config.coadd_method}"  # the mean's digests unchanged
    digest = hashlib.sha256((",".join(sorted(best.path)) + recipe).encode()).hexdigest()[:16]
    key = f"reference_images/{field}/{digest}.fits"
    shallow = len(best) < config.min_frames
    common = {**row, "path": key, "version": digest, "shallow": shallow, "sensitivity": sensitivity,
              "status": "ok", "problem": None}
    if store.exists(key):
        header = fits.getheader(io.BytesIO(store.get(key)))
        return {**common, "n_frames": header["NFRAMES"], "fwhm_px": header["FWHM"],
                "input_frames": header.get("INPUTS", ""), "decision": decision + " (stored version reused)"}
    images = [load_calibrated(store, path) for path in best.path]
    reference, used = build_reference(images, best.fwhm_px.astype(float).tolist(), best.rel_depth.tolist(),
                                      config.max_frames, config.coadd_method, config.max_fwhm_ratio)
    inputs = ",".join(best.frame_id.iloc[used])
    reference.header["INPUTS"] = (inputs, "frames co-added, the anchor (grid) first")  # long: CONTINUE cards
    reference.header["REFVER"] = (digest, "reference version: hash of its input frames")
    reference.header["SHALLOW"] = (shallow, f"fewer than {config.min_frames} frames co-added")
    reference.header.extend(provenance_cards("reference_images", night), update=True)
    store.put(key, to_fits_bytes(reference.to_hdus()))
    return {**common, "n_frames": len(used), "fwhm_px": float(reference.header["FWHM"]), "input_frames": inputs,
            "decision": decision}


def reference_task(store_url: str, field: str, frames: pd.DataFrame, config: ReferenceConfig, night: str,
                   current: dict | None, selection_kind: str) -> dict:
    """:func:`reference_for_field` as a task of the frame pool: the store's URL and the frames' rows in, a row out."""
    return reference_for_field(field, frames, frame_store(store_url), config, night, current, selection_kind)


def _carried(current: dict) -> dict:
    """The columns of an earlier reference row that a night keeping it repeats."""
    keys = ("path", "version", "n_frames", "fwhm_px", "input_frames", "shallow", "sensitivity")
    return {**{k: current.get(k) for k in keys}, "status": "ok", "problem": None}


@nightly_asset(
    kinds={"fits", "sql"},
    check_specs=REFERENCE_IMAGES_CHECKS,
)
def reference_images(
    context: AssetExecutionContext,
    config: ReferenceConfig,
    calibrated_frames: pd.DataFrame,
    object_store: ObjectStoreResource,
    database: DatabaseResource,
    frame_pool: FramePoolResource,
):
    """For each field observed tonight, the reference it is differenced against.

    An inverse-variance weighted, sigma-clipped co-add of the best usable frames of the field
    from earlier nights (look-back, pinned window or pinned frames), on the best frame's grid,
    with its PSF; kept stable across nights (see the module docstring).
    """
    store = object_store.open()
    made: dict[str, dict] = {}  # this run's latest reference per field: later nights of a range build on it
    yield from for_each_night(context, lambda night: references_night(
        context, night, config, night_rows(calibrated_frames, night), store, database, made, frame_pool.open(),
    ), reference_images_checks, upstream={"calibrated_frames": calibrated_frames}, database=database)


def references_night(
    context: AssetExecutionContext, night: str, config: ReferenceConfig, calibrated_frames: pd.DataFrame,
    store: ObjectStore, database: DatabaseResource, made: dict[str, dict] | None = None,
    pool: FramePool | None = None,
) -> tuple[pd.DataFrame, dict]:
    """One night's ``reference_images`` rows and metadata; the fields' references built in ``pool`` (serial: None)."""
    made = {} if made is None else made
    fields = sorted(calibrated_frames.loc[calibrated_frames.status == "ok", "field"].unique())
    first, last = earlier_nights(config, night)
    selection = "pinned-frames" if config.frames else "pinned-window" if (
        config.window_start or config.window_end) else "auto"
    rows: dict[str, dict] = {}
    tasks: dict[str, tuple] = {}
    for field in fields:
        try:
            earlier = database.read_night_range("calibrated_frames", first, last, field=field)
            usable = earlier[(earlier.status == "ok") & earlier.usable.fillna(False).astype(bool)]
            if config.frames:
                usable = usable[usable.frame_id.isin(config.frames)]
            current = made.get(field) or latest_reference(database, field, night, config)
            tasks[field] = (store.url, field, usable.reset_index(drop=True), config, night, current, selection)
        except Exception as error:  # one field's failure must not sink the night
            rows[field] = {"night": night, "field": field, "status": "failed", "selection": selection,
                           "problem": f"{type(error).__name__}: {error}"}
    outcomes = (pool or SerialPool()).run_frames(reference_task, list(tasks.values()), [f"field {f}" for f in tasks])
    for field, outcome in zip(tasks, outcomes, strict=True):
        rows[field] = outcome.value if outcome.ok else {
            "night": night, "field": field, "status": "failed", "problem": outcome.error, "selection": selection}
    for field in fields:
        if rows[field]["status"] == "failed":
            context.log.warning(f"night {night}, field {field}: reference failed: {rows[field]['problem']}")
        if rows[field]["status"] == "ok":
            made[field] = rows[field]
    rows = [rows[field] for field in fields]
    table = pd.DataFrame(rows, columns=list(schema.reference_images.c.keys()))
    ok = table[table.status == "ok"]
    return table, {
        "fields": len(table),
        "references": len(ok),
        "shallow_references": int(ok.shallow.fillna(False).astype(bool).sum()),
        "new_versions": int(ok.decision.fillna("").astype(str).str.startswith(("built", "rebuilt")).sum()),
        "decisions": MetadataValue.md("\n".join(f"- {r.field}: {r.decision} (version {r.version})"
                                                for r in ok.itertuples()) or "none"),
        "without_reference": MetadataValue.md(
            "\n".join(f"- {r.field}: {r.problem}" for r in table[table.status != "ok"].itertuples()) or "none"
        ),
    }


def latest_reference(database: DatabaseResource, field: str, night: str, config: ReferenceConfig) -> dict | None:
    """The field's most recent ``ok`` reference row from an earlier night (None if it has none)."""
    first, last = earlier_nights(ReferenceConfig(lookback_nights=config.lookback_nights), night)
    rows = database.read_night_range("reference_images", first, last, field=field)
    rows = rows[rows.status == "ok"] if len(rows) else rows
    if rows.empty:
        return None
    record = rows.sort_values("night").iloc[-1].to_dict()
    return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in record.items()}


@nightly_asset(
    kinds={"fits", "sql"},
    check_specs=DIFFERENCE_IMAGES_CHECKS,
)
def difference_images(
    context: AssetExecutionContext,
    config: DifferencingConfig,
    calibrated_frames: pd.DataFrame,
    reference_images: pd.DataFrame,
    object_store: ObjectStoreResource,
    database: DatabaseResource,
    frame_pool: FramePoolResource,
):
    """Each usable calibrated frame registered onto its field's reference and subtracted.

    Registration by WCS (refined by bright-star residuals), PSF estimated from the frame's
    stars, then ZOGY: the difference D in new-frame electrons, its PSF P_D, the score S_corr
    normalised to unit variance including the source-noise and astrometric-noise terms
    (Zackay, Ofek & Gal-Yam 2016, eqs. 13–33), and the flux ratio fitted on stars. Stored as
    multi-extension FITS (DIFF, SCORR, VARIANCE, MASK, NEW, PSF) on the reference's WCS.
    A frame without a reference, or whose registration or PSF fails, is skipped with the reason.
    """
    store = object_store.open()
    yield from for_each_night(context, lambda night: difference_night(
        context, night, config, night_rows(calibrated_frames, night), night_rows(reference_images, night), store,
        frame_pool.open(),
    ), difference_images_checks, database=database,
        upstream={"calibrated_frames": calibrated_frames, "reference_images": reference_images})


def failure_reason(error: Exception) -> str:
    """One word for why a frame was not differenced, for counting: ``registration``, ``psf`` or ``subtraction``."""
    if isinstance(error, RegistrationError):
        return "registration"
    if isinstance(error, PSFError):
        return "psf"
    return "subtraction"


def difference_one(store_url: str, night: str, method: str, frame: dict, reference_path: str) -> dict:
    """One calibrated frame (its ``calibrated_frames`` row) registered onto its reference, subtracted and stored:
    its ``difference_images`` row. A task of the frame pool: keys in, a row out.

    A frame whose registration or PSF fails gets a ``skipped`` row with the reason; one whose S_corr is not
    trusted a ``rejected`` row.
    """
    store = frame_store(store_url)
    base = {"night": night, "frame_id": frame["frame_id"], "field": frame["field"],
            "calibrated_path": frame["path"], "method": method}
    try:
        # measured when built; a reference stored before it carried its stars is measured once here
        reference = stored_reference(store_url, reference_path, measured=True)
        calibrated = load_calibrated(store, frame["path"])
        difference = difference_frame(calibrated, reference, method=method)
    except Exception as error:  # registration / PSF failures skip this frame only
        return {**base, "status": "skipped", "reason": failure_reason(error),
                "problem": f"{type(error).__name__}: {error}"}
    header = reference.wcs.to_header(relax=True)
    if is_placeholder(reference.header):
        header[PLACEHOLDER_CARD] = (True, "placeholder WCS: pixel grid only, no sky position")
    header["FRAMEID"] = frame["frame_id"]
    header["NEWFWHM"] = (difference.new_fwhm, "FWHM of the new frame's PSF, px")
    header["REFPATH"] = reference_path[-68:]
    header["REFVER"] = (str(frame["reference_version"]), "reference version")
    for card in ("MAGZP", "EXPTIME", "MJD-OBS", "DATE-OBS", "FILTER"):
        if card in calibrated.header:
            header[card] = calibrated.header[card]
    header.extend(provenance_cards("difference_images", night), update=True)
    path = store.put_versioned(f"difference_images/{night}/{frame['frame_id']}.fits",
                               to_fits_bytes(difference.to_hdus(header)))
    row = {
        **base, "path": path, "flux_ratio": difference.flux_ratio,
        "psf_fwhm": difference.psf_fwhm, "new_fwhm": difference.new_fwhm, "s_corr_std": difference.s_corr_std,
        "registration_rms": difference.registration_rms, "registration": difference.registration,
        "masked_fraction": float(((difference.mask & masks.UNUSABLE) != 0).mean()),
        "status": "ok", "problem": None,
    }
    if s_corr_outside_range(difference.s_corr_std):
        row.update(status="rejected", reason="s_corr_variance", problem=(
            f"robust std of S_corr {difference.s_corr_std:.3f} outside {S_CORR_STD_RANGE}: subtraction not trusted"))
    return row


def stored_preview(store: ObjectStore, path: str, title: str) -> bytes:
    """The difference preview (new frame, D, S_corr) of the difference stored at ``path``."""
    extensions = read_extensions(store.get(path))
    return difference_preview(extensions["NEW"][0], extensions["DIFF"][0], extensions["SCORR"][0], title)


def difference_night(
    context: AssetExecutionContext, night: str, config: DifferencingConfig, calibrated_frames: pd.DataFrame,
    reference_images: pd.DataFrame, store: ObjectStore, pool: FramePool | None = None,
) -> tuple[pd.DataFrame, dict]:
    """One night's ``difference_images`` rows and metadata: one row per science frame of the night; the frames
    differenced in ``pool`` (serial: None).

    Frames that were not differenced keep a row with ``status = skipped`` (or ``rejected`` for an
    untrusted subtraction), a one-word ``reason`` and the ``problem`` in words.
    """
    references = reference_images[reference_images.status == "ok"].set_index("field")
    rows: list[dict] = []
    tasks: dict[int, tuple] = {}
    for frame in calibrated_frames.itertuples():
        base = {"night": night, "frame_id": frame.frame_id, "field": frame.field, "calibrated_path": frame.path,
                "method": config.method}
        if frame.status != "ok":
            rows.append({**base, "status": "skipped", "reason": "calibration_failed",
                         "problem": f"calibration failed: {frame.problem}"})
            continue
        if not bool(frame.usable):
            rows.append({**base, "status": "skipped", "reason": "unusable",
                         "problem": f"frame unusable: {frame.reasons}"})
            continue
        if frame.field not in references.index:
            reason = reference_images.set_index("field").problem.get(frame.field, "no reference row")
            rows.append({**base, "status": "skipped", "reason": "no_reference",
                         "problem": f"field {frame.field}: {reason}"})
            continue
        reference_path = references.loc[frame.field, "path"]
        version = references.loc[frame.field].get("version")
        rows.append({**base, "reference_path": reference_path, "reference_version": version})
        tasks[len(rows) - 1] = (store.url, night, config.method, {
            "frame_id": frame.frame_id, "field": frame.field, "path": frame.path, "reference_version": version,
        }, reference_path)
    outcomes = (pool or SerialPool()).run_frames(difference_one, list(tasks.values()),
                                                 [f"frame {rows[i]['frame_id']}" for i in tasks])
    log_failures(context, night, "differencing", outcomes)
    preview = None
    for index, outcome in zip(tasks, outcomes, strict=True):
        base = rows[index]
        rows[index] = {**base, **outcome.value} if outcome.ok else {
            **base, "status": "skipped", "reason": "subtraction", "problem": outcome.error}
        row = rows[index]
        if row["status"] != "ok":
            verb = "rejected" if row["status"] == "rejected" else "not differenced"
            context.log.warning(f"night {night}, frame {row['frame_id']}: {verb}: {row['problem']}")
        elif preview is None:
            preview = stored_preview(store, row["path"], f"{row['frame_id']} ({config.method})")
    table = pd.DataFrame(rows, columns=list(schema.difference_images.c.keys()))
    ok = table[table.status == "ok"]
    not_done = table[table.status != "ok"]
    reasons = reasons_by_night([night], table)[night]
    if len(table) and ok.empty:
        context.log.error(f"night {night}: {len(table)} science frame(s), none differenced: "
                          + ", ".join(f"{k} {v}" for k, v in reasons.items()))
    metadata = {
        "science_frames": len(table),
        "differenced": len(ok),
        "not_differenced": len(not_done),
        **{f"not_differenced_{reason}": count for reason, count in reasons.items()},
        "why_not_differenced": MetadataValue.md(
            "\n".join(f"- `{r.frame_id}` ({r.reason}): {r.problem}" for r in not_done.itertuples()) or "none"
        ),
        "median_s_corr_std": float(ok.s_corr_std.median()) if len(ok) else None,
        "median_registration_rms_px": float(ok.registration_rms.median()) if len(ok) else None,
        **registration_summary(table),
    }
    if len(table) == 0:
        metadata["why_not_differenced"] = MetadataValue.md("no science frames tonight")
    if preview is not None:
        metadata["preview"] = MetadataValue.md(markdown_image(preview, "difference preview"))
    return table, metadata


def registration_summary(table: pd.DataFrame) -> dict:
    """The night's registration figures: frames that had a reference to register onto, the share registered
    (not refused with ``reason = registration``) and the count per method (``registration``: wcs,
    star-pattern, sparse-stars, correlation)."""
    tried = table[table.reference_path.notna()] if len(table) else table
    registered = tried[tried.reason.fillna("") != "registration"] if len(tried) else tried
    methods = registered.registration.dropna().astype(str).value_counts().to_dict() if len(registered) else {}
    return {
        "registration_attempted": len(tried),
        "registered": len(registered),
        "registration_success_rate": float(len(registered) / len(tried)) if len(tried) else None,
        "registration_methods": MetadataValue.json({str(k): int(v) for k, v in methods.items()}),
    }
