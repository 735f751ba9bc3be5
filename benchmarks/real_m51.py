"""The real M51 raw set (two epochs, ``astrid_assets.testing.realsets.m51_drop``) through the nightly chain, nothing
configured: frames differenced, std(S_corr), injection completeness at S/N >= 10, unflagged candidates per frame,
and the seconds per frame of each step.

Usage: ``.venv/bin/python benchmarks/real_m51.py [WORKDIR]`` (needs ``../shared/data/real/m51-raw``).
"""

import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    """The run and its figures (the frame pool's worker processes import this module: nothing runs at import)."""
    work = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp())
    os.environ["ASTRID_HOME"] = str(work / "astrid")
    os.environ["DAGSTER_HOME"] = str(work / "dagster")
    os.environ["ASTRID_FIRST_NIGHT"] = "2012-01-01"
    (work / "dagster").mkdir(parents=True, exist_ok=True)
    (work / "dagster" / "dagster.yaml").touch()

    from dagster import DagsterInstance

    from astrid_assets import settings
    from astrid_assets.testing.chain import run_chain
    from astrid_assets.testing.realsets import M51_NIGHTS, m51_drop

    drop = m51_drop(settings.real_data_dir(), work / "drop")
    start = time.perf_counter()
    run = run_chain(drop, *M51_NIGHTS, DagsterInstance.get())
    wall = time.perf_counter() - start
    cal, diff, cand = (run.tables[name] for name in ("calibrated_frames", "difference_images", "candidate_detections"))
    later = diff[diff.night == M51_NIGHTS[1]]
    print(f"run success {run.success}; failed nights {run.failed_nights}; wall {wall:.0f} s")
    print("calibrated:", cal.status.value_counts().to_dict(), "fwhm", cal.fwhm_px.round(2).tolist())
    print("later-night differences:", later.status.value_counts().to_dict())
    print(later[["frame_id", "status", "reason", "s_corr_std", "registration_rms", "problem"]].to_string())
    ok = later[later.status == "ok"]
    if len(cand):
        later_cands = cand[cand.night == M51_NIGHTS[1]]
        unflagged = later_cands[later_cands["flags"] == 0].frame_id.value_counts().reindex(ok.frame_id, fill_value=0)
        print("candidates per frame:", later_cands.frame_id.value_counts().to_dict())
        print("unflagged candidates per frame:", unflagged.to_dict())
    print("completeness S/N>=10:", run.completeness(M51_NIGHTS[1]))


if __name__ == "__main__":
    main()
