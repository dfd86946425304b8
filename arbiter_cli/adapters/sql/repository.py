"""The SQL unit of work and repositories: Core statements over the SQLModel tables."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from operator import itemgetter
from types import TracebackType
from typing import Any, Self, cast

from sqlalchemy import bindparam, case, delete, func, insert, select, update
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError

from arbiter_cli.adapters.sql import tables as t
from arbiter_cli.adapters.sql.capabilities import decode, encode
from arbiter_cli.adapters.sql.capability import has
from arbiter_cli.adapters.sql.clock import DatabaseClock, EstimatedClock, now_expr
from arbiter_cli.adapters.sql.deferred import DeferringConnection, InsertInto, UpdateOf
from arbiter_cli.adapters.sql.engine import ONE_STATEMENT_OPTION, WRITE_OPTION, unavailable
from arbiter_cli.adapters.sql.ranking import top
from arbiter_cli.adapters.sql.routing import SqlDecisions, SqlRouting, updated_agent
from arbiter_cli.adapters.sql.security import (
    SqlAudit,
    SqlRate,
    SqlTokens,
    chain_lock,
    head_columns,
)
from arbiter_cli.adapters.sql.written import current_written
from arbiter_cli.domain.agents import Agent, FleetStats, Performance, Status
from arbiter_cli.domain.query import Columns, Query, Ranking, rank
from arbiter_cli.domain.routing import Arm
from arbiter_cli.errors import Conflict

AGENT_COLUMNS = [c for c in t.agents.c]
# An agent's fields by position in a row that starts with ``AGENT_COLUMNS``: a ``Row``'s
# attribute access is a Python-level lookup by name, 18 µs for the 20 fields of one agent
# against well under 1 µs for one ``itemgetter`` (a query's ten rows spent 0.2 ms on it).
_FIELDS = itemgetter(*(
    [c.name for c in AGENT_COLUMNS].index(name) for name in (
        "uid", "tenant", "id", "name", "model_family", "capacity", "active_tasks", "status",
        "status_reason", "success_rate", "average_quality", "average_latency_ms", "task_count",
        "latency_count", "metadata", "registered_at", "last_active_at", "updated_at",
        "version", "capabilities")))


def _row_to_agent(row: Row[Any]) -> Agent:
    """The agent of a row whose columns start with ``AGENT_COLUMNS``."""
    (uid, tenant, agent_id, name, model_family, capacity, active_tasks, status, status_reason,
     success_rate, average_quality, average_latency_ms, task_count, latency_count, metadata,
     registered_at, last_active_at, updated_at, version, capabilities) = _FIELDS(row)
    task_types, languages, labels = decode(capabilities)
    return Agent(
        uid=uid, tenant=tenant, id=agent_id, name=name, model_family=model_family,
        task_types=tuple(sorted(task_types)), languages=tuple(sorted(languages)),
        specializations=tuple(sorted(labels, key=str.lower)), capacity=capacity,
        active_tasks=active_tasks, status=Status(status), status_reason=status_reason,
        performance=Performance(success_rate, average_quality, average_latency_ms,
                                task_count, latency_count),
        metadata=metadata or {}, registered_at=registered_at,
        last_active_at=last_active_at, updated_at=updated_at, version=version,
    )


def _agent_values(agent: Agent) -> dict[str, Any]:
    perf = agent.performance
    return {
        "uid": agent.uid, "tenant": agent.tenant, "id": agent.id, "name": agent.name,
        "model_family": agent.model_family, "capacity": agent.capacity,
        "active_tasks": agent.active_tasks, "status": agent.status.value,
        "status_reason": agent.status_reason, "success_rate": perf.success_rate,
        "average_quality": perf.average_quality, "average_latency_ms": perf.average_latency_ms,
        "task_count": perf.task_count, "latency_count": perf.latency_count,
        "metadata": dict(agent.metadata),
        "registered_at": agent.registered_at, "last_active_at": agent.last_active_at,
        "updated_at": agent.updated_at, "version": agent.version,
        "capabilities": encode(agent.task_types, agent.languages, agent.specializations),
    }


class SqlAgents:
    """``arms``: shared with ``SqlRouting`` of the same unit of work; a locking ``get`` on
    PostgreSQL fills it with the agent's arms, read with the lock (``_locked_statement``)."""

    def __init__(self, conn: Connection, arms: dict[str, dict[str, Arm]] | None = None,
                 deferring: DeferringConnection | None = None,
                 audit: SqlAudit | None = None) -> None:
        self._conn = conn
        self._postgres = conn.dialect.name == "postgresql"
        self._seen: dict[str, Agent] = {}
        self._arms = arms
        self._audit = audit  # a locking get reads its tenant's audit head for it
        self._deferring = deferring
        self._locked: dict[str, int] = {}  # uid -> version, of the agents this one locked

    # ------------------------------------------------------------------ writes

    def add_many(self, agents: Sequence[Agent]) -> None:
        if not agents:
            return
        self._conn.execute(insert(t.agents), [_agent_values(a) for a in agents])
        self._insert_children(agents)

    def _insert_children(self, agents: Sequence[Agent]) -> None:
        task_rows = [{"agent_uid": a.uid, "task_type": tt, "tenant": a.tenant}
                     for a in agents for tt in a.task_types]
        language_rows = [{"agent_uid": a.uid, "language_key": lang.lower(), "language": lang,
                          "tenant": a.tenant} for a in agents for lang in a.languages]
        label_rows = [{"agent_uid": a.uid, "label_key": label.lower(), "label": label,
                       "tenant": a.tenant} for a in agents for label in a.specializations]
        for table, rows in ((t.task_types, task_rows), (t.languages, language_rows),
                            (t.specializations, label_rows)):
            if rows:
                self._conn.execute(_insert(table), rows)

    def update(self, agent: Agent, *, expect_version: int) -> bool:
        values = _agent_values(agent)
        del values["uid"], values["tenant"], values["id"], values["registered_at"]
        before = self._seen.get(agent.uid)
        if (self._deferring is not None and self._locked.get(agent.uid) == expect_version
                and before is not None and (before.task_types, before.languages,
                                            before.specializations)
                == (agent.task_types, agent.languages, agent.specializations)):
            # Locked at that version by this transaction: it matches (``deferred.py``).
            written = current_written.get()  # wants the row as updated, whole
            self._deferring.defer(
                UpdateOf(t.agents, ("uid", "version"), tuple(values),
                         tuple(t.agents.c.keys()) if written is not None else ("uid",)),
                {**values, "where_uid": agent.uid, "where_version": expect_version},
                f"agent {agent.id!r} changed meanwhile; retry",
                None if written is None else written.agent)
            self._locked[agent.uid] = agent.version
            self._seen[agent.uid] = agent
            return True
        names = tuple(values)
        if not updated_agent(self._conn, _versioned_update(names, returning=False),
                             {**{f"set_{name}": value for name, value in values.items()},
                              "where_uid": agent.uid, "where_version": expect_version},
                             returning=_versioned_update(names, returning=True)):
            return False
        before = self._seen.get(agent.uid)
        if before is None or (before.task_types, before.languages, before.specializations) != (
            agent.task_types, agent.languages, agent.specializations
        ):
            for table in (t.task_types, t.languages, t.specializations):
                self._conn.execute(_delete_children(table), {"agent_uid": agent.uid})
            self._insert_children([agent])
            written = current_written.get()
            if written is not None:  # its capabilities may have changed: the refresh copies it
                written.forget_agent(agent.uid)
        self._seen[agent.uid] = agent
        return True

    def remove(self, tenant: str, agent_id: str) -> bool:
        stmt = delete(t.agents).where(t.agents.c.tenant == tenant, t.agents.c.id == agent_id)
        written = current_written.get()
        if written is None:
            return bool(self._conn.execute(stmt).rowcount)
        gone = [row.uid for row in self._conn.execute(stmt.returning(t.agents.c.uid))]
        for uid in gone:
            written.forget_agent(uid)
        return bool(gone)

    # ------------------------------------------------------------------ reads

    def get(self, tenant: str, agent_id: str, *, for_update: bool = False) -> Agent | None:
        if for_update and self._postgres:
            return self._get_locked(tenant, agent_id)
        found = self._load(_agent_by_id(), {"tenant": tenant, "id": agent_id})
        return found[0] if found else None

    def _get_locked(self, tenant: str, agent_id: str) -> Agent | None:
        """The agent row locked, with its capabilities and its arms: one round trip.

        Only the agent row (capabilities included) is locked and re-read after a wait (READ
        COMMITTED); the arms are read in the statement's snapshot. Every write of them bumps
        the agent's ``version`` in the same transaction, so when the version in the snapshot
        is the version locked, they are current; otherwise (a commit on the agent while this
        statement waited for its lock) they are read again, after the lock. The
        tenant's audit chain head comes along (``SqlAudit.prime``), used only in the first
        case too: after such a wait it is likely stale.
        """
        rows = self._conn.execute(_locked_statement(), {"tenant": tenant, "id": agent_id}
                                  ).fetchall()
        if not rows:
            return None
        first = rows[0]
        self._locked[first.uid] = first.version
        if first.snapshot_version != first.version:
            return self._agents([first])[0]
        if self._audit is not None and first.audit_fresh:
            # The lock comes just before an outcome's writes and audit event: the head too.
            self._audit.prime(first.tenant, first.audit_at, first.audit_head_seq,
                              first.audit_head_hash)
        agent = _row_to_agent(first)
        self._seen[agent.uid] = agent
        if self._arms is not None:
            self._arms[agent.uid] = {
                r.arm_task_type: Arm(r.arm_alpha, r.arm_beta, r.arm_outcomes, r.arm_recent_alpha,
                                     r.arm_recent_beta, r.arm_total_alpha, r.arm_total_beta,
                                     r.arm_changes)
                for r in rows if r.arm_task_type is not None}
        return agent

    def count(self, tenant: str) -> int:
        return int(self._conn.execute(_agent_count(), {"tenant": tenant}).scalar_one())

    def list(
        self, tenant: str, *, status: str | None = None, task_type: str | None = None,
        after: str | None = None, limit: int = 100,
    ) -> builtins.list[Agent]:
        stmt = select(*AGENT_COLUMNS).where(t.agents.c.tenant == tenant).order_by(t.agents.c.id)
        if status is not None:
            stmt = stmt.where(t.agents.c.status == status)
        if task_type is not None:
            stmt = stmt.where(has(t.task_types, t.task_types.c.task_type, task_type))
        if after is not None:
            stmt = stmt.where(t.agents.c.id > after)
        if limit:
            stmt = stmt.limit(limit)
        return self._load(stmt)

    def search(
        self, tenant: str, query: Query, weights: Mapping[str, float]
    ) -> tuple[builtins.list[Agent], Ranking]:
        """The database picks the top K (``ranking.top``); the one scorer ranks those K."""
        rows = self._conn.execute(*top(tenant, query, weights, self._conn.dialect.name)).fetchall()
        agents = sorted(self._agents(rows), key=lambda agent: agent.id)
        ranking = rank(Columns.from_agents(agents, query.prefer), query, weights)
        return [agents[i] for i in ranking.rows], ranking

    def stats(self, tenant: str) -> FleetStats:
        a = t.agents.c
        totals = self._conn.execute(
            select(
                func.count(),
                func.coalesce(func.sum(case((a.active_tasks > 0, 1), else_=0)), 0),
                func.coalesce(func.avg(a.active_tasks * 1.0 / a.capacity), 0.0),
                func.coalesce(func.avg(a.success_rate), 0.0),
                func.coalesce(func.sum(a.capacity), 0),
                func.coalesce(func.sum(a.active_tasks), 0),
            ).where(a.tenant == tenant)
        ).one()
        by_status: dict[str, int] = dict(
            self._conn.execute(
                select(a.status, func.count()).where(a.tenant == tenant).group_by(a.status)
            ).all()
        )
        total, busy = int(totals[0]), int(totals[1])
        return FleetStats(
            tenant=tenant, total=total, by_status={k: int(n) for k, n in by_status.items()},
            busy=busy, idle=total - busy, mean_utilization=float(totals[2]),
            mean_success=float(totals[3]), total_capacity=int(totals[4]),
            total_active_tasks=int(totals[5]),
        )

    def silent_since(self, tenant: str, cutoff: datetime) -> builtins.list[Agent]:
        stmt = (
            select(*AGENT_COLUMNS)
            .where(t.agents.c.tenant == tenant, t.agents.c.last_active_at < cutoff)
            .order_by(t.agents.c.id)
        )
        return self._load(stmt)

    # ------------------------------------------------------------------ helpers

    def _load(self, stmt: Any, params: Mapping[str, Any] | None = None) -> builtins.list[Agent]:
        return self._agents(self._conn.execute(stmt, params).fetchall())

    def _agents(self, rows: Sequence[Row[Any]]) -> builtins.list[Agent]:
        """Agents of ``rows``: their task types, languages and labels come from the row's
        ``capabilities`` (no second statement for the child rows)."""
        agents = [_row_to_agent(r) for r in rows]
        self._seen.update((a.uid, a) for a in agents)
        return agents


