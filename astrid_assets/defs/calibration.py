"""``calibrated_frames``: bias, dark and flat correction, masks, noise maps and frame quality."""

import io
from datetime import date, timedelta
from functools import lru_cache

import numpy as np
import pandas as pd
from astropy.io import fits
from dagster import AssetExecutionContext, MetadataValue

from astrid_assets import settings
from astrid_assets.defs.frames import frame_store, log_failures
from astrid_assets.defs.nightly import for_each_night, night_rows, nightly_asset
from astrid_assets.defs.quality_checks import CALIBRATED_FRAMES_CHECKS, calibrated_frames_checks
from astrid_assets.io import schema
from astrid_assets.io.object_store import ObjectStore
from astrid_assets.pool import FramePool, SerialPool
from astrid_assets.resources import DatabaseResource, ObjectStoreResource
from astrid_assets.resources.pool import FramePoolResource
from astrid_assets.science.calibration.calibrate import calibrate_frame
from astrid_assets.science.calibration.detector import classify_data_state
from astrid_assets.science.calibration.masters import MasterCalibrations, build_masters
from astrid_assets.science.calibration.quality import mark_seeing_outliers, measure_quality, verdict
from astrid_assets.science.frames.files import FrameError, normalised_cards, provenance_cards, read_frame, to_fits_bytes
from astrid_assets.science.frames.headers import CALIBRATION_KINDS, exposure_time
from astrid_assets.science.measurements import measure_frame
from astrid_assets.science.photometry import zeropoints
from astrid_assets.science.products import CalibratedFrame

#: ``calibrated_frames`` keys taken from :attr:`CalibratedFrame.info` (what the reduction found
#: and assumed); written where the table has the column.
INFO_KEYS = (
    "data_state", "gain", "gain_source", "read_noise", "read_noise_source", "saturation", "saturation_source",
    "pedestal", "noise_model", "cr_fwhm_px", "cr_objlim", "cr_pixels",
)


def night_masters(
    frames: pd.DataFrame, store: ObjectStore, night: str, problems: list[str] | None = None
) -> MasterCalibrations | None:
    """Master bias, dark and flat from the night's calibration frames; None if it has none usable.

    A night without calibration frames is taken to hold frames reduced elsewhere (SkyView and
    MAST deliver calibrated images) or raw frames nobody gave calibrations for; the science
    frames' data state (:func:`~astrid_assets.science.calibration.calibrate.classify_data_state`) tells which.
    Each calibration frame is checked on its own: one that cannot be read, a dark without an
    exposure time (``EXPTIME``/``EXPOSURE``...), or a frame whose shape differs from the
    night's majority is left out and its problem appended to ``problems`` (``FrameError``
    wording: night, frame, problem).  If no bias or no flat frame is left, the night has no
    masters and ``problems`` says what is missing; the science frames are then calibrated
    without them rather than the night failing.
    """
    problems = [] if problems is None else problems
    calibration = frames[frames.imagetyp.isin(CALIBRATION_KINDS)]
    if calibration.empty:
        return None
    loaded: dict[str, list[tuple[str, np.ndarray, float | None]]] = {kind: [] for kind in CALIBRATION_KINDS}
    for row in calibration.itertuples():
        try:
            image, header = read_frame(store.get(row.path), night, row.frame_id)
            exptime = exposure_time(header)
            if row.imagetyp == "dark" and not (exptime and exptime > 0):
                raise FrameError(night, row.frame_id, "dark frame without a positive exposure time")
        except FrameError as error:
            problems.append(str(error))
            continue
        except Exception as error:  # the object store or FITS layer failing on one file
            problems.append(str(FrameError(night, row.frame_id, f"{type(error).__name__}: {error}")))
            continue
        loaded[row.imagetyp].append((row.frame_id, image, exptime))
    shapes = [image.shape for group in loaded.values() for _, image, _ in group]
    if shapes:
        common = max(set(shapes), key=shapes.count)
        for kind, group in loaded.items():
            for frame_id, image, _ in group:
                if image.shape != common:
                    problems.append(str(FrameError(night, frame_id, f"{kind} frame shape {image.shape} differs from "
                                                   f"the night's calibration frames {common}")))
            loaded[kind] = [entry for entry in group if entry[1].shape == common]
    missing = [kind for kind in ("bias", "flat") if not loaded[kind]]
    if missing:
        problems.append(f"night {night}: calibration frames present but no usable {' or '.join(missing)} frames: "
                        f"science frames calibrated without masters")
        return None
    return build_masters(
        [image for _, image, _ in loaded["bias"]],
        [(image, float(exptime)) for _, image, exptime in loaded["dark"]],
        [image for _, image, _ in loaded["flat"]],
        threads=settings.available_cores(),  # the frame pool waits for the masters: their combines use the cores
    )


