"""The in-memory store: the test fake of our ports, and the backend of benchmarks and soak runs.

Its "database clock" is the clock it is given (the composition root's, or a test's fake
clock): ``now()``, token checks, rate buckets and audit stamps all read it.

A write unit of work holds the store's lock from enter to exit (like SQLite's BEGIN IMMEDIATE)
and keeps an undo log, so an exit without ``commit`` restores what it changed. Each tenant has a
columnar index (numpy arrays in id order, with task types and languages as bit masks) that
queries narrow on; updates that keep an agent's capabilities refresh one row in place.
"""

from __future__ import annotations

import bisect
import builtins
import functools
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Self

from arbiter_cli.adapters.admission import admit_stepwise
from arbiter_cli.domain.agents import Agent, FleetStats, Status
from arbiter_cli.domain.overlap import Claim
from arbiter_cli.domain.query import STATUS_CODES, Columns, Query, Ranking, fit_column, rank
from arbiter_cli.domain.routing import EXAMPLES_PER_REASON, OPEN, Arm, Decision, Pool, Task
from arbiter_cli.domain.security import (
    GENESIS,
    Anchor,
    AuditEvent,
    Bucket,
    TokenRecord,
    Verdict,
    seal,
    spend,
    verify,
)
from arbiter_cli.errors import ArbiterError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


class _Bits:
    """Interns labels (case-insensitive) as bit positions of a uint64 mask."""

    def __init__(self) -> None:
        self._bit: dict[str, int] = {}

    def mask(self, labels: tuple[str, ...], *, grow: bool) -> int | None:
        value = 0
        for label in labels:
            key = label.lower()
            if key not in self._bit:
                if not grow:
                    return None
                if len(self._bit) == 64:
                    raise ArbiterError("more than 64 distinct labels in one memory store")
                self._bit[key] = len(self._bit)
            value |= 1 << self._bit[key]
        return value


@dataclass
class _Index:
    ids: builtins.list[str]
    agents: builtins.list[Agent]
    success: npt.NDArray[np.float64]
    quality: npt.NDArray[np.float64]
    utilization: npt.NDArray[np.float64]
    status: npt.NDArray[np.int8]
    task_bits: npt.NDArray[np.uint64]
    language_bits: npt.NDArray[np.uint64]
    active: npt.NDArray[np.int64]
    capacity: npt.NDArray[np.int64]
    latency: npt.NDArray[np.float64]
    uids: list[str] = field(default_factory=list)
    position: dict[str, int] = field(default_factory=dict)

    def refresh(self, agent: Agent) -> None:
        row = self.position[agent.id]
        self.agents[row] = agent
        self.uids[row] = agent.uid
        self.success[row] = agent.performance.success_rate
        self.quality[row] = agent.performance.average_quality
        self.utilization[row] = agent.utilization
        self.status[row] = STATUS_CODES[agent.status]
        self.active[row] = agent.active_tasks
        self.capacity[row] = agent.capacity
        self.latency[row] = agent.performance.average_latency_ms


def _utc_now() -> datetime:
    return datetime.now(UTC)


