"""``arbiter serve``: the API, health and metrics over HTTP, and the journal drained in the
background.

One ASGI application served by uvicorn (the transport and its bounds are
``adapters/http_transport.py``), built from the ``/v1`` API app the composition root hands in
(``cli/serve.py``: this layer never imports the API) plus five endpoints of its own (SPEC §8,
§9, §15):

- ``/livez``, ``/readyz``, ``/health``: ``tools.health.evaluate`` in mode live, ready and
  full; the body is ``application/health+json``; 200 on pass or warn, 503 on fail;
- ``/metrics``: Prometheus text from serve's own registry (HTTP requests by route template,
  replays, its database calls, process metrics) plus collectors read at scrape time: the fleet
  from the database, the breaker and journal, live soak runs;
- ``/``: the list of endpoints. Other methods on these paths answer 405 with ``Allow``.

Every request is counted by route template (``arbiter_http_requests_total``), and request
bodies past ``serve.max_body`` are answered 413 with the CLI's error object, whether the
size is announced (Content-Length) or streamed (chunked).

A replay thread calls ``bootstrap.replay_pending`` every ``serve.replay_interval``. With
``--workers N`` each worker process runs its own (the journal is drained under a file lock,
so concurrent drains on one host are safe: docs/resilience.md).
"""

from __future__ import annotations

import contextvars
import json
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from arbiter_cli.adapters.sql.deadline import Deadline
from arbiter_cli.adapters.sql.engine import backend_of
from arbiter_cli.adapters.sql.fleet import SqlFleetQuery
from arbiter_cli.errors import ArbiterError, Forbidden, InvalidInput, LimitExceeded
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
    from prometheus_client import CollectorRegistry
    from sqlalchemy.engine import Engine

    from arbiter_cli.config import Settings
    from arbiter_cli.observability.metrics import Metrics
    from arbiter_cli.observability.runtime import Telemetry

HEALTH_JSON = "application/health+json"
HEALTH_MODES = {"/livez": "live", "/readyz": "ready", "/health": "full"}
PATHS = (*HEALTH_MODES, "/metrics")
OWN = (*PATHS, "/")
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's multiprocess mode
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

_log = log.get_logger()
Evaluate = Callable[["Settings", str], tuple[int, dict[str, Any]]]
EngineFactory = Callable[["Settings"], "Engine"]
Replay = Callable[["Settings", float], dict[str, Any]]
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


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
    """The ASGI app, collectors and replay loop of one ``arbiter serve`` process."""

    def __init__(self, settings: Settings, telemetry: Telemetry, metrics: Metrics, *,
                 api: ASGIApp, engine: EngineFactory, evaluate: Evaluate | None = None,
                 replay: Replay) -> None:
        """``api`` is the ``/v1`` application; ``engine`` (settings -> Engine) and ``replay``
        (settings, budget -> what the journal's drain did) come from the composition root: the
        health checks and the fleet collector connect with the one, the replay loop drains with
        the other."""
        self.settings = settings
        self.telemetry = telemetry
        self.metrics = metrics
        self.evaluate = evaluate or health_evaluator(engine)
        self.counts = Counts()
        self.stopping = threading.Event()
        self._count_lock = threading.Lock()
        self._fleet = _fleet_collector(settings, telemetry, metrics, engine)
        self.exposed = _exposed_registry(metrics, settings, self._fleet)
        self.app = ServeApp(self, api)
        self._replay = _ReplayLoop(self, replay, settings.serve.replay_interval,
                                   max(settings.serve.replay_interval,
                                       settings.resilience.replay_budget))

    def start(self) -> None:
        self._replay.start()

    def stop(self) -> None:
        """Stop the replay loop (within ``serve.shutdown_timeout``) and release the database."""
        self.stopping.set()
        if self._replay.is_alive():
            self._replay.join(timeout=self.settings.serve.shutdown_timeout)
        self._fleet.close()

    def counted(self) -> None:
        with self._count_lock:
            self.counts.requests += 1


