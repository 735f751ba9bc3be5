"""Per-instrument champions, promotion and the operating point, without Dagster or MLflow.

MLflow 3 aliases name the roles of the registered U-Net. A version trained on the frames of one
instrument competes for that instrument's alias ``champion-<slug>`` (:func:`champion_alias`; the slug of
the instrument key, :func:`~astrid_assets.science.frames.headers.instrument_slug`), measured on that
instrument's frozen benchmark; a version trained across instruments, or on data whose instruments are
unknown, competes for the plain ``champion`` (:func:`alias_for_instruments`). Every new version becomes
its alias's challenger (``challenger`` or ``challenger-<slug>``, :func:`challenger_alias`); it becomes
champion only if its ROC AUC on the frozen benchmark set meets an absolute floor and beats the current
holder's, measured on that same set now, by a margin (:func:`judge_promotion`). Scoring picks, per
candidate, the champion of its frame's instrument, else the plain champion (:func:`choose_alias`,
:func:`assign_champions`, :func:`score_with_champions`). The registry calls that record these decisions:
:mod:`astrid_assets.resources.mlflow_registry`.

* which instruments a dataset holds (:func:`dataset_instruments`), hence which alias a model trained
  on it competes for;
* the operating point of a trained model: the threshold chosen on the validation split for a stated
  completeness and what it gives on the test split (:func:`choose_operating_point`; the rule itself:
  :func:`astrid_assets.ml.metrics.operating_threshold`).

Dataset arrays (``load_arrays`` of a ``training_datasets`` npz) may hold two optional keys:
``snr`` (float per example: the expected S/N of an injected fake, NaN otherwise) and
``instruments`` (str per example: the instrument key of its frame). Older datasets have neither:
their instruments are unknown (a model trained on them competes for the plain ``champion``) and
every real validation example counts for completeness.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from astrid_assets.ml.dataset import SPLITS
from astrid_assets.ml.metrics import DEFAULT_THRESHOLD, operating_point, operating_threshold
from astrid_assets.science.frames.headers import instrument_slug

CHAMPION, CHALLENGER = "champion", "challenger"


def champion_alias(instrument: str | None = None) -> str:
    """``champion-<slug>`` of an instrument key (or slug); the plain ``champion`` for None or ""."""
    return f"{CHAMPION}-{instrument_slug(instrument)}" if instrument else CHAMPION


def challenger_alias(alias: str) -> str:
    """The challenger alias that goes with a champion alias (``challenger``, ``challenger-<slug>``)."""
    return CHALLENGER + alias[len(CHAMPION):]


def alias_for_instruments(instruments: Sequence[str]) -> str:
    """The alias a version trained on ``instruments`` competes for: one instrument's own, else ``champion``."""
    distinct = sorted({key for key in instruments if key})
    return champion_alias(distinct[0]) if len(distinct) == 1 else CHAMPION


def choose_alias(instrument: str | None, aliases: Mapping[str, str]) -> str | None:
    """The alias that scores a frame of ``instrument``: its ``champion-<slug>`` when ``aliases`` (alias →
    version, as the registry holds them) has it, else ``champion`` when it has that, else None."""
    own = champion_alias(instrument) if isinstance(instrument, str) and instrument else None
    for alias in (own, CHAMPION):
        if alias is not None and alias in aliases:
            return alias
    return None


@dataclass(frozen=True)
class PromotionDecision:
    promoted: bool
    reason: str
    champion_before: str | None  #: registry version that held the alias before the decision
    champion_metric: float | None


def judge_promotion(
    metric: float, current: str | None, champion_metric: float | None, floor: float, margin: float,
    alias: str = CHAMPION,
) -> PromotionDecision:
    """Whether a challenger whose frozen-set ROC AUC is ``metric`` takes ``alias`` from ``current`` (the
    registry version holding it, None: nobody), whose ROC AUC on the same set is ``champion_metric``.

    It does when ``metric`` meets ``floor`` and, against a holder, is at least ``champion_metric + margin``;
    an undefined (NaN) ROC AUC never promotes. With ``margin ≥ 0`` the holder's ROC AUC on the frozen set
    therefore never drops through a promotion.
    """
    if math.isnan(metric):
        return PromotionDecision(False, "frozen-set ROC AUC is undefined (the benchmark holds one class)",
                                 current, champion_metric)
    if metric < floor:
        return PromotionDecision(False, f"frozen-set ROC AUC {metric:.4f} is below the floor {floor:.4f}",
                                 current, champion_metric)
    if current is not None and champion_metric is not None and metric < champion_metric + margin:
        return PromotionDecision(
            False, f"frozen-set ROC AUC {metric:.4f} does not beat {alias} v{current} "
                   f"({champion_metric:.4f}) by the margin {margin:.4f}", current, champion_metric)
    measured = "" if champion_metric is None else f" ({champion_metric:.4f})"
    why = f"first {alias}" if current is None else f"beats {alias} v{current}{measured}"
    return PromotionDecision(True, f"frozen-set ROC AUC {metric:.4f}: {why}", current, champion_metric)