class MemoryStore:
    """State shared by every unit of work of one process."""

    def __init__(self, clock: Callable[[], datetime] = _utc_now,
                 audit_key: bytes | None = None) -> None:
        self.clock = clock  # this store's "database clock"
        self.audit_key = audit_key
        self.lock = threading.RLock()
        self.tenants: dict[str, datetime] = {}
        self.agents: dict[str, dict[str, Agent]] = {}
        self.indexes: dict[str, _Index] = {}
        self.task_bits = _Bits()
        self.language_bits = _Bits()
        self.by_uid: dict[str, Agent] = {}
        self.arms: dict[tuple[str, str], dict[str, Arm]] = {}  # (tenant, task type) → uid → arm
        self.arm_cache: dict[tuple[str, str], tuple[_Index, Any, Any, Any, Any, Any]] = {}
        self.capable_cache: dict[tuple[str, str, tuple[str, ...], tuple[str, ...]],
                                 tuple[_Index, Any, dict[str, int], dict[str, list[str]]]] = {}
        self.decisions: dict[str, Decision] = {}
        self.tokens: dict[str, TokenRecord] = {}
        self.buckets: dict[str, Bucket] = {}
        self.audit: dict[str, list[AuditEvent]] = {}
        self.open_tasks: dict[tuple[str, str], str] = {}  # (tenant, task id) → decision id
        #: Bumped by every change of an agent or an arm: the kept routing pools (task shape →
        #: read-only Pool) are those of ``pools_generation``, all dropped once it moves on.
        self.generation = 0
        self.pools_generation = 0
        self.pool_rows = 0  # the rows of the kept pools, all shapes together
        self.pools: dict[tuple[str, str, tuple[str, ...], tuple[str, ...], tuple[str, ...]],
                         Pool] = {}

    def index(self, tenant: str) -> _Index:
        index = self.indexes.get(tenant)
        if index is None:
            index = self._build(sorted(self.agents.get(tenant, {}).values(), key=lambda a: a.id))
            self.indexes[tenant] = index
        return index

    def _build(self, agents: builtins.list[Agent]) -> _Index:
        import numpy as np

        n = len(agents)
        columns = Columns.from_agents(agents)
        index = _Index(
            ids=[a.id for a in agents], agents=agents, success=columns.success,
            quality=columns.quality, utilization=columns.utilization, status=columns.status,
            task_bits=np.fromiter(
                (self.task_bits.mask(a.task_types, grow=True) or 0 for a in agents), np.uint64, n),
            language_bits=np.fromiter(
                (self.language_bits.mask(a.languages, grow=True) or 0 for a in agents),
                np.uint64, n),
            active=np.fromiter((a.active_tasks for a in agents), np.int64, n),
            capacity=np.fromiter((a.capacity for a in agents), np.int64, n),
            latency=np.fromiter((a.performance.average_latency_ms for a in agents), np.float64, n),
        )
        index.position = {agent_id: row for row, agent_id in enumerate(index.ids)}
        index.uids = [a.uid for a in agents]
        return index

    def capable(self, tenant: str, task: Task, index: _Index
                ) -> tuple[npt.NDArray[np.intp] | None, dict[str, int], dict[str, list[str]]]:
        """The index rows of the agents capable of ``task`` (None: every row), the exclusions
        by capability and their examples; kept per task shape while the index stands (an
        index is rebuilt whenever an agent's capabilities change, and only then). Callers copy
        what they hand on."""
        key = (tenant, task.task_type, task.languages, task.specializations)
        cached = self.capable_cache.get(key)
        if cached is not None and cached[0] is index:
            return cached[1], cached[2], cached[3]
        found = _capable(self, index, task)
        if len(self.capable_cache) >= CAPABLE_SHAPES:
            self.capable_cache.clear()
        self.capable_cache[key] = (index, *found)
        return found

    def arm_columns(self, tenant: str, task_type: str, index: _Index
                    ) -> tuple[Any, Any, Any, Any, Any]:
        """Arm evidence aligned with the index rows, rebuilt when the index is: alpha, beta,
        outcomes, total alpha, total beta."""
        import numpy as np

        cached = self.arm_cache.get((tenant, task_type))
        if cached is not None and cached[0] is index:
            return cached[1], cached[2], cached[3], cached[4], cached[5]
        table = self.arms.get((tenant, task_type), {})
        found = [table.get(uid) for uid in index.uids]
        n = len(found)
        columns = (
            np.fromiter((a.alpha if a else 0.0 for a in found), np.float64, n),
            np.fromiter((a.beta if a else 0.0 for a in found), np.float64, n),
            np.fromiter((a.outcomes if a else 0 for a in found), np.int64, n),
            np.fromiter((a.total_alpha if a else 0.0 for a in found), np.float64, n),
            np.fromiter((a.total_beta if a else 0.0 for a in found), np.float64, n),
        )
        self.arm_cache[(tenant, task_type)] = (index, *columns)
        return columns

    def refresh_arm(self, tenant: str, task_type: str, agent_uid: str, arm: Arm) -> None:
        self.generation += 1
        cached = self.arm_cache.get((tenant, task_type))
        agent = self.by_uid.get(agent_uid)
        if cached is None or agent is None or cached[0] is not self.indexes.get(tenant):
            return
        row = cached[0].position.get(agent.id)
        if row is None:
            self.arm_cache.pop((tenant, task_type), None)
            return
        for column, value in zip(cached[1:], (arm.alpha, arm.beta, arm.outcomes,
                                              arm.total_alpha, arm.total_beta), strict=True):
            column[row] = value

    def put(self, tenant: str, agent_id: str, agent: Agent | None) -> None:
        """Store or delete one agent, keeping the tenant's index current."""
        self.generation += 1
        bucket = self.agents.setdefault(tenant, {})
        old = bucket.get(agent_id)
        if old is not None:
            self.by_uid.pop(old.uid, None)
        if agent is None:
            bucket.pop(agent_id, None)
        else:
            bucket[agent_id] = agent
            self.by_uid[agent.uid] = agent
        index = self.indexes.get(tenant)
        if index is None:
            return
        if old is not None and agent is not None and _same_shape(old, agent):
            index.refresh(agent)
        else:
            del self.indexes[tenant]


