"""Alembic environment for AstrID's human-written tables (run through astrid_assets.io.migrate)."""

from alembic import context

from astrid_assets.io.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection, target_metadata=metadata, include_name=lambda name, kind, _p: (
        kind != "table" or name in {"validations"}),
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