def _keys(values) -> list[str]:
    return sorted({str(v).strip() for v in values if isinstance(v, str) and v.strip()})


def dataset_instruments(arrays: Mapping[str, np.ndarray], rows: pd.DataFrame | None = None) -> list[str]:
    """The distinct instrument keys of a dataset, sorted: from its arrays' ``instruments`` when present,
    else from the ``instruments`` column (``,``-separated) of its ``training_datasets`` rows; empty when
    neither records them (the instruments are unknown)."""
    if "instruments" in arrays:
        return _keys(np.asarray(arrays["instruments"]).astype(str).tolist())
    if rows is not None and "instruments" in rows:
        return _keys(key for cell in rows["instruments"] if isinstance(cell, str) for key in cell.split(","))
    return []


def split_values(arrays: Mapping[str, np.ndarray], key: str, split: str) -> np.ndarray | None:
    """``arrays[key]`` of the examples of ``split`` (in the order of :func:`~astrid_assets.ml.dataset.split_sets`),
    or None when the dataset has no ``key``."""
    if key not in arrays:
        return None
    return np.asarray(arrays[key])[np.asarray(arrays["split"]) == SPLITS.index(split)]


@dataclass(frozen=True)
class OperatingPoint:
    """A model's real/bogus threshold and what it does on the test split."""

    threshold: float
    completeness: float  #: the completeness it was chosen for (on the validation split)
    min_snr: float  #: reals from this expected S/N count for completeness (when S/N is known)
    test_completeness: float  #: fraction of the test split's qualifying reals kept (nan: none)
    test_bogus_rejection: float  #: fraction of the test split's bogus rejected (nan: none)
    note: str  #: how the threshold was chosen

    def as_dict(self) -> dict[str, float | str]:
        return {"operating_threshold": self.threshold, "operating_completeness": self.completeness,
                "operating_min_snr": self.min_snr, "test_completeness": self.test_completeness,
                "test_bogus_rejection": self.test_bogus_rejection, "operating_note": self.note}


def choose_operating_point(
    val_labels: np.ndarray, val_probabilities: np.ndarray, val_snr: np.ndarray | None,
    test_labels: np.ndarray, test_probabilities: np.ndarray, test_snr: np.ndarray | None,
    completeness: float, min_snr: float,
) -> OperatingPoint:
    """The threshold keeping ``completeness`` of the validation split's reals of S/N ≥ ``min_snr`` (every
    real when no S/N is known), with the completeness and bogus rejection it gives on the test split.
    The threshold is chosen by :func:`astrid_assets.ml.metrics.operating_threshold` (the one place); with no
    qualifying validation real it is :data:`~astrid_assets.ml.metrics.DEFAULT_THRESHOLD` and the note says why."""
    snr_known = val_snr is not None and bool(np.isfinite(np.asarray(val_snr, float)[np.asarray(val_labels) == 1]).any())
    try:
        threshold = operating_threshold(val_labels, val_probabilities, completeness, val_snr, min_snr)
        note = (f"keeps {completeness:.0%} of validation reals" +
                (f" with S/N >= {min_snr:g}" if snr_known else " (no S/N recorded: all reals)") +
                ", mid-gap in log-odds to the bogus at the same quantile")
    except ValueError as error:
        threshold, note = DEFAULT_THRESHOLD, f"default {DEFAULT_THRESHOLD}: {error}"
    test = operating_point(test_labels, test_probabilities, threshold, test_snr, min_snr)
    return OperatingPoint(threshold, completeness, min_snr, test["completeness"], test["bogus_rejection"], note)


