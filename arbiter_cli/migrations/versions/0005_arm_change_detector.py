"""arms: recent (decayed), total (never forgotten) evidence and a count of detected changes

The v2 arm kept only evidence decayed with routing.half_life. From now on ``alpha``/``beta``
hold the evidence since the arm's last detected change, ``recent_*`` the decayed evidence the
change detector compares it with, and ``total_*`` every reward (thompson-stationary). Existing
arms start all three from their decayed evidence, the only evidence there is.

Revision ID: 0005_arm_change_detector
Revises: 0004_decision_agent_unavailable
Create Date: 2026-12-07 06:00:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_arm_change_detector"
down_revision: str | None = "0004_decision_agent_unavailable"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EVIDENCE = ("recent_alpha", "recent_beta", "total_alpha", "total_beta")


def upgrade() -> None:
    with op.batch_alter_table("arms", schema=None) as batch_op:
        for name in EVIDENCE:
            batch_op.add_column(sa.Column(name, sa.Float(), nullable=False,
                                          server_default="0"))
        batch_op.add_column(sa.Column("changes", sa.Integer(), nullable=False,
                                      server_default="0"))
    op.execute("UPDATE arms SET recent_alpha = alpha, recent_beta = beta, "
               "total_alpha = alpha, total_beta = beta")


def downgrade() -> None:
    with op.batch_alter_table("arms", schema=None) as batch_op:
        batch_op.drop_column("changes")
        for name in reversed(EVIDENCE):
            batch_op.drop_column(name)
