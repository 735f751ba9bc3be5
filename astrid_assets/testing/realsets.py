"""Lay out the real data sets of ``../shared/data/real`` as FITS drop folders, as their READMEs say.

Real frames AstrID did not make (see each set's README; never copied into the project): the tests and benchmarks
run them through the nightly chain from a temporary drop folder, with nothing configured.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from pathlib import Path

from astropy.io import fits

__all__ = ["M51_NIGHTS", "m51_drop"]

#: The two nights of the M51 raw set: frames 1–9 on the first, 10–18 (``DATE-OBS`` one day later) on the second.
M51_NIGHTS = ("2012-02-18", "2012-02-19")


def m51_drop(real_data: Path, drop: Path) -> Path:
    """The M51 raw set as two epochs in ``drop``: ``<drop>/2012-02-18/`` holds science frames 1–9 and every
    bias, dark and flat; ``<drop>/2012-02-19/`` frames 10–18 with ``DATE-OBS`` moved one day later, and the same
    calibration frames (as its README says). Returns ``drop``."""
    source = Path(real_data) / "m51-raw"
    calibration = [path for path in sorted(source.glob("*.fit")) if not path.name.startswith("M51_")]
    for night, numbers, shift in [(M51_NIGHTS[0], range(1, 10), 0), (M51_NIGHTS[1], range(10, 19), 1)]:
        folder = Path(drop) / night
        folder.mkdir(parents=True, exist_ok=True)
        for path in calibration:
            shutil.copy(path, folder / path.name)
        for number in numbers:
            target = folder / f"M51_I_{number:03d}.fit"
            shutil.copy(source / f"M51_I_{number:03d}.fit", target)
            if shift:
                with fits.open(target, mode="update") as hdus:
                    header = hdus[0].header
                    moved = datetime.fromisoformat(header["DATE-OBS"]) + timedelta(days=shift)
                    header["DATE-OBS"] = moved.isoformat(timespec="seconds")
                    for card in ("JD", "MJD-OBS"):
                        if card in header:
                            header[card] = float(header[card]) + shift
    return Path(drop)
