"""nightly_pipeline from an empty store: raw frames to candidates, with the injection-recovery check."""

import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from dagster import DagsterInstance, Definitions

from astrid_assets.definitions import default_resources, nightly_assets, nightly_pipeline
from astrid_assets.defs.detection import stamps_from_bytes
from astrid_assets.io.tables import read_nights
from astrid_assets.resources import SimulatedSurveyResource

pytestmark = pytest.mark.slow  # a simulated survey through the nightly chain

NIGHTS = ["2024-01-01", "2024-01-02", "2024-01-03"]


def run_night(night: str, instance: DagsterInstance):
    resources = {**default_resources(), "simulated_survey": SimulatedSurveyResource(fields=["F01"], frames_per_night=2)}
    job = Definitions(assets=nightly_assets, jobs=[nightly_pipeline], resources=resources).resolve_job_def(
        "nightly_pipeline")
    return job.execute_in_process(partition_key=night, instance=instance, raise_on_error=False)


def metadata_of(result, asset: str) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node(asset)[0].metadata.items()}


def test_three_nights_from_an_empty_store(astrid_home):
    instance = DagsterInstance.get()
    first = run_night(NIGHTS[0], instance)
    assert first.success
    why = metadata_of(first, "difference_images")["why_not_differenced"]
    assert "no reference yet" in why and "F01" in why
    assert read_nights("candidate_detections", NIGHTS[:1]).empty

    for night in NIGHTS[1:]:
        result = run_night(night, instance)
        assert result.success
    references = read_nights("reference_images", NIGHTS)
    assert list(references.status) == ["missing", "ok", "ok"]
    assert references.n_frames.tolist()[1:] == [2, 4]

    differences = read_nights("difference_images", NIGHTS[2:])
    assert (differences.status == "ok").all() and len(differences) == 2
    assert np.allclose(differences.s_corr_std, 1.0, atol=0.1)
    objects = Path(os.environ["ASTRID_HOME"]) / "objects"
    with fits.open(objects / differences.path.iloc[0]) as hdus:
        names = [h.name for h in hdus]
        assert names[:6] == ["DIFF", "SCORR", "VARIANCE", "MASK", "NEW", "PSF"]
        assert "NEWPSF" in names, "the new frame's PSF field travels with its difference (the injection check)"
        assert hdus["DIFF"].header["METHOD"] == "zogy" and hdus["DIFF"].header["CTYPE1"].startswith("RA")

    candidates = read_nights("candidate_detections", NIGHTS[2:])
    metadata = metadata_of(result, "candidate_detections")
    assert metadata["candidates"] == len(candidates) > 0
    assert candidates.candidate_id.is_unique
    assert candidates[["ra", "dec", "x", "y", "flux", "flux_err", "snr", "rule_score"]].notna().all().all()
    assert (candidates.snr > 0).all() and candidates.rule_score.between(0, 1).all()
    first_frame = candidates[candidates.frame_id == candidates.frame_id.iloc[0]]
    stamps = stamps_from_bytes((objects / first_frame.stamp_path.iloc[0]).read_bytes())
    assert stamps.shape == (len(first_frame), 3, 63, 63)
    assert "data:image/png;base64" in metadata["top_candidates"]
    assert "data:image/png;base64" in metadata_of(result, "difference_images")["preview"]

    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert all(c.passed for c in checks.values()), [c.check_name for c in checks.values() if not c.passed]
    first_checks = {c.check_name: c for c in first.get_asset_check_evaluations()}
    assert not first_checks["reference_coverage"].passed  # the first night has nothing to build a reference from
    assert first_checks["reference_coverage"].severity.value == "WARN"
    check = checks["injection_recovery"]
    assert check.passed
    assert check.metadata["completeness_snr_ge_10"].value >= 0.95
    assert 3 <= check.metadata["snr_50_percent"].value <= 10
    assert "data:image/png;base64" in check.metadata["completeness_curve"].value


def test_a_window_of_nights_runs_as_one_run_and_a_failing_gate_stops_the_night_downstream(astrid_home, monkeypatch):
    """The backfill policy's single run: three nights, each step once; then a night failing a gate."""
    from dagster import AssetKey
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    from astrid_assets.defs import quality_checks

    instance = DagsterInstance.get()
    resources = {**default_resources(), "simulated_survey": SimulatedSurveyResource(fields=["F01"], frames_per_night=2)}
    job = Definitions(assets=nightly_assets, jobs=[nightly_pipeline], resources=resources).resolve_job_def(
        "nightly_pipeline")
    result = job.execute_in_process(instance=instance, raise_on_error=False, tags={
        ASSET_PARTITION_RANGE_START_TAG: NIGHTS[0], ASSET_PARTITION_RANGE_END_TAG: NIGHTS[-1]})
    assert result.success
    assert len(instance.get_run_records()) == 1
    for asset in ("raw_observations", "calibrated_frames", "reference_images", "difference_images",
                  "candidate_detections", "scored_detections"):
        assert instance.get_materialized_partitions(AssetKey(asset)) == set(NIGHTS), asset
    # Night 2's reference is built in the same run from night 1's calibrated frames (written by the earlier step).
    assert list(read_nights("reference_images", NIGHTS).sort_values("night").status) == ["missing", "ok", "ok"]
    candidates = read_nights("candidate_detections", NIGHTS)
    assert set(candidates.night) == set(NIGHTS[1:]) and len(read_nights("scored_detections", NIGHTS)) == len(candidates)
    metadata = metadata_of(result, "candidate_detections")
    assert metadata["nights"] == 3 and metadata["candidates"] == len(candidates)
    injection = next(c for c in result.get_asset_check_evaluations() if c.check_name == "injection_recovery")
    assert set(injection.metadata["completeness_by_night"].value) == set(NIGHTS[1:]) and injection.passed

    # A survey whose S_corr is far from unit variance: every difference is rejected and the night fails the
    # s_corr_variance gate. The check does not block the run; candidate_detections skips the night, keeping
    # the candidates it had stored for it, and says why.
    monkeypatch.setattr(quality_checks, "S_CORR_STD_RANGE", (5.0, 6.0))
    night = NIGHTS[-1]
    before = read_nights("candidate_detections", [night])
    rerun = job.get_subset(asset_selection={AssetKey("difference_images"), AssetKey("candidate_detections")})
    bad = rerun.execute_in_process(partition_key=night, instance=instance, raise_on_error=False)
    assert bad.success
    check = next(c for c in bad.get_asset_check_evaluations() if c.check_name == "s_corr_variance")
    assert not check.passed and not check.blocking and check.metadata["failing_nights"].value == [night]
    differences = read_nights("difference_images", [night])
    assert (differences.status == "rejected").all() and differences.problem.str.contains("S_corr").all()
    skipped = metadata_of(bad, "candidate_detections")
    assert skipped["night_status"] == "skipped" and skipped["skipped"] == 1
    assert skipped["night_problem"].startswith("difference_images s_corr_variance: 100% of the differences rejected")
    assert metadata_of(bad, "difference_images")["night_status"] == "failed"
    assert instance.get_run_by_id(bad.run_id).tags["astrid/failed_nights"] == night
    after = read_nights("candidate_detections", [night])
    assert len(after) == len(before) > 0 and set(after.candidate_id) == set(before.candidate_id)