@lru_cache(maxsize=1)
def _locked_statement() -> Any:
    """PostgreSQL: one agent ``FOR UPDATE OF agents`` (its capabilities are on the row), its
    version in the statement's snapshot, and one row per arm; then, the row locked, the
    tenant's audit chain lock (``chain_lock``: a materialized CTE, because the columns of a
    locking select are computed below the lock). Built once."""
    ag, arms = t.agents.c, t.arms.c
    snapshot = t.agents.alias("snapshot")
    locked = (select(*AGENT_COLUMNS,
                     select(snapshot.c.version).where(snapshot.c.uid == ag.uid)
                     .scalar_subquery().label("snapshot_version"),
                     now_expr("postgresql", statement=True).label("audit_at"),
                     *head_columns(ag.tenant),
                     *(column.label(f"arm_{column.name}") for column in (
                         arms.task_type, arms.alpha, arms.beta, arms.outcomes,
                         arms.recent_alpha, arms.recent_beta, arms.total_alpha,
                         arms.total_beta, arms.changes)))
              .select_from(t.agents.outerjoin(t.arms, arms.agent_uid == ag.uid))
              .where(ag.tenant == bindparam("tenant"), ag.id == bindparam("id"))
              .with_for_update(of=t.agents)
              .cte("locked").prefix_with("MATERIALIZED"))
    return select(locked, chain_lock(locked.c.tenant).label("audit_fresh"))


