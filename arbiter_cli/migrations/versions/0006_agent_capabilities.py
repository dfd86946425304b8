"""agents.capabilities: the agent's task types, languages and labels in one exact string

A capability query narrowed with EXISTS semi-joins on the three child tables, most of its
ranking statement at 10 000 agents (issue 13). The row now carries the same facts in one
string, tested with ``strpos``/``instr`` (``adapters/sql/capabilities.py`` defines it; the
writer there and this backfill must agree, and a test holds them to it). The child tables stay.

The encoding is copied here, frozen: this revision writes what the code of its time reads.

Revision ID: 0006_agent_capabilities
Revises: 0005_arm_change_detector
Create Date: 2026-12-07 13:30:00
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0006_agent_capabilities"
down_revision: str | None = "0005_arm_change_detector"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHILDREN = (  # kind letter, table, key column, spelling column
    ("t", "agent_task_types", "task_type", "task_type"),
    ("l", "agent_languages", "language_key", "language"),
    ("s", "agent_specializations", "label_key", "label"),
)


def _escape(value: str) -> str:
    return value.replace("%", "%25").replace("|", "%7C").replace("=", "%3D")


def upgrade() -> None:
    # No batch mode on agents: SQLite's batch mode copies the table and drops the old one, and
    # with foreign keys on (they are, and cannot be turned off inside the migration's
    # transaction) that drop cascades to every child row. SQLite adds a NOT NULL column only
    # with a default ("|": no capabilities, overwritten just below); PostgreSQL adds it
    # nullable and sets NOT NULL after the backfill.
    conn = op.get_bind()
    sqlite = conn.dialect.name == "sqlite"
    op.add_column("agents", sa.Column("capabilities", sa.Text(), nullable=not sqlite,
                                      server_default="|" if sqlite else None))
    held: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
    for order, (kind, table, key, spelling) in enumerate(CHILDREN):
        columns: dict[str, sa.ColumnClause[Any]] = {
            name: sa.column(name) for name in ("agent_uid", key, spelling)}
        child = sa.table(table, *columns.values())
        rows = conn.execute(sa.select(columns["agent_uid"], columns[key], columns[spelling])
                            .select_from(child))
        for uid, k, shown in rows:
            held[uid].append((order, k, f"{kind}{_escape(k)}={_escape(shown)}"))
    tokens = {uid: [token for _, _, token in sorted(found)] for uid, found in held.items()}
    uids = [uid for (uid,) in conn.execute(sa.text("SELECT uid FROM agents"))]
    update = sa.text("UPDATE agents SET capabilities = :capabilities WHERE uid = :uid")
    values = [{"uid": uid, "capabilities": "|" + "".join(f"{t}|" for t in tokens.get(uid, []))}
              for uid in uids]
    for start in range(0, len(values), 1000):
        conn.execute(update, values[start:start + 1000])
    if not sqlite:
        op.alter_column("agents", "capabilities", existing_type=sa.Text(), nullable=False)


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN on both (SQLite >= 3.35): no copy of agents, no cascade
    op.drop_column("agents", "capabilities")
