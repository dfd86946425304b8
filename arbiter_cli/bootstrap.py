"""The composition root: ``build(settings)`` wires adapters into services.

This is the one place that chooses adapters. Nothing is built at import time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from arbiter_cli.config import Settings
from arbiter_cli.domain.agents import RegistryPolicy
from arbiter_cli.domain.routing import RoutingPolicy
from arbiter_cli.ids import uuid7
from arbiter_cli.ports import AgentsPort, Clock, RoutingPort, SecurityPort, UnitOfWorkFactory
from arbiter_cli.services.audit import Auditor

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from arbiter_cli.adapters.sql.repository import OpContext, SqlUnitOfWorkFactory
    from arbiter_cli.observability.runtime import Telemetry
    from arbiter_cli.resilience.gateway import Durability, Resilience
    from arbiter_cli.resilience.replay import Primary
    from arbiter_cli.resilience.services import Sides
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


def audit_key(settings: Settings) -> bytes | None:
    """``security.audit_key``: with it, audit events are HMAC-sealed (SPEC §4.1)."""
    key = str(settings["security.audit_key"])
    return key.encode() if key else None


def sql_unit_of_work(settings: Settings, engine: Engine, *,
                     clock_offset_s: float | None = None) -> SqlUnitOfWorkFactory:
    """The unit of work on ``engine``, sealing audit events as the settings say;
    ``clock_offset_s`` for a snapshot standing in for the primary (``clock.EstimatedClock``)."""
    from arbiter_cli.adapters.sql.repository import SqlUnitOfWorkFactory

    return SqlUnitOfWorkFactory(engine, audit_key=audit_key(settings),
                                clock_offset_s=clock_offset_s)


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
    """The wired application one command uses.

    Its services are built on first use and kept: set ``correlation_id`` before that.
    """

    settings: Settings
    uow: UnitOfWorkFactory
    clock: Clock
    engine: Engine | None = None
    correlation_id: str | None = None
    resilience: Resilience | None = None
    telemetry: Telemetry | None = None  # spans, metrics and logs of the command (SPEC §9)
    #: What became of each write on a network primary, in order (``meta.durability``).
    writes: list[Durability] = field(default_factory=list)
    _closers: list[Callable[[], Any]] = field(default_factory=list)

    @property
    def tracer(self) -> Any:
        """The run's OpenTelemetry tracer, or None when tracing is off."""
        return None if self.telemetry is None else self.telemetry.tracer

    @cached_property
    def agents(self) -> AgentsPort:
        service: AgentsPort = self._agent_service(self.uow)
        res = self.resilience
        if res is not None:
            from arbiter_cli.resilience.services import ResilientAgents

            service = ResilientAgents(res, self._sides(res, self._agent_service),
                                      self.writes.append)
        return self._observed("agents", service)

    @cached_property
    def routing(self) -> RoutingPort:
        service: RoutingPort = self._routing_service(self.uow)
        res = self.resilience
        if res is not None:
            from arbiter_cli.resilience.services import ResilientRouting

            service = ResilientRouting(res, self._sides(res, self._routing_service),
                                       self.writes.append)
        return self._observed("routing", service)

    @cached_property
    def security(self) -> SecurityPort:
        service: SecurityPort = self._security_service(self.uow)
        res = self.resilience
        if res is not None:
            from arbiter_cli.resilience.services import ResilientSecurity

            service = ResilientSecurity(res, self._sides(res, self._security_service),
                                        self.writes.append)
        return self._observed("security", service)

    def _observed(self, name: str, service: S) -> S:
        """A span per operation, and routing metrics, when the run is observed."""
        if self.telemetry is None:
            return service
        from arbiter_cli.observability.instrument import instrument

        return instrument(service, self.telemetry, name)

    def _agent_service(self, uow: UnitOfWorkFactory) -> AgentService:
        from arbiter_cli.services.agents import AgentService

        return AgentService(
            uow, registry_policy(self.settings), self.settings.weights("query.weights"),
            uuid7, Auditor(self.correlation_id),
        )

    def _routing_service(self, uow: UnitOfWorkFactory) -> RoutingService:
        from arbiter_cli.services.routing import RoutingService

        return RoutingService(uow, registry_policy(self.settings),
                              routing_policy(self.settings), Auditor(self.correlation_id))

    def _security_service(self, uow: UnitOfWorkFactory) -> SecurityService:
        from arbiter_cli.services.security import RatePolicy, SecurityService

        rates = RatePolicy(rate=float(self.settings["security.rate_limit.rate"]),
                           burst=int(self.settings["security.rate_limit.burst"]))
        return SecurityService(uow, rates, self.correlation_id)

    def _sides(self, res: Resilience, make: Callable[[UnitOfWorkFactory], S]) -> Sides[S]:
        """A service area on a network primary: on it, under an op, and on the snapshot."""
        from arbiter_cli.adapters.sql.repository import SqlUnitOfWorkFactory
        from arbiter_cli.resilience.services import Sides

        uow = self.uow
        assert isinstance(uow, SqlUnitOfWorkFactory)  # a network primary is a SQL store
        res.correlation_id = self.correlation_id

        def local() -> S:
            engine = res.local_engine()
            return make(sql_unit_of_work(self.settings, engine,
                                         clock_offset_s=res.local_clock_offset_s()))

        def under(op: OpContext) -> S:
            return make(uow.for_op(op))

        return Sides(primary=make(uow), under=under, local=local)

    def close(self) -> None:
        while self._closers:
            self._closers.pop()()


def sql_engine(settings: Settings, url: str | None = None, *, create: bool = False,
               telemetry: Telemetry | None = None) -> Engine:
    from arbiter_cli.adapters.sql.engine import engine_for

    engine = engine_for(settings, url, create=create)
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

        app.resilience = Resilience(settings=settings, url=target, primary=engine, clock=clock,
                                    engine_for=lambda url: sql_engine(settings, url))
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


def replay_services(settings: Settings, engine: Engine) -> Callable[[OpContext | None, str | None],
                                                                   Primary]:
    """What replay runs on the primary at ``engine``: for an op (or none) and a correlation id,
    the plain services, their writes committed under that op (``resilience/replay.py``)."""
    from arbiter_cli.resilience.replay import Primary

    base = sql_unit_of_work(settings, engine)

    def services(op: OpContext | None, correlation_id: str | None) -> Primary:
        app = App(settings=settings, uow=base if op is None else base.for_op(op),
                  clock=utc_now, engine=engine, correlation_id=correlation_id)
        return Primary(agents=app.agents, routing=app.routing, security=app.security,
                       uow=app.uow)

    return services


def replay_pending(settings: Settings, *, budget_s: float | None) -> dict[str, Any]:
    """Drain the journal of ``database.url`` (serve's background loop, and health)."""
    from arbiter_cli.resilience.replay import replay

    app = build(settings, check_schema=False, resilient=True)
    try:
        if app.resilience is None or app.engine is None:
            return {"applied": 0, "conflicts": 0, "remaining": 0, "stopped": None}
        return replay(app.resilience, replay_services(settings, app.engine), budget_s=budget_s)
    finally:
        app.close()
