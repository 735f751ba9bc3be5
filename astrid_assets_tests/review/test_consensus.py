"""The consensus training_datasets reads: majority with its confidence, Dawid–Skene, expert reviews."""

import numpy as np
import pandas as pd
import pytest

from astrid_assets.io.schema import candidate_detections, expert_reviews, metadata, validations
from astrid_assets.io.tables import engine_for
from astrid_assets.labels import labelled_candidates, record_labels
from astrid_assets.review.consensus import consensus, dawid_skene, votes_of


def labels(*rows):
    return pd.DataFrame([(i, *row) for i, row in enumerate(rows)],
                        columns=["validation_id", "candidate_id", "labeller", "label"])


def test_three_disagreeing_labellers_give_the_majority_with_two_thirds_confidence():
    result = consensus(labels(("c1", "ana", "real"), ("c1", "ben", "real"), ("c1", "cai", "bogus"))).iloc[0]
    assert (result.label, result.n_labels, result.method) == ("real", 3, "majority")
    assert result.agreement == pytest.approx(2 / 3)


def test_a_labellers_newest_label_is_their_vote_and_unsure_abstains():
    votes = votes_of(labels(("c1", "ana", "bogus"), ("c1", "ana", "real"), ("c1", "ben", "unsure"),
                            ("c2", "ana", "real"), ("c2", "ana", "unsure")))
    assert votes.to_dict("records") == [{"candidate_id": "c1", "labeller": "ana", "real": True}]


def test_a_tie_counts_as_real():
    result = consensus(labels(("c1", "ana", "real"), ("c1", "ben", "bogus"))).iloc[0]
    assert (result.label, result.agreement) == ("real", 0.5)


def test_dawid_skene_trusts_the_reliable_labeller_over_two_guessers():
    """cai and dan are right 95 % of the time (so they agree with each other), ana and ben guess. On the
    candidate where both guessers say bogus and cai alone says real, the majority says bogus; Dawid–Skene,
    having learnt who is reliable from the other candidates, says real."""
    rng = np.random.default_rng(1)
    truth = rng.random(120) < 0.5
    rows = []
    for i, real in enumerate(truth):
        for name, accuracy in (("cai", 0.95), ("dan", 0.95), ("ana", 0.5), ("ben", 0.5)):
            said_real = real if rng.random() < accuracy else not real
            rows.append((f"c{i}", name, "real" if said_real else "bogus"))
    rows += [("disputed", "ana", "bogus"), ("disputed", "ben", "bogus"), ("disputed", "cai", "real")]
    table = labels(*rows)
    assert consensus(table).set_index("candidate_id").loc["disputed", "label"] == "bogus"
    result = consensus(table, method="dawid-skene").set_index("candidate_id")
    assert result.loc["disputed", "label"] == "real" and result.loc["disputed", "agreement"] > 0.8
    reliability = dawid_skene(votes_of(table))[1].set_index("labeller")
    assert (reliability.loc[["cai", "dan"], ["sensitivity", "specificity"]] > 0.85).all(axis=None)
    assert (abs(reliability.loc[["ana", "ben"], ["sensitivity", "specificity"]] - 0.5) < 0.2).all(axis=None)
    expected = pd.Series(np.where(truth, "real", "bogus"), index=[f"c{i}" for i in range(len(truth))])
    by_majority = consensus(table).set_index("candidate_id").label.drop("disputed")
    accuracy = (result.label.drop("disputed") == expected[by_majority.index]).mean()
    assert accuracy > 0.9 and accuracy >= (by_majority == expected[by_majority.index]).mean()


def test_an_expert_review_settles_a_candidate():
    reviews = pd.DataFrame({"review_id": [1], "candidate_id": ["c1"], "confirmed": [False]})
    result = consensus(labels(("c1", "ana", "real"), ("c1", "ben", "real")), reviews).iloc[0]
    assert (result.label, result.agreement, result.method, result.n_labels) == ("bogus", 1.0, "expert", 2)


def test_training_datasets_read_the_consensus(tmp_path):
    """labelled_candidates (what training_datasets' human examples read) gives the documented label and
    confidence for three disagreeing labellers, keeps a single labeller's label, and takes an expert's word."""
    url = f"sqlite:///{tmp_path / 'astrid.db'}"
    metadata.create_all(engine_for(url), tables=[candidate_detections])
    with engine_for(url).begin() as connection:
        connection.execute(candidate_detections.insert(), [
            {"night": "2024-01-06", "candidate_id": f"c{i}", "frame_id": "f", "field": "F01"} for i in range(3)])
    record_labels(url, pd.DataFrame([("c0", "real", "ana"), ("c0", "bogus", "ben"), ("c0", "real", "cai"),
                                     ("c1", "bogus", "ana"), ("c2", "real", "ana")],
                                    columns=["candidate_id", "label", "labeller"]))
    with engine_for(url).begin() as connection:
        connection.execute(expert_reviews.insert().values(candidate_id="c2", night="2024-01-06", person="eve",
                                                          confirmed=False, importance=4, reviewed_at="now"))
    table = labelled_candidates(url, "2024-01-01", "2024-01-31").set_index("candidate_id")
    assert table.label.to_dict() == {"c0": "real", "c1": "bogus", "c2": "bogus"}
    assert table.agreement.to_dict() == pytest.approx({"c0": 2 / 3, "c1": 1.0, "c2": 1.0})
    assert table.loc["c0", "n_labels"] == 3 and table.loc["c0", "frame_id"] == "f"
    with engine_for(url).connect() as connection:  # the migration added what the page records
        assert {"model_version", "real_probability", "source"} <= set(validations.c.keys())
        connection.exec_driver_sql("SELECT model_version, real_probability, source FROM validations").all()


def test_no_labels_yet_give_votes_with_text_ids():
    """A window nobody has labelled (a new deployment): the empty votes merge with the candidates' text ids (the
    demo's queue answered 500 when they came back as floats)."""
    labels = pd.DataFrame({column: pd.Series([], dtype=object) for column in
                           ("validation_id", "candidate_id", "labeller", "label")})
    votes = votes_of(labels)
    assert votes.empty and votes.candidate_id.dtype == object and votes.labeller.dtype == object
    tally = votes.groupby("candidate_id").real.agg(n_real="sum", n_total="size")
    candidates = pd.DataFrame({"candidate_id": ["n1-c0000", "n1-c0001"]})
    merged = candidates.merge(tally, left_on="candidate_id", right_index=True, how="left")
    assert merged.n_total.isna().all()
