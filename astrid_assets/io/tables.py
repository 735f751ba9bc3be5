"""Table IO manager: pandas DataFrames to SQLite or PostgreSQL, one partition at a time.

Built on Dagster's own DB IO-manager machinery (:class:`~dagster._core.storage.db_io_manager.DbIOManager`
with a :class:`DbClient` and a :class:`DbTypeHandler`), as the DuckDB and Snowflake IO managers
are. Writing a partition deletes that partition's rows and inserts the new ones **in one
transaction**: a re-run never duplicates rows and a run that dies mid-write leaves the last good
copy. Reading a partition, or a range of partitions, selects just those rows.

Tables are declared in :mod:`astrid_assets.io.schema` and created explicitly with their indexes;
a DataFrame whose columns do not match its table is refused with a clear error before anything is
written. The asset names its partition column with ``metadata={"partition_expr": "night"}``.

Connecting retries connection errors with a short exponential backoff (:func:`connect_with_retry`),
then fails with :class:`DatabaseUnavailableError`, which names the database by its redacted URL.
On PostgreSQL, the first writers of a table that does not exist yet take an advisory lock, so two
concurrent first runs do not both try to create it, and writers of the same partition take one, so
two concurrent runs of one night cannot both insert.
"""

from __future__ import annotations

import io
import logging
import math
import time
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
from sqlalchemy import (
    Boolean,
    Connection,
    Engine,
    Float,
    Integer,
    String,
    and_,
    create_engine,
    event,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from astrid_assets import settings
from astrid_assets.io.schema import metadata, table_for

logger = logging.getLogger(__name__)

CONNECT_ATTEMPTS = 4  #: tries to connect before giving up
CONNECT_BACKOFF_S = 0.25  #: first wait between tries; doubled each time (0.25, 0.5, 1 s)
PG_CONNECT_TIMEOUT_S = 10  #: per try, so an unreachable host fails in seconds, not minutes
_CREATE_TABLES_LOCK = 0x41535452  # pg_advisory_xact_lock key ("ASTR") serialising first table creation


class DatabaseUnavailableError(RuntimeError):
    """The database could not be reached; the message names it by its redacted URL only."""


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
    connect_args = {} if "connect_timeout" in make_url(url).query else {"connect_timeout": PG_CONNECT_TIMEOUT_S}
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5, connect_args=connect_args)


def connect_with_retry(
    url: str, attempts: int = CONNECT_ATTEMPTS, backoff_s: float = CONNECT_BACKOFF_S, log=None
) -> Connection:
    """A connection to ``url``, retrying connection errors with exponential backoff.

    Only establishing the connection is retried, never a statement. After the last try raises
    :class:`DatabaseUnavailableError` with the redacted URL and the driver's first line of reason.
    """
    log = log or logger
    started = time.monotonic()
    for attempt in range(1, attempts + 1):
        try:
            return engine_for(url).connect()
        except OperationalError as error:
            reason = str(error.orig or error).strip().splitlines()[0]
            password = make_url(url).password
            if password:
                reason = reason.replace(str(password), "***")
            if attempt == attempts:
                raise DatabaseUnavailableError(
                    f"database {settings.redact_url(url)} unreachable after {attempts} attempt{'s' * (attempts > 1)} "
                    f"({time.monotonic() - started:.1f} s): {reason}"
                ) from None
            delay = backoff_s * 2 ** (attempt - 1)
            log.warning(
                f"database {settings.redact_url(url)}: connection attempt {attempt}/{attempts} failed "
                f"({reason}); retrying in {delay:.2f} s"
            )
            time.sleep(delay)
    raise AssertionError("unreachable")


def _log_of(context):
    """The run's log when there is one (a context built in a test may have none)."""
    try:
        return context.log
    except Exception:
        return logger