def assign_champions(
    candidates: pd.DataFrame, frame_instruments: Mapping[str, str], aliases: Mapping[str, str],
) -> pd.DataFrame:
    """Which champion scores each candidate.

    Parameters
    ----------
    candidates : pandas.DataFrame
        With ``frame_id``.
    frame_instruments : Mapping
        frame id → instrument key (``raw_observations.instrument``); a frame missing, or with no key,
        is scored by the plain ``champion``.
    aliases : Mapping
        The registry's aliases → versions.

    Returns
    -------
    pandas.DataFrame
        Aligned with ``candidates``: ``instrument`` (or None), ``alias`` and ``version`` (None where no
        champion applies).
    """
    instruments = [frame_instruments.get(frame) for frame in candidates.frame_id]
    chosen = [choose_alias(key if isinstance(key, str) else None, aliases) for key in instruments]
    return pd.DataFrame({"instrument": instruments, "alias": chosen,
                         "version": [aliases[a] if a is not None else None for a in chosen]},
                        index=candidates.index)


def score_with_champions(
    table: pd.DataFrame, versions: Sequence[str | None], stamps_of: Callable[[np.ndarray], np.ndarray],
    model_of: Callable[[str], object], threshold_of: Callable[[str], float],
    predict: Callable[[object, np.ndarray], np.ndarray],
) -> tuple[pd.DataFrame, dict[str, float]]:
    """``table`` with ``real_probability``, ``model_version`` and ``real`` filled per candidate.

    ``versions`` (aligned with ``table``) names the registry version that scores each candidate (None:
    unscored, all three null). Each version's candidates are scored together: ``stamps_of(positions)``
    gives their stamps, ``model_of(version)`` its model, ``predict(model, stamps)`` their real probabilities and
    ``threshold_of(version)`` the threshold at which ``real`` is true. Returns the table and each used
    version's threshold.
    """
    table = table.copy()
    table["real_probability"] = np.nan
    table["model_version"], table["real"] = None, None
    versions = pd.Series(list(versions), index=table.index, dtype=object)
    thresholds: dict[str, float] = {}
    for version in sorted({v for v in versions if v is not None}):
        rows = np.flatnonzero((versions == version).to_numpy())
        probabilities = np.asarray(predict(model_of(version), stamps_of(rows)), dtype=float)
        thresholds[version] = float(threshold_of(version))
        index = table.index[rows]
        table.loc[index, "real_probability"] = probabilities
        table.loc[index, "model_version"] = version
        table.loc[index, "real"] = probabilities >= thresholds[version]
    return table, thresholds


def injection_report(
    snr: np.ndarray, recovered: np.ndarray, fake_real: np.ndarray, own_real: np.ndarray, min_snr: float = 6.0,
) -> dict[str, float | int]:
    """A night's completeness and purity at the operating point, from its injection test.

    Parameters
    ----------
    snr, recovered : numpy.ndarray
        Every fake injected that night: expected S/N and whether detection recovered it.
    fake_real : numpy.ndarray of bool or None
        Per *recovered* fake (in order): called real at its model's threshold (None: not scored).
    own_real : numpy.ndarray of bool or None
        Per candidate of the untouched frames that were injected: called real (None: not scored).
    min_snr : float, default 6.0
        Fakes from this S/N count.

    Returns
    -------
    dict
        ``fakes`` (S/N ≥ ``min_snr``), ``detected`` (their fraction found by detection), ``completeness``
        (fraction found *and* called real: what the night's alert stream keeps of such sources),
        ``own_called_real`` (the frames' own candidates called real) and ``purity`` — the fraction of
        fakes among everything called real in those frames, counting every own candidate called real as
        an impurity: a lower bound on the purity of a stream as rich in real sources as the injection
        (NaN with nothing called real). Fractions with nothing to count are NaN.
    """
    snr, recovered = np.asarray(snr, float), np.asarray(recovered, bool)
    called = np.zeros(snr.size, bool)
    called[np.flatnonzero(recovered)] = np.asarray([bool(v) if v is not None else False for v in fake_real], bool)
    bright = snr >= min_snr
    own = int(sum(bool(v) for v in own_real if v is not None))
    kept = int(called[bright].sum())
    return {"fakes": int(bright.sum()),
            "detected": float(recovered[bright].mean()) if bright.any() else float("nan"),
            "completeness": float(called[bright].mean()) if bright.any() else float("nan"),
            "own_called_real": own,
            "purity": kept / (kept + own) if kept + own else float("nan")}