@lru_cache(maxsize=1)
def _agent_by_id() -> Any:
    """The agent ``id`` of ``tenant``, unlocked: built once."""
    return select(*AGENT_COLUMNS).where(t.agents.c.tenant == bindparam("tenant"),
                                        t.agents.c.id == bindparam("id"))


@lru_cache(maxsize=1)
def _agent_count() -> Any:
    """How many agents ``tenant`` has: built once."""
    return select(func.count()).select_from(t.agents).where(
        t.agents.c.tenant == bindparam("tenant"))


@lru_cache(maxsize=4)
def _versioned_update(names: tuple[str, ...], *, returning: bool) -> Any:
    """The agent ``where_uid`` at version ``where_version`` gets ``set_<name>`` for each of
    ``names``, typed like its column; with ``returning``, the row as updated comes back.
    Prefixed names: a parameter named like an agents column would join the SET. Built once
    per shape."""
    ag = t.agents.c
    stmt = (update(t.agents)
            .where(ag.uid == bindparam("where_uid"), ag.version == bindparam("where_version"))
            .values({name: bindparam(f"set_{name}", type_=ag[name].type) for name in names}))
    return stmt.returning(*t.agents.c) if returning else stmt


@lru_cache(maxsize=4)
def _delete_children(table: Any) -> Any:
    """The rows of one of an agent's child tables (``agent_uid``): built once per table."""
    return delete(table).where(table.c.agent_uid == bindparam("agent_uid"))