def _is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def _partition_clause(table, dimension: TablePartitionDimension):
    column = table.c[dimension.partition_expr]
    if isinstance(dimension.partitions, TimeWindow):
        start = dimension.partitions.start.strftime("%Y-%m-%d")
        end = dimension.partitions.end.strftime("%Y-%m-%d")
        return and_(column >= start, column < end)
    return column.in_(list(dimension.partitions))


def _slice_key(table_slice: TableSlice) -> str:
    """The table and partitions a write replaces, as text (the key of its advisory lock)."""
    parts = [table_slice.table]
    for dimension in table_slice.partition_dimensions or []:
        partitions = dimension.partitions
        if isinstance(partitions, TimeWindow):
            parts.append(f"{dimension.partition_expr}:{partitions.start.isoformat()}/{partitions.end.isoformat()}")
        else:
            parts.append(f"{dimension.partition_expr}:{','.join(sorted(map(str, partitions)))}")
    return "|".join(parts)


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
        table = table_for(table_slice.table)
        if inspect(connection).has_table(table.name, schema=self.schema):
            add_missing_columns(connection, table, self.schema)
            return
        if _is_postgres(self.engine):
            # Held until this first write commits: a concurrent first writer waits, then finds the table.
            connection.execute(select(func.pg_advisory_xact_lock(_CREATE_TABLES_LOCK)))
            if self.schema:
                connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))
        metadata.create_all(connection, tables=[table])

    def delete_table_slice(self, context, table_slice: TableSlice, connection: Connection) -> None:  # type: ignore[override]
        table, clause = self.where(table_slice)
        if _is_postgres(self.engine):
            # Writers of the same partition queue here until the first commits. Otherwise two runs of
            # one night could each delete (seeing none of the other's new rows) and both insert.
            connection.execute(select(func.pg_advisory_xact_lock(func.hashtext(_slice_key(table_slice)))))
        statement = table.delete()
        connection.execute(statement.where(clause) if clause is not None else statement)

    @contextmanager
    def connect(self, context, table_slice: TableSlice) -> Iterator[Connection]:  # type: ignore[override]
        """A connection inside one transaction: committed on success, rolled back on error."""
        with connect_with_retry(self.url, log=_log_of(context)) as connection, connection.begin():
            yield connection.execution_options(**self._execution_options())


def add_missing_columns(connection: Connection, table, schema: str | None = None) -> list[str]:
    """``ALTER TABLE … ADD COLUMN`` for the nullable columns a newer AstrID declares and a table lacks.

    Nightly tables belong to :mod:`astrid_assets.io.schema`, not to migrations: a column added
    there (always nullable) reaches a database written by an older version on its next write,
    and the rows already stored keep NULL in it. Returns the names of the columns added.
    """
    present = {column["name"] for column in inspect(connection).get_columns(table.name, schema=schema)}
    missing = [column for column in table.columns if column.name not in present]
    prefix = f'"{schema}".' if schema else ""
    for column in missing:
        if not column.nullable:
            raise DatabaseUnavailableError(f"table {table.name} lacks the NOT NULL column {column.name}; migrate it")
        kind = column.type.compile(dialect=connection.dialect)
        connection.execute(text(f'ALTER TABLE {prefix}"{table.name}" ADD COLUMN "{column.name}" {kind}'))
    return [column.name for column in missing]


