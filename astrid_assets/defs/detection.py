"""``candidate_detections``: sources on S_corr, measured, flagged and scored, with stamps — and the
nightly injection–recovery check that says how complete the night's search was."""


import io
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    Config,
    MetadataValue,
)

from astrid_assets.defs.frames import frame_store, log_failures, stored_reference
from astrid_assets.defs.nightly import for_each_night, night_rows, nightly_asset
from astrid_assets.defs.quality_checks import CANDIDATE_DETECTIONS_CHECKS, candidate_detections_checks
from astrid_assets.io import schema
from astrid_assets.io.arrays import save_arrays
from astrid_assets.io.object_store import ObjectStore
from astrid_assets.pool import FramePool, SerialPool
from astrid_assets.previews import completeness_curve, markdown_image, triplet_grid
from astrid_assets.resources import DatabaseResource, ObjectStoreResource
from astrid_assets.resources.pool import FramePoolResource
from astrid_assets.science.astrometry.align import is_placeholder
from astrid_assets.science.detection import DEFAULT_RULES, FLAG_UNCONFIRMED, flag_unconfirmed, look_at
from astrid_assets.science.frames.files import header_wcs, read_extensions
from astrid_assets.science.injection.fakes import injection_recovery
from astrid_assets.science.injection.inject import summarise_completeness
from astrid_assets.science.pipeline import find_candidates
from astrid_assets.science.products import CalibratedFrame, Difference


class DetectionConfig(Config):
    threshold: float = 5.0  #: detection threshold on |S_corr|
    injection_frames: int = 3  #: frames of the night used by the injection–recovery check (0: off)
    injection_fakes: int = 60  #: fakes injected per frame, S/N uniform in [3, 30]
    min_completeness: float = 0.95  #: required completeness at S/N ≥ 10


def stamps_to_bytes(stamps: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, stamps.astype(np.float32), allow_pickle=False)
    return buffer.getvalue()


def stamps_from_bytes(content: bytes) -> np.ndarray:
    """The ``(N, 3, 63, 63)`` science / reference / difference stamp stack of a frame."""
    return np.load(io.BytesIO(content), allow_pickle=False)


def injection_key(night: str) -> str:
    """Object-store key of the night's injection test: every fake's ``snr``, ``recovered`` and ``frames``,
    and the ``stamps`` of the recovered ones (in order), for scoring them at the model's operating point."""
    return f"candidate_detections/{night}/injections.npz"


def frame_seed(night: str, frame_id: str) -> int:
    """A reproducible RNG seed for a frame's injections."""
    return zlib.crc32(f"{night}/{frame_id}".encode())


@nightly_asset(
    kinds={"sql"},
    check_specs=[*CANDIDATE_DETECTIONS_CHECKS, AssetCheckSpec(
        "injection_recovery", asset="candidate_detections",
        description="Fake point sources (measured PSF, S/N 3–30) injected into the night's calibrated frames "
                    "are recovered by the same differencing and detection: completeness at S/N ≥ 10 ≥ 95 %.",
    )],
)
def candidate_detections(
    context: AssetExecutionContext,
    config: DetectionConfig,
    difference_images: pd.DataFrame,
    object_store: ObjectStoreResource,
    database: DatabaseResource,
    frame_pool: FramePoolResource,
):
    """Positive and negative sources with |S_corr| ≥ threshold on each difference image.

    SEP extraction on S_corr (Barbary 2016), PSF-fit flux and error on the difference, FWHM,
    elongation and sharpness; flags for masked pixels, edges, bright stars, dipoles and shapes far from the
    PSF; a rule score in [0, 1] (``rule_score``); RA/Dec from the reference WCS. Science, reference and
    difference stamps (63×63) of every candidate go to the object store, one stack per frame.
    """
    store = object_store.open()
    injections: dict[str, InjectionOutcome | None] = {}

    def night_fn(night: str) -> tuple[pd.DataFrame, dict]:
        pool = frame_pool.open()
        table, metadata, searched = detect_night(night, config, night_rows(difference_images, night), store, pool,
                                                 context)
        injections[night] = inject_night(context, config, searched, store, night, pool)
        return table, metadata

    yield from for_each_night(context, night_fn, candidate_detections_checks,
                              upstream={"difference_images": difference_images}, database=database)
    yield injection_check(config, injections)


