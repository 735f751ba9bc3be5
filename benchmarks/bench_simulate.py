"""Benchmark of the simulated survey: seconds to make one night's frames (calibrations and science).

Usage::

    .venv/bin/python benchmarks/bench_simulate.py                      # the default survey, 3 nights
    .venv/bin/python benchmarks/bench_simulate.py --nights 5 --size 1024 --output /tmp/simulate.json

Each night of ``--nights`` consecutive nights from ``--first-night`` is simulated with
:func:`astrid_assets.testing.simulate.simulate_night` (the default
:class:`~astrid_assets.testing.simulate.SurveyConfig`; ``--size`` changes the frame side), after one untimed
warm-up night. Figures: wall and process CPU
seconds per night (median), frames and megapixels per night, megapixels per wall second. The simulator
test (``astrid_assets_tests/testing/test_simulate.py``) checks what the frames hold; how long they take
is measured here (about 2–3 s a night of the default survey on 2 cores). Results go to
``benchmarks/results/simulate.json``; the machine's load average is recorded, since on a shared machine
other processes slow every figure down.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from datetime import date, timedelta
from pathlib import Path

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "simulate.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nights", type=int, default=3, help="timed nights (after one warm-up night)")
    parser.add_argument("--first-night", default="2024-01-10")
    parser.add_argument("--size", type=int, default=None, help="frame side in pixels (default: the survey's)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)

    from astrid_assets.testing.simulate import SurveyConfig, simulate_night

    config = SurveyConfig() if args.size is None else dataclasses.replace(SurveyConfig(), shape=(args.size, args.size))
    first = date.fromisoformat(args.first_night)
    simulate_night(first - timedelta(days=1), config)  # warm-up: imports, caches, first allocations
    rows = []
    for n in range(args.nights):
        night = (first + timedelta(days=n)).isoformat()
        wall, cpu = time.perf_counter(), time.process_time()
        frames = simulate_night(night, config)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        megapixels = sum(frame.data.size for frame in frames) / 1e6
        rows.append({"night": night, "frames": len(frames), "megapixels": round(megapixels, 2),
                     "wall_s": round(wall, 3), "cpu_s": round(cpu, 3)})
        print(f"{night}: {len(frames)} frames, {megapixels:.1f} Mpx in {wall:.2f} s wall, {cpu:.2f} s CPU", flush=True)
    wall_s = statistics.median(row["wall_s"] for row in rows)
    summary = {"median_wall_s_per_night": wall_s, "median_cpu_s_per_night": statistics.median(r["cpu_s"] for r in rows),
               "megapixels_per_s": round(statistics.median(r["megapixels"] for r in rows) / wall_s, 1)}
    print(f"\nmedian per night: {summary['median_wall_s_per_night']:.2f} s wall, "
          f"{summary['median_cpu_s_per_night']:.2f} s CPU, {summary['megapixels_per_s']} Mpx/s")
    report = {
        "benchmark": "simulate",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "load_average_1min": os.getloadavg()[0], "python": platform.python_version()},
        "settings": {"fields": list(config.fields), "frames_per_night": config.frames_per_night,
                     "shape": list(config.shape), "nights": args.nights},
        "summary": summary,
        "results": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
