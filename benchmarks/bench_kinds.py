"""Per-frame cost of each hard kind of frame (``astrid_assets.testing.kinds``) against a well-sampled field of the
same size, through the nightly chain (Dagster included), and each kind's acceptance figures.

Each kind runs in a fresh interpreter (its own ``ASTRID_HOME``); the time is that of the chain run alone (the
imports and the drop folder's writing excluded), divided by the science frames of the run. The kinds run in turn,
the yardstick first and last, so that a change of the machine's load shows. Results:
``benchmarks/results/kinds.json``.

Run: ``.venv/bin/python benchmarks/bench_kinds.py [KIND ...]``
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, os, sys, time
from pathlib import Path
import pandas as pd
from dagster import DagsterInstance
from astrid_assets.testing import skygen
from astrid_assets.testing.kinds import KINDS
from astrid_assets.testing.chain import run_chain
from astrid_assets.testing.matrix import evaluate
kind, root = sys.argv[1], Path(sys.argv[2])
cell = KINDS[kind]
truth = skygen.write_drop(root / "drop", cell)
last = (pd.Timestamp(cell.first_night) + pd.Timedelta(days=cell.n_nights - 1)).date().isoformat()
start = time.perf_counter()
run = run_chain(root / "drop", cell.first_night, last, DagsterInstance.get())
seconds = time.perf_counter() - start
result = evaluate(cell, truth, run)
frames = cell.n_nights * cell.frames_per_night
print(json.dumps({"kind": kind, "seconds": seconds, "frames": frames, "per_frame_s": seconds / frames,
                  "pixels": cell.shape[0] * cell.shape[1], "differenced_fraction": result.differenced_fraction,
                  "completeness": result.completeness, "unflagged_false_per_1024": result.unflagged_false_per_1024,
                  "median_s_corr_std": result.median_s_corr_std}))
"""


def run_kind(kind: str) -> dict:
    with tempfile.TemporaryDirectory() as work:
        home, dagster_home = Path(work) / "astrid", Path(work) / "dagster"
        dagster_home.mkdir(parents=True)
        (dagster_home / "dagster.yaml").touch()
        env = {**os.environ, "ASTRID_HOME": str(home), "DAGSTER_HOME": str(dagster_home), "ASTRID_POOL": "serial"}
        out = subprocess.run([sys.executable, "-c", CHILD, kind, work], env=env, capture_output=True, text=True,
                             check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    kinds = sys.argv[1:] or ["undersampled", "crowded", "sparse", "drizzled", "raw-borrowed-masters"]
    order = ["well-sampled", *kinds, "well-sampled"]
    results = []
    for kind in order:
        result = run_kind(kind)
        result["load_1min"] = os.getloadavg()[0]
        results.append(result)
        print(json.dumps(result), flush=True)
    base = [r for r in results if r["kind"] == "well-sampled"]
    yardstick = sum(r["per_frame_s"] / r["pixels"] for r in base) / len(base)  # s per frame per pixel
    print("\nkind                   s/frame   vs well-sampled (per pixel)")
    for r in results[1:-1]:
        r["cost_ratio"] = r["per_frame_s"] / r["pixels"] / yardstick
        print(f"{r['kind']:22s} {r['per_frame_s']:8.2f}   {r['cost_ratio']:.2f}x")
    print(f"well-sampled (first, last): {base[0]['per_frame_s']:.2f}, {base[-1]['per_frame_s']:.2f} s/frame")
    out = Path(__file__).with_name("results") / "kinds.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
