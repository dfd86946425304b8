"""decisions.agent_unavailable: a replayed claim forced onto a draining/offline agent

Revision ID: 0004_decision_agent_unavailable
Revises: 0003_database_identity
Create Date: 2026-12-07 02:30:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_decision_agent_unavailable"
down_revision: str | None = "0003_database_identity"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("agent_unavailable", sa.Boolean(), nullable=False,
                                      server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.drop_column("agent_unavailable")
