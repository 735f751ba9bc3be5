"""The order of the scanning queue: what teaches the model most comes first.

With a champion (some candidate of the window has a real probability):

1. scored candidates before unscored ones;
2. the champion's **uncertainty**, ``|p − 0.5|`` ascending, to two decimals (the precision the page shows);
3. then **disagreement** among the people who labelled it already, ``min(real, bogus) / votes``
   (0 … 0.5) descending: a candidate that people split on is worth another look;
4. then ``rule_score`` descending, then ``candidate_id`` (a stable order).

Without a champion (nothing scored): best ``rule_score`` first (to two decimals), then disagreement,
then ``candidate_id``. A mutual-information score from MC dropout is not computed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["disagreement", "teaching_order"]


def disagreement(n_real: np.ndarray, n_bogus: np.ndarray) -> np.ndarray:
    """``min(real, bogus) / (real + bogus)``: 0 when people agree (or nobody voted), 0.5 for an even split."""
    n_real, n_bogus = np.asarray(n_real, float), np.asarray(n_bogus, float)
    total = n_real + n_bogus
    return np.divide(np.minimum(n_real, n_bogus), total, out=np.zeros_like(total), where=total > 0)


def teaching_order(candidates: pd.DataFrame) -> pd.DataFrame:
    """``candidates`` sorted as the module's docstring says, with ``uncertainty`` and ``disagreement`` added.

    Parameters
    ----------
    candidates : pandas.DataFrame
        ``candidate_id``, ``real_probability`` (NaN: unscored), ``rule_score``, ``n_real`` and ``n_bogus``
        (other people's votes).

    Returns
    -------
    pandas.DataFrame
        The same rows, reordered, index reset.
    """
    probability = pd.to_numeric(candidates.real_probability, errors="coerce").to_numpy(float)
    ordered = candidates.assign(
        uncertainty=np.abs(probability - 0.5),
        disagreement=disagreement(candidates.n_real.to_numpy(), candidates.n_bogus.to_numpy()),
        _rule=-np.round(pd.to_numeric(candidates.rule_score, errors="coerce").fillna(0).to_numpy(float), 2),
        _unscored=np.isnan(probability),
        _uncertainty=np.round(np.nan_to_num(np.abs(probability - 0.5), nan=1.0), 2),
        _disagreement=-disagreement(candidates.n_real.to_numpy(), candidates.n_bogus.to_numpy()),
        _rule_exact=-pd.to_numeric(candidates.rule_score, errors="coerce").fillna(0).to_numpy(float),
    )
    if ordered._unscored.all():
        keys = ["_rule", "_disagreement", "candidate_id"]
    else:
        keys = ["_unscored", "_uncertainty", "_disagreement", "_rule_exact", "candidate_id"]
    ordered = ordered.sort_values(keys, kind="stable")
    return ordered.drop(columns=[c for c in ordered.columns if c.startswith("_")]).reset_index(drop=True)