CAPABLE_SHAPES = 256  # task shapes whose capable rows a store keeps (all dropped past it)
POOL_SHAPES = 32  # task shapes whose whole pool a store keeps while nothing changes (idem)
#: and at most this many rows over all of them (the one asked for always kept): a row costs
#: about 600 B with what every strategy prepares on it, so a large fleet asked for many shapes
#: keeps ~25 MB, not POOL_SHAPES whole fleets (190 MB at 10 000 agents)
POOL_ROWS = 40_000


def _capable(store: MemoryStore, index: _Index, task: Task
             ) -> tuple[npt.NDArray[np.intp] | None, dict[str, int], dict[str, list[str]]]:
    import numpy as np

    n = len(index.ids)
    task_mask = store.task_bits.mask((task.task_type,), grow=False)
    language_mask = store.language_bits.mask(task.languages, grow=False)
    has_type = np.zeros(n, dtype=bool) if task_mask is None else (
        index.task_bits & np.uint64(task_mask)) != 0
    has_languages = has_type.copy() if language_mask is None or not language_mask else (
        has_type & ((index.language_bits & np.uint64(language_mask))
                    == np.uint64(language_mask)))
    if language_mask is None:
        has_languages[:] = False
    rows = np.flatnonzero(has_languages)
    if task.specializations:
        rows = np.array([r for r in rows if index.agents[r].has_specializations(
            task.specializations)], dtype=np.intp)
    typed, languaged = int(has_type.sum()), int(has_languages.sum())
    excluded = {"task_type": n - typed, "language": typed - languaged,
                "specialization": languaged - int(rows.size)}
    examples = {}
    if excluded["task_type"]:
        examples["task_type"] = _first_ids(index, ~has_type)
    if excluded["language"]:
        examples["language"] = _first_ids(index, has_type & ~has_languages)
    if excluded["specialization"]:
        examples["specialization"] = [index.ids[r] for r in np.setdiff1d(
            np.flatnonzero(has_languages), rows)[:EXAMPLES_PER_REASON]]
    return None if rows.size == n else rows, excluded, examples


def _same_shape(old: Agent, new: Agent) -> bool:
    return old.task_types == new.task_types and old.languages == new.languages and (
        old.specializations == new.specializations
    )