def _native(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def _copy_rows(connection: Connection, table, schema: str | None, records: list[dict]) -> bool:
    """Rows into ``table`` with PostgreSQL ``COPY … FROM STDIN`` (CSV written by Arrow).

    Several times faster than multi-row INSERTs, in the same transaction. Returns False, having
    sent nothing, when the rows cannot be copied exactly (Arrow missing, a value that does not
    fit its column's type, a driver without COPY): the caller then INSERTs them.
    """
    try:
        import pyarrow as pa
        import pyarrow.csv as pa_csv
    except ImportError:
        return False
    arrow_types = [(Boolean, pa.bool_()), (Integer, pa.int64()), (Float, pa.float64()), (String, pa.string())]
    columns = list(records[0])
    fields = []
    for name in columns:
        column_type = table.c[name].type
        arrow_type = next((arrow for sql, arrow in arrow_types if isinstance(column_type, sql)), None)
        if arrow_type is None:
            return False
        fields.append(pa.field(name, arrow_type))
    try:
        rows = pa.Table.from_pylist(records, schema=pa.schema(fields))
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return False
    sink = pa.BufferOutputStream()
    # CSV as COPY reads it: a null is an unquoted empty field, an empty string is quoted.
    pa_csv.write_csv(rows, sink, pa_csv.WriteOptions(include_header=False))
    quote = connection.dialect.identifier_preparer.quote
    target = f"{quote(schema)}.{quote(table.name)}" if schema else quote(table.name)
    statement = f"COPY {target} ({', '.join(map(quote, columns))}) FROM STDIN WITH (FORMAT csv)"
    cursor = connection.connection.dbapi_connection.cursor()
    try:
        if hasattr(cursor, "copy_expert"):  # psycopg2
            cursor.copy_expert(statement, io.BytesIO(sink.getvalue().to_pybytes()))
        elif hasattr(cursor, "copy"):  # psycopg (3)
            with cursor.copy(statement) as copy:
                copy.write(sink.getvalue().to_pybytes())
        else:
            return False
    finally:
        cursor.close()
    return True


def _insert_rows(connection: Connection, table, schema: str | None, records: list[dict]) -> None:
    """Insert ``records``: COPY on PostgreSQL where it can, multi-row INSERTs otherwise."""
    if not (connection.dialect.name == "postgresql" and _copy_rows(connection, table, schema, records)):
        connection.execute(table.insert(), records)


def write_rows(connection: Connection, table, frame: pd.DataFrame, schema: str | None = None) -> int:
    """Insert the rows of ``frame`` into ``table`` (a :mod:`astrid_assets.io.schema` table) as the table IO
    manager writes them; returns the number of rows.

    NaN and missing values become NULL and numpy scalars plain Python values; on PostgreSQL the rows
    go in with ``COPY`` where they can, elsewhere with multi-row INSERTs. It runs in the caller's
    transaction and neither creates the table nor deletes rows: the IO manager deletes the
    partition first, in the same transaction. ``schema`` names the PostgreSQL schema (None on SQLite).
    """
    records = [{column: _native(value) for column, value in row.items()} for row in frame.to_dict("records")]
    if records:
        _insert_rows(connection, table, schema, records)
    return len(records)


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
        rows = write_rows(connection, table, obj, self.client.schema if _is_postgres(self.client.engine) else None)
        return {"dagster/row_count": rows}

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
        """The database written to: ``database_url`` if set, else the configured one."""
        return settings.resolved_database_url(self.database_url)

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
    return _read_where(table_name, lambda table: table.c.night.in_(nights), url)


def read_night_range(table_name: str, first: str, last: str, url: str | None = None, **equal) -> pd.DataFrame:
    """Rows of a nightly table for the nights ``first`` … ``last`` (inclusive, ``YYYY-MM-DD``), where
    every ``column=value`` of ``equal`` holds (empty if the table does not exist yet)."""
    return _read_where(table_name, lambda table: and_(
        table.c.night >= first, table.c.night <= last, *(table.c[k] == v for k, v in equal.items())), url)


def _read_where(table_name: str, where, url: str | None) -> pd.DataFrame:
    url = settings.resolved_database_url(url)
    engine = engine_for(url)
    table = table_for(table_name)
    with connect_with_retry(url) as connection:
        if not engine.dialect.has_table(connection, table.name):
            return pd.DataFrame(columns=list(table.c.keys()))
        present = {column["name"] for column in inspect(connection).get_columns(table.name)}
        columns = [column for column in table.columns if column.name in present]
        frame = pd.read_sql(select(*columns).where(where(table)), connection)
        return frame.reindex(columns=list(table.c.keys()))