@lru_cache(maxsize=8)
def _insert(table: Any) -> Any:
    """An INSERT into ``table`` whose values come as parameters named like its columns:
    built once per table."""
    return insert(table)


@lru_cache(maxsize=2)
def _tenant(*, locked: bool) -> Any:
    """The tenant ``name``; ``locked``: ``FOR KEY SHARE``. Built once per shape."""
    stmt = select(t.tenants.c.name).where(t.tenants.c.name == bindparam("name"))
    return stmt.with_for_update(key_share=True) if locked else stmt


class SqlTenants:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def add(self, name: str, now: datetime) -> bool:
        if self.exists(name):
            return False
        self._conn.execute(insert(t.tenants).values(name=name, created_at=now))
        return True

    def lock(self, name: str) -> None:
        if self._conn.dialect.name == "postgresql":  # SQLite: BEGIN IMMEDIATE already did
            self._conn.execute(_tenant(locked=True), {"name": name})

    def exists(self, name: str) -> bool:
        return self._conn.execute(_tenant(locked=False), {"name": name}).first() is not None

    def list(self) -> builtins.list[str]:
        return list(self._conn.execute(select(t.tenants.c.name).order_by(t.tenants.c.name)).scalars())


@dataclass
class OpContext:
    """The journaled operation a write belongs to (SPEC §7): its id is stored with its effect."""

    op_id: str
    tenant: str
    kind: str
    now: Callable[[], datetime]
    recorded: bool = False
    ambiguous: bool = False


