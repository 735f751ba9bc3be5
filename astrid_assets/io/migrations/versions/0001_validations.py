"""validations: human labels on candidates.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "validations",
        sa.Column("validation_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("candidate_id", sa.String(160), nullable=False),
        sa.Column("night", sa.String(10), nullable=False),
        sa.Column("label", sa.String(8), nullable=False),
        sa.Column("labeller", sa.String(128), nullable=False),
        sa.Column("labelled_at", sa.String(32), nullable=False),
        sa.Column("note", sa.Text),
    )
    op.create_index("ix_validations_candidate_id", "validations", ["candidate_id"])
    op.create_index("ix_validations_night", "validations", ["night"])


def downgrade() -> None:
    op.drop_table("validations")