#: What the injection test needs of a searched frame: frame id, reference key, its candidates, calibrated and
#: difference keys.
Searched = tuple[str, str, pd.DataFrame, str, str]


def detect_one(store_url: str, night: str, threshold: float, frame_id: str, field: str, difference_path: str,
               reference_path: str) -> tuple[pd.DataFrame, np.ndarray]:
    """The candidates of one difference image, their stamps stored: its ``candidate_detections`` rows and the
    stamps of its three best candidates (for the preview). A task of the frame pool: keys in, rows out."""
    store = frame_store(store_url)
    reference = stored_reference(store_url, reference_path)
    extensions = read_extensions(store.get(difference_path))
    difference = Difference.from_extensions(extensions, reference.image)
    header = extensions["DIFF"][1]
    wcs = None if is_placeholder(header) else header_wcs(header)  # a placeholder grid has no sky
    found, stamps = find_candidates(difference, wcs, threshold)
    stamp_path = store.put_versioned(f"candidate_detections/{night}/{frame_id}.stamps.npy", stamps_to_bytes(stamps))
    found = found.assign(
        night=night, frame_id=frame_id, field=field,
        candidate_id=[f"{frame_id}-c{i:04d}" for i in range(len(found))],
        stamp_path=stamp_path, stamp_index=np.arange(len(found)),
    )
    best = found.sort_values("rule_score", ascending=False).head(3)
    return found, stamps[best.stamp_index.to_numpy()]


def detect_night(
    night: str, config: DetectionConfig, differences: pd.DataFrame, store: ObjectStore,
    pool: FramePool | None = None, context: AssetExecutionContext | None = None,
) -> tuple[pd.DataFrame, dict, list[Searched]]:
    """One night's candidates, their metadata, and per searched frame what the injection test needs; the
    frames searched in ``pool`` (serial: None). A frame whose search failed twice is left out and named in
    the metadata (``frames_failed``)."""
    differences = differences[differences.status == "ok"]
    outcomes = (pool or SerialPool()).run_frames(
        detect_one, [(store.url, night, config.threshold, row.frame_id, row.field, row.path, row.reference_path)
                     for row in differences.itertuples()], [f"frame {f}" for f in differences.frame_id])
    if context is not None:
        log_failures(context, night, "detection", outcomes)
    tables, previews, failed = [], [], []
    searched: list[Searched] = []
    for row, outcome in zip(differences.itertuples(), outcomes, strict=True):
        if not outcome.ok:
            failed.append(f"- `{row.frame_id}`: {outcome.error}")
            continue
        found, best_stamps = outcome.value
        tables.append(found)
        searched.append((row.frame_id, row.reference_path, found, row.calibrated_path, row.path))
        best = found.sort_values("rule_score", ascending=False).head(3)
        previews += [(stamp, f"{cid} S/N {snr:.0f}") for stamp, cid, snr in
                     zip(best_stamps, best.candidate_id, best.snr, strict=True)]
    columns = list(schema.candidate_detections.c.keys())
    table = pd.concat(tables, ignore_index=True)[columns] if tables else pd.DataFrame(columns=columns)
    table = confirm_night(night, table, differences, store, pool, context)
    metadata = {
        "candidates": len(table),
        "positive": int((table.sign > 0).sum()),
        "negative": int((table.sign < 0).sum()),
        "unflagged": int((table["flags"] == 0).sum()),
        "unconfirmed": int((table["flags"].astype(np.int64) & FLAG_UNCONFIRMED != 0).sum()),
        "frames_searched": len(differences),
        "threshold_s_corr": config.threshold,
        **({"frames_failed": MetadataValue.md("\n".join(failed))} if failed else {}),
    }
    if previews:
        metadata["top_candidates"] = MetadataValue.md(markdown_image(
            triplet_grid(np.stack([p[0] for p in previews]), [p[1] for p in previews]), "candidate triplets"))
    if len(differences) == 0:
        metadata["note"] = "no difference images tonight (see difference_images metadata for why)"
    return table, metadata, searched


