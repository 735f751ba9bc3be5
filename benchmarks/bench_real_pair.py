"""PSF estimation of both images of the real ESO 085-030 pair plus ZOGY, in units of six FFT pairs of the frame.

The pair is frames ``aligned_eso085-030-004.fit`` (reference) and ``-005.fit`` (new) of
``eso085-030/`` in the real-data folder (:func:`astrid_assets.settings.real_data_dir`, default
``../shared/data/real`` from the project root), calibrated as frames reduced elsewhere. Measured,
per run:

* ``science`` — :func:`~astrid_assets.science.psf.field.estimate_psf_field` of both images (their
  PSFs vary over the frame, so each gets the spatial model), then
  :func:`~astrid_assets.science.subtraction.tiles.zogy_field` on the numpy back end: one ZOGY pass,
  the tiled ZOGY, and the choice between them by the PSF-model error ε at the stars;
* ``fft`` — six ``scipy.fft.rfft2`` / ``irfft2`` pairs of a frame (float32, one thread): a yardstick
  of the machine's speed at the time, so that the ratio ``science / fft`` can be compared across
  machines and loads.

Both are timed alternately, ``--repeats`` times after one warm-up run; the figures are medians, in
seconds. Also printed: ``std(S_corr)`` of the result, whether the tiles were kept, and the 1-minute
load average (a loaded machine slows both, the ratio less so). Results go to
``benchmarks/results/real_pair.json``.

Run: ``.venv/bin/python benchmarks/bench_real_pair.py [--repeats 7]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import scipy.fft

from astrid_assets.defs.calibration import archive_reduced
from astrid_assets.science.calibration.calibrate import calibrate_frame
from astrid_assets.science.frames.files import read_frame
from astrid_assets.science.psf.field import estimate_psf_field
from astrid_assets.science.psf.stars import PSF_STAR_LIMITS
from astrid_assets.science.subtraction.inputs import SubtractionImage, ZogyOptions
from astrid_assets.science.subtraction.tiles import zogy_field

ROOT = Path(__file__).resolve().parents[1]
#: The pair's frames in the real-data folder, reference first; the night the frames are read for.
FRAMES, NIGHT = ("eso085-030/aligned_eso085-030-004.fit", "eso085-030/aligned_eso085-030-005.fit"), "2015-12-27"


def real_data_dir() -> Path:
    """The real-data folder: the project's setting if it has one, else ``../shared/data/real`` from the root."""
    try:
        from astrid_assets.settings import real_data_dir as configured
    except ImportError:
        return (ROOT / "../shared/data/real").resolve()
    return configured()


def load_pair(folder: Path) -> dict:
    """Calibrated, background-subtracted images (e-, float32), noise (e-), variance maps (e-²) and masks."""
    frames = []
    for name in FRAMES:
        path = folder / name
        image, header = read_frame(path.read_bytes(), NIGHT, path.stem)
        frame = calibrate_frame(image, header, archive_reduced(image.shape))
        frames.append({"image": (frame.science - frame.background).astype(np.float32),
                       "sigma": float(np.median(frame.background_rms)), "variance": frame.variance,
                       "mask": frame.mask})
    ref, new = frames
    return {"new": new, "ref": ref}


def science(pair: dict):
    """PSF fields of both images, then ZOGY with them (what is timed)."""
    new, ref = pair["new"], pair["ref"]
    new_field = estimate_psf_field(new["image"], 0.0, new["sigma"], new["mask"], **PSF_STAR_LIMITS)
    ref_field = estimate_psf_field(ref["image"], 0.0, ref["sigma"], ref["mask"], **PSF_STAR_LIMITS)
    return zogy_field(SubtractionImage(new["image"], new_field, new["sigma"], new["variance"], new["mask"]),
                      SubtractionImage(ref["image"], ref_field, ref["sigma"], ref["variance"], ref["mask"]),
                      ZogyOptions(backend="numpy", psf_error="auto"))


def fft_pairs(image: np.ndarray, n: int = 6) -> None:
    """``n`` forward and inverse real FFTs of the frame (the yardstick)."""
    for _ in range(n):
        scipy.fft.irfft2(scipy.fft.rfft2(image), s=image.shape)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each (after one warm-up)")
    parser.add_argument("--data", type=Path, default=None, help="real-data folder (default: the project's)")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "real_pair.json")
    args = parser.parse_args(argv)
    folder = args.data or real_data_dir()
    if not (folder / FRAMES[0]).is_file():
        parser.exit(1, f"no ESO 085-030 pair under {folder}\n")
    pair = load_pair(folder)
    image = pair["new"]["image"]
    result = science(pair)
    fft_pairs(image)
    times: dict[str, list[float]] = {"science": [], "fft": []}
    loads = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        result = science(pair)
        times["science"].append(time.perf_counter() - start)
        start = time.perf_counter()
        fft_pairs(image)
        times["fft"].append(time.perf_counter() - start)
        loads.append(os.getloadavg()[0])
    science_s, fft_s = statistics.median(times["science"]), statistics.median(times["fft"])
    row = {"shape": list(image.shape), "repeats": args.repeats, "science_s": round(science_s, 4),
           "six_fft_pairs_s": round(fft_s, 5), "ratio": round(science_s / fft_s, 2),
           "s_corr_std": round(float(result.s_corr_std), 4), "tiles_kept": bool(result.varying_psf),
           "psf_error": round(float(result.psf_error), 5), "load_1min": round(max(loads), 2),
           "cores": os.cpu_count()}
    print(f"science {science_s:.3f} s, six FFT pairs {fft_s:.4f} s, ratio {science_s / fft_s:.1f}x  "
          f"std(S_corr) {result.s_corr_std:.3f}, tiles kept: {result.varying_psf}, eps {result.psf_error:.4f}")
    print(f"load average (1 min) during the run: up to {max(loads):.2f} on {os.cpu_count()} cores")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
