"""The composition root: ``build(settings)`` wires adapters into services.

This is the one place that chooses adapters. Nothing is built at import time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast

from arbiter_cli.config import Settings
from arbiter_cli.domain.agents import RegistryPolicy
from arbiter_cli.domain.routing import RoutingPolicy
from arbiter_cli.ids import uuid7
from arbiter_cli.ports import Clock, UnitOfWorkFactory
from arbiter_cli.services.audit import Auditor

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from arbiter_cli.adapters.sql.repository import SqlUnitOfWorkFactory
    from arbiter_cli.observability.runtime import Telemetry
    from arbiter_cli.resilience.gateway import Resilience
    from arbiter_cli.services.agents import AgentService
    from arbiter_cli.services.routing import RoutingService
    from arbiter_cli.services.security import SecurityService


S = TypeVar("S")


def utc_now() -> datetime:
    """The process's clock: breakers, journals, deadlines and the memory store run on it.

    Stored time stamps and expiry checks on SQL stores use the database's clock instead.
    """
    return datetime.now(UTC)


def routing_policy(settings: Settings) -> RoutingPolicy:
    routing = settings.routing
    return RoutingPolicy(
        strategy=routing.strategy,
        half_life=routing.half_life,
        weights=routing.weights.as_dict(),
        latency_ref_ms=routing.latency_ref_ms,
        epsilon_initial=routing.epsilon.initial,
        epsilon_min=routing.epsilon.min,
        epsilon_decay=routing.epsilon.decay,
        record_candidates=routing.record_candidates,
        max_claim_attempts=routing.max_claim_attempts,
        assignment_ttl_s=routing.assignment_ttl,
    )


def audit_key(settings: Settings) -> bytes | None:
    """``security.audit_key``: with it, audit events are HMAC-sealed (SPEC §4.1)."""
    key = settings.security.audit_key
    return key.encode() if key else None


def sql_unit_of_work(settings: Settings, engine: Engine, *,
                     clock_offset_s: float | None = None) -> SqlUnitOfWorkFactory:
    """The unit of work on ``engine``, sealing audit events as the settings say;
    ``clock_offset_s`` for a snapshot standing in for the primary (``clock.EstimatedClock``)."""
    from arbiter_cli.adapters.sql.repository import SqlUnitOfWorkFactory

    return SqlUnitOfWorkFactory(engine, audit_key=audit_key(settings),
                                clock_offset_s=clock_offset_s)


def registry_policy(settings: Settings) -> RegistryPolicy:
    registry = settings.registry
    return RegistryPolicy(
        task_types=registry.task_types,
        languages=registry.languages,
        default_capacity=registry.default_capacity,
        max_agents=registry.max_agents,
        window=settings.performance.window,
    )


@dataclass
class App:
    """The wired application one command uses."""

    settings: Settings
    uow: UnitOfWorkFactory
    clock: Clock
    engine: Engine | None = None
    correlation_id: str | None = None
    resilience: Resilience | None = None
    telemetry: Telemetry | None = None  # spans, metrics and logs of the command (SPEC §9)
    _closers: list[Callable[[], Any]] = field(default_factory=list)

    @property
    def tracer(self) -> Any:
        """The run's OpenTelemetry tracer, or None when tracing is off."""
        return None if self.telemetry is None else self.telemetry.tracer

    @property
    def agents(self) -> AgentService:
        return self._observed("agents", self._resilient("agents", self._agent_service))

    @property
    def routing(self) -> RoutingService:
        return self._observed("routing", self._resilient("routing", self._routing_service))

    @property
    def security(self) -> SecurityService:
        return self._observed("security", self._resilient("security", self._security_service))

    def _observed(self, name: str, service: S) -> S:
        """A span per operation, and routing metrics, when the run is observed."""
        if self.telemetry is None:
            return service
        from arbiter_cli.observability.instrument import instrument

        return instrument(service, self.telemetry, name)

    def _agent_service(self, uow: UnitOfWorkFactory) -> AgentService:
        from arbiter_cli.services.agents import AgentService

        return AgentService(
            uow, registry_policy(self.settings), self.settings.query.weights.as_dict(),
            uuid7, Auditor(self.correlation_id),
        )

    def _routing_service(self, uow: UnitOfWorkFactory) -> RoutingService:
        from arbiter_cli.services.routing import RoutingService

        return RoutingService(uow, registry_policy(self.settings),
                              routing_policy(self.settings), Auditor(self.correlation_id))

    def _security_service(self, uow: UnitOfWorkFactory) -> SecurityService:
        from arbiter_cli.services.security import RatePolicy, SecurityService

        limit = self.settings.security.rate_limit
        rates = RatePolicy(rate=limit.rate, burst=limit.burst)
        return SecurityService(uow, rates, self.correlation_id)

    def _resilient(self, domain: str, make: Callable[[UnitOfWorkFactory], S]) -> S:
        """The service on the primary; on a network primary, wrapped by the resilience layer."""
        service = make(self.uow)
        res = self.resilience
        if res is None:
            return service
        from arbiter_cli.resilience.services import ResilientService

        res.correlation_id = self.correlation_id

        def local() -> S:
            engine = res.local_engine()
            return make(sql_unit_of_work(self.settings, engine,
                                         clock_offset_s=res.local_clock_offset_s()))

        return cast(S, ResilientService(domain, res, service, local))

    def close(self) -> None:
        while self._closers:
            self._closers.pop()()