def look_one(store_url: str, difference_path: str, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forced PSF photometry of one difference image at positions of its grid (other frames' candidates):
    ``(flux, flux_err)``, e- of that frame (:func:`~astrid_assets.science.detection.confirm.look_at`). A task of
    the frame pool."""
    extensions = read_extensions(frame_store(store_url).get(difference_path))
    tiles = extensions["PSFTILES"][0] if "PSFTILES" in extensions else None
    return look_at(extensions["DIFF"][0], extensions["VARIANCE"][0], extensions["PSF"][0], extensions["MASK"][0],
                   x, y, tiles)


def confirm_night(night: str, table: pd.DataFrame, differences: pd.DataFrame, store: ObjectStore,
                  pool: FramePool | None = None, context: AssetExecutionContext | None = None) -> pd.DataFrame:
    """The night's candidates with UNCONFIRMED set where every other frame of their field refutes them
    (:mod:`~astrid_assets.science.detection.confirm`). Each frame whose field has candidates in other frames is
    read once more, in ``pool``; a frame whose look failed neither confirms nor refutes."""
    if table.empty:
        return table
    table = table.reset_index(drop=True)
    ratios = differences.set_index("frame_id").flux_ratio
    candidates = table.assign(ratio=table.frame_id.map(ratios).to_numpy(np.float64))
    tasks, owners = [], []
    for row in differences.itertuples():
        others = candidates.index[(candidates.field == row.field) & (candidates.frame_id != row.frame_id)]
        if len(others):
            tasks.append((store.url, row.path, candidates.x[others].to_numpy(np.float64),
                          candidates.y[others].to_numpy(np.float64)))
            owners.append((row, others))
    outcomes = (pool or SerialPool()).run_frames(look_one, tasks, [f"frame {row.frame_id}" for row, _ in owners])
    if context is not None:
        log_failures(context, night, "confirmation", outcomes)
    looks = [pd.DataFrame({"candidate": others, "flux": outcome.value[0], "flux_err": outcome.value[1],
                           "ratio": float(row.flux_ratio)})
             for (row, others), outcome in zip(owners, outcomes, strict=True) if outcome.ok]
    looks = pd.concat(looks, ignore_index=True) if looks else pd.DataFrame(columns=["candidate", "flux", "flux_err",
                                                                                   "ratio"])
    return flag_unconfirmed(candidates, looks, DEFAULT_RULES)


@dataclass
class InjectionOutcome:
    """Fakes injected into one night's frames: their S/N, whether each was recovered, position errors (px)."""

    frames: list[str]
    snr: np.ndarray
    recovered: np.ndarray
    position_error: np.ndarray
    false_detections: list[int]


def inject_one(store_url: str, night: str, config: DetectionConfig, frame_id: str, reference_path: str,
               found: pd.DataFrame, calibrated_path: str, difference_path: str):
    """The injection test of one frame (:func:`~astrid_assets.science.injection.fakes.injection_recovery`): fakes
    into a copy of the calibrated frame, differenced and detected as the night was. A task of the frame pool."""
    store = frame_store(store_url)
    reference = stored_reference(store_url, reference_path)
    frame = CalibratedFrame.from_extensions(read_extensions(store.get(calibrated_path)))
    # the untouched frame's registration, PSF field and flux ratio serve the frame with fakes
    difference = Difference.from_extensions(read_extensions(store.get(difference_path)), reference.image)
    rng = np.random.default_rng(frame_seed(night, frame_id))
    return injection_recovery(frame, reference, found, rng, n_fakes=config.injection_fakes,
                              threshold=config.threshold, like=difference)


def inject_night(context, config: DetectionConfig, searched: list[Searched], store: ObjectStore, night: str,
                 pool: FramePool | None = None) -> InjectionOutcome | None:
    """Inject fakes into copies of up to ``injection_frames`` calibrated frames of the night and recover them;
    the frames tested in ``pool`` (serial: None)."""
    if config.injection_frames == 0 or not searched:
        return None
    tested = searched[: config.injection_frames]
    outcomes = (pool or SerialPool()).run_frames(
        inject_one, [(store.url, night, config, *frame) for frame in tested], [f"frame {f[0]}" for f in tested])
    snr, recovered, errors, false_detections, frames, stamps = [], [], [], [], [], []
    for (frame_id, *_), outcome in zip(tested, outcomes, strict=True):
        if not outcome.ok:
            context.log.warning(f"night {night}, frame {frame_id}: injection test failed: {outcome.error}")
            continue
        outcome = outcome.value
        snr.append(outcome.snr)
        recovered.append(outcome.recovered)
        errors.append(outcome.position_error)
        false_detections.append(outcome.false_detections)
        frames.append(frame_id)
        stamps.append(outcome.stamps)
    if not frames:
        return InjectionOutcome([], np.array([]), np.array([], bool), np.array([]), [])
    store.put(injection_key(night), save_arrays({
        "snr": np.concatenate(snr), "recovered": np.concatenate(recovered), "stamps": np.concatenate(stamps),
        "frames": np.concatenate([np.full(len(s), f) for s, f in zip(snr, frames, strict=True)]).astype(str)}))
    return InjectionOutcome(frames, np.concatenate(snr), np.concatenate(recovered), np.concatenate(errors),
                            false_detections)


def injection_check(config: DetectionConfig, outcomes: dict[str, InjectionOutcome | None]) -> AssetCheckResult:
    """Completeness at S/N ≥ 10 of every night of the run must reach ``min_completeness``."""
    tested = {night: o for night, o in outcomes.items() if o is not None}
    if not tested:
        note = "disabled by configuration" if config.injection_frames == 0 else "no frames to test"
        return AssetCheckResult(check_name="injection_recovery", passed=True, metadata={"note": note})
    failed = [night for night, o in tested.items() if not o.frames]
    if failed:
        return AssetCheckResult(check_name="injection_recovery", passed=False, severity=AssetCheckSeverity.WARN,
                                metadata={"note": f"injection failed on every frame tested of {', '.join(failed)}"})
    by_night = {night: summarise_completeness(o.snr, o.recovered)["completeness_snr_ge_10"]
                for night, o in tested.items()}
    snr = np.concatenate([o.snr for o in tested.values()])
    recovered = np.concatenate([o.recovered for o in tested.values()])
    errors = np.concatenate([o.position_error for o in tested.values()])
    frames = [f for o in tested.values() for f in o.frames]
    summary = summarise_completeness(snr, recovered)
    short = {night: c for night, c in by_night.items() if not c >= config.min_completeness}
    title = next(iter(tested)) if len(tested) == 1 else f"{min(tested)}…{max(tested)}"
    curve = completeness_curve(summary["bin_centres"], summary["fraction"], summary["snr_50"],
                               f"{title}: {len(snr)} fakes in {len(frames)} frames")
    return AssetCheckResult(
        check_name="injection_recovery",
        passed=not short,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "completeness_snr_ge_10": summary["completeness_snr_ge_10"],
            "completeness_by_night": MetadataValue.json(by_night),
            "nights_below_requirement": MetadataValue.json(sorted(short)),
            "snr_50_percent": summary["snr_50"],
            "false_detections_per_frame": float(np.mean([n for o in tested.values() for n in o.false_detections])),
            "median_position_error_px": float(np.nanmedian(errors)) if np.isfinite(errors).any() else None,
            "fakes": len(snr),
            "frames": MetadataValue.json(frames),
            "completeness_by_snr": MetadataValue.json(dict(zip(
                [f"{c:.1f}" for c in summary["bin_centres"]], summary["fraction"], strict=True))),
            "completeness_curve": MetadataValue.md(markdown_image(curve, "completeness curve")),
        },
    )
