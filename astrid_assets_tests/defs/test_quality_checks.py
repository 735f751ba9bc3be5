"""The nightly data-quality checks on small tables with a known verdict, night by night."""

import pandas as pd

from astrid_assets.defs import quality_checks as qc
from astrid_assets.defs.nightly import merge_night_metadata

NIGHTS = ["2024-01-05", "2024-01-06"]


def by_name(results) -> dict:
    return {r.check_name: r for r in results}


def test_raw_observations_checks_name_the_bad_night():
    frames = pd.DataFrame({
        "night": ["2024-01-05"] * 4 + ["2024-01-06"] * 2,
        "frame_id": list("abcdef"),
        "status": ["ok", "quarantined", "quarantined", "quarantined", "ok", "ok"],
        "imagetyp": ["object", None, None, None, "bias", "flat"],
    })
    checks = by_name(qc.raw_observations_checks(NIGHTS, frames))
    assert not checks["quarantine_rate"].passed
    assert checks["quarantine_rate"].metadata["failing_nights"].value == ["2024-01-05"]
    assert checks["quarantine_rate"].metadata["quarantined_frames"].value == ["b", "c", "d"]
    # 2024-01-06 delivered only calibration frames: a warning, not an error
    assert not checks["science_frames_received"].passed
    assert checks["science_frames_received"].severity.value == "WARN"
    assert checks["science_frames_received"].metadata["failing_nights"].value == ["2024-01-06"]


def test_a_night_without_rows_passes_the_rate_checks():
    empty = pd.DataFrame(columns=["night", "frame_id", "status", "imagetyp"])
    checks = by_name(qc.raw_observations_checks(NIGHTS, empty))
    assert checks["quarantine_rate"].passed


def test_difference_checks_reject_on_s_corr_variance():
    differences = pd.DataFrame({
        "night": ["2024-01-05"] * 3 + ["2024-01-06"] * 2,
        "frame_id": list("abcde"),
        "status": ["ok", "rejected", "rejected", "ok", "skipped"],
        "s_corr_std": [1.01, 1.9, 2.2, 1.02, None],
        "masked_fraction": [0.01, 0.02, 0.4, 0.01, None],
    })
    checks = by_name(qc.difference_images_checks(NIGHTS, differences))
    assert not checks["s_corr_variance"].passed  # 2 of 3 rejected on 2024-01-05
    assert checks["s_corr_variance"].metadata["failing_nights"].value == ["2024-01-05"]
    assert not checks["difference_masked_fraction"].passed
    assert qc.s_corr_outside_range(1.3) and not qc.s_corr_outside_range(1.0)
    assert checks["frames_differenced"].passed  # both nights differenced at least one frame


def test_a_night_that_differenced_nothing_fails_with_its_reasons():
    differences = pd.DataFrame({
        "night": ["2024-01-05"] * 3 + ["2024-01-06"],
        "frame_id": list("abcd"),
        "status": ["skipped", "skipped", "skipped", "ok"],
        "reason": ["no_reference", "no_reference", "unusable", None],
        "s_corr_std": [None, None, None, 1.0], "masked_fraction": [None, None, None, 0.01],
    })
    check = by_name(qc.difference_images_checks(NIGHTS, differences))["frames_differenced"]
    assert not check.passed and check.metadata["failing_nights"].value == ["2024-01-05"]
    assert check.metadata["not_differenced_by_reason"].value["2024-01-05"] == {"no_reference": 2, "unusable": 1}
    assert "no_reference 2" in check.description


def test_candidate_flood_and_scores():
    flood = pd.DataFrame({"night": "2024-01-05", "frame_id": "a", "candidate_id": range(600)})
    assert not by_name(qc.candidate_detections_checks(NIGHTS, flood))["candidate_density"].passed
    scored = pd.DataFrame({"night": ["2024-01-05"] * 3, "candidate_id": list("abc"),
                           "real_probability": [0.2, None, 0.9], "model_version": ["3", "3", "3"]})
    assert not by_name(qc.scored_detections_checks(NIGHTS, scored))["real_probabilities_valid"].passed
    unscored = scored.assign(real_probability=None, model_version=None)  # no champion yet: nothing to check
    assert by_name(qc.scored_detections_checks(NIGHTS, unscored))["real_probabilities_valid"].passed


def test_range_metadata_sums_counts_and_keeps_each_night():
    merged = merge_night_metadata({"2024-01-05": {"frames": 4, "median_fwhm": 3.1, "note": "x"},
                                   "2024-01-06": {"frames": 6, "median_fwhm": 2.9}})
    assert merged["nights"] == 2 and merged["frames"] == 10 and "median_fwhm" not in merged
    assert "2024-01-06" in merged["by_night"].value and "2.9" in merged["by_night"].value
    assert merge_night_metadata({"2024-01-05": {"frames": 4}}) == {"frames": 4}


def test_no_nightly_check_blocks_and_the_gates_name_each_failing_night_with_why():
    """Dagster blocks per asset and run: a blocking nightly check would stop every night of a range."""
    nightly = [qc.RAW_OBSERVATIONS_CHECKS, qc.CALIBRATED_FRAMES_CHECKS, qc.REFERENCE_IMAGES_CHECKS,
               qc.DIFFERENCE_IMAGES_CHECKS, qc.CANDIDATE_DETECTIONS_CHECKS, qc.SCORED_DETECTIONS_CHECKS]
    specs = {s.name: s for specs in nightly for s in specs}
    assert not any(s.blocking for s in specs.values())
    gates = {name for gates in qc.GATES.values() for name in gates}
    assert gates == {"quarantine_rate", "masked_fraction", "calibration_failures", "s_corr_variance",
                     "candidate_density"}
    assert all("not built upon" in specs[name].description for name in gates)

    differences = pd.DataFrame({
        "night": ["2024-01-05"] * 3 + ["2024-01-06"] * 2, "frame_id": list("abcde"),
        "status": ["rejected", "rejected", "ok", "ok", "ok"], "s_corr_std": [2.0, 2.1, 1.0, 1.0, 1.02],
        "masked_fraction": [0.01] * 5,
    })
    failures = qc.night_failures("difference_images", NIGHTS, differences)
    assert list(failures) == ["2024-01-05"]
    assert failures["2024-01-05"].startswith("difference_images s_corr_variance: 67% of the differences rejected")
    assert qc.night_failures("reference_images", NIGHTS, differences) == {}  # warnings only: no gate


def test_a_runs_failed_nights_come_from_the_nights_materializations():
    from dagster import AssetMaterialization

    from astrid_assets.defs.nightly import NIGHT_PROBLEM, NIGHT_STATUS, failed_nights

    def event(asset, night, status, problem=None):
        return AssetMaterialization(asset, partition=night, metadata={
            NIGHT_STATUS: status, **({NIGHT_PROBLEM: problem} if problem else {})})

    why = "difference_images s_corr_variance: 100% of the differences rejected"
    events = [event("difference_images", "2024-01-05", "ok"), event("difference_images", "2024-01-06", "failed", why),
              event("candidate_detections", "2024-01-05", "ok"),
              event("candidate_detections", "2024-01-06", "skipped", why)]
    assert failed_nights(events) == {"2024-01-06": why}
    assert failed_nights(events[:1] + events[2:3]) == {}
