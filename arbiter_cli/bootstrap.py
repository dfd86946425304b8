"""The composition root: ``build(settings)`` wires adapters into services.

This is the one place that chooses adapters. Nothing is built at import time.

Deferred imports: every import inside a function here is deferred for start-up. Each command
loads only the store it uses: the SQL adapters, sqlalchemy and alembic stay unloaded on the
memory path, the resilience layer (tenacity, the journal, replay) stays unloaded on SQLite,
and the services, telemetry, scratch stores, set-up and mutation tools load only for the
command that builds them, so ``arbiter --help`` and ``arbiter agents list`` (SQLite) import
only what they run. Module-level imports here are the cheap ones every command needs.
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar, cast

from arbiter_cli.config import Settings
from arbiter_cli.dburl import render
from arbiter_cli.domain.agents import RegistryPolicy
from arbiter_cli.domain.routing import RoutingPolicy
from arbiter_cli.errors import InvalidInput, MissingExtra, SchemaOutdated, StorageUnavailable
from arbiter_cli.ids import uuid7
from arbiter_cli.ports import AgentsPort, Clock, RoutingPort, SecurityPort, UnitOfWorkFactory
from arbiter_cli.services.audit import Auditor

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from arbiter_cli.adapters.sql.repository import OpContext, SqlUnitOfWorkFactory
    from arbiter_cli.domain.results import Bootstrap
    from arbiter_cli.observability.progress import Tracker
    from arbiter_cli.observability.runtime import Telemetry
    from arbiter_cli.resilience.breaker import FileBreaker
    from arbiter_cli.resilience.gateway import Durability, Resilience
    from arbiter_cli.resilience.replay import Primary
    from arbiter_cli.resilience.services import Sides
    from arbiter_cli.services.agents import AgentService
    from arbiter_cli.services.routing import RoutingService
    from arbiter_cli.services.security import SecurityService
    from arbiter_cli.tools.mutate import MutationReport, MutationRequest
    from arbiter_cli.tools.setup import InitResult


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
        if self.telemetry is None:
            return service
        from arbiter_cli.observability.observed import ObservedAgents

        return ObservedAgents(service, self.telemetry)

    @cached_property
    def routing(self) -> RoutingPort:
        service: RoutingPort = self._routing_service(self.uow)
        res = self.resilience
        if res is not None:
            from arbiter_cli.resilience.services import ResilientRouting

            service = ResilientRouting(res, self._sides(res, self._routing_service),
                                       self.writes.append)
        if self.telemetry is None:
            return service
        from arbiter_cli.observability.observed import ObservedRouting

        return ObservedRouting(service, self.telemetry)

    @cached_property
    def security(self) -> SecurityPort:
        service: SecurityPort = self._security_service(self.uow)
        res = self.resilience
        if res is not None:
            from arbiter_cli.resilience.services import ResilientSecurity

            service = ResilientSecurity(res, self._sides(res, self._security_service),
                                        self.writes.append)
        if self.telemetry is None:
            return service
        from arbiter_cli.observability.observed import ObservedSecurity

        return ObservedSecurity(service, self.telemetry)

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


#: Shell completion waits at most this long for the database (connect, lock, statement).
COMPLETION_TIMEOUT_S = 1.0
#: The newest decisions completion offers (ids are time-ordered: the recent ones are typed).
COMPLETION_DECISIONS = 200
#: What each kind of id completes from: the command whose role lists them, and a filter.
COMPLETION_KINDS = {"agents": ("agents list", None), "decisions": ("route history", None),
                    "open-decisions": ("route history", "open")}


def complete_ids(settings: Settings, token: str | None, kind: str, prefix: str) -> list[str]:
    """Ids of ``kind`` starting with ``prefix``, for shell completion (SPEC §16).

    Only the ids of the token's tenant, and only when the token may list them (``agents list``
    or ``route history``): exactly what those commands would show, so completion reveals
    nothing about other tenants (no existence oracle, SPEC §4.1). It reads only: no
    resilience layer (no journal replay, no snapshot), no rate-limit token spent, nothing
    audited, a missing SQLite file never created; every wait is COMPLETION_TIMEOUT_S.
    """
    from arbiter_cli.adapters.sql.engine import check_revision, make_engine
    from arbiter_cli.domain.principal import Principal

    command, status = COMPLETION_KINDS[kind]
    engine = make_engine(settings.database_url, pool_size=1, max_overflow=0,
                         connect_timeout_s=COMPLETION_TIMEOUT_S,
                         statement_timeout_s=COMPLETION_TIMEOUT_S,
                         busy_timeout_s=COMPLETION_TIMEOUT_S)
    try:
        check_revision(engine)
        app = App(settings=settings, uow=sql_unit_of_work(settings, engine), clock=utc_now,
                  engine=engine)
        security = app._security_service(app.uow)
        principal: Principal | None
        if settings.security.enabled:
            principal = security.peek(token, command)
        else:  # as the commands act: admin of default, on a database without tokens only
            principal = None if security.holds_tokens() else Principal.local_admin()
        if principal is None:
            return []
        if kind == "agents":
            ids = [a.id for a in app._agent_service(app.uow).list(principal, limit=0).items]
        else:
            found, _ = app._routing_service(app.uow).history(
                principal, status=status, limit=COMPLETION_DECISIONS)
            ids = [d.decision_id for d in found if d.decision_id]
        return [i for i in ids if i.startswith(prefix)]
    finally:
        engine.dispose()


def serving_app(settings: Settings, engine: Engine, *, correlation_id: str,
                clock: Clock | None = None) -> App:
    """An app for one request of the API server (SPEC §15), on the server's shared engine.

    The engine (and its connection pool) lives as long as the server; everything a command
    keeps per run (the resilience state of §7: deadline, outage, warnings, which writes were
    journaled) is built anew for each request, so requests on other threads never share it.
    Closing the app never disposes the shared engine.
    """
    from arbiter_cli.adapters.sql.engine import backend_of

    clock = clock or utc_now
    app = App(settings=settings, uow=sql_unit_of_work(settings, engine), clock=clock,
              engine=engine, correlation_id=correlation_id)
    if backend_of(settings.database_url) == "postgres":
        from arbiter_cli.resilience.gateway import Resilience

        app.resilience = Resilience(settings=settings, url=settings.database_url,
                                    primary=engine, clock=clock,
                                    engine_for=lambda url: sql_engine(settings, url),
                                    pending_of=pending_probe(settings),
                                    keep_journal=True, _breaker=process_breaker(settings))
        app.resilience.correlation_id = correlation_id
        app._closers.append(app.resilience.close)
    return app


_probes: dict[tuple[int, str, str], Any] = {}
_probes_lock = threading.Lock()


def pending_probe(settings: Settings) -> Callable[[str], int | None]:
    """This process's ``journal.PendingProbe`` for ``database.url`` (thread-safe, kept open):
    a request's write asks it instead of opening the journal itself. Keyed by the process id
    too: a forked child never uses its parent's SQLite connection."""
    from arbiter_cli.resilience.journal import PendingProbe

    data_dir = settings.paths.data_dir
    key = (os.getpid(), str(data_dir), settings.database_url)
    with _probes_lock:
        probe = _probes.get(key)
        if probe is None:
            probe = _probes[key] = PendingProbe(
                data_dir, settings.database_url,
                max_entries=settings.resilience.journal.max_entries)
        return cast("Callable[[str], int | None]", probe)


