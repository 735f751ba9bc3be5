"""The decorator every nightly table asset shares."""

from dagster import asset

from astrid_assets.partitions import nightly_partitions


def nightly_asset(**kwargs):
    """``@asset`` of a nightly table: one partition per night, its rows replaced per night by the table IO manager."""
    return asset(partitions_def=nightly_partitions, metadata={"partition_expr": "night"},
                 io_manager_key="table_io_manager", group_name="nightly", **kwargs)
