"""The whole schema (SPEC §6), defined once as SQLAlchemy tables for both backends.

These are storage rows, not domain objects: ``repository.py`` maps them to and from the
``arbiter_cli.domain`` dataclasses. Every table carries ``tenant``, but ``database_identity``,
which names the database itself.

SQLAlchemy Core ``Table`` objects rather than SQLModel classes: building the SQLModel classes
(pydantic models) cost about 170 ms at every command start on the 2-core reference machine,
a third of the 0.5 s budget of ``arbiter agents list`` (SPEC §13); see docs/architecture.md.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)

from arbiter_cli.adapters.sql.types import Json, Key, UtcDateTime

metadata = MetaData()

OPEN_TASK = text("status = 'open'")  # the predicate of the partial index on open decisions

TENANT = 64
AGENT_ID = 128
UID = 36


def _tenant(*, primary_key: bool = False, references: bool = True) -> Column[Any]:
    args: list[Any] = [ForeignKey("tenants.name")] if references else []
    return Column("tenant", Key(TENANT), *args, nullable=False, primary_key=primary_key)


def _when(name: str, *, nullable: bool = False) -> Column[Any]:
    return Column(name, UtcDateTime(), nullable=nullable)


def _agent_uid() -> Column[Any]:
    return Column("agent_uid", Key(UID), ForeignKey("agents.uid", ondelete="CASCADE"),
                  primary_key=True)


tenants = Table(
    "tenants", metadata,
    Column("name", Key(TENANT), primary_key=True),
    _when("created_at"),
)

agents = Table(
    "agents", metadata,
    Column("uid", Key(UID), primary_key=True),
    _tenant(),
    Column("id", Key(AGENT_ID), nullable=False),
    Column("name", String(200), nullable=False),
    Column("model_family", String(64), nullable=False),
    Column("capacity", Integer, nullable=False),
    Column("active_tasks", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("status_reason", String(500)),
    Column("success_rate", Float, nullable=False),
    Column("average_quality", Float, nullable=False),
    Column("average_latency_ms", Float, nullable=False),
    Column("task_count", Integer, nullable=False),
    Column("latency_count", Integer),  # NULL: every task carried a latency
    Column("metadata", Json(), nullable=False),
    _when("registered_at"),
    _when("last_active_at"),
    _when("updated_at"),
    Column("version", Integer, nullable=False),
    # task types, languages and labels in one exact string, beside the child rows, so that
    # the ranking of a capability query joins nothing (capabilities.py, migration 0006)
    Column("capabilities", Text, nullable=False),
    UniqueConstraint("tenant", "id", name="uq_agents_tenant_id"),
    CheckConstraint("active_tasks >= 0", name="ck_agents_active_tasks"),
    CheckConstraint("capacity BETWEEN 1 AND 1000", name="ck_agents_capacity"),
    Index("ix_agents_tenant_status", "tenant", "status"),
)

task_types = Table(
    "agent_task_types", metadata,
    _agent_uid(),
    Column("task_type", String(64), primary_key=True),
    _tenant(references=False),
    Index("ix_agent_task_types_lookup", "tenant", "task_type"),
)

languages = Table(
    "agent_languages", metadata,
    _agent_uid(),
    Column("language_key", String(64), primary_key=True),
    Column("language", String(64), nullable=False),
    _tenant(references=False),
    Index("ix_agent_languages_lookup", "tenant", "language_key"),
)

specializations = Table(
    "agent_specializations", metadata,
    _agent_uid(),
    Column("label_key", String(64), primary_key=True),
    Column("label", String(64), nullable=False),
    _tenant(references=False),
    Index("ix_agent_specializations_lookup", "tenant", "label_key"),
)

arms = Table(
    "arms", metadata,
    _agent_uid(),
    Column("task_type", String(64), primary_key=True),
    _tenant(references=False),
    Column("alpha", Float, nullable=False),
    Column("beta", Float, nullable=False),
    Column("outcomes", Integer, nullable=False),
    Column("recent_alpha", Float, nullable=False, server_default="0"),
    Column("recent_beta", Float, nullable=False, server_default="0"),
    Column("total_alpha", Float, nullable=False, server_default="0"),
    Column("total_beta", Float, nullable=False, server_default="0"),
    Column("changes", Integer, nullable=False, server_default="0"),
    _when("updated_at"),
    Index("ix_arms_tenant", "tenant"),
)

decisions = Table(
    "decisions", metadata,
    Column("decision_id", Key(UID), primary_key=True),
    _tenant(),
    Column("task_id", Key(128), nullable=False),
    Column("task_type", String(64), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("requirements", Json(), nullable=False),
    Column("metadata", Json(), nullable=False),
    Column("agent_id", Key(AGENT_ID)),
    Column("agent_uid", Key(UID)),
    Column("strategy", String(32), nullable=False),
    Column("seed", BigInteger, nullable=False),
    Column("explored", Boolean, nullable=False),
    Column("confidence", Float),
    Column("candidates", Json(), nullable=False),
    Column("excluded", Json(), nullable=False),
    Column("excluded_examples", Json()),
    Column("config_hash", String(64), nullable=False),
    Column("latency_us", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("correlation_id", String(200)),
    _when("created_at"),
    _when("closed_at", nullable=True),
    Column("outcome", Json()),
    Column("over_capacity", Boolean, nullable=False),
    Column("agent_unavailable", Boolean, nullable=False, server_default=false()),
    # Partial on both backends; the PostgreSQL predicate is attached by postgresql_options().
    Index("uq_decisions_open_task", "tenant", "task_id", unique=True, sqlite_where=OPEN_TASK),
    Index("ix_decisions_tenant_created", "tenant", "created_at"),
    Index("ix_decisions_tenant_agent", "tenant", "agent_id"),
    Index("ix_decisions_status_created", "status", "created_at"),
)

tokens = Table(
    "tokens", metadata,
    Column("id", Key(64), primary_key=True),
    _tenant(),
    Column("name", String(200), nullable=False),
    Column("role", String(16), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    _when("created_at"),
    _when("expires_at", nullable=True),
    _when("revoked_at", nullable=True),
    _when("last_used_at", nullable=True),
    Column("rate", Float),
    Column("burst", Integer),
)

rate_buckets = Table(
    "rate_buckets", metadata,
    Column("token_id", Key(64), primary_key=True),
    _tenant(references=False),
    Column("tokens", Float, nullable=False),
    # seconds since the epoch, so that one UPDATE can refill and spend
    Column("updated_at", Float, nullable=False),
)

audit_events = Table(
    "audit_events", metadata,
    _tenant(primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    _when("at"),
    Column("actor", String(64)),
    Column("action", String(64), nullable=False),
    Column("target", String(256)),
    Column("result", String(16), nullable=False),
    Column("correlation_id", String(200)),
    Column("details", Json(), nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_audit_events_tenant_at", "tenant", "at"),
)

applied_ops = Table(
    "applied_ops", metadata,
    Column("op_id", Key(64), primary_key=True),
    _tenant(references=False),
    Column("kind", String(64), nullable=False),
    _when("applied_at"),
)


database_identity = Table(
    # The one table without a tenant: it names the database itself (issue 17, F1). One row,
    # id 1, written by migration 0003 with a random UUID; resilience folders record it.
    "database_identity", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("identity", String(36), nullable=False),
    CheckConstraint("id = 1", name="ck_database_identity_one_row"),
)


def postgresql_options() -> MetaData:
    """``metadata`` with its PostgreSQL-only options: the open-task index's predicate.

    Declaring ``postgresql_where=`` in the ``Index`` makes SQLAlchemy import its PostgreSQL
    dialect to validate the keyword (about 24 ms on the reference machine) at every start, on
    SQLite too. Only schema work (alembic's environment and ``db check``) needs it, and it
    imports that dialect anyway. Idempotent.
    """
    index = next(i for i in decisions.indexes if i.name == "uq_decisions_open_task")
    index.dialect_options["postgresql"]["where"] = OPEN_TASK
    return metadata