def archive_reduced(shape: tuple[int, int]) -> MasterCalibrations:
    """Identity calibrations for frames reduced elsewhere, or raw frames without calibration frames."""
    return MasterCalibrations(
        bias=np.zeros(shape, np.float32),
        dark=np.zeros(shape, np.float32),
        flat=np.ones(shape, np.float32),
        bad_pixels=np.zeros(shape, bool),
    )


def _card_text(text: str | None) -> str:
    return ("" if text is None else str(text))[:68]


def calibrated_hdus(calibrated: CalibratedFrame, header: fits.Header, night: str) -> list:
    """SCI (e-), MASK (bit flags), VARIANCE (e-²), BKG and BKGRMS (e-) extensions with the WCS, and the
    frame's stars and PSF (``STARS``, ``PSF``, ``PSFSTARS``: :func:`~astrid_assets.science.measurements.measure_frame`).

    The SCI header records the data state and the gain, read noise and saturation used, with
    where they came from (``DATASTAT``, ``CALGAIN``/``GAINSRC``, ``CALRDN``/``RDNSRC``,
    ``CALSAT``/``SATSRC``).  ``BUNIT`` is ``electron``, or ``adu`` where the gain is unknown
    (sky-subtracted data left in their own units).
    """
    header = header.copy()
    header.extend(provenance_cards("calibrated_frames", night), update=True)
    info = calibrated.info or {}
    unknown_gain = str(info.get("gain_source", "")).startswith("assumed 1 (sky-subtracted")
    header["BUNIT"] = ("adu", "gain unknown: the frame's own units") if unknown_gain else (
        "electron", "pixel values in electrons")
    if info:
        cards = [
            ("DATASTAT", info.get("data_state"), "data state: raw | reduced | sky-subtracted"),
            ("CALGAIN", info.get("gain"), "[e-/ADU] gain applied"),
            ("GAINSRC", _card_text(info.get("gain_source")), None),
            ("CALRDN", info.get("read_noise"), "[e-] read noise used"),
            ("RDNSRC", _card_text(info.get("read_noise_source")), None),
            ("CALSAT", info.get("saturation"), "[ADU] saturation level used"),
            ("SATSRC", _card_text(info.get("saturation_source")), None),
        ]
        for key, value, comment in cards:
            if value is not None and not (isinstance(value, float) and not np.isfinite(value)):
                header[key] = (value, comment) if comment else value
    extensions = [
        fits.PrimaryHDU(calibrated.science.astype(np.float32), header),
        fits.ImageHDU(calibrated.mask.astype(np.uint16), name="MASK"),
        fits.ImageHDU(calibrated.variance.astype(np.float32), name="VARIANCE"),
        fits.ImageHDU(calibrated.background.astype(np.float32), name="BKG"),
        fits.ImageHDU(calibrated.background_rms.astype(np.float32), name="BKGRMS"),
        *calibrated.measurement_hdus(),
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
    database: DatabaseResource,
    frame_pool: FramePoolResource,
):
    """Calibrated science frames with masks, variance and background maps, and quality rows.

    Master bias, dark and flat are sigma-clipped combines of the night's calibration frames
    (gain and read noise by photon transfer where the headers have none); each science frame is
    classified raw / reduced / sky-subtracted, bias-, dark- and flat-corrected into electrons,
    given a noise model for its state, cosmic rays are masked with L.A.Cosmic (van Dokkum 2001)
    tuned to the measured PSF, and FWHM, sky, noise, elongation, depth and a quality score are
    measured. Each row records the data state and where gain, read noise and saturation came
    from; the metadata lists every assumption. A frame too poor to use keeps its row with
    ``usable = False`` and the reasons; a frame (or calibration frame) that fails is reported
    and the rest of the night goes on. A night whose raw frames failed a gate is skipped.
    """
    store = object_store.open()
    yield from for_each_night(context, lambda night: calibrate_night(
        context, night, night_rows(raw_observations, night), store, frame_pool.open()), calibrated_frames_checks,
        upstream={"raw_observations": raw_observations}, database=database)


def masters_key(night: str) -> str:
    """Object-store key (before its content hash) of the night's master calibrations, as the frames' tasks read them."""
    return f"calibrated_frames/{night}/masters.fits"


