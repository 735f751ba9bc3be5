"""Frames with no field card and no pointing, grouped by their star pattern across dithers, rotations and nights."""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from astrid_assets.surveys.fits_drop import UNPLACED_FIELD, fetch_fits_drop


def _frame(stars: np.ndarray, angle_deg: float, shift, seed: int, shape=(160, 160)) -> np.ndarray:
    """Gaussian stars (FWHM 3 px) of one target, rotated and shifted about the frame centre, on sky and noise."""
    rng = np.random.default_rng(seed)
    c = (np.array(shape[::-1]) - 1) / 2.0
    a = np.radians(angle_deg)
    xy = (stars[:, :2] - c) @ np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]).T + c + shift
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    image = 1000.0 + rng.normal(0.0, 10.0, shape)
    sigma = 3.0 / 2.3548
    for (x, y), flux in zip(xy, stars[:, 2], strict=True):
        image += flux / (2 * np.pi * sigma**2) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return image.astype(np.float32)


def _write(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.PrimaryHDU(image, fits.Header([("IMAGETYP", "LIGHT"), ("EXPTIME", 60.0)])).writeto(path)


def test_frames_without_field_or_pointing_are_grouped_by_their_stars(tmp_path):
    rng = np.random.default_rng(0)
    targets = [np.column_stack([rng.uniform(25, 135, (n, 2)), rng.uniform(3e3, 4e4, n)]) for n in (15, 5)]
    _write(tmp_path / "2024-03-01" / "a1.fits", _frame(targets[0], 0.0, (0, 0), 1))
    _write(tmp_path / "2024-03-01" / "a2.fits", _frame(targets[0], 0.4, (6.5, -4.0), 2))  # a dither
    _write(tmp_path / "2024-03-01" / "b1.fits", _frame(targets[1], 0.0, (0, 0), 3))  # another target, 5 stars
    _write(tmp_path / "2024-03-01" / "blank.fits", _frame(targets[1][:0], 0.0, (0, 0), 4))  # no star at all
    _write(tmp_path / "2024-03-02" / "c1.fits", _frame(targets[1], 180.0, (3.0, 2.0), 5))  # flipped over the meridian
    _write(tmp_path / "2024-03-02" / "c2.fits", _frame(targets[0], -0.3, (-8.0, 5.0), 6))

    first = {frame.frame_id.split("-")[1]: frame for frame in fetch_fits_drop(tmp_path, "2024-03-01")}
    second = {frame.frame_id.split("-")[1]: frame for frame in fetch_fits_drop(tmp_path, "2024-03-02")}

    assert first["a1"].field == first["a2"].field == second["c2"].field == "S-a1"
    assert first["b1"].field == second["c1"].field == "S-b1"
    assert "star pattern matches field S-b1" in second["c1"].field_reason
    assert first["blank"].field == UNPLACED_FIELD and "too few stars" in first["blank"].field_reason
