"""A database written by an older AstrID is brought up to date by the migrations the app runs
(:func:`astrid_assets.io.migrate.upgrade`), on SQLite and PostgreSQL."""

import pandas as pd
import pytest
from alembic import command
from sqlalchemy import Column, Float, MetaData, Table, inspect

from astrid_assets.io import migrate
from astrid_assets.io.schema import candidate_detections, metadata
from astrid_assets.io.tables import add_missing_columns, engine_for, read_nights, write_rows

NIGHT = "2024-01-06"


def old_candidate_table() -> Table:
    """``candidate_detections`` as AstrID wrote it before revision 0002: the rule score in ``score``."""
    kept = [Column(c.name, c.type, nullable=c.nullable) for c in candidate_detections.columns if c.name != "rule_score"]
    return Table("candidate_detections", MetaData(), *kept, Column("score", Float))


DROP = "DROP TABLE IF EXISTS validations, people, expert_reviews, astrid_alembic_version, candidate_detections"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def old_database(request, tmp_path):
    """A database at the old head (0001) holding candidates with a ``score`` column."""
    postgres = request.param == "postgresql"
    url = request.getfixturevalue("postgres_url") if postgres else f"sqlite:///{tmp_path / 'astrid.db'}"
    if postgres:
        with engine_for(url).begin() as connection:
            connection.exec_driver_sql(DROP)
    old = old_candidate_table()
    with engine_for(url).begin() as connection:
        command.upgrade(migrate._config(connection), "0001")
        old.create(connection)
        connection.execute(old.insert(), [
            {"night": NIGHT, "candidate_id": f"c{i}", "frame_id": "F", "field": "F01", "score": 0.25 * i}
            for i in range(3)])
    yield url
    if postgres:  # the session's database: leave no old-shaped table to other tests
        with engine_for(url).begin() as connection:
            connection.exec_driver_sql(DROP)


def columns(url: str) -> set[str]:
    with engine_for(url).connect() as connection:
        return {column["name"] for column in inspect(connection).get_columns("candidate_detections")}


def test_the_old_score_column_becomes_rule_score(old_database):
    assert not migrate.is_current(old_database)
    migrate.upgrade(old_database)
    assert migrate.is_current(old_database)
    assert "score" not in columns(old_database) and "rule_score" in columns(old_database)
    stored = read_nights("candidate_detections", [NIGHT], old_database).sort_values("candidate_id")
    assert stored.rule_score.tolist() == [0.0, 0.25, 0.5]
    migrate.upgrade(old_database)  # idempotent
    with engine_for(old_database).begin() as connection:
        command.downgrade(migrate._config(connection), "0001")
    assert "score" in columns(old_database) and "rule_score" not in columns(old_database)


def test_rows_a_newer_writer_added_before_the_migration_keep_their_rule_score(old_database):
    """The IO manager adds ``rule_score`` to the old table on its first write; the migration then
    moves the old rows' ``score`` into it and drops ``score``."""
    with engine_for(old_database).begin() as connection:
        assert add_missing_columns(connection, candidate_detections) == ["rule_score"]
        new = pd.DataFrame({"night": ["2024-01-07"], "candidate_id": ["d0"], "frame_id": ["G"], "field": ["F01"],
                            "rule_score": [0.9]})
        write_rows(connection, candidate_detections, new)
    migrate.upgrade(old_database)
    assert "score" not in columns(old_database)
    stored = read_nights("candidate_detections", [NIGHT, "2024-01-07"], old_database).set_index("candidate_id")
    assert stored.rule_score.to_dict() == {"c0": 0.0, "c1": 0.25, "c2": 0.5, "d0": 0.9}


def test_a_new_database_needs_no_rename(tmp_path):
    url = f"sqlite:///{tmp_path / 'astrid.db'}"
    migrate.upgrade(url)  # no candidate table yet: nothing to rename
    metadata.create_all(engine_for(url), tables=[candidate_detections])
    migrate.upgrade(url)
    assert "rule_score" in columns(url) and "score" not in columns(url)
    assert migrate.is_current(url)
