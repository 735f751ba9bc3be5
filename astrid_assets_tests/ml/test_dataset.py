"""Stamp normalisation, transient masks, night splits and the content digest."""

from __future__ import annotations

import numpy as np
import pytest

from astrid_assets.ml.dataset import (
    CENTRE,
    StampSet,
    content_digest,
    normalise_stamps,
    robust_background,
    split_by_night,
    transient_masks,
)
from astrid_assets.testing.stamps import make_stamps


@pytest.fixture(scope="module")
def few():
    return make_stamps(120, seed=3, n_nights=8)


def test_normalised_stamps_are_finite_float32_significances(few):
    stamps = few.stamps.copy()
    stamps[0, :, :10] = np.nan  # beyond the image edge
    stamps[1, 1] = np.nan  # a whole channel missing
    out = normalise_stamps(stamps)
    assert out.dtype == np.float32 and out.shape == stamps.shape and out.flags.c_contiguous
    assert np.isfinite(out).all()
    assert (out[0, :, :10] == 0).all() and (out[1, 1] == 0).all()
    # background pixels are ~N(0, 1) significances, compressed by arcsinh(z / 3): median 0, rms ~1/3
    background = out[:, 2, :10, :10]
    assert abs(np.median(background)) < 0.02
    assert 0.25 < np.std(background) < 0.4
    # invariant to the sky level and the flux scale of each channel
    scaled = stamps * np.array([2.0, 0.5, 3.0], np.float32)[None, :, None, None] + np.float32(100.0)
    np.testing.assert_allclose(normalise_stamps(scaled), out, atol=2e-4)


def test_robust_background_ignores_the_source_and_nan():
    rng = np.random.default_rng(0)
    stamps = rng.normal(50.0, 4.0, (2, 3, 63, 63)).astype(np.float32)
    stamps[:, :, 28:35, 28:35] += 1e4  # a bright source
    stamps[1, :, :, :20] = np.nan
    median, sigma = robust_background(stamps)
    np.testing.assert_allclose(median, 50.0, atol=0.6)
    np.testing.assert_allclose(sigma, 4.0, rtol=0.08)


def test_normalise_rejects_wrong_shapes():
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        normalise_stamps(np.zeros((3, 63, 63), np.float32))


def test_masks_real_non_empty_at_the_centre_bogus_empty(few):
    masks = transient_masks(few.stamps, few.labels, few.fwhm)
    assert masks.shape == (len(few.labels), 63, 63) and masks.dtype == np.float32
    real, bogus = few.labels == 1, few.labels == 0
    assert real.sum() > 20 and bogus.sum() > 20
    assert (masks[bogus] == 0).all()
    sizes = masks[real].sum(axis=(1, 2))
    assert (sizes >= 3).all()
    rows, cols = np.nonzero(masks[real].any(axis=0))
    distance = np.hypot(rows - CENTRE, cols - CENTRE)
    assert distance.max() <= few.fwhm.max() + 1e-9  # within one FWHM of the centre
    for k in np.flatnonzero(real):  # each footprint covers (or touches) the central pixel
        assert masks[k, CENTRE - 1 : CENTRE + 2, CENTRE - 1 : CENTRE + 2].any()


def test_masks_follow_fading_sources_and_fall_back_to_a_disc():
    stamps = np.random.default_rng(1).normal(0.0, 1.0, (3, 3, 63, 63)).astype(np.float32)
    yy, xx = np.mgrid[0:63, 0:63]
    blob = np.exp(-((yy - CENTRE) ** 2 + (xx - CENTRE) ** 2) / (2 * 1.3**2)).astype(np.float32)
    stamps[0, 2] += 40 * blob  # bright brightening
    stamps[1, 2] -= 40 * blob  # bright fading
    masks = transient_masks(stamps, np.array([1, 1, 1]), fwhm=3.0)
    disc = (yy - CENTRE) ** 2 + (xx - CENTRE) ** 2 <= 9
    for k in (0, 1):
        assert masks[k, CENTRE, CENTRE] == 1 and masks[k][~disc].sum() == 0 and masks[k].sum() >= 9
    np.testing.assert_array_equal(masks[2], disc)  # pure noise "real": nothing above 2 sigma → the disc


