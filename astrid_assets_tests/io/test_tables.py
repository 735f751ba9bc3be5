"""The table IO manager replaces a partition in one transaction, on SQLite and on PostgreSQL."""

import pandas as pd
import pytest
from dagster import DailyPartitionsDefinition, asset, materialize

from astrid_assets.io.tables import TableIOManager, engine_for

nights = DailyPartitionsDefinition(start_date="2024-01-01")
ROWS_PER_NIGHT = {"2024-01-02": 3, "2024-01-03": 2}


def frames_for(night: str, count: int) -> pd.DataFrame:
    return pd.DataFrame({
        "night": night, "frame_id": [f"F01-{night}-{i}" for i in range(count)], "field": "F01",
        "source": "simulated", "exptime": 60.0, "status": "ok",
    })


@asset(partitions_def=nights, metadata={"partition_expr": "night"}, io_manager_key="table_io_manager")
def raw_observations(context) -> pd.DataFrame:
    return frames_for(context.partition_key, ROWS_PER_NIGHT.get(context.partition_key, 1))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'astrid.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
        with engine_for(url).begin() as connection:
            connection.exec_driver_sql("DROP TABLE IF EXISTS public.raw_observations")
        yield url


def count_rows(url: str) -> dict[str, int]:
    with engine_for(url).connect() as connection:
        rows = connection.exec_driver_sql("SELECT night, count(*) FROM raw_observations GROUP BY night").all()
    return dict(rows)


def test_rematerialising_a_partition_replaces_it(database_url, tmp_path):
    resources = {"table_io_manager": TableIOManager(database_url=database_url)}
    for _ in range(2):
        for night in ROWS_PER_NIGHT:
            assert materialize([raw_observations], partition_key=night, resources=resources).success
    assert count_rows(database_url) == ROWS_PER_NIGHT


def test_a_write_that_dies_mid_way_leaves_the_last_good_partition(database_url, monkeypatch):
    resources = {"table_io_manager": TableIOManager(database_url=database_url)}
    assert materialize([raw_observations], partition_key="2024-01-02", resources=resources).success
    ROWS_PER_NIGHT["2024-01-02"] = 5

    from astrid_assets.io import tables

    real_native = tables._native
    calls = {"n": 0}

    def dying(value):  # raise after some rows have been prepared inside the transaction
        calls["n"] += 1
        if calls["n"] > 20:
            raise RuntimeError("killed mid-write")
        return real_native(value)

    monkeypatch.setattr(tables, "_native", dying)
    try:
        result = materialize([raw_observations], partition_key="2024-01-02", resources=resources,
                             raise_on_error=False)
    finally:
        ROWS_PER_NIGHT["2024-01-02"] = 3
    assert not result.success
    assert count_rows(database_url) == {"2024-01-02": 3}


def test_a_frame_table_that_does_not_match_the_schema_is_refused(database_url):
    @asset(name="raw_observations", partitions_def=nights, metadata={"partition_expr": "night"},
           io_manager_key="table_io_manager")
    def wrong_columns(context) -> pd.DataFrame:
        return pd.DataFrame({"night": [context.partition_key], "frame": ["x"]})

    result = materialize([wrong_columns], partition_key="2024-01-02", raise_on_error=False,
                         resources={"table_io_manager": TableIOManager(database_url=database_url)})
    assert not result.success
    error = result.get_step_failure_events()[0].event_specific_data.error
    failure = error.message + "".join(cause.message for cause in [error.cause] if cause)
    assert "unknown columns ['frame']" in failure and "partition 2024-01-02" in failure
