"""One bad night does not sink a window: a range run with a failing night processes every other night.

Four simulated nights as a FITS drop folder, run as one range run (a single-run backfill) through the
chain to ``scored_detections``; every file of the third night is truncated, so ``raw_observations``
quarantines them all and fails its ``quarantine_rate`` gate for that night. The steps downstream skip
that night only, and the run says which night failed and why.
"""

from __future__ import annotations

import pytest
from dagster import DagsterInstance

from astrid_assets.defs.nightly import FAILED_NIGHTS_TAG, NIGHT_PROBLEM, NIGHT_STATUS
from astrid_assets.testing.chain import CHAIN, run_chain
from astrid_assets.testing.simulate import SurveyConfig, simulate_night

pytestmark = pytest.mark.slow  # four small nights through the nightly chain

NIGHTS = ["2024-02-01", "2024-02-02", "2024-02-03", "2024-02-04"]
BAD = NIGHTS[2]
DOWNSTREAM = ["calibrated_frames", "reference_images", "difference_images", "candidate_detections",
              "scored_detections"]


def write_drop(root) -> None:
    """The simulated nights as a drop folder (one field, two science frames a night, 256²); ``BAD`` truncated."""
    survey = SurveyConfig(fields=("F01",), frames_per_night=2, shape=(256, 256))
    for night in NIGHTS:
        folder = root / night
        folder.mkdir(parents=True)
        for frame in simulate_night(night, survey):
            path = folder / f"{frame.frame_id}.fits"
            frame.to_hdulist().writeto(path)
            if night == BAD:  # a transfer cut every file of the night short
                path.write_bytes(path.read_bytes()[:2880 * 2])


def test_a_range_run_with_one_failing_night_processes_every_other_night(astrid_home, tmp_path, capsys):
    write_drop(tmp_path / "drop")
    run = run_chain(tmp_path / "drop", NIGHTS[0], NIGHTS[-1], DagsterInstance.get(),
                    assets=[*CHAIN, "scored_detections"])
    assert run.success, "one bad night must not fail the run"

    # The gate's check fails, naming the night; it did not block (the steps downstream ran).
    gate = run.checks["quarantine_rate"]
    assert not gate.passed and not gate.blocking and gate.severity.value == "ERROR"
    assert gate.metadata["failing_nights"].value == [BAD]
    # The run says which night failed and why: its tag, and each night's materializations.
    assert run.tags[FAILED_NIGHTS_TAG] == BAD
    assert list(run.failed_nights) == [BAD]
    assert run.failed_nights[BAD].startswith("raw_observations quarantine_rate: 100% of the night's frames quarantined")
    status = {(m.asset_key.to_user_string(), m.partition): m.metadata for m in run.materializations}
    assert status[("raw_observations", BAD)][NIGHT_STATUS].value == "failed"
    for asset in DOWNSTREAM:
        assert status[(asset, BAD)][NIGHT_STATUS].value == "skipped", asset
        assert status[(asset, BAD)][NIGHT_PROBLEM].value == run.failed_nights[BAD], asset
        assert {status[(asset, night)][NIGHT_STATUS].value for night in NIGHTS if night != BAD} == {"ok"}, asset
        assert list(status[(asset, BAD)]["nights_skipped"].value) == [BAD], asset

    # The bad night: its raw rows, quarantined with the problem, and nothing built on them.
    raw = run.tables["raw_observations"]
    bad_raw = raw[raw.night == BAD]
    assert len(bad_raw) and (bad_raw.status == "quarantined").all() and bad_raw.problem.notna().all()
    for asset in DOWNSTREAM:
        assert BAD not in set(run.tables[asset].night), asset

    # Every other night is processed: the night after the bad one is differenced against a reference from the
    # nights before it, and both nights with a reference have their differences, candidates and scores.
    references = run.tables["reference_images"].set_index("night")
    assert references.loc[NIGHTS[3], "status"] == "ok"
    differences, candidates = run.tables["difference_images"], run.tables["candidate_detections"]
    assert set(differences.night) == {NIGHTS[0], NIGHTS[1], NIGHTS[3]}
    for night in (NIGHTS[1], NIGHTS[3]):
        assert len(differences[differences.night == night]) == 2, night  # every science frame has its row
        assert (differences[differences.night == night].status == "ok").any(), night
        assert len(candidates[candidates.night == night]) > 0, night
    assert len(run.tables["scored_detections"]) == len(candidates)
    assert set(run.checks["injection_recovery"].metadata["completeness_by_night"].value) == {NIGHTS[1], NIGHTS[3]}

    # What `astrid demo` prints under its table.
    from astrid_assets.cli.commands import print_summary

    capsys.readouterr()
    print_summary(NIGHTS, run.result)
    printed = capsys.readouterr().out
    assert "3 of 4 nights processed; 1 failed" in printed and f"  {BAD}: {run.failed_nights[BAD]}" in printed

    # The run succeeded, so the run-failure alert stays silent: the failed-nights alert speaks instead.
    from dagster import build_run_status_sensor_context

    from astrid_assets.automation.alerts import failed_nights_message

    instance = DagsterInstance.get()
    context = build_run_status_sensor_context(
        sensor_name="alert_on_failed_nights", dagster_instance=instance,
        dagster_run=instance.get_run_by_id(run.result.run_id), dagster_event=run.result.get_run_success_event())
    message = failed_nights_message(context)
    assert message is not None and f"{BAD}: {run.failed_nights[BAD]}" in message and "1 night(s) failed" in message
