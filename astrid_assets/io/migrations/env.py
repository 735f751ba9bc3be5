"""Alembic environment for AstrID's human-written tables (run through astrid_assets.io.migrate)."""

from alembic import context

from astrid_assets.io.migrate import MIGRATED_TABLES, VERSION_TABLE
from astrid_assets.io.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection, target_metadata=metadata, version_table=VERSION_TABLE,
    include_name=lambda name, kind, _p: kind != "table" or name in MIGRATED_TABLES,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