def already_applied(engine: Engine, op_id: str) -> bool:
    with engine.connect() as conn:
        found = conn.execute(select(t.applied_ops.c.op_id).where(t.applied_ops.c.op_id == op_id))
        return found.first() is not None


class SqlUnitOfWork:
    """One connection and one transaction; rolls back unless committed.

    Database failures leave as ``StorageUnavailable`` (exit 10) and unique violations as
    ``Conflict`` (exit 5), each one line and without the password. ``now()`` is the
    database's time (``clock.py``); audit events are sealed with ``audit_key`` when it is set.
    With ``op`` (a journaled-kind write on a network primary, or its replay) the commit stores
    the op's id in ``applied_ops`` in the same transaction.
    """

    agents: SqlAgents
    tenants: SqlTenants
    routing: SqlRouting
    decisions: SqlDecisions
    tokens: SqlTokens
    rate: SqlRate
    audit: SqlAudit

    def __init__(self, engine: Engine, *, write: bool = False, audit_key: bytes | None = None,
                 clock_offset_s: float | None = None, op: OpContext | None = None,
                 one_statement: bool = False) -> None:
        self._engine = engine
        self._write = write
        # a read of one statement runs outside a transaction (the statement is its own
        # snapshot): SQLite gets no BEGIN (``engine._begin``), psycopg2 is switched to
        # autocommit for it, so it sends no BEGIN and no ROLLBACK (two round trips)
        self._one_statement = one_statement and not write
        self._audit_key = audit_key
        self._clock_offset_s = clock_offset_s  # set: a snapshot standing in for the primary
        self._op = op

    def __enter__(self) -> Self:
        try:
            conn = self._engine.connect()
        except DBAPIError as exc:
            raise unavailable(self._engine, exc) from None
        self._conn = conn.execution_options(**{WRITE_OPTION: self._write,
                                                 ONE_STATEMENT_OPTION: self._one_statement})
        try:
            if self._one_statement and conn.dialect.name == "postgresql":
                dbapi: Any = conn.connection.dbapi_connection
                if not dbapi.closed:  # a closed one fails at its statement, as before
                    dbapi.autocommit = True  # set back at checkin (``engine.make_engine``)
            self._tx = self._conn.begin()
        except DBAPIError as exc:
            self._conn.close()
            raise unavailable(self._engine, exc) from None
        self._clock: DatabaseClock | EstimatedClock = (
            DatabaseClock(self._conn) if self._clock_offset_s is None
            else EstimatedClock(self._clock_offset_s))
        written = current_written.get()
        if written is not None and self._write:
            written.begin()  # what an earlier, rolled-back attempt noted does not count
        arms: dict[str, dict[str, Arm]] = {}  # read with an agent's lock (``SqlAgents.get``)
        stamp_in_sql = self._clock_offset_s is None and conn.dialect.name == "postgresql"
        self._deferring = (DeferringConnection(self._conn) if stamp_in_sql and self._write
                           else None)
        shared = self._conn if self._deferring is None else cast(Connection, self._deferring)
        self.audit = SqlAudit(shared, self._audit_key, self._deferring)
        self.agents = SqlAgents(shared, arms, self._deferring,
                                self.audit if self._deferring is not None else None)
        self.tenants = SqlTenants(shared)
        self.routing = SqlRouting(shared, arms, self._deferring)
        self.decisions = SqlDecisions(shared, self.moment, stamp_in_sql=stamp_in_sql,
                                      clock=self._clock,
                                      audit=self.audit if stamp_in_sql else None,
                                      deferring=self._deferring)
        self.tokens = SqlTokens(shared, self._clock)
        self.rate = SqlRate(shared)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._tx.is_active:
                self._tx.rollback()
        except DBAPIError:
            pass  # the connection is already gone; closing below discards it
        finally:
            self._conn.close()
        if isinstance(exc, IntegrityError):
            raise Conflict(f"conflicting write: {_first_line(exc)}") from None
        if isinstance(exc, OperationalError | InterfaceError):  # the database, not the data
            raise unavailable(self._engine, exc) from None

    def now(self) -> datetime:
        """The database's time for this transaction (one read at most)."""
        return self._clock()

    def moment(self) -> datetime:
        """The database's time of this statement (PostgreSQL's ``clock_timestamp()``), never
        before the transaction's: a row lock this transaction waited for was released by a
        commit before it. On a snapshot standing in for the primary (one writer, the
        estimated clock) and on SQLite (``BEGIN IMMEDIATE``: writers never overlap), the
        transaction's time."""
        if self._clock_offset_s is not None or self._conn.dialect.name != "postgresql":
            return self.now()
        moment: datetime = self._conn.execute(_statement_time()).scalar_one()
        return max(moment, self.now())

    def commit(self) -> None:
        op = self._op
        if op is not None and self._write and not op.recorded:
            # The op's id goes in with its effect: a replay after an ambiguous commit sees it.
            values = {"op_id": op.op_id, "tenant": op.tenant, "kind": op.kind,
                      "applied_at": op.now()}
            if self._deferring is None:
                self._conn.execute(_insert(t.applied_ops), values)
            else:  # with the writes still deferred: one statement
                self._deferring.defer(
                    InsertInto(t.applied_ops, tuple(values), ("op_id",)), values,
                    f"op {op.op_id} was not recorded")
            op.recorded = True
        if self._deferring is not None:
            self._deferring.flush()
        try:
            self._tx.commit()
        except DBAPIError as exc:
            if op is not None:
                op.recorded = False
                op.ambiguous = True  # it may have committed: only the op id can tell
            raise unavailable(self._engine, exc) from None
        written = current_written.get()
        if written is not None and self._write:
            written.committed()

    def rollback(self) -> None:
        self._tx.rollback()


