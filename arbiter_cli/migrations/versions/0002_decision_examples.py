"""decisions.excluded_examples (ids per exclusion reason) and agents.latency_count

Revision ID: 0002_decision_examples
Revises: 0001_initial
Create Date: 2026-11-29 18:20:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002_decision_examples"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    json_type = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("excluded_examples", json_type, nullable=True))
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("latency_count", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_column("latency_count")
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.drop_column("excluded_examples")
