"""SQL storage of routing: candidate pools, atomic slot claims, arms and decisions."""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Callable, Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    BindParameter,
    Integer,
    Select,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal,
    or_,
    select,
    true,
    type_coerce,
    update,
)
from sqlalchemy.engine import Connection, Row

from arbiter_cli.adapters.sql import tables as t
from arbiter_cli.adapters.sql.capability import condition_params, conditions, fit_shares
from arbiter_cli.adapters.sql.clock import now_expr
from arbiter_cli.adapters.sql.deferred import DeferringConnection, InsertInto, UpdateOf, built
from arbiter_cli.adapters.sql.security import SqlAudit, chain_lock, head_columns
from arbiter_cli.adapters.sql.types import UtcDateTime
from arbiter_cli.adapters.sql.written import current_written
from arbiter_cli.domain.agents import Status
from arbiter_cli.domain.overlap import Claim
from arbiter_cli.domain.routing import EXAMPLES_PER_REASON, OPEN, Arm, Decision, Pool, Task

a = t.agents.c


class SqlRouting:
    """``arms``: an agent's arms as its locking lookup read them (``SqlAgents.get``), by
    uid, then task type; kept current by ``save_arm``."""

    def __init__(self, conn: Connection, arms: dict[str, dict[str, Arm]] | None = None,
                 deferring: DeferringConnection | None = None) -> None:
        self._conn = conn
        self._arms = arms if arms is not None else {}
        self._deferring = deferring

    def pool(self, tenant: str, task: Task) -> Pool:
        """The capable agents with their arms, and the exclusion counts, in one round trip:
        the counts are a one-row select the pool is outer-joined to (so they come back even
        when no agent is capable)."""
        import numpy as np

        shape = (len(task.languages), len(task.specializations))
        params = {"tenant": tenant,
                  **condition_params(task.task_type, task.languages, task.specializations)}
        found = self._conn.execute(_pool_statement(*shape), params).fetchall()
        rows = [r for r in found if r.uid is not None]
        excluded, examples = self._exclusions(params, shape, (found[0].total, found[0].typed,
                                                              found[0].languaged), len(rows))
        uids = [r.uid for r in rows]
        return Pool(
            ids=[r.id for r in rows], uids=uids,
            active=np.array([r.active_tasks for r in rows], dtype=np.int64),
            capacity=np.array([r.capacity for r in rows], dtype=np.int64),
            available=np.array([r.status == Status.AVAILABLE for r in rows], dtype=bool),
            latency_ms=np.array([r.average_latency_ms for r in rows], dtype=np.float64),
            mean_reward=np.array([r.average_quality for r in rows], dtype=np.float64),
            fit=np.array(fit_shares(self._conn, uids, task.prefer)),
            arm_alpha=np.array([r.alpha or 0.0 for r in rows], dtype=np.float64),
            arm_beta=np.array([r.beta or 0.0 for r in rows], dtype=np.float64),
            arm_outcomes=np.array([r.outcomes or 0 for r in rows], dtype=np.int64),
            excluded=excluded, examples=examples,
            arm_total_alpha=np.array([r.total_alpha or 0.0 for r in rows], dtype=np.float64),
            arm_total_beta=np.array([r.total_beta or 0.0 for r in rows], dtype=np.float64),
        )

    def _exclusions(self, params: dict[str, str], shape: tuple[int, int],
                    counts: tuple[Any, Any, Any], n_capable: int
                    ) -> tuple[dict[str, int], dict[str, list[str]]]:
        """Counts per capability reason (``counts``: ``_counts``); examples only when needed."""
        total, typed, languaged = (int(n) for n in counts)
        excluded = {"task_type": total - typed, "language": typed - languaged,
                    "specialization": languaged - n_capable}
        examples = {
            reason: list(self._conn.execute(_examples_statement(reason, *shape), params)
                         .scalars())
            for reason, n in excluded.items() if n
        }
        return excluded, examples

    def claim(self, tenant: str, agent_uid: str) -> bool:
        return self._update_agent("claim", tenant, agent_uid)

    def force_claim(self, tenant: str, agent_uid: str) -> bool:
        return self._update_agent("force_claim", tenant, agent_uid)

    def release(self, tenant: str, agent_uid: str) -> bool:
        return self._update_agent("release", tenant, agent_uid)

    def _update_agent(self, kind: str, tenant: str, agent_uid: str) -> bool:
        return updated_agent(self._conn, _agent_update(kind, returning=False),
                             {"slot_uid": agent_uid, "slot_tenant": tenant},
                             returning=_agent_update(kind, returning=True))

    def arm(self, tenant: str, agent_uid: str, task_type: str) -> Arm | None:
        known = self._arms.get(agent_uid)
        if known is not None:  # read with the agent's lock, which this transaction holds
            return known.get(task_type)
        row = self._conn.execute(_arm_statement(), {
            "agent_uid": agent_uid, "task_type": task_type, "tenant": tenant}).first()
        return None if row is None else Arm(*row)

    def save_arm(self, tenant: str, agent_uid: str, task_type: str, arm: Arm, now: datetime
                 ) -> None:
        """Update, else insert: callers hold the agent's row lock, so no two race here."""
        values = {**dataclasses.asdict(arm), "updated_at": now}
        changed = {**values, "where_agent_uid": agent_uid, "where_task_type": task_type}
        added = {"agent_uid": agent_uid, "task_type": task_type, "tenant": tenant, **values}
        known = self._arms.get(agent_uid)
        if known is not None and self._deferring is not None:  # under the agent's lock
            failure = f"the arm of agent uid {agent_uid} changed meanwhile; retry"
            if task_type in known:
                self._deferring.defer(UpdateOf(t.arms, ("agent_uid", "task_type"), tuple(values),
                                               ("agent_uid",)), changed, failure)
            else:
                self._deferring.defer(InsertInto(t.arms, tuple(added), ("agent_uid",)), added,
                                      failure)
            known[task_type] = arm
            return
        update_arm = built(UpdateOf(t.arms, ("agent_uid", "task_type"), tuple(values)))
        exists = (task_type in known if known is not None
                  else self._conn.execute(update_arm, changed).rowcount == 1)
        if known is not None and exists:
            self._conn.execute(update_arm, changed)
        elif not exists:
            self._conn.execute(built(InsertInto(t.arms, tuple(added))), added)
        if known is not None:
            known[task_type] = arm


