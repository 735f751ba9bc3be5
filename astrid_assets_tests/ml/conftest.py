"""Synthetic candidate stamps shared by the ML tests (made once per session)."""

from __future__ import annotations

import pytest
import torch

from astrid_assets.ml.dataset import StampSet, split_by_night
from astrid_assets.testing.stamps import make_stamps


@pytest.fixture(scope="session")
def synthetic():
    """1500 candidates over 30 nights, about half real."""
    return make_stamps(1500, seed=0, n_nights=30)


@pytest.fixture(scope="session")
def stamp_set(synthetic):
    return StampSet.from_stamps(synthetic.stamps, synthetic.labels, synthetic.fwhm, synthetic.ids)


@pytest.fixture(scope="session")
def night_split(synthetic):
    return split_by_night(synthetic.nights, (0.7, 0.15, 0.15), seed=0)


@pytest.fixture(scope="session")
def small_sets(stamp_set, night_split):
    """A small train/val pair for the mechanics tests (checkpoints, resume, determinism)."""
    return stamp_set.subset(night_split.train[:64]), stamp_set.subset(night_split.val[:32])


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Train on one intra-op thread, as on a busy 2-core machine it is the faster setting.

    With two OpenMP threads and other processes competing for the two cores, each barrier waits for
    a descheduled thread (spinning meanwhile): measured 3-5x slower than one thread.  On an idle
    machine two threads would be ~1.7x faster.  Restored after each test.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