class MemoryAgents:
    def __init__(self, uow: MemoryUnitOfWork) -> None:
        self._uow = uow
        self._store = uow.store

    def add_many(self, agents: Sequence[Agent]) -> None:
        for agent in agents:
            self._uow.change(agent.tenant, agent.id, agent)

    def get(self, tenant: str, agent_id: str, *, for_update: bool = False) -> Agent | None:
        return self._store.agents.get(tenant, {}).get(agent_id)

    def update(self, agent: Agent, *, expect_version: int) -> bool:
        current = self.get(agent.tenant, agent.id)
        if current is None or current.uid != agent.uid or current.version != expect_version:
            return False
        self._uow.change(agent.tenant, agent.id, agent)
        return True

    def remove(self, tenant: str, agent_id: str) -> bool:
        if self.get(tenant, agent_id) is None:
            return False
        self._uow.change(tenant, agent_id, None)
        return True

    def count(self, tenant: str) -> int:
        return len(self._store.agents.get(tenant, {}))

    def list(
        self, tenant: str, *, status: str | None = None, task_type: str | None = None,
        after: str | None = None, limit: int = 100,
    ) -> builtins.list[Agent]:
        index = self._store.index(tenant)
        start = 0 if after is None else bisect.bisect_right(index.ids, after)
        found: builtins.list[Agent] = []
        for agent in index.agents[start:]:
            if status is not None and agent.status != status:
                continue
            if task_type is not None and task_type not in agent.task_types:
                continue
            found.append(agent)
            if limit and len(found) >= limit:
                break
        return found

    def search(
        self, tenant: str, query: Query, weights: Mapping[str, float]
    ) -> tuple[builtins.list[Agent], Ranking]:
        index = self._store.index(tenant)
        capable = self._capable_rows(index, query)
        if capable is None:  # every agent is capable: use the columns as they are
            columns = Columns(index.success, index.quality, index.utilization, index.status,
                              fit_column(index.agents, query.prefer))
        else:
            columns = Columns(
                success=index.success[capable], quality=index.quality[capable],
                utilization=index.utilization[capable], status=index.status[capable],
                fit=fit_column([index.agents[r] for r in capable], query.prefer),
            )
        ranking = rank(columns, query, weights)
        rows = ranking.rows if capable is None else capable[ranking.rows].tolist()
        return [index.agents[row] for row in rows], ranking

    def _capable_rows(self, index: _Index, query: Query) -> npt.NDArray[np.intp] | None:
        """Rows of capable agents, or None when every row is."""
        import numpy as np

        task_mask = self._store.task_bits.mask((query.task_type,), grow=False)
        language_mask = self._store.language_bits.mask(query.languages, grow=False)
        if task_mask is None or language_mask is None:
            return np.empty(0, dtype=np.intp)
        keep = (index.task_bits & np.uint64(task_mask)) != 0
        if language_mask:
            keep &= (index.language_bits & np.uint64(language_mask)) == np.uint64(language_mask)
        if not query.specializations and keep.all():
            return None
        rows = np.flatnonzero(keep)
        if query.specializations:
            rows = np.array(
                [r for r in rows if index.agents[r].has_specializations(query.specializations)],
                dtype=np.intp,
            )
        return rows

    def stats(self, tenant: str) -> FleetStats:
        agents = list(self._store.agents.get(tenant, {}).values())
        n = len(agents)
        return FleetStats(
            tenant=tenant, total=n,
            by_status=Counter(a.status.value for a in agents),
            busy=sum(1 for a in agents if a.active_tasks > 0),
            idle=sum(1 for a in agents if a.active_tasks == 0),
            mean_utilization=sum(a.utilization for a in agents) / n if n else 0.0,
            mean_success=sum(a.performance.success_rate for a in agents) / n if n else 0.0,
            total_capacity=sum(a.capacity for a in agents),
            total_active_tasks=sum(a.active_tasks for a in agents),
        )

    def silent_since(self, tenant: str, cutoff: datetime) -> builtins.list[Agent]:
        agents = self._store.agents.get(tenant, {}).values()
        return sorted((a for a in agents if a.last_active_at < cutoff), key=lambda a: a.id)


