"""Injection sets' bogus class: recurring large changes (likely real transients and variables) are left out."""

import numpy as np
import pandas as pd

from astrid_assets.ml.injection_set import moving_objects, recurring_changes
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


def test_a_change_seen_in_several_exposures_of_one_night_is_flagged() -> None:
    rng = np.random.default_rng(2)
    candidates = pd.DataFrame({
        "night": "2020-02-01", "field": "F", "sign": -1, "fwhm": 3.0,
        "frame_id": ["a", "b", "c", "a"], "x": [100.0, 100.3, 99.8, 300.0], "y": [50.0, 50.2, 49.9, 80.0]})
    stamps = np.stack([stamp(3000.0, -2500.0, rng) for _ in range(4)])  # a source gone from the new frames
    assert recurring_changes(candidates, stamps).tolist() == [True, True, True, False]


def test_tracklets_of_moving_objects_are_flagged_and_chance_alignments_are_not() -> None:
    rng = np.random.default_rng(3)
    times = 60000.0 + np.array([0.0, 0.01, 0.02])  # three exposures 14.4 min apart
    asteroid = [(120.0 + 800 * t, 300.0 - 400 * t) for t in times - times[0]]  # 8 px and -4 px per exposure
    rows = [("2020-02-01", "F", t, x, y, 1) for t, (x, y) in zip(times, asteroid, strict=True)]
    rows += [("2020-02-01", "F", t, *rng.uniform(0, 1000, 2), 1) for t in times for _ in range(20)]  # bogus
    rows += [("2020-02-01", "F", t, 500.0, 500.0, 1) for t in times]  # a stationary transient
    rows += [("2020-02-01", "G", t, x, y, 1) for t, (x, y) in zip(times[:2], asteroid[:2], strict=True)]  # two only
    candidates = pd.DataFrame(rows, columns=["night", "field", "mjd", "x", "y", "sign"])
    flagged = moving_objects(candidates)
    assert flagged[:3].all()
    assert not flagged[3:].any()
    assert not moving_objects(candidates.drop(columns="mjd")).any()  # no exposure times: nothing claimed
    assert not moving_objects(candidates.assign(sign=-1)).any()  # a moving object is a new source


def test_fakes_are_capped_against_every_bogus_example_of_the_set() -> None:
    from astrid_assets.ml.injection_set import Examples, cap_injections

    def examples(n: int, label: int, origin: str) -> Examples:
        return Examples(np.zeros((n, 3, STAMP_SIZE, STAMP_SIZE), np.float32),
                        np.zeros((n, STAMP_SIZE, STAMP_SIZE), np.float32), np.full(n, label),
                        np.array([f"{origin}{k}" for k in range(n)]), np.full(n, "2020-02-01"), np.full(n, "a"),
                        np.full(n, origin), np.full(n, np.nan), np.ones(n, np.float32))

    mixed = Examples.concatenate([examples(100, 1, "injection"), examples(2, 0, "detection"),
                                  examples(4, 0, "human"), examples(3, 1, "human")])
    capped = cap_injections(mixed, 15.0, seed=0)
    assert (capped.origin == "injection").sum() == 90  # 15 per bogus example, people's bogus labels counted
    assert (capped.origin == "human").sum() == 7 and (capped.origin == "detection").sum() == 2
    assert cap_injections(mixed, 50.0, seed=0) is mixed