_breakers: dict[tuple[Any, ...], Any] = {}


def process_breaker(settings: Settings) -> FileBreaker:
    """The host's breaker of ``database.url`` as one object per process: it holds nothing
    but its path, configuration and clock (its state is the shared file, read under the file
    lock on each call), so every request's Resilience can use it; building it parsed the URL
    and hashed it on every request."""
    from arbiter_cli.resilience.breaker import breaker_for

    key = (str(settings.paths.data_dir), settings.database_url, settings.breaker.fail_max,
           settings.breaker.reset_timeout, settings.database.command_timeout)
    breaker = _breakers.get(key)
    if breaker is None:
        breaker = _breakers[key] = breaker_for(settings)
    return cast("FileBreaker", breaker)


@dataclass
class RemoteApp:
    """The services of an ``arbiter serve`` at ``url``, over HTTP (SPEC §15 remote mode).

    What a command reads of an ``App``: the three service ports, ``writes`` (what the server
    said became of the command's writes), no resilience layer of its own (the server has it).
    """

    settings: Settings
    url: str
    token: str | None
    timeout_s: float
    correlation_id: str
    resilience: None = None
    writes: list[Durability] = field(default_factory=list)

    def __post_init__(self) -> None:
        from arbiter_cli.adapters.remote import RemoteClient

        self.client = RemoteClient(self.url, self.token, timeout_s=self.timeout_s,
                                   correlation_id=self.correlation_id)

    @cached_property
    def agents(self) -> AgentsPort:
        from arbiter_cli.adapters.remote import RemoteAgents

        return RemoteAgents(self.client, registry_policy(self.settings))

    @cached_property
    def routing(self) -> RoutingPort:
        from arbiter_cli.adapters.remote import RemoteRouting

        return RemoteRouting(self.client, registry_policy(self.settings),
                             routing_policy(self.settings))

    @cached_property
    def security(self) -> SecurityPort:
        from arbiter_cli.adapters.remote import RemoteSecurity

        return RemoteSecurity(self.client)

    @property
    def meta(self) -> dict[str, Any]:
        """``meta`` of the server's last answer (tenant, durability, journal, staleness)."""
        return self.client.meta

    def close(self) -> None:
        self.client.close()