def updated_agent(conn: Connection, stmt: Any, params: Mapping[str, Any] | None = None,
                  *, returning: Any = None) -> bool:
    """Run an UPDATE of one agent row; True if it matched. While a write on a network primary
    collects its rows (``written.py``), the row as updated is read back and noted: with
    ``returning`` (``stmt`` returning every agents column, when built once with it), else
    with ``stmt`` made to return them here."""
    written = current_written.get()
    if written is None:
        return conn.execute(stmt, params).rowcount == 1
    row = conn.execute(stmt.returning(*t.agents.c) if returning is None else returning,
                       params).first()
    if row is None:
        return False
    written.agent(dict(row._mapping))
    return True


@lru_cache(maxsize=64)
def _pool_statement(languages: int, labels: int) -> Select[Any]:
    """``SqlRouting.pool``'s statement, built once per shape: over ``tenant`` and the
    parameters of ``capability.conditions``."""
    _, with_languages, capable = conditions(languages, labels)
    arms = t.arms.c
    pool = (select(a.uid, a.id, a.active_tasks, a.capacity, a.status, a.average_latency_ms,
                   a.average_quality, arms.alpha, arms.beta, arms.outcomes, arms.total_alpha,
                   arms.total_beta)
            .select_from(t.agents.outerjoin(t.arms, and_(
                arms.agent_uid == a.uid, arms.task_type == bindparam("task_type"))))
            .where(a.tenant == bindparam("tenant"), capable)
            .subquery("pool"))
    counts = _counts(with_languages, languages > 0).subquery("counts")
    return select(counts, pool).select_from(counts.outerjoin(pool, true())).order_by(pool.c.id)


