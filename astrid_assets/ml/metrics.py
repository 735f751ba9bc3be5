"""Classification and segmentation metrics in numpy (no scikit-learn).

Conventions: labels are 1 (real, the positive class) / 0 (bogus); scores are probabilities or
any monotonic score; undefined quantities (ROC AUC with one class only) are ``nan``, and ratios
with a zero denominator are 0 (precision, recall, F1), except dice of two empty masks, which is 1.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, logit

#: The operating point, chosen here and nowhere else (:func:`operating_threshold`): the fraction of the
#: qualifying reals a model's threshold keeps, and the expected S/N from which a real qualifies.
OPERATING_COMPLETENESS, OPERATING_MIN_SNR = 0.95, 6.0
#: The threshold of a model version that records none, or whose validation split has no qualifying real.
DEFAULT_THRESHOLD = 0.5


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


def roc_auc_standard_error(auc: float, n_real: int, n_bogus: int) -> float:
    """Standard error of a ROC AUC measured on ``n_real`` real and ``n_bogus`` bogus examples (Hanley &
    McNeil 1982, Radiology 143, 29): ``√[(A(1−A) + (n₊−1)(Q₁−A²) + (n₋−1)(Q₂−A²)) / (n₊n₋)]`` with
    ``Q₁ = A/(2−A)`` and ``Q₂ = 2A²/(1+A)``. How far a set of that size lets a measured AUC stray from the
    model's: one misordered pair alone moves it by ``1/(n₊n₋)``. ``nan`` when either class is absent."""
    if n_real <= 0 or n_bogus <= 0 or not np.isfinite(auc):
        return float("nan")
    q1, q2 = auc / (2.0 - auc), 2.0 * auc**2 / (1.0 + auc)
    variance = (auc * (1.0 - auc) + (n_real - 1) * (q1 - auc**2) + (n_bogus - 1) * (q2 - auc**2)) / (n_real * n_bogus)
    return float(np.sqrt(max(variance, 0.0)))


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


def _operating_reals(labels: np.ndarray, snr: np.ndarray | None, min_snr: float) -> np.ndarray:
    """Which examples count for completeness: reals with ``snr >= min_snr`` when any real has a known S/N,
    else every real."""
    real = _binary(labels)
    if snr is None:
        return real
    snr = np.asarray(snr, dtype=np.float64).reshape(-1)
    if snr.size != real.size:
        raise ValueError(f"{snr.size} S/N values for {real.size} labels")
    known = real & np.isfinite(snr)
    return real & (snr >= min_snr) if known.any() else real