class MemoryRouting:
    def __init__(self, uow: MemoryUnitOfWork) -> None:
        self._uow = uow
        self._store = uow.store

    def pool(self, tenant: str, task: Task) -> Pool:
        """The task's pool, kept per task shape while nothing in the store changes (its
        columns read-only and shared, so ``choose`` may keep what it derives from them)."""
        store = self._store
        key = (tenant, task.task_type, task.languages, task.specializations, task.prefer)
        generation = store.generation
        if store.pools_generation != generation:  # something changed: none is good any more
            store.pools.clear()
            store.pool_rows = 0
            store.pools_generation = generation
        kept = store.pools.get(key)
        if kept is not None:
            return kept
        pool = self._build_pool(tenant, task)
        for column in (pool.active, pool.capacity, pool.available, pool.latency_ms,
                       pool.mean_reward, pool.fit, pool.arm_alpha, pool.arm_beta,
                       pool.arm_outcomes, pool.arm_total_alpha, pool.arm_total_beta):
            if column is not None:
                column.flags.writeable = False
        pool.excluded = MappingProxyType(dict(pool.excluded))  # type: ignore[assignment]
        pool.examples = MappingProxyType(  # type: ignore[assignment]
            {k: tuple(v) for k, v in pool.examples.items()})
        pool.shared = True
        if len(store.pools) >= POOL_SHAPES or store.pool_rows + pool.size > POOL_ROWS:
            store.pools.clear()
            store.pool_rows = 0
        store.pools[key] = pool
        store.pool_rows += pool.size
        return pool

    def _build_pool(self, tenant: str, task: Task) -> Pool:
        import numpy as np

        index = self._store.index(tenant)
        rows, excluded, examples = self._store.capable(tenant, task, index)
        alpha, beta, outcomes, total_alpha, total_beta = self._store.arm_columns(
            tenant, task.task_type, index)
        if rows is None:  # every agent is capable: the columns as they are (copied), no gathers
            return Pool(
                ids=index.ids, uids=index.uids, active=index.active.copy(),
                capacity=index.capacity.copy(),
                available=index.status == STATUS_CODES[Status.AVAILABLE],
                latency_ms=index.latency.copy(), mean_reward=index.quality.copy(),
                fit=np.ones(len(index.ids)) if not task.prefer else fit_column(
                    index.agents, task.prefer),  # type: ignore[arg-type]
                arm_alpha=alpha.copy(), arm_beta=beta.copy(), arm_outcomes=outcomes.copy(),
                excluded=dict(excluded), examples={k: list(v) for k, v in examples.items()},
                arm_total_alpha=total_alpha.copy(), arm_total_beta=total_beta.copy(),
            )
        return Pool(
            ids=[index.ids[r] for r in rows], uids=[index.uids[r] for r in rows],
            active=index.active[rows], capacity=index.capacity[rows],
            available=index.status[rows] == STATUS_CODES[Status.AVAILABLE],
            latency_ms=index.latency[rows], mean_reward=index.quality[rows],
            fit=np.ones(rows.size) if not task.prefer else fit_column(
                [index.agents[r] for r in rows], task.prefer),  # type: ignore[arg-type]
            arm_alpha=alpha[rows], arm_beta=beta[rows], arm_outcomes=outcomes[rows],
            excluded=dict(excluded), examples={k: list(v) for k, v in examples.items()},
            arm_total_alpha=total_alpha[rows], arm_total_beta=total_beta[rows],
        )

    def _slot(self, tenant: str, agent_uid: str, delta: int, force: bool = False) -> bool:
        agent = self._store.by_uid.get(agent_uid)
        if agent is None or agent.tenant != tenant:
            return False
        if delta > 0 and not force and (agent.active_tasks >= agent.capacity
                                        or agent.status != Status.AVAILABLE):
            return False
        active = max(0, agent.active_tasks + delta)
        self._uow.change(tenant, agent.id, replace(agent, active_tasks=active,
                                                   version=agent.version + 1))
        return True

    def claim(self, tenant: str, agent_uid: str) -> bool:
        return self._slot(tenant, agent_uid, +1)

    def force_claim(self, tenant: str, agent_uid: str) -> bool:
        return self._slot(tenant, agent_uid, +1, force=True)

    def release(self, tenant: str, agent_uid: str) -> bool:
        return self._slot(tenant, agent_uid, -1)

    def arm(self, tenant: str, agent_uid: str, task_type: str) -> Arm | None:
        return self._store.arms.get((tenant, task_type), {}).get(agent_uid)

    def save_arm(self, tenant: str, agent_uid: str, task_type: str, arm: Arm, now: datetime
                 ) -> None:
        store = self._store
        table = store.arms.setdefault((tenant, task_type), {})
        previous = table.get(agent_uid)
        table[agent_uid] = arm
        store.generation += 1
        store.refresh_arm(tenant, task_type, agent_uid, arm)

        def undo() -> None:
            store.generation += 1
            if previous is None:
                table.pop(agent_uid, None)
            else:
                table[agent_uid] = previous
            store.arm_cache.pop((tenant, task_type), None)

        self._uow.undo.append(undo)


