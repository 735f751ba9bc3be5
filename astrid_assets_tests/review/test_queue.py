"""The queue's order on known probabilities, and what it leaves out."""

import numpy as np
import pandas as pd

from astrid_assets.review.queue import disagreement, teaching_order


def frame(probabilities, rule_scores=None, n_real=None, n_bogus=None):
    n = len(probabilities)
    return pd.DataFrame({
        "candidate_id": [f"c{i}" for i in range(n)], "real_probability": probabilities,
        "rule_score": rule_scores if rule_scores is not None else [0.5] * n,
        "n_real": n_real if n_real is not None else [0] * n, "n_bogus": n_bogus if n_bogus is not None else [0] * n})


def test_most_uncertain_first_then_disagreement_then_unscored():
    table = frame([0.95, 0.52, 0.10, 0.45, np.nan, 0.48, 0.52],
                  n_real=[0, 0, 0, 0, 0, 0, 1], n_bogus=[0, 0, 0, 0, 0, 0, 1])
    order = teaching_order(table).candidate_id.tolist()
    # |p - 0.5|: c1, c5 and c6 0.02 (c6 disputed: first of the three), c3 0.05, c2 0.40, c0 0.45; unscored last
    assert order == ["c6", "c1", "c5", "c3", "c2", "c0", "c4"]


def test_best_rule_score_first_without_a_champion():
    table = frame([np.nan] * 4, rule_scores=[0.2, 0.9, 0.5, 0.9], n_real=[0, 0, 0, 1], n_bogus=[0, 0, 0, 2])
    assert teaching_order(table).candidate_id.tolist() == ["c3", "c1", "c2", "c0"]


def test_disagreement_is_the_minority_share():
    assert disagreement(np.array([0, 2, 1, 3]), np.array([0, 2, 0, 1])).tolist() == [0.0, 0.5, 0.0, 0.25]
