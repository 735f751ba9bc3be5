"""Benchmark of the differencing core: registration, PSF estimation, ZOGY, candidate extraction.

Usage::

    .venv/bin/python benchmarks/bench_differencing.py                 # 512² … 4096²
    .venv/bin/python benchmarks/bench_differencing.py --sizes 1024 2048 --repeats 5
    .venv/bin/python benchmarks/bench_differencing.py --output /tmp/differencing.json

Each size gets a synthetic pair on one grid (Moffat stars, new FWHM 2.5 px, reference
FWHM 4.0 px and deeper, Gaussian-approximated Poisson + read noise, 40 transients) and a
third frame with a rotated, shifted WCS for the registration timing. Timings are the median
of ``--repeats`` runs after one warm-up run (which also pays for one-off imports and FFT
plans). ``zogy_with_psf`` — what the pipeline runs: PSF estimation on both images, the test
whether either PSF varies over the frame (:func:`~astrid_assets.science.psf.field.estimate_psf_field`;
it does not here, so one ZOGY pass), ZOGY with the flux ratio fitted and the PSF-model error
calibrated (:func:`~astrid_assets.science.subtraction.tiles.zogy_field`) — is the figure with targets (issue 12:
≤ 0.5 s at 1024², ≤ 1.5 s at 2048²). ``zogy_with_psf_constant`` is the same without the
varying-PSF test and the PSF-error term (the chain before), for comparison in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy
from astropy.wcs import WCS
from scipy.signal import fftconvolve

from astrid_assets.science.astrometry.register import register_to_reference
from astrid_assets.science.detection.candidates import detect_candidates
from astrid_assets.science.psf.empirical import estimate_psf
from astrid_assets.science.psf.field import estimate_psf_field
from astrid_assets.science.psf.profiles import render_psf
from astrid_assets.science.subtraction.inputs import SubtractionImage, ZogyOptions
from astrid_assets.science.subtraction.tiles import zogy_field
from astrid_assets.science.subtraction.zogy import zogy

TARGETS_S = {"zogy_with_psf": {1024: 0.5, 2048: 1.5}}
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "differencing.json"
NEW_SKY, REF_SKY, NEW_READ, REF_READ = 400.0, 40.0, 5.0, 2.0


def tan_wcs(n: int, rotation_deg: float = 0.0, shift: tuple[float, float] = (0.0, 0.0)) -> WCS:
    """TAN WCS, 1 arcsec/px, tangent point at the grid centre (+ shift px)."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.crpix = [(n + 1) / 2 + shift[0], (n + 1) / 2 + shift[1]]
    theta = np.deg2rad(rotation_deg)
    wcs.wcs.cd = (1.0 / 3600.0) * np.array([[-np.cos(theta), np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return wcs


def star_image(n: int, x: np.ndarray, y: np.ndarray, flux: np.ndarray, fwhm: float) -> np.ndarray:
    """Noise-free stars at integer pixels convolved with a Moffat PSF (fast for large n)."""
    points = np.zeros((n, n), np.float32)
    np.add.at(points, (y, x), flux)
    return np.clip(fftconvolve(points, render_psf(fwhm, 25, "moffat"), mode="same"), 0.0, None).astype(np.float32)


def observe(model: np.ndarray, sky: float, read: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sky + model with Gaussian-approximated Poisson and read noise; the variance map."""
    variance = (model + sky + read**2).astype(np.float32)
    noise = rng.standard_normal(model.shape, dtype=np.float32) * np.sqrt(variance)
    return (model + sky + noise).astype(np.float32), variance


def make_scene(n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    n_stars = n * n // 4000
    x = rng.integers(20, n - 20, n_stars)
    y = rng.integers(20, n - 20, n_stars)
    flux = np.exp(rng.uniform(np.log(2e3), np.log(5e5), n_stars)).astype(np.float32)
    tx = rng.integers(30, n - 30, 40)
    ty = rng.integers(30, n - 30, 40)
    transients = star_image(n, tx, ty, np.full(40, 5e3, np.float32), 2.5)
    new, new_var = observe(star_image(n, x, y, flux, 2.5) + transients, NEW_SKY, NEW_READ, rng)
    ref, ref_var = observe(star_image(n, x, y, flux, 4.0), REF_SKY, REF_READ, rng)
    # the same sky seen through a rotated, shifted pointing, for the registration timing
    frame_wcs, ref_wcs = tan_wcs(n, 0.7, (13.4, -8.2)), tan_wcs(n)
    fx, fy = frame_wcs.world_to_pixel_values(*ref_wcs.pixel_to_world_values(x, y))
    inside = (fx > 0) & (fx < n - 1) & (fy > 0) & (fy < n - 1)
    frame, frame_var = observe(
        star_image(n, np.rint(fx[inside]).astype(int), np.rint(fy[inside]).astype(int), flux[inside], 2.5),
        NEW_SKY,
        NEW_READ,
        rng,
    )
    return {
        "new": new,
        "new_var": new_var,
        "ref": ref,
        "ref_var": ref_var,
        "frame": frame,
        "frame_var": frame_var,
        "frame_wcs": frame_wcs,
        "ref_wcs": ref_wcs,
        "mask": np.zeros((n, n), np.uint16),
    }


def timed(function: Callable[[], object], repeats: int) -> tuple[float, list[float], object]:
    """Median wall time of ``repeats`` runs after one warm-up run, the runs, and the last result."""
    result = function()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs), runs, result


def bench_size(n: int, repeats: int, backend: str) -> dict:
    scene = make_scene(n)
    new_sigma, ref_sigma = float(np.sqrt(NEW_SKY + NEW_READ**2)), float(np.sqrt(REF_SKY + REF_READ**2))
    new_bkg, ref_bkg = scene["new"] - NEW_SKY, scene["ref"] - REF_SKY
    timings: dict[str, dict] = {}

    def record(name: str, function: Callable[[], object]) -> object:
        median, runs, result = timed(function, repeats)
        timings[name] = {"median_s": median, "runs_s": runs}
        print(f"  {n:5d}²  {name:15s} {median:8.3f} s", flush=True)
        return result

    record(
        "registration",
        lambda: register_to_reference(
            scene["frame"] - NEW_SKY, scene["frame_var"], scene["mask"], scene["frame_wcs"], scene["ref_wcs"], (n, n)
        ),
    )
    new_psf = record("psf_estimation", lambda: estimate_psf(scene["new"], NEW_SKY, new_sigma, scene["mask"]))
    ref_psf = estimate_psf(scene["ref"], REF_SKY, ref_sigma, scene["mask"])
    def images(psf_new: object, psf_ref: object) -> tuple[SubtractionImage, SubtractionImage]:
        return (SubtractionImage(new_bkg, psf_new, new_sigma, scene["new_var"]),
                SubtractionImage(ref_bkg, psf_ref, ref_sigma, scene["ref_var"]))

    result = record("zogy", lambda: zogy(*images(new_psf, ref_psf), ZogyOptions(backend=backend)))

    def zogy_with_psf_constant() -> object:
        psf_n = estimate_psf(scene["new"], NEW_SKY, new_sigma, scene["mask"])
        psf_r = estimate_psf(scene["ref"], REF_SKY, ref_sigma, scene["mask"])
        return zogy(*images(psf_n, psf_r), ZogyOptions(backend=backend))

    def zogy_with_psf() -> object:
        field_n = estimate_psf_field(scene["new"], NEW_SKY, new_sigma, scene["mask"])
        field_r = estimate_psf_field(scene["ref"], REF_SKY, ref_sigma, scene["mask"])
        return zogy_field(*images(field_n, field_r), ZogyOptions(backend=backend, psf_error="auto"))

    record("zogy_with_psf_constant", zogy_with_psf_constant)
    field_result = record("zogy_with_psf", zogy_with_psf)
    candidates = record(
        "extraction",
        lambda: detect_candidates(
            result.S_corr,
            result.difference,
            result.difference_var,
            result.mask,
            scene["ref_wcs"],
            result.psf_fwhm,
            difference_psf=result.P_D,
        ),
    )
    return {
        "size": n,
        "timings": timings,
        "n_candidates": len(candidates),
        "s_corr_std": result.s_corr_std,
        "flux_ratio": result.flux_ratio,
        "backend": result.backend,
        "psf_stars": [new_psf.n_stars, ref_psf.n_stars],
        "varying_psf": field_result.varying_psf,
        "psf_error": field_result.psf_error,
    }


def environment(backend: str) -> dict:
    info = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "cpu_count": os.cpu_count(),
        "affinity_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "backend_requested": backend,
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda_available"] = bool(torch.cuda.is_available())
        info["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except ImportError:
        info["torch"] = None
        info["device"] = "cpu"
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048, 4096], help="image sides, px")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per step (after one warm-up)")
    parser.add_argument("--backend", default="auto", help="ZOGY backend: auto, numpy, torch, torch-cpu")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON file for the figures")
    args = parser.parse_args(argv)

    report = {"environment": environment(args.backend), "targets_s": TARGETS_S, "results": []}
    print(f"device {report['environment']['device']}, {report['environment']['cpu_count']} cores", flush=True)
    for n in args.sizes:
        report["results"].append(bench_size(n, args.repeats, args.backend))
    missed = [
        f"{step} at {entry['size']}²: {entry['timings'][step]['median_s']:.3f} s > {limits[entry['size']]} s"
        for entry in report["results"]
        for step, limits in TARGETS_S.items()
        if entry["size"] in limits and entry["timings"][step]["median_s"] > limits[entry["size"]]
    ]
    report["targets_missed"] = missed
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.output}" + (f"; targets missed: {missed}" if missed else "; all targets met"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
