"""The seams between services and storage: a unit of work and its repositories.

The in-memory adapter implements these for tests, benchmarks and soak runs; the SQL adapter
implements them for SQLite and PostgreSQL. A unit of work rolls back unless ``commit`` is
called.

Time is the store's (SPEC §4.1, "the database's clock"): ``UnitOfWork.now()``, the token
bucket and the audit stamps read the database's time, never the caller's clock.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self

from arbiter_cli.domain.agents import Agent, FleetStats
from arbiter_cli.domain.overlap import Claim
from arbiter_cli.domain.query import Query, Ranking
from arbiter_cli.domain.routing import Arm, Decision, Pool, Task
from arbiter_cli.domain.security import Anchor, AuditEvent, Bucket, TokenRecord, Verdict


class AgentRepository(Protocol):
    def add_many(self, agents: Sequence[Agent]) -> None: ...

    def get(self, tenant: str, agent_id: str, *, for_update: bool = False) -> Agent | None: ...

    def update(self, agent: Agent, *, expect_version: int) -> bool:
        """Store ``agent`` if the stored version is ``expect_version``; False otherwise."""
        ...

    def remove(self, tenant: str, agent_id: str) -> bool: ...

    def count(self, tenant: str) -> int: ...

    def list(
        self, tenant: str, *, status: str | None = None, task_type: str | None = None,
        after: str | None = None, limit: int = 100,
    ) -> builtins.list[Agent]: ...

    def search(
        self, tenant: str, query: Query, weights: Mapping[str, float]
    ) -> tuple[builtins.list[Agent], Ranking]:
        """Capable agents ranked by the domain scorer: the agents of ``ranking.rows``."""
        ...

    def stats(self, tenant: str) -> FleetStats: ...

    def silent_since(self, tenant: str, cutoff: datetime) -> builtins.list[Agent]: ...


class RoutingRepository(Protocol):
    """What routing needs of the agents: candidate pools, slot claims, and arms."""

    def pool(self, tenant: str, task: Task) -> Pool: ...

    def claim(self, tenant: str, agent_uid: str) -> bool:
        """Take one slot if ``active_tasks < capacity`` and the agent is available (atomic)."""
        ...

    def release(self, tenant: str, agent_uid: str) -> bool:
        """Give one slot back, never below 0; False if the agent is gone."""
        ...

    def force_claim(self, tenant: str, agent_uid: str) -> bool:
        """Take one slot whatever the capacity (a replayed, already acknowledged assignment)."""
        ...

    def arm(self, tenant: str, agent_uid: str, task_type: str) -> Arm | None: ...

    def save_arm(self, tenant: str, agent_uid: str, task_type: str, arm: Arm, now: datetime
                 ) -> None: ...


class DecisionRepository(Protocol):
    def add(self, decision: Decision) -> None: ...

    def save(self, decision: Decision, *, was: str) -> bool:
        """Store status, outcome, closing time and flags if the stored status is still ``was``.

        False when another transaction changed the decision first (nothing is written).
        """
        ...

    def get(self, decision_id: str, *, for_update: bool = False) -> Decision | None:
        """By globally unique id, whatever the tenant: callers check it."""
        ...

    def for_task(self, tenant: str, task_id: str, *, for_update: bool = False
                 ) -> Decision | None:
        """The open decision of ``task_id``, else its most recent one."""
        ...

    def expired(self, tenant: str, cutoff: datetime, limit: int) -> builtins.list[Decision]:
        """Open decisions created before ``cutoff``, oldest first, locked for this
        transaction; rows another reaper holds are skipped."""
        ...

    def open_count(self, tenant: str, agent_id: str, agent_uid: str) -> int:
        """Open decisions held by this registration of the agent."""
        ...

    def claims(self, tenant: str, agent_id: str, agent_uid: str, since: datetime
               ) -> builtins.list[Claim]:
        """The intervals of this registration's decisions still open at ``since`` or later
        (open, or closed at or after it), with their current flags."""
        ...

    def flag(self, tenant: str, flags: Mapping[str, bool]) -> None:
        """Set ``over_capacity`` of each decision id to its value."""
        ...

    def history(
        self, tenant: str, *, agent_id: str | None = None, task_type: str | None = None,
        status: str | None = None, since: datetime | None = None, before: str | None = None,
        limit: int = 100, over_capacity: bool = False,
    ) -> builtins.list[Decision]:
        """Newest first; ``before`` is a decision id (UUIDv7 ids sort by time);
        ``over_capacity``: only the decisions flagged so."""
        ...


class TokenRepository(Protocol):
    def add(self, token: TokenRecord) -> None: ...

    def get(self, token_id: str) -> TokenRecord | None:
        """By globally unique id, whatever the tenant: callers check it.

        A store may read the database's time in the same statement (``UnitOfWork.now()``).
        """
        ...

    def list(self, tenant: str, *, after: str | None = None, limit: int = 100
             ) -> builtins.list[TokenRecord]: ...

    def save(self, token: TokenRecord) -> None:
        """Store revocation and last use."""
        ...

    def count(self) -> int: ...


class RateLimiter(Protocol):
    def spend(self, token_id: str, tenant: str, rate: float, burst: int) -> Bucket:
        """Refill and spend one token in one atomic step, at the database's time; the bucket
        after the spend."""
        ...


class AuditLog(Protocol):
    def append(self, tenant: str, *, actor: str | None, action: str, target: str | None,
               result: str, correlation_id: str | None, details: Mapping[str, object]
               ) -> AuditEvent:
        """Chain one event at the tenant's head, stamped with the database's time; appends
        are serialised per tenant, and sealed with the audit key when one is set."""
        ...

    def verify(self, tenant: str, anchor: Anchor | None = None) -> Verdict:
        """Walk the tenant's chain (with the audit key, if set); rows that cannot be read
        back are reported at their seq."""
        ...

    def events(self, tenant: str, *, since: datetime | None = None, action: str | None = None,
               actor: str | None = None, before: int | None = None, limit: int = 0,
               ascending: bool = False) -> builtins.list[AuditEvent]: ...

    def last(self, tenant: str, action: str, actor: str | None) -> AuditEvent | None: ...


class TenantRepository(Protocol):
    def add(self, name: str, now: datetime) -> bool: ...

    def lock(self, name: str) -> None:
        """Serialise tenant-wide checks (e.g. registry.max_agents) until the commit."""
        ...

    def exists(self, name: str) -> bool: ...

    def list(self) -> builtins.list[str]: ...


class UnitOfWork(Protocol):
    @property
    def agents(self) -> AgentRepository: ...

    @property
    def tenants(self) -> TenantRepository: ...

    @property
    def routing(self) -> RoutingRepository: ...

    @property
    def decisions(self) -> DecisionRepository: ...

    @property
    def tokens(self) -> TokenRepository: ...

    @property
    def rate(self) -> RateLimiter: ...

    @property
    def audit(self) -> AuditLog: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def now(self) -> datetime:
        """The database's time for this transaction."""
        ...

    def moment(self) -> datetime:
        """The database's time now, within this transaction: later than every write this
        transaction waited for (a lock another transaction released by committing)."""
        ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self, *, write: bool = False) -> UnitOfWork: ...


Clock = Callable[[], datetime]
IdFactory = Callable[[], str]