def _counts(with_languages: Any, languages: bool) -> Select[Any]:
    """The tenant's agents, those with the task type, and those with its languages too:
    index-backed counts, as one row (``total``, ``typed``, ``languaged``)."""
    tt = t.task_types.c
    tenant: BindParameter[str] = bindparam("tenant")
    typed_count = (select(func.count()).select_from(t.task_types)
                   .where(tt.tenant == tenant, tt.task_type == bindparam("task_type"))
                   .scalar_subquery())
    return select(
        select(func.count()).where(a.tenant == tenant).scalar_subquery().label("total"),
        typed_count.label("typed"),
        (select(func.count()).where(a.tenant == tenant, with_languages).scalar_subquery()
         if languages else typed_count).label("languaged"))


@lru_cache(maxsize=128)
def _examples_statement(reason: str, languages: int, labels: int) -> Select[Any]:
    """The first agents of ``tenant`` excluded for ``reason``, built once per shape."""
    has_type, with_languages, capable = conditions(languages, labels)
    failing = {"task_type": ~has_type, "language": and_(has_type, ~with_languages),
               "specialization": and_(with_languages, ~capable)}
    return (select(a.id).where(a.tenant == bindparam("tenant"), failing[reason])
            .order_by(a.id).limit(EXAMPLES_PER_REASON))


@lru_cache(maxsize=8)
def _agent_update(kind: str, *, returning: bool) -> Any:
    """The slot ``claim`` (only of an available agent with a free slot), ``force_claim`` or
    ``release`` of agent ``slot_uid`` of ``slot_tenant``, built once with ``RETURNING`` every
    column and once without. Prefixed names: a parameter named like an agents column would
    join the SET."""
    if returning:
        return _agent_update(kind, returning=False).returning(*t.agents.c)
    where = [a.uid == bindparam("slot_uid"), a.tenant == bindparam("slot_tenant")]
    if kind == "claim":
        where += [a.active_tasks < a.capacity, a.status == Status.AVAILABLE.value]
    active = (case((a.active_tasks > 0, a.active_tasks - 1), else_=0) if kind == "release"
              else a.active_tasks + 1)
    return update(t.agents).where(*where).values(active_tasks=active, version=a.version + 1)


@lru_cache(maxsize=1)
def _arm_statement() -> Select[Any]:
    """An agent's arm for a task type (``SqlRouting.arm``): built once."""
    arms = t.arms.c
    return select(arms.alpha, arms.beta, arms.outcomes, arms.recent_alpha, arms.recent_beta,
                  arms.total_alpha, arms.total_beta, arms.changes).where(
        arms.agent_uid == bindparam("agent_uid"), arms.task_type == bindparam("task_type"),
        arms.tenant == bindparam("tenant"))


d = t.decisions.c


def _decision_values(decision: Decision) -> dict[str, Any]:
    return {
        "decision_id": decision.decision_id, "tenant": decision.tenant,
        "task_id": decision.task_id, "task_type": decision.task_type,
        "priority": decision.priority, "requirements": dict(decision.requirements),
        "metadata": dict(decision.metadata), "agent_id": decision.agent_id,
        "agent_uid": decision.agent_uid, "strategy": decision.strategy, "seed": decision.seed,
        "explored": decision.explored, "confidence": decision.confidence,
        "candidates": list(decision.candidates), "excluded": dict(decision.excluded),
        "excluded_examples": {k: list(v) for k, v in decision.examples.items()},
        "config_hash": decision.config_hash, "latency_us": decision.latency_us,
        "status": decision.status, "correlation_id": decision.correlation_id,
        "created_at": decision.created_at, "closed_at": decision.closed_at,
        "outcome": None if decision.outcome is None else dict(decision.outcome),
        "over_capacity": decision.over_capacity,
        "agent_unavailable": decision.agent_unavailable,
    }


def _row_to_decision(row: Row[Any]) -> Decision:
    return Decision(
        decision_id=row.decision_id, tenant=row.tenant, task_id=row.task_id,
        task_type=row.task_type, requirements=row.requirements, metadata=row.metadata,
        priority=row.priority, agent_id=row.agent_id, agent_uid=row.agent_uid,
        strategy=row.strategy, seed=row.seed, explored=row.explored,
        confidence=row.confidence, candidates=row.candidates, excluded=row.excluded,
        examples=row.excluded_examples or {}, config_hash=row.config_hash,
        latency_us=row.latency_us, created_at=row.created_at, status=row.status,
        correlation_id=row.correlation_id, closed_at=row.closed_at, outcome=row.outcome,
        over_capacity=row.over_capacity, agent_unavailable=row.agent_unavailable,
    )


