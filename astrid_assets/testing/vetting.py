"""How well a real/bogus model vets a survey's candidates, judged against the survey's truth.

Shared by the injection-training test and ``benchmarks/bench_injection_training.py``: a model trained
on an injection set (:mod:`astrid_assets.ml.injection_set`) gets its operating threshold from the
set's validation split (a stated completeness of injected fakes of S/N ≥ 6), then scores every
candidate of the nights it never trained on, and is compared with the truth: a candidate is real when
a true transient's change of its sign lies under it (``real``), with that change's S/N (``truth_snr``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from astrid_assets.ml.dataset import SPLITS, split_sets
from astrid_assets.ml.metrics import operating_threshold, roc_auc

MIN_SNR = 6.0  #: real transients (and fakes) from this S/N count for completeness


@dataclass(frozen=True)
class Vetting:
    """A model's verdict on held-out candidates against the truth."""

    roc_auc: float  #: real vs everything else
    threshold: float  #: the operating threshold used
    real_snr_ge_6_kept: float  #: share of real candidates with truth S/N ≥ 6 at or above the threshold
    bogus_rejected: float  #: share of bogus candidates below the threshold
    n_real: int
    n_bogus: int

    def as_dict(self) -> dict:
        return asdict(self)


def injection_threshold(model, arrays: dict[str, np.ndarray], completeness: float = 0.95) -> float:
    """The threshold keeping ``completeness`` of the validation split's injected fakes of S/N ≥ 6."""
    from astrid_assets.ml.evaluation import predict

    val = split_sets(arrays)["val"]
    snr = np.asarray(arrays["snr"], float)[np.asarray(arrays["split"]) == SPLITS.index("val")]
    return operating_threshold(val.labels, predict(model, val, device="cpu"), completeness, snr, MIN_SNR)


def held_out(candidates: pd.DataFrame, arrays: dict[str, np.ndarray]) -> pd.DataFrame:
    """The candidates of the dataset's test nights (whole nights the model never trained or validated on)."""
    test_nights = set(np.asarray(arrays["nights"]).astype(str)[np.asarray(arrays["split"]) == SPLITS.index("test")])
    return candidates[candidates.night.isin(test_nights)].reset_index(drop=True)


def vet(probability: np.ndarray, real: np.ndarray, truth_snr: np.ndarray, threshold: float) -> Vetting:
    """ROC AUC, and the shares of real S/N ≥ 6 candidates kept and of bogus rejected at ``threshold``."""
    real, probability = np.asarray(real, bool), np.asarray(probability, float)
    bright = real & (np.asarray(truth_snr, float) >= MIN_SNR)
    return Vetting(
        roc_auc=roc_auc(real.astype(int), probability), threshold=float(threshold),
        real_snr_ge_6_kept=float((probability[bright] >= threshold).mean()) if bright.any() else float("nan"),
        bogus_rejected=float((probability[~real] < threshold).mean()) if (~real).any() else float("nan"),
        n_real=int(real.sum()), n_bogus=int((~real).sum()))