@lru_cache(maxsize=1)
def _statement_time() -> Any:
    """PostgreSQL's time of this statement (``clock_timestamp()``): built once."""
    return select(now_expr("postgresql", statement=True))


def _first_line(exc: DBAPIError) -> str:
    return str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc).__name__


class SqlUnitOfWorkFactory:
    """``clock_offset_s``: the engine is a local snapshot standing in for the primary, whose
    clock is this host's plus that offset (``clock.EstimatedClock``). ``op``: the journaled
    operation whose id every write unit of work stores with its effect (:meth:`for_op`)."""

    def __init__(self, engine: Engine, *, audit_key: bytes | None = None,
                 clock_offset_s: float | None = None, op: OpContext | None = None) -> None:
        self.engine = engine
        self.audit_key = audit_key
        self.clock_offset_s = clock_offset_s
        self.op = op

    def for_op(self, op: OpContext) -> SqlUnitOfWorkFactory:
        """The same store, its writes committed under ``op`` (its id goes to ``applied_ops``)."""
        return SqlUnitOfWorkFactory(self.engine, audit_key=self.audit_key,
                                    clock_offset_s=self.clock_offset_s, op=op)

    def __call__(self, *, write: bool = False, one_statement: bool = False) -> SqlUnitOfWork:
        return SqlUnitOfWork(self.engine, write=write, audit_key=self.audit_key,
                             clock_offset_s=self.clock_offset_s, op=self.op,
                             one_statement=one_statement and not write)