def listen(host: str, port: int) -> socket.socket:
    """The listening socket (bound here, so a busy port is one clear line and ``--port 0``
    is known before the server starts; handed to uvicorn and to its workers)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise InvalidInput(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                           field="host", rule="resolvable") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise InvalidInput(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                           field="port", rule="available") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket, *, tls: bool) -> tuple[str, str, int]:
    host, port = sock.getsockname()[:2]
    return f"{'https' if tls else 'http'}://{_url_host(str(host))}:{port}", str(host), int(port)


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


def _exposed_registry(metrics: Metrics, settings: Settings,
                      fleet: FleetCollector) -> CollectorRegistry:
    """What /metrics shows: serve's registry plus process metrics and the collectors read at
    scrape time. Under ``--workers N`` (``PROMETHEUS_MULTIPROC_DIR`` set by the parent before
    the workers start) serve's own series are summed over every worker from their files,
    whichever worker answers the scrape; process metrics are then left out (per process)."""
    import os

    from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

    if os.environ.get(MULTIPROCESS_DIR):
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = metrics.registry
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    for collector in (fleet, ResilienceCollector(settings, resilience_status),
                      SoakCollector(settings.paths.data_dir, live_states)):
        registry.register(collector)
    return registry


class ServeApp:
    """The ASGI app of serve: its own endpoints, then the API; every request counted by route
    template, every body held to ``serve.max_body``."""

    def __init__(self, server: Server, api: ASGIApp) -> None:
        self.server = server
        self.api = api
        self.max_body = server.settings.serve.max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.api(scope, receive, send)
            return
        path = scope["path"]
        # A /v1 request's route is the one the API's router picks (it sets scope["route"]);
        # matching every route here as well is for the other paths and the refused.
        v1 = path.startswith("/v1/")
        route = path if path in OWN else None if v1 else self._route_of(scope)
        status = [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        started = time.perf_counter()
        try:
            if path in OWN:
                await self._own(scope, sending)
            elif route is None and not v1:
                await _answer(sending, 404, "application/json", _json(
                    {"error": f"no such endpoint {path!r}",
                     "endpoints": [*OWN, "/openapi.json", "/v1/..."]}))
            elif (refusal := self._from_a_page(scope)) is not None:
                await self._refuse(scope, sending, refusal)
            else:
                await self._limited(scope, receive, sending)
        finally:
            if v1:
                route = _template(scope) or self._route_of(scope)
            label = route or "other"
            method = scope["method"] if scope["method"] in METHODS else "other"
            metrics = self.server.metrics
            metrics.inc("arbiter_http_requests_total", route=label, method=method,
                        status=str(status[0]))
            metrics.observe("arbiter_http_request_duration_seconds",
                            time.perf_counter() - started, route=label)
            self.server.counted()
            _log.debug("serve.request", route=label, method=method, status=status[0],
                       duration_ms=round((time.perf_counter() - started) * 1000, 2))

    def _from_a_page(self, scope: Scope) -> str | None:
        """Why a request may not reach the API of a server without security, or None.

        ``security.enabled = false`` makes every caller admin and is served on loopback only;
        a web page in the operator's browser reaches loopback too. A cross-site POST with a
        ``text/plain`` body needs no CORS preflight (and ``/v1`` reads any body as JSON), and
        DNS rebinding makes a page's own host name resolve to 127.0.0.1. So the API answers
        only requests that name a loopback host and that no browser marks as a page's.
        """
        if self.server.settings.security.enabled:
            return None
        headers = _headers(scope)
        host = headers.get("host")
        if host is not None and not _loopback_host(host):
            return f"host {host!r} is not a loopback address"
        if "origin" in headers or headers.get("sec-fetch-site", "none") != "none":
            return "a web page's request (Origin or Sec-Fetch-Site)"
        return None

    async def _refuse(self, scope: Scope, send: Send, reason: str) -> None:
        error = Forbidden(f"refused with security.enabled = false: {reason}; call the API "
                          "from the CLI or an HTTP client at 127.0.0.1, or enable security")
        correlation_id = _correlation_id(_headers(scope).get("x-correlation-id"))
        _log.info("request refused", command=scope["path"], tenant=None, code=error.code,
                  status=403, reason=reason)
        await _answer(send, 403, "application/json", _json(error.to_dict()),
                      extra={"X-Correlation-ID": correlation_id})

    def _route_of(self, scope: Scope) -> str | None:
        """The path template of the API route that matches (bounded label values)."""
        from starlette.routing import Match

        for candidate in getattr(self.api, "routes", ()):
            matched, _ = candidate.matches(scope)
            if matched != Match.NONE:
                return str(candidate.path)
        return None

    async def _own(self, scope: Scope, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        headers = _headers(scope)
        correlation_id = _correlation_id(headers.get("x-correlation-id"))
        if method not in ("GET", "HEAD"):
            await _answer(send, 405, "application/json", _json({"error": "method not allowed"}),
                          extra={"Allow": "GET, HEAD", "X-Correlation-Id": correlation_id})
            return
        from anyio import to_thread

        def work() -> tuple[int, str, bytes]:
            log.bind(correlation_id=correlation_id, command="serve")
            with self.server.telemetry.span(f"GET {path}", **{"http.route": path,
                                                               "correlation_id": correlation_id}):
                return self._route(path, headers.get("accept", ""))

        code, content_type, payload = await to_thread.run_sync(work)
        await _answer(send, code, content_type, payload, body=method == "GET",
                      extra={"X-Correlation-Id": correlation_id})

    def _route(self, path: str, accept: str) -> tuple[int, str, bytes]:
        server = self.server
        if path in HEALTH_MODES:
            try:
                code, document = server.evaluate(server.settings, HEALTH_MODES[path])
            except Exception as exc:  # noqa: BLE001 - a broken check is a failing check
                _log.warning("serve.health_failed", error=f"{type(exc).__name__}: {exc}")
                code, document = 503, {"status": "fail", "output": type(exc).__name__}
            return code, HEALTH_JSON, _json(document)
        if path == "/metrics":
            from prometheus_client.exposition import choose_encoder

            encoder, content_type = choose_encoder(accept)
            return 200, content_type, encoder(server.exposed)
        return 200, "application/json", _json({"endpoints": [*PATHS, "/openapi.json",
                                                             "/v1/..."]})

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The API, with request bodies held to ``max_body``: a Content-Length past it is
        refused before any byte is read; a streamed body is refused as it crosses it."""
        limit = self.max_body
        declared = _header(scope, b"content-length")
        if declared.isdigit() and int(declared) > limit:
            await self._too_large(scope, send)
            return
        seen = 0
        refused = False
        started = False

        async def receiving() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit and not started:
                    refused = True
                    await self._too_large(scope, send)
                    return {"type": "http.disconnect"}  # the app stops reading and answering
            return message

        async def sending(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 went out; whatever the app says after the disconnect is dropped
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.api(scope, receiving, sending)

    async def _too_large(self, scope: Scope, send: Send) -> None:
        error = LimitExceeded(f"request body larger than serve.max_body ({self.max_body} bytes)",
                              details={"limit_bytes": self.max_body})
        correlation_id = _correlation_id(_headers(scope).get("x-correlation-id"))
        await _answer(send, 413, "application/json", _json(error.to_dict()),
                      extra={"X-Correlation-ID": correlation_id, "Connection": "close"})


def _loopback_host(host: str) -> bool:
    """Whether a ``Host`` header names this machine by a loopback address or ``localhost``."""
    import ipaddress

    name = host.strip().lower()
    if name.startswith("["):  # [v6]:port
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:  # name:port or v4:port
        name = name.partition(":")[0]
    if name in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _template(scope: Scope) -> str | None:
    """The path template of the route the API's router served ``scope`` with, if it did."""
    template = getattr(scope.get("route"), "path", None)
    return None if template is None else str(template)


def _header(scope: Scope, name: bytes) -> str:
    """One header's value, the last one given ('' if absent), as ``_headers`` reads it."""
    found = b""
    for key, value in scope["headers"]:
        if key.lower() == name:
            found = value
    return str(found.decode("latin-1"))


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


async def _answer(send: Send, code: int, content_type: str, payload: bytes, *,
                  body: bool = True, extra: dict[str, str] | None = None) -> None:
    headers = [(b"content-type", content_type.encode()),
               (b"content-length", str(len(payload)).encode()),
               (b"cache-control", b"no-store")]
    headers += [(k.lower().encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": code, "headers": headers})
    await send({"type": "http.response.body", "body": payload if body else b""})


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, ensure_ascii=False, default=str).encode()


#: A correlation id a client may choose, the API's rule (``api/server.py``): it goes into logs
#: and back into a header, so no spaces, quotes or non-ASCII.
CORRELATION_ID = re.compile(r"[A-Za-z0-9._:/@+=-]{1,128}")


def _correlation_id(given: str | None) -> str:
    return given if given is not None and CORRELATION_ID.fullmatch(given) else uuid7()


class _ReplayLoop(threading.Thread):
    """Drains the journal every ``interval_s`` until the server stops."""

    _server: Server

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