def _claim_and_insert() -> Any:
    """PostgreSQL: the conditional claim and the decision's insert in one statement.

    The decision is inserted only from the claimed row (none when the claim lost), stamped
    with the statement's time, never before the transaction's (``SqlUnitOfWork.moment``); the
    claimed agent row comes back whole (for ``written.py``) with the stamp, and the tenant's
    audit chain head as this statement saw it (``SqlAudit.prime``: the route's audit event is
    then one statement, stamped like the decision), with the agent's version in the
    statement's snapshot: a claim that waited for the agent's lock has a head as old as that
    wait, which is not used."""
    claimed = (update(t.agents)
               .where(a.uid == bindparam("claim_uid"), a.tenant == bindparam("claim_tenant"),
                      a.active_tasks < a.capacity, a.status == Status.AVAILABLE.value)
               .values(active_tasks=a.active_tasks + 1, version=a.version + 1)
               .returning(*t.agents.c).cte("claimed"))
    # The chain lock once the agent's row is claimed, and before the decision's insert: a
    # claim waiting for it holds no key of the decisions' unique index, for which a holder's
    # insert (a replayed decision of the same task) would wait (a deadlock).
    locked = select(claimed, chain_lock(bindparam("claim_tenant")).label("audit_fresh")).cte(
        "locked").prefix_with("MATERIALIZED")
    names = [c.name for c in t.decisions.c if c.name != "created_at"]
    stamp = type_coerce(func.greatest(func.clock_timestamp(), func.now()), UtcDateTime())
    inserted = (insert(t.decisions)
                .from_select([*names, "created_at"], select(
                    *(bindparam(f"d_{name}", type_=t.decisions.c[name].type) for name in names),
                    stamp).select_from(locked))
                .returning(d.created_at.label("decision_created_at")).cte("inserted"))
    snapshot = t.agents.alias("claim_snapshot")
    return select(locked, inserted.c.decision_created_at,
                  *head_columns(bindparam("claim_tenant")),
                  select(snapshot.c.version).where(snapshot.c.uid == bindparam("claim_uid"))
                  .scalar_subquery().label("claim_snapshot_version")).select_from(
        locked.join(inserted, true()))


#: Built once: SQLAlchemy then reuses the compiled form from its cache.
_CLAIM_AND_INSERT: list[Any] = []


@lru_cache(maxsize=16)
def _lookup(by: str, locked: bool, clock: str | None) -> Any:
    """A decision by ``decision_id`` (``by`` "id"), or ``tenant``'s latest for ``task_id``,
    an open one first ("task"); ``locked``: ``FOR UPDATE`` (PostgreSQL; SQLite's write
    transaction began with ``BEGIN IMMEDIATE``). With the ``clock`` dialect's time as
    ``database_now``: a locking lookup carries it as a column (found or not, the caller
    fails or goes on without needing it); any other is outer-joined to a one-row select of
    the time, so the time comes back even when no decision does. Built once per shape."""
    stmt = select(t.decisions)
    if by == "id":
        stmt = stmt.where(d.decision_id == bindparam("decision_id"))
    else:
        stmt = (stmt.where(d.tenant == bindparam("tenant"), d.task_id == bindparam("task_id"))
                .order_by((d.status == OPEN).desc(), d.decision_id.desc()).limit(1))
    if locked:
        stmt = stmt.with_for_update()
    if clock is None:
        return stmt
    now = now_expr(clock).label("database_now")
    if locked:
        return stmt.add_columns(now)
    found = stmt.subquery("found")
    one = select(literal(1).label("one")).subquery("one")
    return select(now, *found.c).select_from(one.outerjoin(found, true()))


@lru_cache(maxsize=2)
def _expired(locked: bool) -> Any:
    """``tenant``'s open decisions created before ``cutoff``, oldest first, at most
    ``limit``; ``locked``: those no other transaction holds, locked (PostgreSQL). Built
    once per shape."""
    stmt = (select(t.decisions)
            .where(d.tenant == bindparam("tenant"), d.status == OPEN,
                   d.created_at < bindparam("cutoff"))
            .order_by(d.created_at, d.decision_id).limit(bindparam("limit", type_=Integer)))
    return stmt.with_for_update(skip_locked=True) if locked else stmt