def test_stamp_set_checks_consistency(few):
    good = StampSet.from_stamps(few.stamps[:4], few.labels[:4], few.fwhm[:4])
    assert len(good) == 4 and len(good.subset(np.array([0, 2]))) == 2
    with pytest.raises(ValueError):
        StampSet(good.inputs, good.labels[:3], good.masks)
    with pytest.raises(ValueError, match="labels"):
        StampSet(good.inputs, np.array([0, 1, 2, 1], np.float32), good.masks)


def test_split_by_night_leaks_no_night():
    rng = np.random.default_rng(4)
    nights = rng.choice([f"2026-11-{d:02d}" for d in range(1, 21)], size=2000)
    split = split_by_night(nights, (0.7, 0.15, 0.15), seed=7)
    rows = np.concatenate(split[:3])
    assert np.array_equal(np.sort(rows), np.arange(nights.size))  # every row exactly once
    groups = [set(nights[split.train]), set(nights[split.val]), set(nights[split.test])]
    assert not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])
    assert groups[0] == set(split.train_nights) and groups[1] == set(split.val_nights)
    fractions = np.array([len(split.train), len(split.val), len(split.test)]) / nights.size
    np.testing.assert_allclose(fractions, (0.7, 0.15, 0.15), atol=0.08)
    again = split_by_night(nights, (0.7, 0.15, 0.15), seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(split[:3], again[:3], strict=True))
    other = split_by_night(nights, (0.7, 0.15, 0.15), seed=8)
    assert not np.array_equal(split.test, other.test)


def test_split_by_night_gives_every_split_a_night():
    nights = np.array([1] * 50 + [2] + [3])  # one night dominates
    split = split_by_night(nights, seed=0)
    assert all(len(rows) > 0 for rows in split[:3])


def test_split_by_night_too_few_nights():
    with pytest.raises(ValueError, match="too few nights"):
        split_by_night(np.array(["2026-11-01"] * 10 + ["2026-11-02"] * 5))
    with pytest.raises(ValueError, match="fractions"):
        split_by_night(np.arange(10), fractions=(0.5, 0.2, 0.2))
    split = split_by_night(np.array([1, 1, 2]), fractions=(0.5, 0.5, 0.0))  # two splits need two nights
    assert len(split.test) == 0


def test_content_digest_tracks_labels_pixels_and_ids(few):
    stamps, labels, ids = few.stamps[:20].copy(), few.labels[:20].copy(), few.ids[:20].copy()
    stamps[0, :, :5] = np.nan
    digest = content_digest(stamps, labels, ids)
    assert len(digest) == 64 and digest == content_digest(stamps.copy(), labels.copy(), list(ids))
    order = np.random.default_rng(0).permutation(20)
    assert content_digest(stamps[order], labels[order], ids[order]) == digest  # row order does not matter
    flipped = labels.copy()
    flipped[3] = 1 - flipped[3]
    assert content_digest(stamps, flipped, ids) != digest
    nudged = stamps.copy()
    nudged[5, 2, 31, 31] += 1e-3
    assert content_digest(nudged, labels, ids) != digest
    renamed = ids.copy()
    renamed[0] = "cand-other"
    assert content_digest(stamps, labels, renamed) != digest
    other_nan = stamps.copy()
    other_nan[0, :, :5] = np.array([0xFFC00001], np.uint32).view(np.float32)[0]  # another NaN bit pattern
    assert other_nan[0, 0, 0, 0].view(np.uint32) != np.float32(np.nan).view(np.uint32)
    assert content_digest(other_nan, labels, ids) == digest
