"""Fakes in a whole frame: placement beside sources, recovery through the differencing, and the
training examples they make (stamps centred on the fake, masks on its injected footprint)."""

import numpy as np
import pytest

from astrid_assets.ml.injection_set import Examples, injected_examples
from astrid_assets.science.injection.fakes import fake_positions, footprint_masks, injection_recovery
from astrid_assets.science.products import STAMP_SIZE, CalibratedFrame, Reference
from astrid_assets.science.psf.empirical import estimate_psf
from astrid_assets_tests.science import scenes

SHAPE = (300, 300)
CENTRE = STAMP_SIZE // 2


def test_footprint_of_a_bright_fake_is_its_disc_above_two_sigma() -> None:
    # 1000 e- in a Gaussian of FWHM 3 px (sigma 1.274): peak 98 e-/px; with sigma 10 e-/px the 2-sigma
    # contour is at r = sigma_psf * sqrt(2 ln(98 / 20)) = 2.27 px around the true position.
    masks = footprint_masks(np.array([[0.4, -0.3]]), np.array([1000.0]), 3.0, np.array([10.0]))
    grid = np.arange(STAMP_SIZE) - CENTRE
    r = np.hypot(grid[None, :] - 0.4, grid[:, None] + 0.3)
    expected = r <= 1.2740 * np.sqrt(2 * np.log(1000 / (2 * np.pi * 1.2740**2) / 20))
    assert masks.shape == (1, STAMP_SIZE, STAMP_SIZE)
    assert np.array_equal(masks[0] > 0, expected)


def test_footprint_of_a_faint_fake_is_the_fwhm_disc() -> None:
    masks = footprint_masks(np.array([[0.0, 0.0]]), np.array([30.0]), 3.0, np.array([10.0]))
    assert masks[0].sum() == np.sum(np.add.outer((np.arange(STAMP_SIZE) - CENTRE) ** 2,
                                                 (np.arange(STAMP_SIZE) - CENTRE) ** 2) <= 9)


@pytest.fixture(scope="module")
def frame_and_reference():
    rng = np.random.default_rng(3)
    wcs = scenes.tan_wcs(SHAPE)
    x, y = scenes.star_positions(SHAPE, 40, rng, margin=10, min_separation=25)
    flux = np.exp(rng.uniform(np.log(5e3), np.log(2e5), x.size))
    new = scenes.observe(scenes.render_stars(SHAPE, x, y, flux, 3.0), 300.0, 5.0, rng, 3.0)
    ref = scenes.observe(scenes.render_stars(SHAPE, x, y, flux, 3.5), 80.0, 3.0, rng, 3.5)
    header = wcs.to_header()
    frame = CalibratedFrame(new.image, new.mask, new.variance, np.full(SHAPE, new.background, np.float32),
                            np.full(SHAPE, new.background_rms, np.float32), header)
    ref_image = ref.image - ref.background
    reference = Reference(ref_image, ref.variance, ref.mask,
                          estimate_psf(ref_image, 0.0, ref.background_rms, ref.mask).image, header)
    return frame, reference, np.column_stack([x, y])


def test_host_fraction_places_fakes_beside_sources(frame_and_reference) -> None:
    frame, reference, stars = frame_and_reference
    xy, hosted = fake_positions(frame, reference, 30, np.random.default_rng(0), hosts=stars, host_fraction=0.5,
                                host_radius=6.0, min_separation=12)
    assert len(xy) >= 20 and 0.25 < hosted.mean() < 0.75
    distance = np.min(np.hypot(xy[:, None, 0] - stars[None, :, 0], xy[:, None, 1] - stars[None, :, 1]), axis=1)
    assert np.all(distance[hosted] <= 6.0 + 1e-9)


def test_recovered_fakes_come_with_centred_stamps_and_footprints(frame_and_reference) -> None:
    frame, reference, _ = frame_and_reference
    outcome = injection_recovery(frame, reference, _no_candidates(),
                                 np.random.default_rng(1), n_fakes=25, snr_range=(12.0, 40.0), host_fraction=0.3)
    assert outcome.recovered.mean() >= 0.95
    assert outcome.hosted.any()
    n = int(outcome.recovered.sum())
    assert outcome.stamps.shape == (n, 3, STAMP_SIZE, STAMP_SIZE) and outcome.masks.shape == (n, STAMP_SIZE, STAMP_SIZE)
    inner = outcome.stamps[:, 2, CENTRE - 5: CENTRE + 6, CENTRE - 5: CENTRE + 6].reshape(n, -1)
    peak_y, peak_x = np.unravel_index(np.argmax(inner, axis=1), (11, 11))
    assert np.all(np.hypot(peak_x - 5, peak_y - 5) <= 1.5)  # the fake's peak is at the stamp's centre
    assert np.all(outcome.masks[:, CENTRE, CENTRE] == 1)  # footprint over the fake
    assert np.all(outcome.masks.sum(axis=(1, 2)) >= 9)


def test_injected_examples_are_real_with_their_snr(frame_and_reference) -> None:
    frame, reference, _ = frame_and_reference
    examples = injected_examples(frame, reference, _no_candidates(), "2011-05-04", "f1",
                                 np.random.default_rng(2), rounds=2, fakes_per_round=15, snr_range=(8.0, 60.0))
    assert len(examples) >= 24  # 30 fakes at S/N >= 8 (a few fall on a star or are lost)
    assert (examples.labels == 1).all() and (examples.origin == "injection").all()
    assert len(set(examples.ids)) == len(examples) and (examples.snr >= 8).all()  # changes of stars may exceed 60
    both = Examples.concatenate([examples, Examples.empty()])
    assert len(both) == len(examples) and both.arrays()["stamps"].shape[1:] == (3, STAMP_SIZE, STAMP_SIZE)


def _no_candidates():
    import pandas as pd

    return pd.DataFrame(columns=["x", "y"])


def test_changes_of_stars_brighten_or_fade_them_and_are_found_with_their_sign(frame_and_reference) -> None:
    frame, reference, stars = frame_and_reference
    outcome = injection_recovery(frame, reference, _no_candidates(), np.random.default_rng(5), n_fakes=30,
                                 snr_range=(8.0, 60.0), change_fraction=0.6)
    fading = outcome.sign < 0
    assert fading.sum() >= 3 and (outcome.sign > 0).sum() >= 10
    assert outcome.recovered[fading].mean() >= 0.9 and outcome.recovered[~fading].mean() >= 0.9
    kept_sign = outcome.sign[outcome.recovered]
    centre = outcome.stamps[:, 2, CENTRE - 1: CENTRE + 2, CENTRE - 1: CENTRE + 2].sum(axis=(1, 2))
    assert np.all(np.sign(centre) == kept_sign)  # a fading star is a negative difference at the centre
    science_centre = outcome.stamps[kept_sign < 0, 0, CENTRE, CENTRE]
    assert np.all(science_centre > 0)  # ... of a star still there in the science frame