def _first_ids(index: _Index, mask: npt.NDArray[np.bool_]) -> builtins.list[str]:
    import numpy as np

    return [index.ids[r] for r in np.flatnonzero(mask)[:EXAMPLES_PER_REASON]]


class MemoryDecisions:
    def __init__(self, uow: MemoryUnitOfWork) -> None:
        self._uow = uow
        self._store = uow.store

    def add(self, decision: Decision) -> None:
        self._put(decision)

    def claim_and_add(self, decision: Decision) -> Decision | None:
        if not self._uow.routing.claim(decision.tenant, decision.agent_uid):
            return None
        stored = replace(decision, created_at=self._uow.moment())
        self.add(stored)
        return stored

    def save(self, decision: Decision, *, was: str) -> bool:
        stored = self._store.decisions.get(decision.decision_id or "")
        if stored is None or stored.status != was or stored.tenant != decision.tenant:
            return False
        self._put(decision)
        return True

    def _put(self, decision: Decision) -> None:
        assert decision.decision_id is not None
        store, key = self._store, (decision.tenant, decision.task_id)
        previous = store.decisions.get(decision.decision_id)
        previous_open = store.open_tasks.get(key)
        store.decisions[decision.decision_id] = decision
        if decision.status == OPEN:
            store.open_tasks[key] = decision.decision_id
        elif previous_open == decision.decision_id:
            del store.open_tasks[key]

        def undo() -> None:
            if previous is None:
                store.decisions.pop(decision.decision_id or "", None)
            else:
                store.decisions[decision.decision_id or ""] = previous
            if previous_open is None:
                store.open_tasks.pop(key, None)
            else:
                store.open_tasks[key] = previous_open

        self._uow.undo.append(undo)

    def get(self, decision_id: str, *, for_update: bool = False) -> Decision | None:
        return self._store.decisions.get(decision_id)

    def for_task(self, tenant: str, task_id: str, *, for_update: bool = False
                 ) -> Decision | None:
        open_id = self._store.open_tasks.get((tenant, task_id))
        if open_id is not None:
            return self._store.decisions[open_id]
        found = [d for d in self._store.decisions.values()
                 if d.tenant == tenant and d.task_id == task_id]
        return max(found, key=lambda d: d.decision_id or "", default=None)

    def expired(self, tenant: str, cutoff: datetime, limit: int) -> builtins.list[Decision]:
        found = sorted((self._store.decisions[i] for (t, _), i in self._store.open_tasks.items()
                        if t == tenant and self._store.decisions[i].created_at < cutoff),
                       key=lambda d: d.decision_id or "")
        return found[:limit]

    def open_count(self, tenant: str, agent_id: str, agent_uid: str) -> int:
        opened = (self._store.decisions[i] for (t, _), i in self._store.open_tasks.items()
                  if t == tenant)
        return sum(1 for d in opened if d.agent_id == agent_id and d.agent_uid == agent_uid)

    def claims(self, tenant: str, agent_id: str, agent_uid: str, since: datetime
               ) -> builtins.list[Claim]:
        found = sorted((d for d in self._store.decisions.values()
                        if d.tenant == tenant and d.agent_id == agent_id
                        and d.agent_uid == agent_uid
                        and (d.closed_at is None or d.closed_at >= since)),
                       key=lambda d: d.decision_id or "")
        return [Claim(d.decision_id or "", d.created_at, d.closed_at, d.over_capacity)
                for d in found]

    def flag(self, tenant: str, flags: Mapping[str, bool]) -> None:
        for decision_id, value in sorted(flags.items()):
            stored = self._store.decisions.get(decision_id)
            if stored is not None and stored.tenant == tenant:
                self._put(replace(stored, over_capacity=value))

    def history(
        self, tenant: str, *, agent_id: str | None = None, task_type: str | None = None,
        status: str | None = None, since: datetime | None = None, before: str | None = None,
        limit: int = 100, over_capacity: bool = False,
    ) -> builtins.list[Decision]:
        found = [
            d for d in self._store.decisions.values()
            if d.tenant == tenant
            and (not over_capacity or d.over_capacity)
            and (agent_id is None or d.agent_id == agent_id)
            and (task_type is None or d.task_type == task_type)
            and (status is None or d.status == status)
            and (since is None or d.created_at >= since)
            and (before is None or (d.decision_id or "") < before)
        ]
        found.sort(key=lambda d: d.decision_id or "", reverse=True)
        return found[:limit] if limit else found