def sql_engine(settings: Settings, url: str | None = None, *, create: bool = False,
               telemetry: Telemetry | None = None) -> Engine:
    from arbiter_cli.adapters.sql.engine import make_engine

    engine = make_engine(
        url or settings.database_url,
        pool_size=settings.database.pool_size,
        max_overflow=settings.database.max_overflow,
        connect_timeout_s=settings.database.connect_timeout,
        statement_timeout_s=settings.database.statement_timeout,
        busy_timeout_s=settings.database.busy_timeout,
        create=create,
    )
    if telemetry is not None and telemetry.watches_database:
        from arbiter_cli.observability.instrument import instrument_engine

        instrument_engine(engine, tracer=telemetry.tracer, metrics=telemetry.metrics,
                          attributes=telemetry.attributes(), redact=telemetry.redact)
    return engine


def build(
    settings: Settings, *, url: str | None = None, check_schema: bool = True,
    clock: Clock | None = None, resilient: bool = False, telemetry: Telemetry | None = None,
) -> App:
    """An app on the SQL store at ``url`` (default ``database.url``), schema checked at head.

    With ``resilient`` (the CLI's commands) a PostgreSQL primary gets the resilience layer of
    SPEC §7: deadline, retries, breaker, snapshot and journal. During an outage the schema
    check is skipped: the snapshot was taken from a database at head.
    """
    from arbiter_cli.adapters.sql.engine import backend_of, check_revision

    clock = clock or utc_now  # looked up now, so a test can skew the process's clock
    target = url or settings.database_url
    engine = sql_engine(settings, target, telemetry=telemetry)
    app = App(settings=settings, uow=sql_unit_of_work(settings, engine), clock=clock,
              engine=engine,
              telemetry=telemetry,
              correlation_id=telemetry.correlation_id if telemetry is not None else None)
    app._closers.append(engine.dispose)
    if resilient and backend_of(target) == "postgres":
        from arbiter_cli.resilience.gateway import Resilience

        app.resilience = Resilience(settings=settings, url=target, primary=engine, clock=clock)
        app._closers.append(app.resilience.close)
    try:
        if check_schema:
            if app.resilience is None:
                check_revision(engine)
            else:
                _check_revision_resilient(app.resilience, engine)
    except BaseException:
        app.close()
        raise
    return app


def _check_revision_resilient(res: Resilience, engine: Engine) -> None:
    from arbiter_cli.adapters.sql.engine import check_revision
    from arbiter_cli.errors import SchemaOutdated, StorageUnavailable

    try:
        res.guarded(lambda: check_revision(engine))
    except SchemaOutdated:
        raise
    except StorageUnavailable as exc:
        if not res.local.exists():
            raise
        res.unavailable(exc.message)


def build_memory(settings: Settings, *, clock: Clock | None = None,
                 telemetry: Telemetry | None = None) -> App:
    """An app on a fresh in-memory store (benchmarks, soak runs, tests).

    The store has no clock of its own: the app's clock stands in for the database's.
    """
    from arbiter_cli.adapters.memory import MemoryUnitOfWorkFactory

    def database_clock() -> datetime:
        return app.clock()

    app = App(settings=settings,
              uow=MemoryUnitOfWorkFactory(clock=database_clock, audit_key=audit_key(settings)),
              clock=clock or utc_now, telemetry=telemetry,
              correlation_id=telemetry.correlation_id if telemetry is not None else None)
    return app
