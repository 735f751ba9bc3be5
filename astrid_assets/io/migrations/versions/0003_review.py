"""The scanning page (``astrid review``): people, what each label saw, and expert reviews.

* ``people`` — who may sign in: a unique ``name``, a ``password_hash`` (``scrypt$n$r$p$salt$hash``,
  :mod:`astrid_assets.review.auth`; null for a person whom a trusted proxy signs in) and a ``role``
  (``labeller`` or ``expert``);
* ``validations`` gains what was on screen when a label was given: the ``model_version`` whose
  ``real_probability`` was shown (both null when no champion had scored the candidate, and for labels
  from the command line), and ``source`` (``review`` for the scanning page, null before);
* ``expert_reviews`` — an expert's verdict on a candidate: ``confirmed`` (true: a real transient,
  false: not one) and its ``importance`` (1 … 5), with the time.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "people",
        sa.Column("person_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("password_hash", sa.Text),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
    )
    with op.batch_alter_table("validations") as batch:
        batch.add_column(sa.Column("model_version", sa.String(64)))
        batch.add_column(sa.Column("real_probability", sa.Float))
        batch.add_column(sa.Column("source", sa.String(16)))
    op.create_table(
        "expert_reviews",
        sa.Column("review_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("candidate_id", sa.String(160), nullable=False),
        sa.Column("night", sa.String(10), nullable=False),
        sa.Column("person", sa.String(128), nullable=False),
        sa.Column("confirmed", sa.Boolean, nullable=False),
        sa.Column("importance", sa.Integer, nullable=False),
        sa.Column("reviewed_at", sa.String(32), nullable=False),
        sa.Column("note", sa.Text),
    )
    op.create_index("ix_expert_reviews_candidate_id", "expert_reviews", ["candidate_id"])
    op.create_index("ix_validations_labeller", "validations", ["labeller"])


def downgrade() -> None:
    op.drop_index("ix_validations_labeller", "validations")
    op.drop_table("expert_reviews")
    with op.batch_alter_table("validations") as batch:
        batch.drop_column("source")
        batch.drop_column("real_probability")
        batch.drop_column("model_version")
    op.drop_table("people")
