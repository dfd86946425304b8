"""The composition root: ``build(settings)`` wires adapters into services.

This is the one place that chooses adapters. Nothing is built at import time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from arbiter_cli.config import Settings
from arbiter_cli.domain.agents import RegistryPolicy
from arbiter_cli.domain.routing import RoutingPolicy
from arbiter_cli.ids import uuid7
from arbiter_cli.ports import Clock, UnitOfWorkFactory
from arbiter_cli.services.audit import Auditor

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from arbiter_cli.services.agents import AgentService
    from arbiter_cli.services.routing import RoutingService
    from arbiter_cli.services.security import SecurityService


def utc_now() -> datetime:
    return datetime.now(UTC)


def routing_policy(settings: Settings) -> RoutingPolicy:
    return RoutingPolicy(
        strategy=str(settings["routing.strategy"]),
        half_life=float(settings["routing.half_life"]),
        weights=settings.weights("routing.weights"),
        latency_ref_ms=float(settings["routing.latency_ref_ms"]),
        epsilon_initial=float(settings["routing.epsilon.initial"]),
        epsilon_min=float(settings["routing.epsilon.min"]),
        epsilon_decay=float(settings["routing.epsilon.decay"]),
        record_candidates=int(settings["routing.record_candidates"]),
        max_claim_attempts=int(settings["routing.max_claim_attempts"]),
        assignment_ttl_s=settings.seconds("routing.assignment_ttl"),
    )


def registry_policy(settings: Settings) -> RegistryPolicy:
    return RegistryPolicy(
        task_types=tuple(settings["registry.task_types"]),
        languages=tuple(settings["registry.languages"]),
        default_capacity=int(settings["registry.default_capacity"]),
        max_agents=int(settings["registry.max_agents"]),
        window=int(settings["performance.window"]),
    )


@dataclass
class App:
    """The wired application one command uses."""

    settings: Settings
    uow: UnitOfWorkFactory
    clock: Clock
    engine: Engine | None = None
    correlation_id: str | None = None
    _closers: list[Callable[[], Any]] = field(default_factory=list)

    @property
    def agents(self) -> AgentService:
        from arbiter_cli.services.agents import AgentService

        return AgentService(
            self.uow, registry_policy(self.settings), self.settings.weights("query.weights"),
            self.clock, uuid7, Auditor(self.clock, self.correlation_id),
        )

    @property
    def routing(self) -> RoutingService:
        from arbiter_cli.services.routing import RoutingService

        return RoutingService(self.uow, registry_policy(self.settings),
                              routing_policy(self.settings), self.clock,
                              Auditor(self.clock, self.correlation_id))

    @property
    def security(self) -> SecurityService:
        from arbiter_cli.services.security import RatePolicy, SecurityService

        rates = RatePolicy(rate=float(self.settings["security.rate_limit.rate"]),
                           burst=int(self.settings["security.rate_limit.burst"]))
        return SecurityService(self.uow, rates, self.clock, self.correlation_id)

    def close(self) -> None:
        while self._closers:
            self._closers.pop()()


def sql_engine(settings: Settings, url: str | None = None, *, create: bool = False) -> Engine:
    from arbiter_cli.adapters.sql.engine import make_engine

    return make_engine(
        url or settings.database_url,
        pool_size=int(settings["database.pool_size"]),
        max_overflow=int(settings["database.max_overflow"]),
        connect_timeout_s=settings.seconds("database.connect_timeout"),
        statement_timeout_s=settings.seconds("database.statement_timeout"),
        busy_timeout_s=settings.seconds("database.busy_timeout"),
        create=create,
    )


def build(
    settings: Settings, *, url: str | None = None, check_schema: bool = True,
    clock: Clock = utc_now,
) -> App:
    """An app on the SQL store at ``url`` (default ``database.url``), schema checked at head."""
    from arbiter_cli.adapters.sql.engine import check_revision
    from arbiter_cli.adapters.sql.repository import SqlUnitOfWorkFactory

    engine = sql_engine(settings, url)
    if check_schema:
        try:
            check_revision(engine)
        except BaseException:
            engine.dispose()
            raise
    app = App(settings=settings, uow=SqlUnitOfWorkFactory(engine), clock=clock, engine=engine)
    app._closers.append(engine.dispose)
    return app


def build_memory(settings: Settings, *, clock: Clock = utc_now) -> App:
    """An app on a fresh in-memory store (benchmarks, soak runs, tests)."""
    from arbiter_cli.adapters.memory import MemoryUnitOfWorkFactory

    return App(settings=settings, uow=MemoryUnitOfWorkFactory(), clock=clock)
