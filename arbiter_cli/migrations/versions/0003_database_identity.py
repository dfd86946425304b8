"""database_identity: one row holding a random UUID that names this database (issue 17, F1)

Every resilience folder of a host records the identity of the database it journals for, so a
journal left under an old URL can be drained into the same database under a new one, and never
into another. A database gets its identity here: at ``init`` (the first upgrade) or when an
existing database is upgraded. The UUID is random (never derived from a URL or host name).

Revision ID: 0003_database_identity
Revises: 0002_decision_examples
Create Date: 2026-12-07 02:30:00
"""
from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_database_identity"
down_revision: str | None = "0002_decision_examples"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    table = op.create_table(
        "database_identity",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("identity", sa.String(length=36), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_database_identity_one_row"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(table, [{"id": 1, "identity": str(uuid.uuid4())}])


def downgrade() -> None:
    op.drop_table("database_identity")