def masters_to_bytes(masters: MasterCalibrations) -> bytes:
    """``masters`` as FITS bytes, values and types kept: BIAS (ADU), DARK (ADU/s), FLAT, BADPIX; ``GAIN`` (e-/ADU)
    and ``RDNOISE`` (e-) cards where photon transfer measured them."""
    primary = fits.PrimaryHDU(masters.bias)
    primary.name = "BIAS"
    for card, value in (("GAIN", masters.gain), ("RDNOISE", masters.read_noise)):
        if value is not None:
            primary.header[card] = float(value)
    return to_fits_bytes([primary, fits.ImageHDU(masters.dark, name="DARK"), fits.ImageHDU(masters.flat, name="FLAT"),
                          fits.ImageHDU(masters.bad_pixels.astype(np.uint8), name="BADPIX")])


@lru_cache(maxsize=2)
def stored_masters(store_url: str, key: str) -> MasterCalibrations:
    """The master calibrations at ``key`` (:func:`masters_to_bytes`), read once per worker process."""
    with fits.open(io.BytesIO(frame_store(store_url).get(key))) as hdus:
        header = hdus["BIAS"].header

        def native(name: str) -> np.ndarray:  # the stored values and type, in this machine's byte order
            data = hdus[name].data
            return data.astype(data.dtype.newbyteorder("="))

        return MasterCalibrations(
            bias=native("BIAS"), dark=native("DARK"), flat=native("FLAT"), bad_pixels=native("BADPIX").astype(bool),
            gain=header.get("GAIN"), read_noise=header.get("RDNOISE"))


def frame_base(night: str, frame: dict) -> dict:
    """The columns of a ``calibrated_frames`` row known before calibration."""
    return {"night": night, "frame_id": frame["frame_id"], "field": frame["field"], "filter": frame["filter"],
            "mjd_obs": frame["mjd_obs"]}


#: A night without calibration frames borrows the masters of the nearest earlier night within this many nights.
BORROW_MASTERS_NIGHTS = 30


def earlier_masters(store: ObjectStore, night: str, max_nights: int = BORROW_MASTERS_NIGHTS) -> tuple[str, str] | None:
    """The key and night of the nearest earlier night's stored master calibrations (:func:`masters_key`), looking
    back at most ``max_nights`` nights; None when there are none."""
    day = date.fromisoformat(night)
    for back in range(1, max_nights + 1):
        earlier = (day - timedelta(days=back)).isoformat()
        stem = masters_key(earlier).rsplit(".", 1)[0]
        keys = sorted(store.list(stem))
        if keys:
            return keys[-1], earlier
    return None


def calibrate_one(store_url: str, night: str, frame: dict, masters_at: str | None,
                  borrowed: tuple[str, str] | None = None) -> tuple[dict, list[str]]:
    """One science frame (its ``raw_observations`` row) calibrated, measured and stored: its ``calibrated_frames``
    row and the assumptions made. A task of the frame pool: keys in, a row out.

    ``masters_at`` is the key of the night's master calibrations (None: the frame is taken as reduced
    elsewhere, or raw without calibration frames). ``borrowed`` is ``(key, night)`` of an earlier night's masters
    (:func:`earlier_masters`) for a night without calibration frames: a frame whose pixels are raw
    (:func:`~astrid_assets.science.calibration.detector.classify_data_state`) and whose shape matches is
    calibrated with them, and ``calibration`` says ``masters of <night>``; frames reduced elsewhere are not.
    A frame that fails gets a ``failed`` row with its problem.
    """
    store = frame_store(store_url)
    base = frame_base(night, frame)
    masters = stored_masters(store_url, masters_at) if masters_at else None
    columns = set(schema.calibrated_frames.c.keys())
    borrowed_from = None
    try:
        raw_image, header = read_frame(store.get(frame["path"]), night, frame["frame_id"])
        header.extend(normalised_cards(header), update=True)
        if masters is None and borrowed is not None:
            candidate = stored_masters(store_url, borrowed[0])
            if (candidate.bias.shape == raw_image.shape
                    and classify_data_state(np.asarray(raw_image, np.float64), header, False).state == "raw"):
                masters, borrowed_from = candidate, borrowed[1]
        frame_masters = masters if masters is not None else archive_reduced(raw_image.shape)
        if frame_masters.bias.shape != raw_image.shape:
            raise FrameError(night, frame["frame_id"], f"shape {raw_image.shape} differs from the "
                             f"night's calibration frames {frame_masters.bias.shape}")
        calibrated = measure_frame(calibrate_frame(raw_image, header, frame_masters))
        quality = measure_quality(calibrated, header)
        usable, reasons = verdict(quality)
    except Exception as error:  # one bad frame must not sink the night
        problem = error.problem if isinstance(error, FrameError) else f"{type(error).__name__}: {error}"
        return {**base, "usable": False, "status": "failed", "problem": problem}, []
    content = to_fits_bytes(calibrated_hdus(calibrated, header, night))
    path = store.put_versioned(f"calibrated_frames/{night}/{frame['frame_id']}.fits", content)
    info = calibrated.info
    if borrowed_from is not None:
        how = f"masters of {borrowed_from}"
    elif masters is not None:
        how = "night-masters"
    else:
        how = "uncalibrated" if info.get("data_state") == "raw" else "archive-reduced"
    frame_assumptions = list(info.get("assumptions", []))
    return {
        **base, **{k: quality.get(k) for k in columns if k in quality},
        **{k: info.get(k) for k in INFO_KEYS},
        "assumptions": "; ".join(frame_assumptions) or None,
        "exptime": exposure_time(header),
        "path": path, "calibration": how,
        "masters_path": borrowed[0] if borrowed_from is not None else (masters_at if masters is not None else None),
        "zero_point": header.get("MAGZP"), "usable": usable,
        "stars": zeropoints.encode(zeropoints.zero_point_stars(
            calibrated.science, calibrated.background, calibrated.background_rms, calibrated.mask,
            quality.get("fwhm_px"), sources=calibrated.sources)), "reasons": "; ".join(reasons) or None,
        "status": "ok", "problem": None,
    }, frame_assumptions