class MemoryTokens:
    def __init__(self, uow: MemoryUnitOfWork) -> None:
        self._uow = uow
        self._tokens = uow.store.tokens

    def add(self, token: TokenRecord) -> None:
        self.save(token)

    def save(self, token: TokenRecord) -> None:
        previous = self._tokens.get(token.id)
        self._tokens[token.id] = token

        def undo() -> None:
            if previous is None:
                self._tokens.pop(token.id, None)
            else:
                self._tokens[token.id] = previous

        self._uow.undo.append(undo)

    def get(self, token_id: str) -> TokenRecord | None:
        return self._tokens.get(token_id)

    def admit(self, token_id: str, *, secret_hash: str, roles: tuple[str, ...], rate: float,
              burst: int, last_used_resolution: timedelta
              ) -> tuple[TokenRecord | None, Bucket | None]:
        return admit_stepwise(self, self._uow.rate, self._uow.now, token_id,
                              secret_hash=secret_hash, roles=roles, rate=rate, burst=burst,
                              last_used_resolution=last_used_resolution)

    def list(self, tenant: str, *, after: str | None = None, limit: int = 100
             ) -> builtins.list[TokenRecord]:
        found = sorted((t for t in self._tokens.values()
                        if t.tenant == tenant and (after is None or t.id > after)),
                       key=lambda t: t.id)
        return found[:limit] if limit else found

    def count(self) -> int:
        return len(self._tokens)


class MemoryRate:
    def __init__(self, uow: MemoryUnitOfWork) -> None:
        self._buckets = uow.store.buckets
        self._clock = uow.store.clock

    def spend(self, token_id: str, tenant: str, rate: float, burst: int) -> Bucket:
        now = self._clock().timestamp()
        bucket = spend(self._buckets.get(token_id), now, rate, burst)
        self._buckets[token_id] = bucket  # spent even if the caller's work rolls back
        return bucket


