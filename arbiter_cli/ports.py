"""The seams between services and storage: a unit of work and its repositories.

The in-memory adapter implements these for tests, benchmarks and soak runs; the SQL adapter
implements them for SQLite and PostgreSQL. A unit of work rolls back unless ``commit`` is
called.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self

from arbiter_cli.domain.agents import Agent, FleetStats
from arbiter_cli.domain.query import Query, Ranking


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


class TenantRepository(Protocol):
    def add(self, name: str, now: datetime) -> bool: ...

    def exists(self, name: str) -> bool: ...

    def list(self) -> builtins.list[str]: ...


class UnitOfWork(Protocol):
    @property
    def agents(self) -> AgentRepository: ...

    @property
    def tenants(self) -> TenantRepository: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self, *, write: bool = False) -> UnitOfWork: ...


Clock = Callable[[], datetime]
IdFactory = Callable[[], str]
