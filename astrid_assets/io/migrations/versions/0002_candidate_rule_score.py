"""candidate_detections: the rule-based candidate score is stored as ``rule_score`` (was ``score``).

The column holds the [0, 1] score that ``science.detection.candidates`` computes from a candidate's
measurements and flags; ``score`` also named the S_corr image and the U-Net's real probability.
``candidate_detections`` is created by the table IO manager, not by these migrations, so this one
only renames the column of a table written by an older AstrID, if there is one:

* the table has ``score`` only: the column is renamed;
* it has ``score`` and ``rule_score`` (a newer AstrID wrote to it before this migration ran, and
  the IO manager added ``rule_score`` as a missing column): ``score`` fills the rows whose
  ``rule_score`` is null, then is dropped;
* no table, or no ``score``: nothing to do.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TABLE = "candidate_detections"


def _columns() -> set[str]:
    """Column names of ``candidate_detections`` (empty when the table does not exist)."""
    inspector = sa.inspect(op.get_bind())
    if not inspector.has_table(TABLE):
        return set()
    return {column["name"] for column in inspector.get_columns(TABLE)}


def _rename(old: str, new: str) -> None:
    columns = _columns()
    if old not in columns:
        return
    if new not in columns:
        op.alter_column(TABLE, old, new_column_name=new)
        return
    table = sa.table(TABLE, sa.column(old, sa.Float), sa.column(new, sa.Float))
    op.execute(table.update().where(table.c[new].is_(None)).values({new: table.c[old]}))
    op.drop_column(TABLE, old)


def upgrade() -> None:
    _rename("score", "rule_score")


def downgrade() -> None:
    _rename("rule_score", "score")
