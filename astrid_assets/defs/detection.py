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

from astrid_assets.defs.nightly import for_each_night, night_rows, nightly_asset
from astrid_assets.defs.quality_checks import CANDIDATE_DETECTIONS_CHECKS, candidate_detections_checks
from astrid_assets.io import schema
from astrid_assets.io.arrays import save_arrays
from astrid_assets.io.object_store import ObjectStore
from astrid_assets.previews import completeness_curve, markdown_image, triplet_grid
from astrid_assets.resources import DatabaseResource, ObjectStoreResource
from astrid_assets.science.astrometry.align import is_placeholder
from astrid_assets.science.frames.files import header_wcs, read_extensions
from astrid_assets.science.injection.fakes import injection_recovery
from astrid_assets.science.injection.inject import summarise_completeness
from astrid_assets.science.pipeline import find_candidates
from astrid_assets.science.products import CalibratedFrame, Difference, Reference


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
        table, metadata, searched = detect_night(night, config, night_rows(difference_images, night), store)
        injections[night] = inject_night(context, config, searched, store, night)
        return table, metadata

    yield from for_each_night(context, night_fn, candidate_detections_checks,
                              upstream={"difference_images": difference_images}, database=database)
    yield injection_check(config, injections)


def detect_night(
    night: str, config: DetectionConfig, differences: pd.DataFrame, store: ObjectStore
) -> tuple[pd.DataFrame, dict, list[tuple[str, Reference, pd.DataFrame, str, str]]]:
    """One night's candidates, their metadata, and per searched frame what the injection test needs."""
    differences = differences[differences.status == "ok"]
    references: dict[str, Reference] = {}
    tables, previews = [], []
    searched: list[tuple[str, Reference, pd.DataFrame, str, str]] = []
    for row in differences.itertuples():
        if row.reference_path not in references:
            references[row.reference_path] = Reference.from_extensions(read_extensions(store.get(row.reference_path)))
        reference = references[row.reference_path]
        extensions = read_extensions(store.get(row.path))
        difference = Difference.from_extensions(extensions, reference.image)
        header = extensions["DIFF"][1]
        wcs = None if is_placeholder(header) else header_wcs(header)  # a placeholder grid has no sky
        found, stamps = find_candidates(difference, wcs, config.threshold)
        stamp_path = store.put_versioned(f"candidate_detections/{night}/{row.frame_id}.stamps.npy",
                                         stamps_to_bytes(stamps))
        found = found.assign(
            night=night, frame_id=row.frame_id, field=row.field,
            candidate_id=[f"{row.frame_id}-c{i:04d}" for i in range(len(found))],
            stamp_path=stamp_path, stamp_index=np.arange(len(found)),
        )
        tables.append(found)
        searched.append((row.frame_id, reference, found, row.calibrated_path, row.path))
        if len(found):
            best = found.sort_values("rule_score", ascending=False).head(3)
            previews += [(stamps[i], f"{cid} S/N {snr:.0f}") for i, cid, snr in
                         zip(best.stamp_index, best.candidate_id, best.snr, strict=True)]
    columns = list(schema.candidate_detections.c.keys())
    table = pd.concat(tables, ignore_index=True)[columns] if tables else pd.DataFrame(columns=columns)
    metadata = {
        "candidates": len(table),
        "positive": int((table.sign > 0).sum()),
        "negative": int((table.sign < 0).sum()),
        "unflagged": int((table["flags"] == 0).sum()),
        "frames_searched": len(differences),
        "threshold_s_corr": config.threshold,
    }
    if previews:
        metadata["top_candidates"] = MetadataValue.md(markdown_image(
            triplet_grid(np.stack([p[0] for p in previews]), [p[1] for p in previews]), "candidate triplets"))
    if len(differences) == 0:
        metadata["note"] = "no difference images tonight (see difference_images metadata for why)"
    return table, metadata, searched


@dataclass
class InjectionOutcome:
    """Fakes injected into one night's frames: their S/N, whether each was recovered, position errors (px)."""

    frames: list[str]
    snr: np.ndarray
    recovered: np.ndarray
    position_error: np.ndarray
    false_detections: list[int]


def inject_night(context, config: DetectionConfig, searched, store: ObjectStore, night: str) -> InjectionOutcome | None:
    """Inject fakes into copies of up to ``injection_frames`` calibrated frames of the night and recover them."""
    if config.injection_frames == 0 or not searched:
        return None
    snr, recovered, errors, false_detections, frames, stamps = [], [], [], [], [], []
    for frame_id, reference, found, calibrated_path, difference_path in searched[: config.injection_frames]:
        frame = CalibratedFrame.from_extensions(read_extensions(store.get(calibrated_path)))
        # the untouched frame's registration, PSF field and flux ratio serve the frame with fakes
        difference = Difference.from_extensions(read_extensions(store.get(difference_path)), reference.image)
        rng = np.random.default_rng(frame_seed(night, frame_id))
        try:
            outcome = injection_recovery(frame, reference, found, rng, n_fakes=config.injection_fakes,
                                         threshold=config.threshold, like=difference)
        except Exception as error:
            context.log.warning(f"night {night}, frame {frame_id}: injection test failed: {error}")
            continue
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
