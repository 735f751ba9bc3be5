"""Data-quality checks of the nightly assets, evaluated in the asset's own step on the rows it just wrote.

Each check looks at every night of the run and names the nights (and frames) that fail. A
nightly check is never *blocking*: Dagster blocks per asset and per run, so one bad night of a
45-night backfill would stop every night downstream. Instead some ERROR checks are the asset's
*gates* (:data:`GATES`): a night that fails one is not built upon — every asset downstream skips
that night, keeping what it had stored for it, and says why (:func:`~astrid_assets.defs.nightly.for_each_night`)
— while the other nights of the run go on. The failing night's rows stay stored for inspection.
Checks that describe a normal state of the sky (a cloudy night without frames, a field without a
reference yet) only warn.

The thresholds are module constants so that a survey with other characteristics changes them in
one place. The gates of a training dataset are the exception: their thresholds are part of the
dataset's configuration (``min_samples``, ``min_minority_fraction``), recorded with it.
"""

from collections.abc import Callable, Iterable, Iterator

import numpy as np
import pandas as pd
from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, MetadataValue

MAX_QUARANTINE_FRACTION = 0.5  #: more of a night's frames unreadable than this: the source is broken
MAX_MEDIAN_MASKED_FRACTION = 0.10  #: median masked-pixel fraction of a night's calibrated frames
MAX_FAILED_CALIBRATION_FRACTION = 0.5  #: share of a night's science frames that failed to calibrate
S_CORR_STD_RANGE = (0.8, 1.25)  #: robust std of S_corr accepted for a difference image (1 on blank sky)
MAX_REJECTED_DIFFERENCE_FRACTION = 0.5  #: share of a night's differences rejected for their S_corr std
MAX_DIFFERENCE_MASKED_FRACTION = 0.25  #: masked-pixel fraction of a difference worth a warning
MAX_CANDIDATES_PER_FRAME = 500  #: median candidates per searched frame; more means a failed subtraction


GATE_NOTE = (" A gate: a night that fails it is not built upon (the downstream assets skip that night and say "
             "why); the other nights of the run go on.")


def spec(asset: str, name: str, description: str, blocking: bool = False, gate: bool = False) -> AssetCheckSpec:
    """A check of ``asset``; ``gate``: one of its :data:`GATES` (per night, never blocking: see the module)."""
    return AssetCheckSpec(name, asset=asset, description=description + (GATE_NOTE if gate else ""), blocking=blocking)


def by_night(nights: list[str], table: pd.DataFrame, measure: Callable[[pd.DataFrame], float | None]) -> dict:
    """``measure`` of each night's rows (None where it does not apply)."""
    return {night: measure(table[table.night == night]) for night in nights}


def result(name: str, values: dict, bad: Callable[[float], bool], severity: AssetCheckSeverity, what: str,
           **metadata) -> AssetCheckResult:
    """Passed unless some night's value is ``bad``; the metadata holds every night's value and the failures."""
    failing = {night: value for night, value in values.items() if value is not None and bad(value)}
    return AssetCheckResult(
        check_name=name, passed=not failing, severity=severity,
        description=(f"{what}: " + ", ".join(f"{n} ({v:.3g})" for n, v in failing.items())) if failing else None,
        metadata={"by_night": MetadataValue.json({n: v for n, v in values.items() if v is not None}),
                  "failing_nights": MetadataValue.json(sorted(failing)), **metadata},
    )


RAW_OBSERVATIONS_CHECKS = [
    spec("raw_observations", "science_frames_received",
         "Every night of the run delivered at least one science frame (a clouded-out night warns)."),
    spec("raw_observations", "quarantine_rate",
         f"At most {MAX_QUARANTINE_FRACTION:.0%} of a night's frames are quarantined as unreadable.", gate=True),
]


def raw_observations_checks(nights: list[str], table: pd.DataFrame) -> Iterator[AssetCheckResult]:
    science = by_night(nights, table, lambda t: float(((t.status == "ok") & (t.imagetyp == "object")).sum()))
    yield result("science_frames_received", science, lambda n: n == 0, AssetCheckSeverity.WARN,
                 "nights without science frames")
    quarantined = by_night(nights, table, lambda t: float((t.status == "quarantined").mean()) if len(t) else None)
    yield result("quarantine_rate", quarantined, lambda f: f > MAX_QUARANTINE_FRACTION, AssetCheckSeverity.ERROR,
                 "nights with most frames quarantined",
                 quarantined_frames=MetadataValue.json(table.loc[table.status == "quarantined", "frame_id"].tolist()))


CALIBRATED_FRAMES_CHECKS = [
    spec("calibrated_frames", "masked_fraction",
         f"The median fraction of masked pixels of a night's calibrated frames is at most "
         f"{MAX_MEDIAN_MASKED_FRACTION:.0%}; more means broken masters or cosmic-ray rejection.", gate=True),
    spec("calibrated_frames", "calibration_failures",
         f"At most {MAX_FAILED_CALIBRATION_FRACTION:.0%} of a night's science frames fail to calibrate.",
         gate=True),
]