def operating_threshold(
    labels: np.ndarray, probabilities: np.ndarray, completeness: float = OPERATING_COMPLETENESS,
    snr: np.ndarray | None = None, min_snr: float = OPERATING_MIN_SNR, mid_gap: bool = True,
) -> float:
    """A probability threshold that keeps a stated fraction of the real examples, placed mid-gap.

    The one place where a model's real/bogus operating threshold is chosen: training
    (:func:`astrid_assets.ml.champions.choose_operating_point`, for ``unet_models``) calls it on the
    validation split, the registry records the result with the version and scoring reads it back
    (:func:`recorded_threshold`; :data:`DEFAULT_THRESHOLD` for a version without one).

    With ``p₁ ≥ p₂ ≥ … ≥ pₙ`` the probabilities of the *qualifying* reals and ``k = ⌈c·n⌉``, a
    candidate is called real when its probability is ``≥`` the threshold, so any threshold up to
    ``pₖ`` keeps at least ``k/n ≥ c`` of the qualifying reals (more when probabilities tie), and
    ``pₖ`` itself is the highest that does. With ``mid_gap`` the threshold is lowered into the gap
    between the classes: ``b`` is the bogus probability at the same quantile (the ``⌊c·(m−1)⌋``-th
    of the ``m`` bogus probabilities, ascending), so that at least the fraction ``c`` of the bogus
    lies at or below it, and the threshold is the midpoint in log-odds, ``σ((logit pₖ + logit b) / 2)``
    (``pₖ`` when ``b ≥ pₖ``). The examples a threshold is chosen on are rarely the candidates it is
    used on (injected fakes stand in for a survey's transients, one night's candidates for the
    next's): at the edge of the reals' distribution, the first real that scores a little lower than
    the examples did is lost, and mid-gap the margin is shared between the classes, as a
    maximum-margin classifier's boundary is. The quantile, not the highest bogus, bounds the gap
    because a bogus class always holds a few examples that look real (noise peaks shaped like the
    PSF at the detection threshold, the real transients among an injection set's detections).

    The qualifying reals are those whose expected S/N is at least ``min_snr`` (injected fakes of
    known S/N); when no real example has a known (finite) S/N — human labels, datasets made before
    S/N was recorded — every real example qualifies.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(N,)`` 1 real / 0 bogus.
    probabilities : numpy.ndarray
        ``(N,)`` real probabilities in ``[0, 1]``.
    completeness : float
        Fraction of the qualifying reals to keep, in ``(0, 1]``.
    snr : numpy.ndarray, optional
        ``(N,)`` expected S/N of each example, NaN where unknown (bogus, human-labelled reals).
    min_snr : float
        S/N from which a real counts for completeness.
    mid_gap : bool, default True
        Place the threshold mid-gap (above); False: ``pₖ``, the edge of the kept reals.

    Returns
    -------
    float
        The threshold, a probability.

    Raises
    ------
    ValueError
        When ``completeness`` is outside ``(0, 1]`` or no real example qualifies.
    """
    if not 0.0 < completeness <= 1.0:
        raise ValueError(f"completeness must be in (0, 1]; got {completeness}")
    probabilities = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    qualifying = _operating_reals(labels, snr, min_snr)
    if probabilities.size != qualifying.size:
        raise ValueError(f"{probabilities.size} probabilities for {qualifying.size} labels")
    kept = np.sort(probabilities[qualifying])[::-1]
    if kept.size == 0:
        raise ValueError(f"no real example with S/N >= {min_snr} to set a completeness on")
    k = int(np.ceil(completeness * kept.size - 1e-9))
    edge = float(kept[max(k, 1) - 1])
    bogus = probabilities[~_binary(labels)]
    if not mid_gap or bogus.size == 0:
        return edge
    level = float(np.quantile(bogus, completeness, method="lower"))
    if level >= edge:
        return edge
    edge_odds, level_odds = logit(np.clip([edge, level], 1e-12, 1 - 1e-12))  # finite at 0 and 1
    return float(expit((edge_odds + level_odds) / 2))


def recorded_threshold(value: object) -> float:
    """The operating threshold a model version recorded (a registry tag's text, a number or None): the value
    when it is a finite number, else :data:`DEFAULT_THRESHOLD`."""
    try:
        threshold = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return DEFAULT_THRESHOLD
    return threshold if np.isfinite(threshold) else DEFAULT_THRESHOLD


def operating_point(
    labels: np.ndarray, probabilities: np.ndarray, threshold: float, snr: np.ndarray | None = None,
    min_snr: float = OPERATING_MIN_SNR,
) -> dict[str, float]:
    """Completeness and bogus rejection at ``threshold`` (a candidate is real when ``probability ≥ threshold``).

    Parameters
    ----------
    labels, probabilities, snr, min_snr
        As for :func:`operating_threshold`.
    threshold : float
        The probability threshold.

    Returns
    -------
    dict
        ``completeness`` (fraction of the qualifying reals kept), ``bogus_rejection`` (fraction of
        the bogus below the threshold), ``n_real`` (qualifying reals) and ``n_bogus``; a fraction
        with nothing to count is ``nan``.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    qualifying = _operating_reals(labels, snr, min_snr)
    bogus = ~_binary(labels)
    called_real = probabilities >= threshold
    n_real, n_bogus = int(qualifying.sum()), int(bogus.sum())
    return {
        "completeness": float(called_real[qualifying].mean()) if n_real else float("nan"),
        "bogus_rejection": float((~called_real[bogus]).mean()) if n_bogus else float("nan"),
        "n_real": n_real,
        "n_bogus": n_bogus,
    }
