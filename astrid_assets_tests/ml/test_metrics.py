"""Metrics against brute-force definitions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from astrid_assets.ml.metrics import (
    average_ranks,
    classification_metrics,
    confusion_counts,
    dice,
    precision_recall_f1,
    roc_auc,
    roc_auc_standard_error,
)


def pairwise_auc(labels, scores):
    positives, negatives = scores[labels == 1], scores[labels == 0]
    wins = [1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(positives, negatives)]
    return float(np.mean(wins))


def test_roc_auc_matches_the_pairwise_definition_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        labels = rng.integers(0, 2, 60)
        scores = np.round(rng.normal(labels * 0.8, 1.0), 1)  # rounding makes ties
        assert roc_auc(labels, scores) == pytest.approx(pairwise_auc(labels, scores), abs=1e-12)


def test_roc_auc_edge_cases():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert roc_auc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 0.0
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert np.isnan(roc_auc([1, 1, 1], [0.1, 0.2, 0.3]))
    with pytest.raises(ValueError):
        roc_auc([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError):
        roc_auc([0, 2], [0.1, 0.2])


def test_roc_auc_standard_error_matches_the_mann_whitney_null_and_the_spread_of_small_sets():
    # at AUC 0.5 Hanley & McNeil's formula gives the Mann-Whitney null: sqrt((n+ + n- + 1) / (12 n+ n-))
    assert roc_auc_standard_error(0.5, 50, 50) == pytest.approx(np.sqrt(101 / (12 * 50 * 50)), rel=0.01)
    rng = np.random.default_rng(1)
    labels = np.r_[np.ones(8, int), np.zeros(14, int)]
    aucs = [roc_auc(labels, rng.normal(labels * 2.0, 1.0)) for _ in range(2000)]  # true AUC ≈ 0.92
    assert roc_auc_standard_error(float(np.mean(aucs)), 8, 14) == pytest.approx(np.std(aucs), rel=0.25)
    assert roc_auc_standard_error(0.95, 40, 70) < roc_auc_standard_error(0.95, 8, 14)
    assert roc_auc_standard_error(1.0, 8, 14) == 0.0
    assert np.isnan(roc_auc_standard_error(0.9, 0, 14))


def test_average_ranks():
    np.testing.assert_array_equal(average_ranks([3.0, 1.0, 3.0, 2.0]), [3.5, 1.0, 3.5, 2.0])


def test_precision_recall_f1_and_counts():
    labels = np.array([1, 1, 1, 0, 0, 0, 0])
    predicted = np.array([1, 1, 0, 1, 0, 0, 0])
    assert confusion_counts(labels, predicted) == {"tp": 2, "fp": 1, "tn": 3, "fn": 1}
    precision, recall, f1 = precision_recall_f1(labels, predicted)
    assert (precision, recall) == (pytest.approx(2 / 3), pytest.approx(2 / 3)) and f1 == pytest.approx(2 / 3)
    assert precision_recall_f1([0, 0], [0, 0]) == (0.0, 0.0, 0.0)
    metrics = classification_metrics(labels, [0.9, 0.6, 0.2, 0.5, 0.1, 0.3, 0.4])
    assert metrics["tp"] == 2 and metrics["fp"] == 1 and metrics["accuracy"] == pytest.approx(5 / 7)


def test_dice():
    a = np.zeros((2, 5, 5), bool)
    b = np.zeros((2, 5, 5), bool)
    assert dice(a, b) == 1.0
    a[0, :2] = True  # 10 pixels
    b[0, 1:3] = True  # 10 pixels, 5 shared
    assert dice(a, b) == pytest.approx(0.5)
    b[1, 0, 0] = True  # one more target pixel missed
    assert dice(a, b) == pytest.approx(10 / 21)