def remote_app(settings: Settings, url: str, token: str | None, *, timeout_s: float,
               correlation_id: str) -> RemoteApp:
    return RemoteApp(settings=settings, url=url, token=token, timeout_s=timeout_s,
                     correlation_id=correlation_id)


def _check_revision_resilient(res: Resilience, engine: Engine) -> None:
    from arbiter_cli.adapters.sql.engine import check_revision

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


class Replayer:
    """``serve``'s replay pass (its replay thread's only): ``replay_pending`` when the journal
    of ``database.url`` holds pending entries, else nothing.

    ``replay_pending`` builds an app (a new engine, a connection, the replay lock) every
    ``serve.replay_interval``; with an empty journal, which is the usual case, that was the
    serve process's own CPU for nothing. Here one journal connection stays open (only this
    thread uses it) and a count of its pending entries decides; entries other processes of the
    host journaled are seen at the next pass, as before. A SQLite primary has no journal."""

    def __init__(self) -> None:
        self._journal: Any = None
        self._key: tuple[str, str] | None = None

    def __call__(self, settings: Settings, budget_s: float | None) -> dict[str, Any]:
        from arbiter_cli.adapters.sql.engine import backend_of

        if backend_of(settings.database_url) != "postgres":
            return {"applied": 0, "conflicts": 0, "remaining": 0, "stopped": None}
        if self._waiting(settings) == 0:
            return {"applied": 0, "conflicts": 0, "remaining": 0, "stopped": None}
        return replay_pending(settings, budget_s=budget_s)

    def _waiting(self, settings: Settings) -> int | None:
        """Pending entries, or None when the journal cannot be read here (the full pass
        then runs and reports why)."""
        import sqlite3

        from arbiter_cli.resilience.journal import open_journal

        key = (str(settings.paths.data_dir), settings.database_url)
        try:
            if self._journal is None or self._key != key:
                self.close()
                self._journal = open_journal(settings.paths.data_dir, settings.database_url,
                                             max_entries=settings.resilience.journal.max_entries)
                self._key = key
            return int(self._journal.pending())
        except (OSError, sqlite3.Error, StorageUnavailable):
            self.close()
            return None

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None


# ---------------------------------------------------------------------------- scratch stores
# ``bench`` and ``soak`` run on a scratch store, never a live database or tenant:
# - ``memory``: a fresh in-memory store;
# - ``sqlite``: a temporary file, migrated;
# - ``postgres``: a new database ``<db>_<purpose>_<timestamp>`` on the server that the given
#   URL names, migrated, and dropped afterwards (``adapters/scratch.py`` does the SQL).


@contextmanager
def scratch_app(
    settings: Settings, backend: str, *, purpose: str, database_url: str | None = None,
    keep: bool = False,
) -> Iterator[tuple[App, str]]:
    """Yield an initialized app on a scratch store and a description of where it lives."""
    from arbiter_cli.adapters import scratch  # deferred: start-up of `arbiter agents list`

    if backend not in scratch.BACKENDS:
        raise InvalidInput(f"backend: must be one of {', '.join(scratch.BACKENDS)}",
                           field="backend", rule="allowed")
    if backend == "memory":
        app = build_memory(settings)
        _create_default_tenant(app)
        yield app, "memory"
        return
    if backend == "sqlite":
        with _sqlite(settings, purpose, keep) as (app, where):
            yield app, where
        return
    with _postgres(settings, purpose, database_url, keep) as (app, where):
        yield app, where


