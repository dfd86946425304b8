"""``arbiter serve``: health and metrics over HTTP, and the journal drained in the background.

A stdlib ``ThreadingHTTPServer`` (one thread per connection, bounded by
``adapters/http_transport.py``: a deadline for each request, a cap on connections, a bounded
drain) with four endpoints (SPEC §8, §9):

- ``/livez``, ``/readyz``, ``/health``: ``tools.health.evaluate`` in mode live, ready and
  full; the body is ``application/health+json``; 200 on pass or warn, 503 on fail;
- ``/metrics``: Prometheus text from serve's own registry (requests, replays, its database
  calls, process metrics) plus collectors read at scrape time: the fleet from the database,
  the breaker and journal, live soak runs.

A replay thread calls ``bootstrap.replay_pending`` every ``serve.replay_interval``.

``Server.stop()`` stops accepting, lets in-flight requests finish for at most
``serve.shutdown_timeout`` (then closes their connections), stops the replay loop and releases
the database: a slow or idle client can delay the exit by that long and no longer.
"""

from __future__ import annotations

import contextvars
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from arbiter_cli.adapters.http_transport import BoundedHandler, BoundedHTTPServer, Limits
from arbiter_cli.adapters.sql.deadline import Deadline
from arbiter_cli.adapters.sql.engine import backend_of
from arbiter_cli.adapters.sql.fleet import SqlFleetQuery
from arbiter_cli.errors import ArbiterError, InvalidInput
from arbiter_cli.ids import uuid7
from arbiter_cli.observability import logging as log
from arbiter_cli.observability.fleet import FleetCollector, ResilienceCollector, SoakCollector
from arbiter_cli.observability.instrument import instrument_engine
from arbiter_cli.resilience.breaker import breaker_for
from arbiter_cli.resilience.journal import resilience_status
from arbiter_cli.resilience.retry import guarded
from arbiter_cli.tools.health import evaluate
from arbiter_cli.tools.soak.state import live_states

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from arbiter_cli.config import Settings
    from arbiter_cli.observability.metrics import Metrics
    from arbiter_cli.observability.runtime import Telemetry

HEALTH_JSON = "application/health+json"
HEALTH_MODES = {"/livez": "live", "/readyz": "ready", "/health": "full"}
PATHS = (*HEALTH_MODES, "/metrics")

_log = log.get_logger()
Evaluate = Callable[["Settings", str], tuple[int, dict[str, Any]]]
EngineFactory = Callable[["Settings"], "Engine"]
Replay = Callable[["Settings", float], dict[str, Any]]


@dataclass
class Counts:
    requests: int = 0
    replays: dict[str, int] = field(default_factory=lambda: {"ok": 0, "error": 0,
                                                              "unavailable": 0})
    applied: int = 0
    conflicts: int = 0


def health_evaluator(engine: EngineFactory) -> Evaluate:
    """(HTTP status, application/health+json body) of a mode, checked with ``engine``."""

    def evaluate_health(settings: Settings, mode: str) -> tuple[int, dict[str, Any]]:
        report = evaluate(settings, mode=mode, engine=engine)
        return report.http_status, report.to_dict()

    return evaluate_health