def calibrated_frames_checks(nights: list[str], table: pd.DataFrame) -> Iterator[AssetCheckResult]:
    ok = table[table.status == "ok"]
    masked = by_night(nights, ok, lambda t: float(t.masked_fraction.median()) if len(t) else None)
    yield result("masked_fraction", masked, lambda f: f > MAX_MEDIAN_MASKED_FRACTION, AssetCheckSeverity.ERROR,
                 "nights with abnormal masked fraction")
    failed = by_night(nights, table, lambda t: float((t.status == "failed").mean()) if len(t) else None)
    yield result("calibration_failures", failed, lambda f: f > MAX_FAILED_CALIBRATION_FRACTION,
                 AssetCheckSeverity.ERROR, "nights where most frames failed to calibrate")


REFERENCE_IMAGES_CHECKS = [
    spec("reference_images", "reference_coverage",
         "Every field observed in the night has a reference (the first nights of a survey warn)."),
]


def reference_images_checks(nights: list[str], table: pd.DataFrame) -> Iterator[AssetCheckResult]:
    missing = by_night(nights, table, lambda t: float((t.status != "ok").sum()) if len(t) else None)
    yield result("reference_coverage", missing, lambda n: n > 0, AssetCheckSeverity.WARN,
                 "nights with fields lacking a reference",
                 fields_without_reference=MetadataValue.json(sorted(set(table.loc[table.status != "ok", "field"]))))


DIFFERENCE_IMAGES_CHECKS = [
    spec("difference_images", "s_corr_variance",
         f"S_corr has unit variance on blank sky: differences whose robust std lies outside "
         f"{S_CORR_STD_RANGE} are rejected (not searched), and a night fails if more than "
         f"{MAX_REJECTED_DIFFERENCE_FRACTION:.0%} of its differences are.", gate=True),
    spec("difference_images", "difference_masked_fraction",
         f"No difference image has more than {MAX_DIFFERENCE_MASKED_FRACTION:.0%} of its pixels masked."),
    spec("difference_images", "frames_differenced",
         "Every night on which science frames arrived differenced at least one of them; a night that "
         "differenced none fails, with the frames counted per reason (no reference, unusable, "
         "registration failed …). Not blocking: the reasons are the night's result."),
]