def _create_default_tenant(app: App) -> None:
    from arbiter_cli.tools.setup import initialize  # deferred: start-up of `arbiter agents list`

    initialize(app.uow, lambda: None, utc_now)


@contextmanager
def _sqlite(settings: Settings, purpose: str, keep: bool) -> Iterator[tuple[App, str]]:
    folder = Path(tempfile.mkdtemp(prefix=f"arbiter-{purpose}-"))
    url = f"sqlite:///{folder / 'scratch.db'}"
    try:
        migrate(settings, url, io.StringIO())
        app = build(settings, url=url)
        try:
            _create_default_tenant(app)
            yield app, str(folder / "scratch.db")
        finally:
            app.close()
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def _postgres(
    settings: Settings, purpose: str, database_url: str | None, keep: bool
) -> Iterator[tuple[App, str]]:
    from sqlalchemy.exc import DBAPIError

    from arbiter_cli.adapters import scratch
    from arbiter_cli.adapters.sql.engine import unavailable

    server = scratch.server_of(database_url or settings.database_url)
    stamp = f"{time.strftime('%Y%m%d%H%M%S')}_{secrets.token_hex(3)}"
    name = f"{server.database or 'arbiter'}_{purpose}_{stamp}"
    admin = sql_engine(settings, render(server))
    admin = admin.execution_options(isolation_level="AUTOCOMMIT")
    try:
        scratch.create_database(admin, name)
    except DBAPIError as exc:
        admin.engine.dispose()
        raise scratch.refused_scratch(exc) or unavailable(admin.engine, exc) from None
    url = render(server.set(database=name))
    try:
        migrate(settings, url, io.StringIO())
        app = build(settings, url=url)
        try:
            _create_default_tenant(app)
            yield app, f"{server.host}:{server.port or 5432}/{name}"
        finally:
            app.close()
    finally:
        if not keep:
            scratch.drop_database(admin, name)
        admin.engine.dispose()


def migrate(settings: Settings, url: str, out: TextIO, *,
            telemetry: Telemetry | None = None) -> str | None:
    """Create the database at ``url`` if it is a missing SQLite file and migrate it to head
    (alembic's report on ``out``); returns the revision it is at."""
    from arbiter_cli.adapters import migrations

    engine = sql_engine(settings, url, create=True, telemetry=telemetry)
    try:
        return migrations.upgrade(engine, "head", out)[1]
    finally:
        engine.dispose()


def init_store(settings: Settings, url: str, *, out: TextIO, issue: bool,
               before_issue: Callable[[], None] | None = None,
               telemetry: Telemetry | None = None) -> InitResult:
    """``arbiter init`` and ``demo``: migrate ``url`` to head, then tenant 'default' and, with
    ``issue``, its first admin token, under the migration lock (concurrent inits issue one)."""
    from arbiter_cli.adapters import migrations
    from arbiter_cli.tools.setup import init_database

    def bootstrap() -> Bootstrap:
        app = build(settings, url=url, telemetry=telemetry)
        try:
            assert app.engine is not None
            with migrations.setup_lock(app.engine):
                return app.security.bootstrap(issue=issue, before_issue=before_issue)
        finally:
            app.close()

    return init_database(lambda: migrate(settings, url, out, telemetry=telemetry), bootstrap)


# ---------------------------------------------------------------------------- mutation testing


def mutation_run(request: MutationRequest, progress: Tracker) -> MutationReport:
    """``arbiter mutate``: the mutation tool wired to mutmut, git and the isolated workspace."""
    import os

    from arbiter_cli.adapters import mutation as adapter
    from arbiter_cli.tools import mutate as service

    executable = adapter.find_mutmut()
    if executable is None:
        raise MissingExtra("mutate", "mutmut")

    def changed(root: Path, revision: str) -> set[str]:
        try:
            return adapter.changed_files(root, revision)
        except adapter.GitError as exc:
            raise InvalidInput(f"--changed-since: {exc}", field="changed_since",
                               rule="revision") from None

    return service.run_mutation(
        request, adapter.MutmutRunner(executable, os.environ),
        changed_files=changed, build_workspace=adapter.build_workspace,
        pytest_options=adapter.pytest_options(request.project),
        log_reason=adapter.log_reason, progress=progress,
    )
