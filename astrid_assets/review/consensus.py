"""The consensus label of a candidate that several people labelled: what ``training_datasets`` learns from.

Votes
    Each labeller's **newest** label of a candidate is their vote (a person who changes their mind
    replaces their own vote; two people are two votes). ``unsure`` is an abstention. With one
    labeller who labelled once this is their label, as before several people could label.

``majority`` (the default, ``DatasetConfig.consensus``)
    The label is the majority of the real/bogus votes, a tie counting as ``real`` (a missed transient
    costs more than a bogus example); ``agreement`` — the confidence — is the fraction of votes that
    agree with it. Three labellers voting real, real, bogus give ``real`` with agreement 2/3.

``dawid-skene``
    Dawid & Skene (1979, *Appl. Statist.* 28, 20): each labeller *j* has their own confusion matrix,
    here sensitivity :math:`s_j = P(\\text{says real} | \\text{real})` and specificity
    :math:`t_j = P(\\text{says bogus} | \\text{bogus})`, estimated with the class prior
    :math:`\\pi = P(\\text{real})` by expectation–maximisation over *all* the votes given, starting from
    the majority's soft labels (the fraction of real votes). E-step: :math:`\\log P(\\text{real} | \\text{votes})
    \\propto \\log\\pi + \\sum_j [v_j \\log s_j + (1 - v_j)\\log(1 - s_j)]`, and likewise for bogus with
    :math:`t_j`; M-step: weighted counts with one pseudo-vote of each kind per labeller (a Beta(2, 2)
    prior, so a labeller seen once is not taken as infallible). The label is ``real`` when the
    posterior :math:`p \\ge 0.5`; ``agreement`` is :math:`\\max(p, 1 - p)`. Where labellers differ in
    reliability (a careful one against two who guess), the careful one's vote outweighs the other two.
    The same approach, a confusion matrix per volunteer, is SWAP's (Marshall et al. 2016, MNRAS 455, 1171).

Expert reviews
    An expert's review (:data:`astrid_assets.io.schema.expert_reviews`) settles a candidate: its newest
    review gives ``real`` (confirmed) or ``bogus`` with agreement 1 and method ``expert``, whatever the
    votes said.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["CONSENSUS_METHODS", "consensus", "dawid_skene", "majority", "votes_of"]

#: the methods :func:`consensus` knows (``DatasetConfig.consensus``)
CONSENSUS_METHODS = ("majority", "dawid-skene")
COLUMNS = ["candidate_id", "label", "agreement", "n_labels", "p_real", "method"]


def votes_of(labels: pd.DataFrame) -> pd.DataFrame:
    """Each labeller's newest real/bogus vote per candidate.

    Parameters
    ----------
    labels : pandas.DataFrame
        Rows of ``validations``: ``candidate_id``, ``labeller``, ``label`` and ``validation_id`` (the
        order labels were given in).

    Returns
    -------
    pandas.DataFrame
        ``candidate_id``, ``labeller`` and ``real`` (bool), one row per labeller who did not abstain.
    """
    if labels.empty:
        return pd.DataFrame({"candidate_id": pd.Series([], dtype=object), "labeller": pd.Series([], dtype=object),
                             "real": pd.Series([], dtype=bool)})
    newest = labels.sort_values("validation_id").drop_duplicates(["candidate_id", "labeller"], keep="last")
    newest = newest[newest.label.isin(["real", "bogus"])]
    return pd.DataFrame({"candidate_id": newest.candidate_id.to_numpy(), "labeller": newest.labeller.to_numpy(),
                         "real": (newest.label == "real").to_numpy()})


def majority(votes: pd.DataFrame) -> pd.DataFrame:
    """The majority label (a tie is ``real``) and the fraction of votes agreeing with it, per candidate."""
    if votes.empty:
        return pd.DataFrame(columns=COLUMNS)
    tally = votes.groupby("candidate_id").real.agg(["mean", "size"])
    return pd.DataFrame({
        "candidate_id": tally.index.to_numpy(),
        "label": np.where(tally["mean"] >= 0.5, "real", "bogus"),
        "agreement": np.maximum(tally["mean"], 1 - tally["mean"]).to_numpy(),
        "n_labels": tally["size"].to_numpy(),
        "p_real": tally["mean"].to_numpy(),
        "method": "majority",
    })


def dawid_skene(votes: pd.DataFrame, max_iterations: int = 100, tolerance: float = 1e-6,
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two-class Dawid–Skene consensus by expectation–maximisation (see the module's docstring).

    Parameters
    ----------
    votes : pandas.DataFrame
        From :func:`votes_of`.
    max_iterations : int, default 100
        EM iterations at most.
    tolerance : float, default 1e-6
        Stop when no posterior moves by more than this.

    Returns
    -------
    consensus : pandas.DataFrame
        :data:`COLUMNS`, ``p_real`` the posterior probability of ``real``.
    labellers : pandas.DataFrame
        ``labeller``, ``sensitivity``, ``specificity`` and ``n_votes``, the estimated reliabilities.
    """
    if votes.empty:
        return pd.DataFrame(columns=COLUMNS), pd.DataFrame(columns=["labeller", "sensitivity", "specificity",
                                                                    "n_votes"])
    candidate_codes, candidates = pd.factorize(votes.candidate_id)
    labeller_codes, labellers = pd.factorize(votes.labeller)
    said_real = votes.real.to_numpy(float)
    n_candidates, n_labellers = len(candidates), len(labellers)
    # initial soft labels: the fraction of real votes (the majority's)
    p_real = np.bincount(candidate_codes, said_real, n_candidates) / np.bincount(candidate_codes, None, n_candidates)
    for _ in range(max_iterations):
        weight_real, weight_bogus = p_real[candidate_codes], 1 - p_real[candidate_codes]
        # M-step, with a Beta(2, 2) prior on each labeller's sensitivity and specificity
        sensitivity = ((np.bincount(labeller_codes, weight_real * said_real, n_labellers) + 1)
                       / (np.bincount(labeller_codes, weight_real, n_labellers) + 2))
        specificity = ((np.bincount(labeller_codes, weight_bogus * (1 - said_real), n_labellers) + 1)
                       / (np.bincount(labeller_codes, weight_bogus, n_labellers) + 2))
        prior = np.clip(p_real.mean(), 1e-3, 1 - 1e-3)
        # E-step: each candidate's posterior from its votes
        s, t = sensitivity[labeller_codes], specificity[labeller_codes]
        log_real = np.log(prior) + np.bincount(
            candidate_codes, said_real * np.log(s) + (1 - said_real) * np.log(1 - s), n_candidates)
        log_bogus = np.log(1 - prior) + np.bincount(
            candidate_codes, (1 - said_real) * np.log(t) + said_real * np.log(1 - t), n_candidates)
        updated = 1 / (1 + np.exp(log_bogus - log_real))
        converged = np.max(np.abs(updated - p_real)) < tolerance
        p_real = updated
        if converged:
            break
    consensus_rows = pd.DataFrame({
        "candidate_id": np.asarray(candidates), "label": np.where(p_real >= 0.5, "real", "bogus"),
        "agreement": np.maximum(p_real, 1 - p_real), "n_labels": np.bincount(candidate_codes, None, n_candidates),
        "p_real": p_real, "method": "dawid-skene"})
    reliability = pd.DataFrame({"labeller": np.asarray(labellers), "sensitivity": sensitivity,
                                "specificity": specificity,
                                "n_votes": np.bincount(labeller_codes, None, n_labellers).astype(int)})
    return consensus_rows, reliability