def reasons_by_night(nights: list[str], table: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Per night, the number of frames not differenced for each ``reason`` (``{}`` where all were)."""
    not_done = table[table.status != "ok"]
    reasons = not_done["reason"] if "reason" in not_done else pd.Series("other", index=not_done.index)
    not_done = not_done.assign(reason=reasons)
    return {night: {str(k): int(v) for k, v in not_done[not_done.night == night].reason.fillna("other")
                    .value_counts().items()} for night in nights}


def s_corr_outside_range(s_corr_std: float) -> bool:
    low, high = S_CORR_STD_RANGE
    return not low <= s_corr_std <= high


def difference_images_checks(nights: list[str], table: pd.DataFrame) -> Iterator[AssetCheckResult]:
    differenced = table[table.status.isin(["ok", "rejected"])]
    rejected = by_night(nights, differenced, lambda t: float((t.status == "rejected").mean()) if len(t) else None)
    yield result("s_corr_variance", rejected, lambda f: f > MAX_REJECTED_DIFFERENCE_FRACTION,
                 AssetCheckSeverity.ERROR, "nights with most differences off unit S_corr variance",
                 s_corr_std=MetadataValue.json(dict(zip(
                     differenced.frame_id, differenced.s_corr_std.astype(float).round(4), strict=True))))
    masked = by_night(nights, differenced, lambda t: float(t.masked_fraction.max()) if len(t) else None)
    yield result("difference_masked_fraction", masked, lambda f: f > MAX_DIFFERENCE_MASKED_FRACTION,
                 AssetCheckSeverity.WARN, "nights with a heavily masked difference")
    done = by_night(nights, table, lambda t: float((t.status == "ok").sum()) if len(t) else None)
    reasons = reasons_by_night(nights, table)
    failing = {night: n for night, n in done.items() if n == 0}
    yield AssetCheckResult(
        check_name="frames_differenced", passed=not failing, severity=AssetCheckSeverity.ERROR,
        description="; ".join(
            f"{night}: no frame differenced ({', '.join(f'{k} {v}' for k, v in reasons[night].items())})"
            for night in failing) or None,
        metadata={"differenced_by_night": MetadataValue.json({n: v for n, v in done.items() if v is not None}),
                  "not_differenced_by_reason": MetadataValue.json(reasons),
                  "failing_nights": MetadataValue.json(sorted(failing))},
    )


CANDIDATE_DETECTIONS_CHECKS = [
    spec("candidate_detections", "candidate_density",
         f"The median number of candidates per searched frame is at most {MAX_CANDIDATES_PER_FRAME}; "
         "a flood of candidates means a failed subtraction and is not scored.", gate=True),
]


def candidate_detections_checks(nights: list[str], table: pd.DataFrame) -> Iterator[AssetCheckResult]:
    per_frame = by_night(nights, table, lambda t: float(t.groupby("frame_id").size().median()) if len(t) else None)
    yield result("candidate_density", per_frame, lambda n: n > MAX_CANDIDATES_PER_FRAME, AssetCheckSeverity.ERROR,
                 "nights with a flood of candidates")


SCORED_DETECTIONS_CHECKS = [
    spec("scored_detections", "real_probabilities_valid",
         "Once a champion model exists, every candidate has a real/bogus probability in [0, 1]."),
]


def scored_detections_checks(nights: list[str], table: pd.DataFrame) -> Iterator[AssetCheckResult]:
    def invalid(t: pd.DataFrame) -> float | None:
        scored = t[t.model_version.notna()]
        if scored.empty:
            return None
        return float((~scored.real_probability.between(0, 1)).sum())

    yield result("real_probabilities_valid", by_night(nights, table, invalid), lambda n: n > 0,
                 AssetCheckSeverity.ERROR, "nights with missing or invalid probabilities")


#: Each nightly asset's checks (the function of its rows for the run's nights).
CHECKS: dict[str, Callable[[list[str], pd.DataFrame], Iterator[AssetCheckResult]]] = {
    "raw_observations": raw_observations_checks,
    "calibrated_frames": calibrated_frames_checks,
    "reference_images": reference_images_checks,
    "difference_images": difference_images_checks,
    "candidate_detections": candidate_detections_checks,
    "scored_detections": scored_detections_checks,
}

#: The gates of each nightly asset: its checks that, failing for a night, keep the assets downstream from
#: building on that night; each with the reason in words for the night's value (thresholds read when called).
GATES: dict[str, dict[str, Callable[[float], str]]] = {
    "raw_observations": {
        "quarantine_rate": lambda f: f"{f:.0%} of the night's frames quarantined as unreadable "
                                     f"(limit {MAX_QUARANTINE_FRACTION:.0%})"},
    "calibrated_frames": {
        "masked_fraction": lambda f: f"median masked-pixel fraction of the calibrated frames {f:.1%} "
                                     f"(limit {MAX_MEDIAN_MASKED_FRACTION:.0%})",
        "calibration_failures": lambda f: f"{f:.0%} of the science frames failed to calibrate "
                                          f"(limit {MAX_FAILED_CALIBRATION_FRACTION:.0%})"},
    "difference_images": {
        "s_corr_variance": lambda f: f"{f:.0%} of the differences rejected for a robust S_corr std outside "
                                     f"{S_CORR_STD_RANGE} (limit {MAX_REJECTED_DIFFERENCE_FRACTION:.0%})"},
    "candidate_detections": {
        "candidate_density": lambda n: f"median {n:.0f} candidates per searched frame, a failed subtraction "
                                       f"(limit {MAX_CANDIDATES_PER_FRAME})"},
}


def gate_failures(asset: str, results: Iterable[AssetCheckResult]) -> dict[str, str]:
    """The nights failing one of ``asset``'s :data:`GATES` among its check ``results``: night → why
    (``"<asset> <check>: <reason>"``, several joined by ``"; "``), in night order."""
    gates = GATES.get(asset, {})
    reasons: dict[str, list[str]] = {}
    for check in results:
        if check.check_name not in gates or check.passed:
            continue
        values, why = check.metadata["by_night"].value, gates[check.check_name]
        for night in check.metadata["failing_nights"].value:
            reasons.setdefault(night, []).append(f"{asset} {check.check_name}: {why(values[night])}")
    return {night: "; ".join(why) for night, why in sorted(reasons.items())}


def night_failures(asset: str, nights: list[str], table: pd.DataFrame) -> dict[str, str]:
    """The ``nights`` whose rows of ``asset`` in ``table`` fail one of its gates: night → why."""
    return gate_failures(asset, CHECKS[asset](nights, table)) if GATES.get(asset) else {}


TRAINING_DATASETS_CHECKS = [
    spec("training_datasets", name, description, blocking=True) for name, description in [
        ("enough_samples", "at least min_samples labelled candidates"),
        ("both_classes", "real and bogus present in every split"),
        ("class_balance", "the rarer class is at least min_minority_fraction of the samples"),
    ]
]


def training_datasets_checks(table: pd.DataFrame, labels: np.ndarray, min_samples: int,
                             min_minority_fraction: float) -> Iterator[AssetCheckResult]:
    """The gates of a dataset version (``table``: its rows per split; ``labels``: 1 real, 0 bogus per sample):
    failing, they keep it from being trained on."""
    minority = min(labels.sum(), len(labels) - labels.sum()) / max(len(labels), 1)
    yield AssetCheckResult(check_name="enough_samples", passed=len(labels) >= min_samples, metadata={
        "samples": len(labels), "required": min_samples})
    yield AssetCheckResult(check_name="both_classes", passed=bool(((table.n_real > 0) & (table.n_bogus > 0)).all()),
                           metadata={"per_split": MetadataValue.json(table[["split", "n_real", "n_bogus"]]
                                                                      .to_dict("records"))})
    yield AssetCheckResult(check_name="class_balance", passed=bool(minority >= min_minority_fraction),
                           metadata={"minority_fraction": float(minority), "required": min_minority_fraction})
