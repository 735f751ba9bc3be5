"""Table IO manager: pandas DataFrames to SQLite or PostgreSQL, one partition at a time.

Built on Dagster's own DB IO-manager machinery (:class:`~dagster._core.storage.db_io_manager.DbIOManager`
with a :class:`DbClient` and a :class:`DbTypeHandler`), as the DuckDB and Snowflake IO managers
are. Writing a partition deletes that partition's rows and inserts the new ones **in one
transaction**: a re-run never duplicates rows and a run that dies mid-write leaves the last good
copy. Reading a partition, or a range of partitions, selects just those rows.

Tables are declared in :mod:`astrid_assets.io.schema` and created explicitly with their indexes;
a DataFrame whose columns do not match its table is refused with a clear error before anything is
written. The asset names its partition column with ``metadata={"partition_expr": "night"}``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import pandas as pd
from dagster import ConfigurableIOManagerFactory, InputContext, OutputContext
from dagster._core.definitions.partitions.utils import TimeWindow
from dagster._core.storage.db_io_manager import (
    DbClient,
    DbIOManager,
    DbTypeHandler,
    TablePartitionDimension,
    TableSlice,
)
from sqlalchemy import Connection, Engine, and_, create_engine, event, select, text
from sqlalchemy.engine import make_url

from astrid_assets import settings
from astrid_assets.io.schema import metadata, table_for


@cache
def engine_for(url: str) -> Engine:
    """One pooled engine per database URL (SQLite gets WAL and a busy timeout for concurrency)."""
    if url.startswith("sqlite"):
        path = make_url(url).database
        if path:
            from pathlib import Path

            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # noqa: ANN001
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def _is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def _partition_clause(table, dimension: TablePartitionDimension):
    column = table.c[dimension.partition_expr]
    if isinstance(dimension.partitions, TimeWindow):
        start = dimension.partitions.start.strftime("%Y-%m-%d")
        end = dimension.partitions.end.strftime("%Y-%m-%d")
        return and_(column >= start, column < end)
    return column.in_(list(dimension.partitions))


class SqlClient(DbClient[Connection]):
    """Connects, creates tables and deletes partition slices on any SQLAlchemy database."""

    def __init__(self, url: str, schema: str | None):
        self.url = url
        self.schema = schema

    @property
    def engine(self) -> Engine:
        return engine_for(self.url)

    def _execution_options(self) -> dict:
        if _is_postgres(self.engine) and self.schema:
            return {"schema_translate_map": {None: self.schema}}
        return {}

    def where(self, table_slice: TableSlice):
        table = table_for(table_slice.table)
        clauses = [_partition_clause(table, d) for d in table_slice.partition_dimensions or []]
        return table, and_(*clauses) if clauses else None

    def select(self, table_slice: TableSlice):
        table, clause = self.where(table_slice)
        columns = [table.c[name] for name in table_slice.columns] if table_slice.columns else [table]
        statement = select(*columns)
        return statement.where(clause) if clause is not None else statement

    def get_select_statement(self, table_slice: TableSlice) -> str:  # type: ignore[override]
        compiled = self.select(table_slice).compile(
            dialect=self.engine.dialect, compile_kwargs={"literal_binds": True}
        )
        return str(compiled)

    def get_table_name(self, table_slice: TableSlice) -> str:  # type: ignore[override]
        return table_slice.table if not _is_postgres(self.engine) else super().get_table_name(table_slice)

    def ensure_schema_exists(self, context, table_slice: TableSlice, connection: Connection) -> None:  # type: ignore[override]
        if _is_postgres(self.engine) and self.schema:
            connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))
        metadata.create_all(connection, tables=[table_for(table_slice.table)])

    def delete_table_slice(self, context, table_slice: TableSlice, connection: Connection) -> None:  # type: ignore[override]
        table, clause = self.where(table_slice)
        statement = table.delete()
        connection.execute(statement.where(clause) if clause is not None else statement)

    @contextmanager
    def connect(self, context, table_slice: TableSlice) -> Iterator[Connection]:  # type: ignore[override]
        """A connection inside one transaction: committed on success, rolled back on error."""
        with self.engine.begin() as connection:
            yield connection.execution_options(**self._execution_options())


def _native(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


class DataFrameTableHandler(DbTypeHandler[pd.DataFrame]):
    """Writes and reads pandas DataFrames to and from their declared table."""

    def __init__(self, client: SqlClient):
        self.client = client

    def handle_output(
        self, context: OutputContext, table_slice: TableSlice, obj: pd.DataFrame, connection
    ) -> dict:
        table = table_for(table_slice.table)
        partition = context.partition_key if context.has_partition_key else None
        declared = set(table.c.keys())
        unknown = sorted(set(obj.columns) - declared)
        missing = sorted(c.name for c in table.c if not c.nullable and c.name not in obj.columns)
        if unknown or missing:
            raise ValueError(
                f"{table.name} (partition {partition}): DataFrame does not match the declared "
                f"table: unknown columns {unknown}, missing required columns {missing}"
            )
        records = [
            {column: _native(value) for column, value in row.items()}
            for row in obj.to_dict("records")
        ]
        if records:
            connection.execute(table.insert(), records)
        return {"dagster/row_count": len(records)}

    def load_input(self, context: InputContext, table_slice: TableSlice, connection) -> pd.DataFrame:
        return pd.read_sql(self.client.select(table_slice), connection)

    @property
    def supported_types(self):
        return [pd.DataFrame]


class TableIOManager(ConfigurableIOManagerFactory):
    """Tables to the database named by ``ASTRID_DATABASE_URL`` (SQLite by default).

    ``database_url`` may be set in code for tests; otherwise the environment decides, so the
    URL (and any password in it) never appears in Dagster's run configuration.
    """

    database_url: str | None = None
    db_schema: str = "public"

    def resolved_url(self) -> str:
        return self.database_url or settings.database_url()

    def create_io_manager(self, context) -> DbIOManager:
        client = SqlClient(self.resolved_url(), self.db_schema)
        return DbIOManager(
            type_handlers=[DataFrameTableHandler(client)],
            db_client=client,
            database=make_url(self.resolved_url()).database or "",
            schema=self.db_schema,
            io_manager_name="TableIOManager",
            default_load_type=pd.DataFrame,
        )


def read_nights(table_name: str, nights: list[str], url: str | None = None) -> pd.DataFrame:
    """Rows of a nightly table for the given nights (empty if the table does not exist yet)."""
    engine = engine_for(url or settings.database_url())
    table = table_for(table_name)
    with engine.connect() as connection:
        if not engine.dialect.has_table(connection, table.name):
            return pd.DataFrame(columns=list(table.c.keys()))
        return pd.read_sql(select(table).where(table.c.night.in_(nights)), connection)
