"""``reference_images`` and ``difference_images``: deep references per field, ZOGY differences per frame.

References are partitioned by night like the rest of the chain: partition N holds, for each field
observed on night N, the reference that night is differenced against. It is the co-add of the
best usable frames of that field from the configured reference window, restricted to nights
before N. Its object key is a hash of the frames it co-adds, so once the window is complete every
later night finds the same key and reuses the stored reference instead of co-adding again; a
first run on an empty store builds what the window's processed nights allow, and a night with
nothing to build from says so in its metadata.
"""


import hashlib
import io
from datetime import date

import pandas as pd
from astropy.io import fits
from dagster import AssetExecutionContext, Config, MetadataValue

from astrid_assets.defs.nightly import for_each_night, night_rows, nightly_asset
from astrid_assets.defs.quality_checks import (
    DIFFERENCE_IMAGES_CHECKS,
    REFERENCE_IMAGES_CHECKS,
    S_CORR_STD_RANGE,
    difference_images_checks,
    reference_images_checks,
    s_corr_outside_range,
)
from astrid_assets.io import schema
from astrid_assets.io.object_store import ObjectStore
from astrid_assets.previews import difference_preview, markdown_image
from astrid_assets.resources import DatabaseResource, ObjectStoreResource
from astrid_assets.science import masks
from astrid_assets.science.frames import provenance_cards, read_extensions, to_fits_bytes
from astrid_assets.science.pipeline import (
    CalibratedImage,
    Reference,
    build_reference,
    difference_frame,
)


class ReferenceConfig(Config):
    """Which frames make a field's reference."""

    window_start: str = "2024-01-01"  #: first night of the reference window (UTC date)
    window_end: str = "2024-01-05"  #: last night of the reference window
    max_frames: int = 10  #: best frames (FWHM, depth) co-added
    min_frames: int = 2  #: fewer usable frames than this: no reference yet


class DifferencingConfig(Config):
    method: str = "zogy"  #: ``zogy`` (Zackay, Ofek & Gal-Yam 2016) or ``classic`` (PSF-matched)


def window_nights(config: ReferenceConfig, night: str) -> list[str]:
    """Nights of the reference window strictly before ``night``."""
    first, last = date.fromisoformat(config.window_start), date.fromisoformat(config.window_end)
    last = min(last, date.fromordinal(date.fromisoformat(night).toordinal() - 1))
    return [date.fromordinal(d).isoformat() for d in range(first.toordinal(), last.toordinal() + 1)]


def load_calibrated(store: ObjectStore, path: str) -> CalibratedImage:
    return CalibratedImage.from_extensions(read_extensions(store.get(path)))


def reference_for_field(
    field: str, frames: pd.DataFrame, store: ObjectStore, config: ReferenceConfig, night: str
) -> dict:
    """The ``reference_images`` row for one field: reuse the stored co-add or build it."""
    row = {"night": night, "field": field}
    if len(frames) < config.min_frames:
        window = f"{config.window_start}…{config.window_end} before {night}"
        return {**row, "status": "missing", "problem": (
            f"no reference yet: {len(frames)} usable frame(s) of field {field} in the reference window "
            f"{window} (need {config.min_frames}); process those nights first")}
    frames = frames.sort_values("frame_id")
    digest = hashlib.sha256(",".join(frames.path).encode()).hexdigest()[:16]
    key = f"reference_images/{field}/{digest}.fits"
    if store.exists(key):
        header = fits.getheader(io.BytesIO(store.get(key)))
        return {**row, "path": key, "n_frames": header["NFRAMES"], "fwhm_px": header["FWHM"],
                "input_frames": header.get("INPUTS", ""), "status": "ok"}
    images = [load_calibrated(store, path) for path in frames.path]
    reference, used = build_reference(images, frames.fwhm_px.tolist(), frames.depth_mag.tolist(), config.max_frames)
    inputs = ",".join(frames.frame_id.iloc[used])
    reference.header["INPUTS"] = inputs[:68]
    reference.header.extend(provenance_cards("reference_images", night), update=True)
    store.put(key, to_fits_bytes(reference.to_hdus()))
    return {**row, "path": key, "n_frames": len(used), "fwhm_px": float(reference.header["FWHM"]),
            "input_frames": inputs, "status": "ok"}


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
):
    """For each field observed tonight, the deep reference it is differenced against.

    An inverse-variance weighted, sigma-clipped co-add of the best usable frames of the field
    from the reference window (nights before tonight), registered onto the best frame's grid,
    with its PSF; see the module docstring for how references are reused.
    """
    store = object_store.open()
    yield from for_each_night(context, lambda night: references_night(
        context, night, config, night_rows(calibrated_frames, night), store, database,
    ), reference_images_checks)