def calibrate_night(
    context: AssetExecutionContext, night: str, raw_observations: pd.DataFrame, store: ObjectStore,
    pool: FramePool | None = None,
) -> tuple[pd.DataFrame, dict]:
    """One night's ``calibrated_frames`` rows and metadata; the science frames calibrated in ``pool`` (serial: None)."""
    accepted = raw_observations[raw_observations.status == "ok"]
    science = accepted[accepted.imagetyp == "object"]
    calibration_problems: list[str] = []
    masters = night_masters(accepted, store, night, calibration_problems)
    for problem in calibration_problems:
        context.log.warning(f"calibration frames: {problem}")
    masters_at = store.put_versioned(masters_key(night), masters_to_bytes(masters)) if (
        masters is not None and len(science)) else None
    frames = [{k: getattr(frame, k) for k in ("frame_id", "field", "filter", "mjd_obs", "path")}
              for frame in science.itertuples()]
    borrowed = earlier_masters(store, night) if masters is None and len(science) else None
    outcomes = (pool or SerialPool()).run_frames(
        calibrate_one, [(store.url, night, frame, masters_at, borrowed) for frame in frames],
        [f"frame {frame['frame_id']}" for frame in frames])
    log_failures(context, night, "calibration", outcomes)
    rows, failures, assumptions = [], [], []
    for frame, outcome in zip(frames, outcomes, strict=True):
        row, frame_assumptions = outcome.value if outcome.ok else (
            {**frame_base(night, frame), "usable": False, "status": "failed", "problem": outcome.error}, [])
        if row["status"] == "failed":
            context.log.warning(f"night {night}, frame {frame['frame_id']}: calibration failed: {row['problem']}")
            failures.append(f"- `{frame['frame_id']}`: {row['problem']}")
        assumptions.extend(f"- `{frame['frame_id']}`: {text}" for text in frame_assumptions)
        rows.append(row)
    table = mark_seeing_outliers(pd.DataFrame(rows, columns=list(schema.calibrated_frames.c.keys())))
    ok = table[table.status == "ok"]
    states = pd.Series([row.get("data_state") for row in rows if row.get("status") == "ok"], dtype=object)
    return table, {
        "frames_calibrated": len(ok),
        "usable_frames": int(ok.usable.sum()),
        "failed_frames": len(failures),
        "failures": MetadataValue.md("\n".join(failures) or "none"),
        "calibration": "night-masters" if masters is not None else (
            f"none tonight; raw frames with the masters of {borrowed[1]}" if borrowed
            else "none (no usable bias and flat frames)"),
        "calibration_problems": MetadataValue.md("\n".join(f"- {p}" for p in calibration_problems) or "none"),
        "data_states": MetadataValue.json({str(k): int(v) for k, v in states.value_counts().items()}),
        "assumptions": MetadataValue.md("\n".join(assumptions) or "none"),
        "median_fwhm_arcsec": float(ok.fwhm_arcsec.median()) if len(ok) else None,
        "median_depth_mag": float(ok.depth_mag.median()) if len(ok) else None,
        "quality": MetadataValue.md(
            ok[["frame_id", "fwhm_arcsec", "sky", "noise", "depth_mag", "quality_score", "usable"]]
            .round(2).to_markdown(index=False) if len(ok) else "no frames"
        ),
    }
