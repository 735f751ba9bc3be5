"""The operating threshold chosen for a stated completeness, and what it gives (metrics.py)."""

import numpy as np
import pytest

from astrid_assets.ml.metrics import operating_point, operating_threshold


def test_threshold_keeps_the_stated_fraction_of_reals():
    reals = np.arange(1, 21) / 20  # 0.05, 0.10, ..., 1.00
    bogus = np.array([0.01, 0.07, 0.2, 0.6])
    labels = np.r_[np.ones(20), np.zeros(4)].astype(int)
    scores = np.r_[reals, bogus]
    assert operating_threshold(labels, scores, 0.95, mid_gap=False) == pytest.approx(0.10)  # 19 of 20 kept
    assert operating_threshold(labels, scores, 0.90, mid_gap=False) == pytest.approx(0.15)  # 18 of 20
    assert operating_threshold(labels, scores, 0.91, mid_gap=False) == pytest.approx(0.10)  # ceil(18.2) = 19
    assert operating_threshold(labels, scores, 1.0, mid_gap=False) == pytest.approx(0.05)
    point = operating_point(labels, scores, 0.10)
    assert point == {"completeness": 0.95, "bogus_rejection": 0.5, "n_real": 20, "n_bogus": 4}


def test_only_reals_of_enough_snr_count_when_snr_is_known():
    # four faint fakes (S/N 3) with low scores, ten bright ones (S/N 10) scoring 0.55 ... 1.0
    labels = np.r_[np.ones(14), np.zeros(3)].astype(int)
    scores = np.r_[[0.01, 0.02, 0.03, 0.04], np.linspace(0.55, 1.0, 10), [0.1, 0.3, 0.5]]
    snr = np.r_[np.full(4, 3.0), np.full(10, 10.0), np.full(3, np.nan)]
    threshold = operating_threshold(labels, scores, 0.9, snr=snr, min_snr=6.0, mid_gap=False)
    assert threshold == pytest.approx(0.6)  # 9 of the 10 bright reals; the faint ones do not count
    point = operating_point(labels, scores, threshold, snr=snr, min_snr=6.0)
    assert point["completeness"] == pytest.approx(0.9) and point["n_real"] == 10
    assert point["bogus_rejection"] == 1.0
    # no S/N known for any real (human labels, old datasets): every real counts
    unknown = np.full(17, np.nan)
    assert operating_threshold(labels, scores, 0.9, snr=unknown) == operating_threshold(labels, scores, 0.9)
    thirteenth = scores[:14][np.argsort(-scores[:14])][12]
    assert operating_threshold(labels, scores, 0.9, mid_gap=False) == pytest.approx(thirteenth)


def test_the_threshold_sits_mid_gap_between_the_kept_reals_and_the_bogus_below_them():
    labels = np.r_[np.ones(20), np.zeros(5)].astype(int)
    scores = np.r_[np.linspace(0.9990, 0.99999, 20), [0.001, 0.01, 0.02, 0.05, 0.9999]]
    edge = operating_threshold(labels, scores, 0.95, mid_gap=False)
    threshold = operating_threshold(labels, scores, 0.95)
    logit = np.log(np.array([edge, 0.05, threshold]) / (1 - np.array([edge, 0.05, threshold])))
    assert logit[2] == pytest.approx((logit[0] + logit[1]) / 2)  # midway in log-odds to the 95 % bogus: p ≈ 0.88
    at_edge, mid = operating_point(labels, scores, edge), operating_point(labels, scores, threshold)
    assert mid["bogus_rejection"] == at_edge["bogus_rejection"] == 0.8  # the same bogus rejected
    assert mid["completeness"] == 1.0 > at_edge["completeness"]  # and the margin keeps what sat at the edge
    # one bogus in twenty that looks real (a PSF-shaped noise peak) does not close the gap
    many = np.r_[labels, np.zeros(15, int)], np.r_[scores, np.linspace(0.001, 0.04, 15)]
    assert operating_threshold(*many, 0.95) == pytest.approx(threshold)
    # the bogus at the 95 % quantile above the edge: no gap, the edge itself
    assert operating_threshold(labels, np.r_[scores[:20], np.full(5, 0.99999)], 0.95) == pytest.approx(scores[1])


def test_ties_keep_at_least_the_stated_fraction():
    labels = np.ones(10, int)
    scores = np.r_[np.full(5, 0.9), np.full(5, 0.4)]
    threshold = operating_threshold(labels, scores, 0.6)
    assert threshold == 0.4 and operating_point(labels, scores, threshold)["completeness"] == 1.0


def test_operating_threshold_errors():
    with pytest.raises(ValueError, match="completeness"):
        operating_threshold(np.array([1, 0]), np.array([0.9, 0.1]), 0.0)
    with pytest.raises(ValueError, match="no real example"):
        operating_threshold(np.array([0, 0]), np.array([0.9, 0.1]))
    with pytest.raises(ValueError, match="no real example"):  # reals with S/N known, none bright enough
        operating_threshold(np.array([1, 0]), np.array([0.9, 0.1]), snr=np.array([4.0, np.nan]), min_snr=6)
    with pytest.raises(ValueError, match="S/N values"):
        operating_threshold(np.array([1, 0]), np.array([0.9, 0.1]), snr=np.array([4.0]))
    empty = operating_point(np.array([0]), np.array([0.2]), 0.5)
    assert np.isnan(empty["completeness"]) and empty["bogus_rejection"] == 1.0


def test_a_nights_injection_report_counts_fakes_missed_by_detection_or_by_the_model() -> None:
    from astrid_assets.ml.champions import injection_report

    snr = np.array([3.0, 7.0, 8.0, 12.0, 20.0, 40.0])
    recovered = np.array([False, False, True, True, True, True])  # the S/N-7 fake was not detected
    fake_real = [True, False, True, True]  # per recovered fake: the S/N-12 one was called bogus
    own_real = [True, False, False, None]  # one of the frames' own candidates was called real, one unscored
    report = injection_report(snr, recovered, fake_real, own_real, min_snr=6.0)
    assert report["fakes"] == 5
    assert report["detected"] == pytest.approx(4 / 5)
    assert report["completeness"] == pytest.approx(3 / 5)
    assert report["own_called_real"] == 1 and report["purity"] == pytest.approx(3 / 4)