def consensus(labels: pd.DataFrame, reviews: pd.DataFrame | None = None, method: str = "majority") -> pd.DataFrame:
    """The consensus label of every candidate with a vote or an expert review.

    Parameters
    ----------
    labels : pandas.DataFrame
        Rows of ``validations`` (``candidate_id``, ``labeller``, ``label``, ``validation_id``).
    reviews : pandas.DataFrame, optional
        Rows of ``expert_reviews`` (``candidate_id``, ``confirmed``, ``review_id``); the newest per
        candidate overrides its votes.
    method : {"majority", "dawid-skene"}
        How votes are combined (module docstring).

    Returns
    -------
    pandas.DataFrame
        One row per candidate: :data:`COLUMNS` (``agreement`` is the confidence in ``label``).
    """
    if method not in CONSENSUS_METHODS:
        raise ValueError(f"unknown consensus method {method!r}: use one of {', '.join(CONSENSUS_METHODS)}")
    votes = votes_of(labels)
    combined = majority(votes) if method == "majority" else dawid_skene(votes)[0]
    if reviews is not None and not reviews.empty:
        newest = reviews.sort_values("review_id").drop_duplicates("candidate_id", keep="last")
        settled = pd.DataFrame({
            "candidate_id": newest.candidate_id.to_numpy(),
            "label": np.where(newest.confirmed.astype(bool), "real", "bogus"), "agreement": 1.0,
            "n_labels": newest.candidate_id.map(combined.set_index("candidate_id").n_labels).fillna(0)
            .astype(int).to_numpy(),
            "p_real": newest.confirmed.astype(float).to_numpy(), "method": "expert"})
        combined = pd.concat([combined[~combined.candidate_id.isin(settled.candidate_id)], settled],
                             ignore_index=True)
    return combined[COLUMNS].sort_values("candidate_id").reset_index(drop=True)
