"""Alembic migrations, run programmatically: they create the tables people write (``validations``,
``people``, ``expert_reviews``)
and rename the columns of nightly tables written by an older AstrID (``candidate_detections.score``
→ ``rule_score``), which the table IO manager otherwise only extends with missing columns."""

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from astrid_assets.io.tables import engine_for

MIGRATIONS = Path(__file__).with_name("migrations")
#: AstrID's own Alembic version table: Dagster's storage, which may share the database, uses ``alembic_version``.
VERSION_TABLE = "astrid_alembic_version"
#: Tables whose schema belongs to the migrations (people write them), not to ``metadata.create_all``.
MIGRATED_TABLES = frozenset({"validations", "people", "expert_reviews"})


def _config(connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade(url: str) -> None:
    """Bring the database at ``url`` to the newest revision (idempotent)."""
    with engine_for(url).begin() as connection:
        command.upgrade(_config(connection), "head")


def is_current(url: str) -> bool:
    """True when the database's revision is the newest one."""
    with engine_for(url).connect() as connection:
        current = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()
        return current == ScriptDirectory.from_config(_config(connection)).get_current_head()
