"""``calibrated_frames``: bias, dark and flat correction, masks, noise maps and frame quality."""

import numpy as np
import pandas as pd
from astropy.io import fits
from dagster import AssetExecutionContext, MetadataValue

from astrid_assets.defs.nightly import for_each_night, night_rows, nightly_asset
from astrid_assets.defs.quality_checks import CALIBRATED_FRAMES_CHECKS, calibrated_frames_checks
from astrid_assets.io import schema
from astrid_assets.io.object_store import ObjectStore
from astrid_assets.resources import ObjectStoreResource
from astrid_assets.science.calibrate import MasterCalibrations, build_masters, calibrate_frame
from astrid_assets.science.frames import FrameError, provenance_cards, read_frame, to_fits_bytes
from astrid_assets.science.quality import measure_quality, verdict


def night_masters(frames: pd.DataFrame, store: ObjectStore, night: str) -> MasterCalibrations | None:
    """Master bias, dark and flat from the night's calibration frames; None if it has none.

    A night without bias and flat frames is taken to hold frames already reduced by their
    archive (SkyView and MAST deliver calibrated images); a night with some but not all
    calibration types is an error naming what is missing.
    """
    by_type = {kind: frames[frames.imagetyp == kind] for kind in ("bias", "dark", "flat")}
    if all(group.empty for group in by_type.values()):
        return None
    missing = [kind for kind in ("bias", "flat") if by_type[kind].empty]
    if missing:
        raise ValueError(f"night {night}: calibration frames present but no {' or '.join(missing)} frames")

    def images(group: pd.DataFrame) -> list[np.ndarray]:
        return [read_frame(store.get(row.path), night, row.frame_id)[0] for row in group.itertuples()]

    darks = list(zip(images(by_type["dark"]), by_type["dark"].exptime.tolist(), strict=True))
    return build_masters(images(by_type["bias"]), darks, images(by_type["flat"]))


def archive_reduced(shape: tuple[int, int]) -> MasterCalibrations:
    """Identity calibrations for frames already reduced by their archive."""
    return MasterCalibrations(
        bias=np.zeros(shape, np.float32),
        dark=np.zeros(shape, np.float32),
        flat=np.ones(shape, np.float32),
        bad_pixels=np.zeros(shape, bool),
    )


def calibrated_hdus(calibrated, header: fits.Header, night: str) -> list:
    """SCI (e-), MASK (bit flags), VARIANCE (e-²), BKG and BKGRMS (e-) extensions with the WCS."""
    header = header.copy()
    header.extend(provenance_cards("calibrated_frames", night), update=True)
    header["BUNIT"] = ("electron", "pixel values in electrons")
    extensions = [
        fits.PrimaryHDU(calibrated.science.astype(np.float32), header),
        fits.ImageHDU(calibrated.mask.astype(np.uint16), name="MASK"),
        fits.ImageHDU(calibrated.variance.astype(np.float32), name="VARIANCE"),
        fits.ImageHDU(calibrated.background.astype(np.float32), name="BKG"),
        fits.ImageHDU(calibrated.background_rms.astype(np.float32), name="BKGRMS"),
    ]
    extensions[0].name = "SCI"
    return extensions


@nightly_asset(
    kinds={"fits", "sql"},
    check_specs=CALIBRATED_FRAMES_CHECKS,
)
def calibrated_frames(
    context: AssetExecutionContext,
    raw_observations: pd.DataFrame,
    object_store: ObjectStoreResource,
):
    """Calibrated science frames with masks, variance and background maps, and quality rows.

    Master bias, dark and flat are sigma-clipped combines of the night's calibration frames;
    each science frame is bias-, dark- and flat-corrected into electrons, cosmic rays are masked
    with L.A.Cosmic (van Dokkum 2001), and FWHM, sky, noise, elongation, depth and a quality
    score are measured. A frame too poor to use keeps its row with ``usable = False`` and the
    reasons; a frame that fails to calibrate is reported with ``status = failed`` and the rest
    of the night goes on.
    """
    store = object_store.open()
    yield from for_each_night(context, lambda night: calibrate_night(
        context, night, night_rows(raw_observations, night), store), calibrated_frames_checks)


def calibrate_night(
    context: AssetExecutionContext, night: str, raw_observations: pd.DataFrame, store: ObjectStore
) -> tuple[pd.DataFrame, dict]:
    """One night's ``calibrated_frames`` rows and metadata."""
    accepted = raw_observations[raw_observations.status == "ok"]
    science = accepted[accepted.imagetyp == "object"]
    masters = night_masters(accepted, store, night)
    rows, failures = [], []
    for frame in science.itertuples():
        base = {"night": night, "frame_id": frame.frame_id, "field": frame.field,
                "filter": frame.filter, "mjd_obs": frame.mjd_obs}
        try:
            raw_image, header = read_frame(store.get(frame.path), night, frame.frame_id)
            frame_masters = masters if masters is not None else archive_reduced(raw_image.shape)
            if frame_masters.bias.shape != raw_image.shape:
                raise FrameError(night, frame.frame_id, f"shape {raw_image.shape} differs from the "
                                 f"night's calibration frames {frame_masters.bias.shape}")
            calibrated = calibrate_frame(raw_image, header, frame_masters)
            quality = measure_quality(calibrated, header)
            usable, reasons = verdict(quality)
        except Exception as error:  # one bad frame must not sink the night
            problem = error.problem if isinstance(error, FrameError) else f"{type(error).__name__}: {error}"
            context.log.warning(f"night {night}, frame {frame.frame_id}: calibration failed: {problem}")
            failures.append(f"- `{frame.frame_id}`: {problem}")
            rows.append({**base, "usable": False, "status": "failed", "problem": problem})
            continue
        content = to_fits_bytes(calibrated_hdus(calibrated, header, night))
        path = store.put_versioned(f"calibrated_frames/{night}/{frame.frame_id}.fits", content)
        rows.append({
            **base, **{k: quality.get(k) for k in schema.calibrated_frames.c.keys() if k in quality},
            "path": path, "calibration": "night-masters" if masters is not None else "archive-reduced",
            "zero_point": header.get("MAGZP"), "usable": usable, "reasons": "; ".join(reasons) or None,
            "status": "ok", "problem": None,
        })
    table = pd.DataFrame(rows, columns=list(schema.calibrated_frames.c.keys()))
    ok = table[table.status == "ok"]
    return table, {
        "frames_calibrated": len(ok),
        "usable_frames": int(ok.usable.sum()),
        "failed_frames": len(failures),
        "failures": MetadataValue.md("\n".join(failures) or "none"),
        "median_fwhm_arcsec": float(ok.fwhm_arcsec.median()) if len(ok) else None,
        "median_depth_mag": float(ok.depth_mag.median()) if len(ok) else None,
        "quality": MetadataValue.md(
            ok[["frame_id", "fwhm_arcsec", "sky", "noise", "depth_mag", "quality_score", "usable"]]
            .round(2).to_markdown(index=False) if len(ok) else "no frames"
        ),
    }