class Server:
    """The HTTP server, its collectors and the replay loop of one ``arbiter serve``."""

    def __init__(self, settings: Settings, telemetry: Telemetry, metrics: Metrics, *,
                 host: str, port: int, engine: EngineFactory, evaluate: Evaluate | None = None,
                 replay: Replay) -> None:
        """``engine`` (settings -> Engine) and ``replay`` (settings, budget -> what the journal's
        drain did) come from the composition root: the health checks and the fleet collector
        connect with the one, the replay loop drains with the other."""
        self.settings = settings
        self.telemetry = telemetry
        self.metrics = metrics
        self.evaluate = evaluate or health_evaluator(engine)
        self.counts = Counts()
        self.stopping = threading.Event()
        self._count_lock = threading.Lock()
        self._fleet = _fleet_collector(settings, telemetry, metrics, engine)
        _register_collectors(metrics, settings, self._fleet)
        self.shutdown_timeout_s = settings.serve.shutdown_timeout
        limits = Limits(read_timeout_s=settings.serve.read_timeout,
                        max_connections=settings.serve.max_connections)
        try:
            self.http = _HTTPServer((host, port), _Handler, limits)
        except OSError as exc:
            self._fleet.close()
            raise InvalidInput(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                               field="port", rule="available") from None
        self.http.owner = self
        self._threads = [
            threading.Thread(target=self.http.serve_forever, kwargs={"poll_interval": 0.2},
                             name="arbiter-serve-http", daemon=True),
            _ReplayLoop(self, replay, settings.serve.replay_interval,
                        max(settings.serve.replay_interval,
                            settings.resilience.replay_budget)),
        ]

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.http.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Graceful and bounded: no new connections; in-flight requests get at most
        ``serve.shutdown_timeout`` to finish, then their connections are closed."""
        ends = time.monotonic() + self.shutdown_timeout_s
        self.stopping.set()
        self.http.shutdown()  # no more accepting
        self.http.server_close()  # the listening socket
        cut = self.http.drain(self.shutdown_timeout_s)
        if cut:
            _log.warning("serve.drain_timeout", closed=cut,
                         shutdown_timeout_s=self.shutdown_timeout_s,
                         message="requests still open at the end of the drain were closed")
        for thread in self._threads[1:]:
            thread.join(timeout=max(1.0, ends - time.monotonic()))
        self._fleet.close()

    def summary(self, uptime_s: float) -> dict[str, Any]:
        host, port = self.address
        return {"url": f"http://{_url_host(host)}:{port}", "host": host, "port": port,
                "uptime_s": round(uptime_s, 3), "requests": self.counts.requests,
                "refused_connections": self.http.refused,
                "replays": dict(self.counts.replays),
                "replayed": {"applied": self.counts.applied, "conflicts": self.counts.conflicts}}


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _fleet_collector(settings: Settings, telemetry: Telemetry, metrics: Metrics,
                     engine: EngineFactory) -> FleetCollector:
    def instrumented() -> Engine:
        made = engine(settings)
        instrument_engine(made, tracer=telemetry.tracer, metrics=metrics,
                          attributes=telemetry.attributes(), redact=telemetry.redact)
        return made

    return FleetCollector(instrumented, SqlFleetQuery(), guard=_guard(settings))


def _guard(settings: Settings) -> Callable[[Callable[[], Any]], Any]:
    """PostgreSQL reads go through the host's breaker, one attempt within the command budget."""
    if backend_of(settings.database_url) != "postgres":
        return lambda read: read()
    breaker = breaker_for(settings)
    budget = settings.database.command_timeout
    return lambda read: guarded(read, breaker=breaker, deadline=Deadline(budget), attempts=1)


def _register_collectors(metrics: Metrics, settings: Settings, fleet: FleetCollector) -> None:
    from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

    ProcessCollector(registry=metrics.registry)
    PlatformCollector(registry=metrics.registry)
    GCCollector(registry=metrics.registry)
    for collector in (fleet, ResilienceCollector(settings, resilience_status),
                      SoakCollector(settings.paths.data_dir, live_states)):
        metrics.registry.register(collector)


class _HTTPServer(BoundedHTTPServer):
    owner: Server