class MemoryAudit:
    def __init__(self, uow: MemoryUnitOfWork) -> None:
        self._uow = uow
        self._chains = uow.store.audit
        self._clock = uow.store.clock
        self._key = uow.store.audit_key

    def append(self, tenant: str, *, actor: str | None, action: str, target: str | None,
               result: str, correlation_id: str | None, details: Mapping[str, object]
               ) -> AuditEvent:
        chain = self._chains.setdefault(tenant, [])
        head = chain[-1].hash if chain else GENESIS
        event = seal(tenant, len(chain) + 1, self._clock(), head, actor=actor, action=action,
                     target=target, result=result, correlation_id=correlation_id,
                     details=details, key=self._key)
        chain.append(event)
        self._uow.undo.append(chain.pop)
        return event

    def events(self, tenant: str, *, since: datetime | None = None, action: str | None = None,
               actor: str | None = None, before: int | None = None, limit: int = 0,
               ascending: bool = False) -> builtins.list[AuditEvent]:
        found = [e for e in self._chains.get(tenant, [])
                 if (since is None or e.at >= since) and (action is None or e.action == action)
                 and (actor is None or e.actor == actor) and (before is None or e.seq < before)]
        if not ascending:
            found.reverse()
        return found[:limit] if limit else found

    def last(self, tenant: str, action: str, actor: str | None) -> AuditEvent | None:
        found = self.events(tenant, action=action, actor=actor, limit=1)
        return found[0] if found else None

    def verify(self, tenant: str, anchor: Anchor | None = None) -> Verdict:
        return verify(self._chains.get(tenant, []), anchor, self._key)


class MemoryTenants:
    def __init__(self, uow: MemoryUnitOfWork) -> None:
        self._uow = uow

    def add(self, name: str, now: datetime) -> bool:
        if name in self._uow.store.tenants:
            return False
        self._uow.store.tenants[name] = now
        self._uow.undo.append(lambda: self._uow.store.tenants.pop(name, None))
        return True

    def exists(self, name: str) -> bool:
        return name in self._uow.store.tenants

    def lock(self, name: str) -> None:
        """The store's lock is already held by this unit of work."""

    def list(self) -> builtins.list[str]:
        return sorted(self._uow.store.tenants)


class MemoryUnitOfWork:
    """A unit of work's repositories are made when first used (a dry-run route uses one)."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.undo: builtins.list[Any] = []

    @functools.cached_property
    def agents(self) -> MemoryAgents:
        return MemoryAgents(self)

    @functools.cached_property
    def tenants(self) -> MemoryTenants:
        return MemoryTenants(self)

    @functools.cached_property
    def routing(self) -> MemoryRouting:
        return MemoryRouting(self)

    @functools.cached_property
    def decisions(self) -> MemoryDecisions:
        return MemoryDecisions(self)

    @functools.cached_property
    def tokens(self) -> MemoryTokens:
        return MemoryTokens(self)

    @functools.cached_property
    def rate(self) -> MemoryRate:
        return MemoryRate(self)

    @functools.cached_property
    def audit(self) -> MemoryAudit:
        return MemoryAudit(self)

    def __enter__(self) -> Self:
        self.store.lock.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.rollback()
        finally:
            self.store.lock.release()

    def now(self) -> datetime:
        """The store's clock stands in for the database's."""
        return self.store.clock()

    def moment(self) -> datetime:
        """Transactions take turns on the store's lock: the transaction's time will do."""
        return self.now()

    def change(self, tenant: str, agent_id: str, agent: Agent | None) -> None:
        previous = self.store.agents.get(tenant, {}).get(agent_id)
        self.store.put(tenant, agent_id, agent)
        self.undo.append(lambda: self.store.put(tenant, agent_id, previous))

    def commit(self) -> None:
        self.undo.clear()

    def rollback(self) -> None:
        while self.undo:
            self.undo.pop()()


class MemoryUnitOfWorkFactory:
    """``factory(write=...)`` → a unit of work over one shared ``MemoryStore``.

    ``clock`` is the store's "database clock" (default: the system's).
    """

    def __init__(self, store: MemoryStore | None = None, *,
                 clock: Callable[[], datetime] | None = None,
                 audit_key: bytes | None = None) -> None:
        self.store = store or MemoryStore(clock or _utc_now, audit_key)

    def __call__(self, *, write: bool = False, one_statement: bool = False
                 ) -> MemoryUnitOfWork:
        return MemoryUnitOfWork(self.store)
