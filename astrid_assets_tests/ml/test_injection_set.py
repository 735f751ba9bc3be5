"""Injection sets' bogus class: recurring large changes (likely real transients and variables) are left out."""

import numpy as np
import pandas as pd

from astrid_assets.ml.injection_set import recurring_changes
from astrid_assets.science.products import STAMP_SIZE


def stamp(reference_flux: float, change: float, rng: np.random.Generator) -> np.ndarray:
    """(3, 63, 63) e-: a Gaussian source of ``reference_flux`` in the reference, ``change`` in the difference."""
    grid = np.arange(STAMP_SIZE) - STAMP_SIZE // 2
    profile = np.exp(-(grid[None, :] ** 2 + grid[:, None] ** 2) / (2 * 1.3**2)) / (2 * np.pi * 1.3**2)
    noise = rng.normal(0.0, 10.0, (3, STAMP_SIZE, STAMP_SIZE))
    science = (reference_flux + change) * profile
    return (np.stack([science, reference_flux * profile, change * profile]) + noise).astype(np.float32)


def test_recurring_large_changes_are_flagged_and_star_residuals_are_not() -> None:
    rng = np.random.default_rng(0)
    rows = [  # night, x, y, sign, reference flux, change
        ("2020-02-01", 100.0, 100.0, -1, 5000.0, -3000.0),  # a fading transient, twice
        ("2020-02-02", 100.4, 99.8, -1, 5000.0, -2500.0),
        ("2020-02-01", 200.0, 50.0, 1, 0.0, 2000.0),  # a new source on empty sky, twice
        ("2020-02-03", 200.3, 50.2, 1, 0.0, 1800.0),
        ("2020-02-01", 300.0, 300.0, 1, 2e5, 1500.0),  # a bright star's residual, 0.75 %, every night
        ("2020-02-02", 300.1, 300.0, 1, 2e5, 1600.0),
        ("2020-02-03", 299.9, 300.1, 1, 2e5, 1400.0),
        ("2020-02-02", 400.0, 120.0, 1, 0.0, 2500.0),  # a cosmic ray: once
        ("2020-02-02", 200.2, 50.1, -1, 0.0, -2000.0),  # opposite sign where the new source sits
    ]
    candidates = pd.DataFrame([{"night": n, "field": "F", "x": x, "y": y, "sign": s, "fwhm": 3.0}
                               for n, x, y, s, _, _ in rows])
    stamps = np.stack([stamp(f, c, rng) for *_, f, c in rows])
    flagged = recurring_changes(candidates, stamps)
    assert flagged.tolist() == [True, True, True, True, False, False, False, False, False]


def test_positions_are_compared_on_the_sky_when_the_reference_grid_changed() -> None:
    rng = np.random.default_rng(1)
    candidates = pd.DataFrame({
        "night": ["2020-02-01", "2020-02-02"], "field": "F", "sign": 1, "fwhm": 3.0,
        "x": [100.0, 140.0], "y": [100.0, 60.0],  # a new reference version: another grid
        "ra": [150.0, 150.0 + 0.2 / 3600], "dec": [20.0, 20.0], "pixel_scale": [0.8, 0.8]})
    stamps = np.stack([stamp(0.0, 2000.0, rng) for _ in range(2)])
    assert recurring_changes(candidates, stamps).tolist() == [True, True]
    far = candidates.assign(ra=[150.0, 150.0 + 5.0 / 3600])
    assert recurring_changes(far, stamps).tolist() == [False, False]
