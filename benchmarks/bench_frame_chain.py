"""Per-frame cost of the nightly science on the simulated survey: calibration, differencing, detection and
the injection check, for this code and, alternated in the same run, an earlier checkout.

Usage::

    .venv/bin/python benchmarks/bench_frame_chain.py --sizes 1024 2048 --repeats 3
    git worktree add /tmp/astrid-before <rev>
    .venv/bin/python benchmarks/bench_frame_chain.py --sizes 1024 --baseline /tmp/astrid-before

One field of the simulated survey at ``N²`` (two nights of two frames for the reference, one night
searched): raw frames and the night's calibration frames are simulated once and kept as arrays, so
every code version starts from the same pixels. Each timed run is a child process importing the
code of one checkout (``PYTHONPATH``), runs and versions alternate (new, baseline, new, …), and each
child reports the median over its frames of:

* ``calibrate`` — ``calibrate_frame`` (and ``measurements.measure_frame`` where the code has it: the frame's stars
  and PSF are measured once, at calibration);
* ``difference`` — ``difference_frame`` against the field's reference as the assets store it (built
  and, where the code measures references, measured before timing): registration, PSF, ZOGY;
* ``candidates`` — ``find_candidates``;
* ``injection`` — ``injection_recovery`` with 60 fakes (reusing the difference where the code can);
* ``chain`` — their sum, the per-frame cost of calibration to candidates with the injection check.

The candidate count and ``std(S_corr)`` per frame are printed for both versions: the same science.
The machine's load average is printed with the figures (timings on a loaded 2-core machine vary).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("calibrate", "difference", "candidates", "injection", "chain")


def make_data(size: int, folder: Path) -> Path:
    """Simulate the nights once; arrays and header text only, readable by any code version."""
    from astrid_assets.testing.simulate import SurveyConfig, simulate_night

    path = folder / f"survey{size}.pkl"
    if path.exists():
        return path
    config = SurveyConfig(fields=("F01",), frames_per_night=2, shape=(size, size))
    nights = {}
    for night in ("2024-01-01", "2024-01-02", "2024-02-15"):
        nights[night] = [(f.data, f.header.tostring(), f.header["IMAGETYP"]) for f in simulate_night(night, config)]
    path.write_bytes(pickle.dumps(nights))
    return path


def child(data_path: str) -> dict:
    """Time the stages with whatever code ``astrid_assets`` resolves to (run in a child process)."""
    import numpy as np
    from astropy.io import fits

    try:  # stage layout (science/<stage>/…)
        from astrid_assets.science.calibration.calibrate import calibrate_frame
        from astrid_assets.science.calibration.masters import build_masters
        from astrid_assets.science.calibration.quality import measure_quality
        from astrid_assets.science.injection.fakes import injection_recovery
    except ImportError:  # the flat layout before it
        from astrid_assets.science.calibrate import calibrate_frame
        from astrid_assets.science.fakes import injection_recovery
        from astrid_assets.science.masters import build_masters
        from astrid_assets.science.quality import measure_quality
    from astrid_assets.science import pipeline

    try:
        from astrid_assets.science import measurements
    except ImportError:  # code from before frames and references carried their measurements
        measurements = None
    from astrid_assets.science.products import CalibratedFrame

    measure_frame = getattr(measurements, "measure_frame", lambda frame: frame)
    measure_reference = getattr(measurements, "measure_reference", lambda reference: reference)
    reuse = "like" in injection_recovery.__code__.co_varnames

    nights = pickle.loads(Path(data_path).read_bytes())

    def calibrated(night: str) -> list:
        frames = [(data, fits.Header.fromstring(text), kind) for data, text, kind in nights[night]]
        of = lambda kind: [(d, h) for d, h, k in frames if k == kind]  # noqa: E731
        masters = build_masters([d for d, _ in of("bias")], [(d, h["EXPTIME"]) for d, h in of("dark")],
                                [d for d, _ in of("flat")])
        out = []
        for data, header in of("object"):
            start = time.perf_counter()
            frame = calibrate_frame(data, header, masters)
            frame = CalibratedFrame(frame.science, frame.mask, frame.variance, frame.background,
                                    frame.background_rms, header)
            frame = measure_frame(frame)
            out.append((frame, time.perf_counter() - start, measure_quality(frame, header)))
        return out

    earlier = calibrated("2024-01-01") + calibrated("2024-01-02")
    reference, _ = pipeline.build_reference([f for f, _, _ in earlier], [q["fwhm_px"] for _, _, q in earlier],
                                            [q["depth_mag"] for _, _, q in earlier])
    reference = measure_reference(reference)
    times = {stage: [] for stage in STAGES}
    science = []
    for frame, calibrate_s, _ in calibrated("2024-02-15"):
        start = time.perf_counter()
        difference = pipeline.difference_frame(frame, reference)
        difference_s = time.perf_counter() - start
        start = time.perf_counter()
        candidates, _ = pipeline.find_candidates(difference, reference.wcs)
        candidates_s = time.perf_counter() - start
        start = time.perf_counter()
        on_sky, _ = pipeline.on_reference_sky(frame, reference)
        injection_recovery(on_sky, reference, candidates, np.random.default_rng(1),
                           **({"like": difference} if reuse else {}))
        injection_s = time.perf_counter() - start
        for stage, seconds in zip(STAGES, (calibrate_s, difference_s, candidates_s, injection_s), strict=False):
            times[stage].append(seconds)
        times["chain"].append(calibrate_s + difference_s + candidates_s + injection_s)
        s_corr_std = getattr(difference, "s_corr_std", getattr(difference, "score_std", float("nan")))
        science.append((len(candidates), round(float(s_corr_std), 4)))
    return {"median_s": {stage: statistics.median(values) for stage, values in times.items()}, "science": science}


def run_child(code: Path, data_path: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code)}
    out = subprocess.run([sys.executable, __file__, "--child", str(data_path)], env=env, cwd=str(code),
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024])
    parser.add_argument("--repeats", type=int, default=3, help="child runs per code version and size")
    parser.add_argument("--baseline", type=Path, help="a checkout of earlier code, timed alternately")
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "astrid-bench-frame-chain")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child)))
        return 0
    args.data.mkdir(parents=True, exist_ok=True)
    versions = {"this code": ROOT} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    print(f"load average at start: {os.getloadavg()}")
    report = {}
    for size in args.sizes:
        data_path = make_data(size, args.data)
        runs: dict[str, list[dict]] = {name: [] for name in versions}
        for _ in range(args.repeats):
            for name, code in versions.items():
                runs[name].append(run_child(code, data_path))
        report[size] = {}
        for name, results in runs.items():
            medians = {stage: statistics.median(r["median_s"][stage] for r in results) for stage in STAGES}
            report[size][name] = medians
            cells = "  ".join(f"{stage} {seconds:.3f} s" for stage, seconds in medians.items())
            print(f"{size}² {name:9s}: {cells}  (candidates, std(S_corr)) per frame {results[0]['science']}")
        if args.baseline:
            speedup = {stage: report[size]["baseline"][stage] / report[size]["this code"][stage] for stage in STAGES}
            print(f"{size}² speed-up: " + "  ".join(f"{stage} {value:.2f}x" for stage, value in speedup.items()))
    print(f"load average at end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