class _Handler(BoundedHandler):
    server: _HTTPServer
    server_version = "arbiter"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._serve(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(body=False)

    def _not_allowed(self) -> None:
        self._answer(405, "application/json", _json({"error": "method not allowed"}),
                     extra={"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = _not_allowed  # noqa: N815

    def _serve(self, *, body: bool) -> None:
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        label = path if path in PATHS else "other"
        correlation_id = _correlation_id(self.headers.get("X-Correlation-Id"))
        started = time.perf_counter()
        log.bind(correlation_id=correlation_id, command="serve")
        with owner.telemetry.span(f"GET {label}", **{"http.route": label,
                                                      "correlation_id": correlation_id}):
            code, content_type, payload = self._route(owner, path)
            self._answer(code, content_type, payload if body else b"",
                         extra={"X-Correlation-Id": correlation_id},
                         length=len(payload))
        with owner._count_lock:
            owner.counts.requests += 1
        owner.metrics.inc("arbiter_serve_requests_total", path=label, code=str(code))
        owner.metrics.observe("arbiter_serve_request_seconds", time.perf_counter() - started,
                              path=label)
        _log.debug("serve.request", path=label, code=code,
                   duration_ms=round((time.perf_counter() - started) * 1000, 2))

    def _route(self, owner: Server, path: str) -> tuple[int, str, bytes]:
        if path in HEALTH_MODES:
            try:
                code, document = owner.evaluate(owner.settings, HEALTH_MODES[path])
            except Exception as exc:  # noqa: BLE001 - a broken check is a failing check
                _log.warning("serve.health_failed", error=f"{type(exc).__name__}: {exc}")
                code, document = 503, {"status": "fail", "output": type(exc).__name__}
            return code, HEALTH_JSON, _json(document)
        if path == "/metrics":
            from prometheus_client.exposition import choose_encoder

            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            return 200, content_type, encoder(owner.metrics.registry)
        if path == "/":
            return 200, "application/json", _json({"endpoints": list(PATHS)})
        return 404, "application/json", _json({"error": f"no such endpoint {path!r}",
                                                "endpoints": list(PATHS)})

    def _answer(self, code: int, content_type: str, payload: bytes, *,
                extra: dict[str, str] | None = None, length: int | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload) if length is None else length))
        self.send_header("Cache-Control", "no-store")
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Requests are logged as structured events (``serve.request``), not Apache lines."""


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, ensure_ascii=False, default=str).encode()


def _correlation_id(given: str | None) -> str:
    if given and 0 < len(given) <= 200 and given.isprintable():
        return given
    return uuid7()


class _ReplayLoop(threading.Thread):
    """Drains the journal every ``interval_s`` until the server stops."""

    def __init__(self, server: Server, replay: Replay, interval_s: float,
                 budget_s: float) -> None:
        super().__init__(name="arbiter-serve-replay", daemon=True)
        self._server = server
        self._replay = replay
        self._interval_s = interval_s
        self._budget_s = budget_s
        self._context = contextvars.copy_context()  # the command's log context
        self._last_problem: str | None = None

    def run(self) -> None:
        self._context.run(self._loop)

    def _loop(self) -> None:
        stopping = self._server.stopping
        while not stopping.is_set():
            self.once()
            stopping.wait(self._interval_s)

    def once(self) -> None:
        counts, metrics = self._server.counts, self._server.metrics
        try:
            report = self._replay(self._server.settings, self._budget_s)
        except ImportError as exc:
            self._problem("unavailable", f"journal replay unavailable: {exc}")
            return
        except ArbiterError as exc:
            self._problem("error", exc.message)
            return
        except Exception as exc:  # noqa: BLE001 - a bug must not stop the server; it is logged
            self._problem("error", f"{type(exc).__name__}: {exc}")
            return
        self._last_problem = None
        counts.replays["ok"] += 1
        metrics.inc("arbiter_journal_replays_total", result="ok")
        applied, conflicts = int(report.get("applied", 0)), int(report.get("conflicts", 0))
        counts.applied += applied
        counts.conflicts += conflicts
        if applied:
            metrics.inc("arbiter_journal_replayed_total", applied, result="applied")
        if conflicts:
            metrics.inc("arbiter_journal_replayed_total", conflicts, result="conflict")
        if applied or conflicts:
            _log.info("serve.replayed", applied=applied, conflicts=conflicts,
                      remaining=report.get("remaining"),
                      over_capacity=report.get("over_capacity", 0))

    def _problem(self, result: str, message: str) -> None:
        """Count every failure; log a failure once until it changes (no flood every second)."""
        self._server.counts.replays[result] += 1
        self._server.metrics.inc("arbiter_journal_replays_total", result=result)
        if message != self._last_problem:
            _log.warning("serve.replay_failed", result=result, error=message)
            self._last_problem = message