@lru_cache(maxsize=1)
def _open_count() -> Any:
    """How many decisions of the agent (``tenant``, ``agent_id``, ``agent_uid``) are open:
    built once."""
    return select(func.count()).select_from(t.decisions).where(
        d.tenant == bindparam("tenant"), d.agent_id == bindparam("agent_id"),
        d.agent_uid == bindparam("agent_uid"), d.status == OPEN)


@lru_cache(maxsize=1)
def _claims() -> Any:
    """The agent's decisions open, or closed at or after ``since``, by id: built once."""
    return (select(d.decision_id, d.created_at, d.closed_at, d.over_capacity)
            .where(d.tenant == bindparam("tenant"), d.agent_id == bindparam("agent_id"),
                   d.agent_uid == bindparam("agent_uid"),
                   or_(d.closed_at.is_(None), d.closed_at >= bindparam("since")))
            .order_by(d.decision_id))


@lru_cache(maxsize=1)
def _insert_decision() -> Any:
    """A decision's INSERT, built once: its values come as parameters named like the
    columns, bound with the columns' types (their JSON and time processors run)."""
    return insert(t.decisions)


class SqlDecisions:
    """``moment``: the unit of work's (``SqlUnitOfWork.moment``); ``stamp_in_sql``: the claim
    and the insert may be one statement stamped by PostgreSQL itself; ``audit``: that
    statement also reads the tenant's audit chain head for it."""

    def __init__(self, conn: Connection, moment: Callable[[], datetime] | None = None,
                 *, stamp_in_sql: bool = False, clock: Any = None,
                 audit: SqlAudit | None = None,
                 deferring: DeferringConnection | None = None) -> None:
        self._conn = conn
        self._audit = audit
        self._deferring = deferring
        self._held: dict[str, str] = {}  # decision id -> status, of those this one locked
        self._moment = moment
        self._dialect = conn.dialect.name
        self._postgres = self._dialect == "postgresql"
        self._stamp_in_sql = stamp_in_sql
        self._clock = clock  # a lookup carries the database's time for it (no extra trip)

    def claim_and_add(self, decision: Decision) -> Decision | None:
        if not self._stamp_in_sql:  # SQLite, or a snapshot: UPDATE … RETURNING, then INSERT
            assert self._moment is not None
            if not SqlRouting(self._conn).claim(decision.tenant, decision.agent_uid):
                return None
            stored = dataclasses.replace(decision, created_at=self._moment())
            self.add(stored)
            return stored
        if not _CLAIM_AND_INSERT:
            _CLAIM_AND_INSERT.append(_claim_and_insert())
        # Prefixed names: a parameter named like an agents column would join the UPDATE's SET.
        values = {f"d_{name}": value for name, value in _decision_values(decision).items()
                  if name != "created_at"}
        row = self._conn.execute(_CLAIM_AND_INSERT[0], {
            **values, "claim_uid": decision.agent_uid, "claim_tenant": decision.tenant,
        }).first()
        if row is None:
            return None
        stored = dataclasses.replace(decision, created_at=row.decision_created_at)
        if (self._audit is not None and row.version == row.claim_snapshot_version + 1
                and row.audit_fresh):
            # No wait for the agent's lock nor the chain's: the head is as fresh as the claim.
            self._audit.prime(decision.tenant, row.decision_created_at, row.audit_head_seq,
                              row.audit_head_hash)
        written = current_written.get()
        if written is not None:
            agent = dict(row._mapping)
            for extra in ("decision_created_at", "audit_head_seq", "audit_head_hash",
                          "claim_snapshot_version", "audit_fresh"):
                del agent[extra]
            written.agent(agent)
            if stored.status == OPEN:
                written.decision_opened(_decision_values(stored))
        return stored

    def add(self, decision: Decision) -> None:
        values = _decision_values(decision)
        self._conn.execute(_insert_decision(), values)
        written = current_written.get()
        if written is not None and decision.status == OPEN:
            written.decision_opened(values)

    def save(self, decision: Decision, *, was: str) -> bool:
        written = current_written.get()
        if written is not None and decision.status != OPEN and decision.decision_id:
            written.decision_closed(decision.decision_id)
        key = ("decision_id", "tenant", "status")
        columns = ("status", "closed_at", "outcome", "over_capacity")
        closing = {"where_decision_id": decision.decision_id, "where_tenant": decision.tenant,
                   "where_status": was, "status": decision.status,
                   "closed_at": decision.closed_at,
                   "outcome": None if decision.outcome is None else dict(decision.outcome),
                   "over_capacity": decision.over_capacity}
        if (self._deferring is not None and decision.decision_id is not None
                and self._held.get(decision.decision_id) == was):
            # Locked with that status by this transaction: it matches (``deferred.py``).
            failure = f"decision {decision.decision_id} changed meanwhile; retry"
            self._deferring.defer(UpdateOf(t.decisions, key, columns, ("decision_id",)),
                                  closing, failure)
            self._held[decision.decision_id] = decision.status
            return True
        stmt = built(UpdateOf(t.decisions, key, columns))
        return self._conn.execute(stmt, closing).rowcount == 1

    def _one(self, by: str, params: dict[str, Any], for_update: bool) -> Decision | None:
        """The decision ``by`` finds (``_lookup``), and the database's time with it
        (``clock``)."""
        locked = for_update and self._postgres
        row = self._conn.execute(_lookup(by, locked, None if self._clock is None
                                         else self._dialect), params).first()
        if self._clock is None:
            return None if row is None else _row_to_decision(row)
        if locked and row is not None and self._deferring is not None:
            self._held[row.decision_id] = row.status  # its save may be deferred
        if row is None:
            return None
        self._clock.remember(row.database_now)
        return None if row.decision_id is None else _row_to_decision(row)

    def get(self, decision_id: str, *, for_update: bool = False) -> Decision | None:
        return self._one("id", {"decision_id": decision_id}, for_update)

    def for_task(self, tenant: str, task_id: str, *, for_update: bool = False
                 ) -> Decision | None:
        return self._one("task", {"tenant": tenant, "task_id": task_id}, for_update)

    def expired(self, tenant: str, cutoff: datetime, limit: int) -> builtins.list[Decision]:
        rows = self._conn.execute(_expired(self._postgres), {
            "tenant": tenant, "cutoff": cutoff, "limit": limit}).fetchall()
        return [_row_to_decision(r) for r in rows]

    def open_count(self, tenant: str, agent_id: str, agent_uid: str) -> int:
        return int(self._conn.execute(_open_count(), {
            "tenant": tenant, "agent_id": agent_id, "agent_uid": agent_uid}).scalar_one())

    def claims(self, tenant: str, agent_id: str, agent_uid: str, since: datetime
               ) -> builtins.list[Claim]:
        rows = self._conn.execute(_claims(), {"tenant": tenant, "agent_id": agent_id,
                                              "agent_uid": agent_uid, "since": since})
        return [Claim(r.decision_id, r.created_at, r.closed_at, bool(r.over_capacity))
                for r in rows.fetchall()]

    def flag(self, tenant: str, flags: Mapping[str, bool]) -> None:
        for value in (True, False):
            ids = sorted(i for i, flagged in flags.items() if flagged is value)
            if ids:
                self._conn.execute(update(t.decisions)
                                   .where(d.tenant == tenant, d.decision_id.in_(ids))
                                   .values(over_capacity=value))

    def history(
        self, tenant: str, *, agent_id: str | None = None, task_type: str | None = None,
        status: str | None = None, since: datetime | None = None, before: str | None = None,
        limit: int = 100, over_capacity: bool = False,
    ) -> builtins.list[Decision]:
        stmt = select(t.decisions).where(d.tenant == tenant).order_by(d.decision_id.desc())
        if over_capacity:
            stmt = stmt.where(d.over_capacity)
        for column, value in ((d.agent_id, agent_id), (d.task_type, task_type),
                              (d.status, status)):
            if value is not None:
                stmt = stmt.where(column == value)
        if since is not None:
            stmt = stmt.where(d.created_at >= since)
        if before is not None:
            stmt = stmt.where(d.decision_id < before)
        if limit:
            stmt = stmt.limit(limit)
        return [_row_to_decision(r) for r in self._conn.execute(stmt).fetchall()]