def references_night(
    context: AssetExecutionContext, night: str, config: ReferenceConfig, calibrated_frames: pd.DataFrame,
    store: ObjectStore, database: DatabaseResource,
) -> tuple[pd.DataFrame, dict]:
    """One night's ``reference_images`` rows and metadata."""
    fields = sorted(calibrated_frames.loc[calibrated_frames.status == "ok", "field"].unique())
    window = database.read_nights("calibrated_frames", window_nights(config, night))
    usable = window[(window.status == "ok") & window.usable.astype(bool)] if len(window) else window
    rows = []
    for field in fields:
        try:
            rows.append(reference_for_field(field, usable[usable.field == field], store, config, night))
        except Exception as error:  # one field's failure must not sink the night
            problem = f"{type(error).__name__}: {error}"
            context.log.warning(f"night {night}, field {field}: reference failed: {problem}")
            rows.append({"night": night, "field": field, "status": "failed", "problem": problem})
    table = pd.DataFrame(rows, columns=list(schema.reference_images.c.keys()))
    return table, {
        "fields": len(table),
        "references": int((table.status == "ok").sum()),
        "without_reference": MetadataValue.md(
            "\n".join(f"- {r.field}: {r.problem}" for r in table[table.status != "ok"].itertuples()) or "none"
        ),
    }


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
    ), difference_images_checks)


def difference_night(
    context: AssetExecutionContext, night: str, config: DifferencingConfig, calibrated_frames: pd.DataFrame,
    reference_images: pd.DataFrame, store: ObjectStore,
) -> tuple[pd.DataFrame, dict]:
    """One night's ``difference_images`` rows and metadata."""
    references = reference_images[reference_images.status == "ok"].set_index("field")
    frames = calibrated_frames[(calibrated_frames.status == "ok") & calibrated_frames.usable.astype(bool)]
    loaded: dict[str, tuple[Reference, fits.Header]] = {}
    rows, preview = [], None
    for frame in frames.itertuples():
        base = {"night": night, "frame_id": frame.frame_id, "field": frame.field, "calibrated_path": frame.path,
                "method": config.method}
        if frame.field not in references.index:
            reason = reference_images.set_index("field").problem.get(frame.field, "no reference row")
            rows.append({**base, "status": "skipped", "problem": f"field {frame.field} has no reference: {reason}"})
            continue
        reference_path = references.loc[frame.field, "path"]
        try:
            if frame.field not in loaded:
                reference = Reference.from_extensions(read_extensions(store.get(reference_path)))
                loaded[frame.field] = (reference, reference.header)
            reference, reference_header = loaded[frame.field]
            calibrated = load_calibrated(store, frame.path)
            difference = difference_frame(calibrated, reference, method=config.method)
        except Exception as error:  # registration / PSF failures skip this frame only
            problem = f"{type(error).__name__}: {error}"
            context.log.warning(f"night {night}, frame {frame.frame_id}: not differenced: {problem}")
            rows.append({**base, "reference_path": reference_path, "status": "skipped", "problem": problem})
            continue
        header = reference.wcs.to_header(relax=True)
        header["FRAMEID"] = frame.frame_id
        header["NEWFWHM"] = (difference.new_fwhm, "FWHM of the new frame's PSF, px")
        header["REFPATH"] = reference_path[-68:]
        for card in ("MAGZP", "EXPTIME", "MJD-OBS", "DATE-OBS", "FILTER"):
            if card in calibrated.header:
                header[card] = calibrated.header[card]
        header.extend(provenance_cards("difference_images", night), update=True)
        path = store.put_versioned(f"difference_images/{night}/{frame.frame_id}.fits",
                                   to_fits_bytes(difference.to_hdus(header)))
        rows.append({
            **base, "path": path, "reference_path": reference_path, "flux_ratio": difference.flux_ratio,
            "psf_fwhm": difference.psf_fwhm, "new_fwhm": difference.new_fwhm, "s_corr_std": difference.s_corr_std,
            "registration_rms": difference.registration_rms,
            "masked_fraction": float(((difference.mask & masks.UNUSABLE) != 0).mean()),
            "status": "ok", "problem": None,
        })
        if s_corr_outside_range(difference.s_corr_std):
            rows[-1].update(status="rejected", problem=(
                f"robust std of S_corr {difference.s_corr_std:.3f} outside {S_CORR_STD_RANGE}: "
                "subtraction not trusted"))
            context.log.warning(f"night {night}, frame {frame.frame_id}: {rows[-1]['problem']}")
            continue
        if preview is None:
            preview = difference_preview(difference.new, difference.difference, difference.s_corr,
                                         f"{frame.frame_id} ({config.method})")
    table = pd.DataFrame(rows, columns=list(schema.difference_images.c.keys()))
    ok = table[table.status == "ok"]
    not_done = table[table.status != "ok"]
    metadata = {
        "differenced": len(ok),
        "not_differenced": len(not_done),
        "why_not_differenced": MetadataValue.md(
            "\n".join(f"- `{r.frame_id}`: {r.problem}" for r in not_done.itertuples()) or "none"
        ),
        "median_s_corr_std": float(ok.s_corr_std.median()) if len(ok) else None,
        "median_registration_rms_px": float(ok.registration_rms.median()) if len(ok) else None,
    }
    if len(frames) == 0:
        metadata["why_not_differenced"] = MetadataValue.md("no usable calibrated frames tonight")
    if preview is not None:
        metadata["preview"] = MetadataValue.md(markdown_image(preview, "difference preview"))
    return table, metadata

