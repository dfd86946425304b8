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
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Protocol, Self

from arbiter_cli.domain.agents import Agent, FleetStats, RegistryPolicy, TaskResult
from arbiter_cli.domain.overlap import Claim
from arbiter_cli.domain.principal import DEFAULT_TENANT, Principal
from arbiter_cli.domain.query import Query, Ranking
from arbiter_cli.domain.results import Bootstrap, IssuedToken, Page, Recorded, Routed
from arbiter_cli.domain.routing import Arm, Decision, Outcome, Pool, RoutingPolicy, Task
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
        """Capable agents ranked by the domain scorer: the agents of ``ranking.rows``.

        SQL stores hand the scorer only the database's top ``query.limit`` (picked with the
        same formula), so there ``ranking.matched`` counts those rows, not every candidate."""
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

    def claim_and_add(self, decision: Decision) -> Decision | None:
        """Claim a slot of ``decision.agent_uid`` (the conditional claim of
        ``RoutingRepository.claim``) and, if it was won, store the decision stamped at the
        claim's moment (``UnitOfWork.moment``); the decision as stored, or None when the claim
        lost (nothing is written)."""
        ...

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

    def admit(self, token_id: str, *, secret_hash: str, roles: tuple[str, ...], rate: float,
              burst: int, last_used_resolution: timedelta
              ) -> tuple[TokenRecord | None, Bucket | None]:
        """An admission's reads and writes, in as few statements as the store allows: the
        token (as ``get``, with the database's time), and, only if the token is
        ``domain.security.admissible`` at that time, its bucket spent (``RateLimiter.spend``
        with the token's own rate and burst, else ``rate`` and ``burst``) and, when the spend
        was allowed, ``last_used_at`` set to that time unless it already lies within
        ``last_used_resolution`` before it. The bucket is None when nothing was spent."""
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
    def __call__(self, *, write: bool = False, one_statement: bool = False) -> UnitOfWork:
        """A unit of work; ``write`` when it may write. ``one_statement``: a read that runs
        a single statement, which is its own snapshot, so no transaction is opened around
        it (on SQL stores, no ``BEGIN`` and ``ROLLBACK`` round trips)."""
        ...


Clock = Callable[[], datetime]
IdFactory = Callable[[], str]


# ---------------------------------------------------------------------------- service areas
#
# What the CLI calls on each service area. The plain services (``services/agents.py``,
# ``routing.py``, ``security.py``) implement them, and so do their resilient counterparts
# (``resilience/services.py``); ``bootstrap.App`` hands out either, typed as these.

Since = datetime | timedelta | None


class AgentsPort(Protocol):
    @property
    def policy(self) -> RegistryPolicy: ...

    def register(self, principal: Principal, raws: Sequence[Mapping[str, Any]],
                 progress: Callable[[int], None] | None = None,
                 uids: Sequence[str] | None = None) -> builtins.list[Agent]: ...

    def update(self, principal: Principal, agent_id: str, raw: Mapping[str, Any]) -> Agent: ...

    def set_status(self, principal: Principal, agent_id: str, status: str,
                   reason: str | None = None) -> Agent: ...

    def heartbeat(self, principal: Principal, agent_id: str) -> Agent: ...

    def record(self, principal: Principal, agent_id: str, result: TaskResult) -> Agent: ...

    def remove(self, principal: Principal, agent_id: str) -> Agent: ...

    def cleanup(self, principal: Principal, older_than_s: float, *,
                dry_run: bool) -> builtins.list[Agent]: ...

    def show(self, principal: Principal, agent_id: str) -> Agent: ...

    def list(self, principal: Principal, *, status: str | None = None,
             task_type: str | None = None, cursor: str | None = None,
             limit: int = 100) -> Page: ...

    def query(self, principal: Principal,
              raw: Mapping[str, Any]) -> builtins.list[dict[str, Any]]: ...

    def stats(self, principal: Principal) -> FleetStats: ...


class RoutingPort(Protocol):
    @property
    def policy(self) -> RoutingPolicy: ...

    @property
    def registry(self) -> RegistryPolicy: ...

    def route(self, principal: Principal, raw: Mapping[str, Any], *, strategy: str | None = None,
              seed: Any = None, dry_run: bool = False,
              correlation_id: str | None = None) -> Routed: ...

    def apply_decision(self, principal: Principal, decision: Decision) -> Routed: ...

    def outcome(self, principal: Principal, outcome: Outcome, *, decision_id: str | None = None,
                task_id: str | None = None) -> Recorded: ...

    def apply_outcome(self, principal: Principal, outcome: Outcome, *, decision_id: str,
                      acknowledged_at: datetime) -> Recorded: ...

    def reap(self, principal: Principal, limit: int = 0) -> builtins.list[Decision]: ...

    def explain(self, principal: Principal, decision_id: str) -> Decision: ...

    def history(self, principal: Principal, *, agent_id: str | None = None,
                task_type: str | None = None, status: str | None = None, since: Since = None,
                cursor: str | None = None, limit: int = 100,
                over_capacity: bool = False) -> tuple[builtins.list[Decision], str | None]: ...

    def stats(self, principal: Principal, *, since: Since = None,
              by: str = "agent") -> dict[str, Any]: ...


class SecurityPort(Protocol):
    def admit(self, token: str | None, command: str) -> Principal: ...

    def peek(self, token: str | None, command: str) -> Principal | None: ...

    def readmit(self, tenant: str, token_id: str | None, command: str, at: datetime, *,
                seen: dict[str | None, Any] | None = None) -> Principal: ...

    def issue(self, principal: Principal, *, role: str, name: str, expires_in_s: float | None,
              rate: float | None = None, burst: int | None = None) -> IssuedToken: ...

    def tokens(self, principal: Principal, *, cursor: str | None = None,
               limit: int = 100) -> tuple[builtins.list[TokenRecord], str | None]: ...

    def revoke(self, principal: Principal, token_id: str, *,
               force: bool = False) -> TokenRecord: ...

    def login(self, token: str) -> Principal: ...

    def create_tenant(self, name: str) -> IssuedToken: ...

    def tenants(self) -> builtins.list[str]: ...

    def holds_tokens(self) -> bool: ...

    def bootstrap(self, tenant: str = DEFAULT_TENANT, *, issue: bool = True,
                  before_issue: Callable[[], None] | None = None) -> Bootstrap: ...

    def events(self, principal: Principal, *, since: Since = None, action: str | None = None,
               actor: str | None = None, cursor: int | None = None,
               limit: int = 100) -> tuple[builtins.list[AuditEvent], str | None]: ...

    def verify(self, principal: Principal, expect_head: str | None = None) -> Verdict: ...
