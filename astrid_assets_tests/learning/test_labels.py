"""Human labels: validated, all-or-nothing, migrated with Alembic, on SQLite and PostgreSQL."""

import numpy as np
import pandas as pd
import pytest

from astrid_assets.io import migrate
from astrid_assets.io.schema import candidate_detections, metadata
from astrid_assets.io.tables import engine_for
from astrid_assets.labels import (
    LabelError,
    count_labels,
    latest_labels,
    read_csv_labels,
    record_labels,
    simulated_curation,
    unlabelled_candidates,
)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def url(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'astrid.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
        with engine_for(url).begin() as connection:
            connection.exec_driver_sql("DROP TABLE IF EXISTS validations, people, expert_reviews, "
                                       "astrid_alembic_version, candidate_detections")
    metadata.create_all(engine_for(url), tables=[candidate_detections])
    with engine_for(url).begin() as connection:
        connection.execute(candidate_detections.insert(), [
            {"night": "2024-01-06", "candidate_id": f"F01-s001-c{i:04d}", "frame_id": "F01-s001", "field": "F01",
             "rule_score": 0.1 * i, "ra": 150.0 + i / 3600, "dec": 2.0}
            for i in range(3)])
    return url


def labels(*rows):
    return pd.DataFrame(rows, columns=["candidate_id", "label", "labeller"])


def test_labels_are_recorded_and_the_newest_counts(url):
    assert record_labels(url, labels(("F01-s001-c0000", "real", "ana"), ("F01-s001-c0001", "Bogus", "ana"))) == 2
    record_labels(url, labels(("F01-s001-c0000", "unsure", "ben")))
    latest = latest_labels(url).set_index("candidate_id")
    assert latest.label.to_dict() == {"F01-s001-c0000": "unsure", "F01-s001-c0001": "bogus"}
    assert latest.loc["F01-s001-c0000", "night"] == "2024-01-06"
    assert count_labels(url) == 3
    assert unlabelled_candidates(url, "2024-01-06").candidate_id.tolist() == ["F01-s001-c0002"]
    assert migrate.is_current(url)


@pytest.mark.parametrize("bad, message", [
    (("F01-s001-c9999", "real", "ana"), "unknown candidate(s): F01-s001-c9999"),
    (("F01-s001-c0000", "maybe", "ana"), "unknown label(s) ['maybe']"),
])
def test_a_bad_label_rejects_the_whole_batch(url, bad, message):
    with pytest.raises(LabelError) as error:
        record_labels(url, labels(("F01-s001-c0001", "real", "ana"), bad))
    assert message in str(error.value)
    assert count_labels(url) == 0


def test_csv_import(url, tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("candidate_id,label,note\nF01-s001-c0000,real,clear PSF\nF01-s001-c0002,bogus,\n")
    assert record_labels(url, read_csv_labels(str(path), "carla")) == 2
    assert set(latest_labels(url).labeller) == {"carla"}


def test_the_cli_rejects_an_unknown_candidate(url, monkeypatch, capsys):
    from astrid_assets.cli import main

    monkeypatch.setenv("ASTRID_DATABASE_URL", url)
    assert main(["label", "F01-s001-c4242", "real", "--by", "ana"]) == 2
    assert "unknown candidate(s): F01-s001-c4242" in capsys.readouterr().err
    assert main(["label", "F01-s001-c0001", "real", "--by", "ana"]) == 0
    assert count_labels(url) == 1


def test_simulated_curator_labels_from_truth_with_its_error_rate():
    rng = np.random.default_rng(3)
    n = 400
    candidates = pd.DataFrame({"candidate_id": [f"c{i}" for i in range(n)], "frame_id": "f",
                               "ra": 10 + np.arange(n) * 1e-3, "dec": np.full(n, 5.0)})
    real = np.arange(n) % 4 == 0
    truth = pd.DataFrame({"frame_id": "f", "kind": "supernova", "ra": candidates.ra[real] + 0.3 / 3600,
                          "dec": candidates.dec[real], "flux": 5000.0, "flux_baseline": 0.0})
    exact = simulated_curation(candidates, truth, 1.0, 0.0, rng).set_index("candidate_id").label
    assert (exact[candidates.candidate_id[real]] == "real").all()
    assert (exact[candidates.candidate_id[~real]] == "bogus").all()
    noisy = simulated_curation(candidates, truth, 0.5, 0.1, rng).set_index("candidate_id").label
    assert 150 <= len(noisy) <= 250
    wrong = (noisy != exact[noisy.index]).mean()
    assert 0.03 < wrong < 0.2
