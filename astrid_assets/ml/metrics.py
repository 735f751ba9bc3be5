"""Classification and segmentation metrics in numpy (no scikit-learn).

Conventions: labels are 1 (real, the positive class) / 0 (bogus); scores are probabilities or
any monotonic score; undefined quantities (ROC AUC with one class only) are ``nan``, and ratios
with a zero denominator are 0 (precision, recall, F1), except dice of two empty masks, which is 1.
"""

from __future__ import annotations

import numpy as np


def _binary(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels).reshape(-1)
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    return labels.astype(bool)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` with ties given the mean of the ranks they span."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    boundaries = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1], True])
    starts, ends = boundaries[:-1], boundaries[1:]  # tie groups [start, end) in sorted order
    group_rank = 0.5 * (starts + 1 + ends)  # mean of ranks start+1 … end
    ranks = np.empty(values.size)
    ranks[order] = np.repeat(group_rank, ends - starts)
    return ranks


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve via the Mann–Whitney rank statistic (ties count one half).

    ``AUC = (R₊ − n₊(n₊+1)/2) / (n₊ n₋)`` with ``R₊`` the sum of the positives' average ranks:
    the probability that a random real candidate scores above a random bogus one.  ``nan`` when
    either class is absent; ``ValueError`` on non-finite scores.
    """
    positive = _binary(labels)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if scores.size != positive.size:
        raise ValueError(f"{scores.size} scores for {positive.size} labels")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    rank_sum = average_ranks(scores)[positive].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def confusion_counts(labels: np.ndarray, predictions: np.ndarray) -> dict[str, int]:
    """``tp``, ``fp``, ``tn``, ``fn`` of binary predictions (1 = real)."""
    truth = _binary(labels)
    predicted = _binary(predictions)
    if truth.size != predicted.size:
        raise ValueError(f"{predicted.size} predictions for {truth.size} labels")
    return {
        "tp": int(np.sum(truth & predicted)),
        "fp": int(np.sum(~truth & predicted)),
        "tn": int(np.sum(~truth & ~predicted)),
        "fn": int(np.sum(truth & ~predicted)),
    }


def precision_recall_f1(labels: np.ndarray, predictions: np.ndarray) -> tuple[float, float, float]:
    """Precision, recall and F1 of the real class (0 where a denominator is 0)."""
    c = confusion_counts(labels, predictions)
    precision = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else 0.0
    recall = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return float(precision), float(recall), float(f1)


def dice(predicted: np.ndarray, target: np.ndarray) -> float:
    """Dice coefficient ``2|P∩T| / (|P| + |T|)`` of binary masks pooled over all pixels of all
    stamps (so false-positive pixels on bogus stamps count against it); 1 when both are empty."""
    p = np.asarray(predicted).astype(bool)
    t = np.asarray(target).astype(bool)
    if p.shape != t.shape:
        raise ValueError(f"mask shapes differ: {p.shape} vs {t.shape}")
    total = int(p.sum()) + int(t.sum())
    return 1.0 if total == 0 else float(2.0 * np.sum(p & t) / total)


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5) -> dict:
    """ROC AUC, precision, recall, F1, accuracy and confusion counts at ``threshold``."""
    labels = np.asarray(labels).reshape(-1)
    probabilities = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    predictions = (probabilities >= threshold).astype(np.int64)
    precision, recall, f1 = precision_recall_f1(labels, predictions)
    counts = confusion_counts(labels, predictions)
    return {
        "roc_auc": roc_auc(labels, probabilities),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy": (counts["tp"] + counts["tn"]) / labels.size if labels.size else float("nan"),
        **counts,
    }
