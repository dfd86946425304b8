"""``arbiter serve``: the API server (SPEC §15) with health and Prometheus metrics (SPEC §8, §9).

This module composes the serving process (layers cli > api > bootstrap > tools): the ``/v1``
app of ``arbiter_cli.api`` goes into ``tools.serve.Server``'s app, served by uvicorn with the
bounds of ``adapters/http_transport.py``.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from arbiter_cli.cli import render
from arbiter_cli.cli.boundary import command
from arbiter_cli.cli.options import JsonOpt, state_of

if TYPE_CHECKING:
    import socket

    from rich.console import Console
    from sqlalchemy.engine import Engine

    from arbiter_cli.adapters.http_transport import Limits
    from arbiter_cli.cli.state import State
    from arbiter_cli.config import Settings
    from arbiter_cli.errors import ArbiterError
    from arbiter_cli.observability.runtime import Telemetry
    from arbiter_cli.tools.serve import Server


def add_commands(app: typer.Typer) -> None:
    command(app, "serve")(serve)


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port; 0 picks a free one (printed).",
                                      min=0, max=65535)] = 8787,
    workers: Annotated[int, typer.Option("--workers", help="Server processes sharing the port.",
                                         min=1, max=256)] = 1,
    tls_cert: Annotated[Path | None, typer.Option(
        "--tls-cert", help="PEM certificate (chain): serve HTTPS. Needs --tls-key.",
        show_default=False)] = None,
    tls_key: Annotated[Path | None, typer.Option(
        "--tls-key", help="PEM private key of --tls-cert.", show_default=False)] = None,
    forwarded_allow_ips: Annotated[str | None, typer.Option(
        "--forwarded-allow-ips", help="Comma-separated proxy addresses (or *) whose "
        "X-Forwarded-For/-Proto headers are trusted.", show_default=False)] = None,
    json_out: JsonOpt = False,
) -> None:
    """Serve the API under /v1, plus /livez, /readyz, /health and /metrics; replay the
    journal in the background.

    /readyz and /health answer 200 on pass or warn and 503 on fail, with an
    application/health+json body. /metrics shows the whole fleet, read from the database at
    each scrape, and the server's requests by route. /openapi.json describes the API. The
    listening address is printed on stderr. A client must send its request within
    serve.read_timeout; at most serve.max_connections are served at once per process (503
    past it); bodies are limited to serve.max_body (413). SIGTERM or SIGINT stops it
    gracefully: requests in flight get serve.shutdown_timeout to finish, then exit 0; --json
    then prints a summary. With security.enabled = false it only binds a loopback address.

    Example: arbiter serve --host 0.0.0.0 --port 8787 --workers 4
    """
    import time

    from arbiter_cli.adapters.http_transport import Limits  # deferred: start-up of `arbiter --help`
    from arbiter_cli.observability import logging as log  # deferred: start-up of `arbiter --help`
    from arbiter_cli.tools.serve import listen, url_of  # deferred: start-up of `arbiter --help`

    state = state_of(ctx)
    settings = state.settings
    assert state.telemetry is not None  # set by the boundary before every command body
    _check_security(settings, host)
    tls = _tls(tls_cert, tls_key)
    limits = Limits(read_timeout_s=settings.serve.read_timeout,
                    max_connections=settings.serve.max_connections,
                    shutdown_timeout_s=settings.serve.shutdown_timeout,
                    http=settings.serve.http)
    sock = listen(host, port)
    url, bound_host, bound_port = url_of(sock, tls=tls is not None)
    options = _uvicorn_options(settings, tls, forwarded_allow_ips, workers)
    started = time.monotonic()

    def announce() -> None:
        log.announce(f"listening on {url}", url=url, host=bound_host, port=bound_port,
                     workers=workers)

    try:
        if workers == 1:
            summary = _serve_here(state, sock, limits, options, announce)
        else:
            announce()
            summary = _serve_workers(state, sock, limits, options)
    finally:
        sock.close()
    summary = {"url": url, "host": bound_host, "port": bound_port, "workers": workers,
               "uptime_s": round(time.monotonic() - started, 3), **summary}
    log.announce("stopped", requests=summary["requests"], stopped_by=summary["stopped_by"])
    render.emit(state, summary, lambda console: _human(console, summary))


def _serve_here(state: State, sock: socket.socket, limits: Limits, options: dict[str, Any],
                announce: Callable[[], None]) -> dict[str, Any]:
    """One process: the app, the replay loop and uvicorn in this one; signals end it (one that
    arrives while the app is being built stops it before it serves)."""
    import uvicorn

    from arbiter_cli.adapters.http_transport import BoundedConfig  # deferred: start-up of `arbiter --help`

    assert state.telemetry is not None
    received: list[str] = []
    stop = threading.Event()
    servers: list[uvicorn.Server] = []

    def exit_servers() -> None:
        for running in servers:
            running.should_exit = True

    with _stop_on_signals(stop, received, then=exit_servers):
        server, api = _build(state.settings, state.telemetry)
        config = BoundedConfig(lambda: server.app, limits, **options)
        http = uvicorn.Server(config)
        servers.append(http)
        http.should_exit = stop.is_set()
        server.start()
        try:
            announce()
            if not stop.is_set():  # uvicorn takes the signals over while it runs
                http.run(sockets=[sock])
        finally:
            server.stop()
            api.dispose()
    return {"requests": server.counts.requests, "refused_connections": config.stats.refused,
            "cut_connections": config.stats.cut, "replays": dict(server.counts.replays),
            "replayed": {"applied": server.counts.applied,
                         "conflicts": server.counts.conflicts},
            "stopped_by": received[0] if received else None}


def _serve_workers(state: State, sock: socket.socket, limits: Limits,
                   options: dict[str, Any]) -> dict[str, Any]:
    """N worker processes on one socket, each with its own engine, app and replay loop;
    uvicorn's supervisor restarts a worker that dies and stops them all on SIGTERM."""
    from functools import partial

    # deferred: start-up of `arbiter --help`
    from arbiter_cli.adapters.http_transport import BoundedConfig, Supervisor

    build = partial(worker_app, state.settings, state.correlation_id, state.secrets)
    config = BoundedConfig(build, limits, **options)
    with _multiprocess_metrics():
        supervisor = Supervisor(config, sockets=[sock])
        supervisor.run()
    return {"requests": None, "refused_connections": None, "cut_connections": None,
            "replays": None, "replayed": None, "stopped_by": supervisor.stopped_by}


@contextmanager
def _multiprocess_metrics() -> Iterator[None]:
    """A private folder for prometheus-client's multiprocess mode, set in the environment the
    workers inherit (each imports prometheus-client after it), removed at the end."""
    import os
    import shutil
    import tempfile

    from arbiter_cli.tools.serve import MULTIPROCESS_DIR

    folder = tempfile.mkdtemp(prefix="arbiter-serve-metrics-")  # 0700
    before = os.environ.get(MULTIPROCESS_DIR)
    os.environ[MULTIPROCESS_DIR] = folder
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(MULTIPROCESS_DIR, None)
        else:
            os.environ[MULTIPROCESS_DIR] = before
        shutil.rmtree(folder, ignore_errors=True)


def worker_app(settings: Settings, correlation_id: str, secrets: list[str]) -> Any:
    """The ASGI app of one worker process (run there by uvicorn): logs, engine, API, collectors
    and the replay loop of that process."""
    from arbiter_cli.observability import logging as log
    from arbiter_cli.observability.redact import make_redactor
    from arbiter_cli.observability.runtime import Telemetry
    from arbiter_cli.observability.tracing import build_provider

    every = [*settings.secret_values(), *secrets]
    log.configure(settings.logging.level, settings.logging.format, every)
    log.bind(correlation_id=correlation_id, command="serve")
    telemetry = Telemetry(correlation_id=correlation_id, command="serve",
                          redact=make_redactor(every),
                          provider=build_provider(settings.observability.tracing.exporter))
    server, _api = _build(settings, telemetry)
    server.start()
    return server.app


def _build(settings: Settings, telemetry: Telemetry) -> tuple[Server, _Api]:
    """The composition of one serving process: the API on a shared engine, inside serve's app."""
    from arbiter_cli.bootstrap import Replayer, sql_engine
    from arbiter_cli.observability.metrics import Metrics
    from arbiter_cli.tools.serve import Server

    metrics = Metrics()
    api = _Api(settings, telemetry, metrics)
    server = Server(settings, telemetry, metrics, api=api, engine=sql_engine,
                    replay=Replayer())
    # What start-up made (modules, the app, the engine) lives as long as the process: kept out
    # of the collector's generations, it is no longer traversed by every full collection.
    gc.freeze()
    return server, api


class _Api:
    """The ``/v1`` app, built as soon as the database can be opened: serve starts without one
    (liveness and metrics answer, readiness fails) and its API answers 503 until there is."""

    RETRY_S = 1.0

    def __init__(self, settings: Settings, telemetry: Telemetry, metrics: Any) -> None:
        self.settings = settings
        self.telemetry = telemetry
        self.metrics = metrics
        self.engine: Engine | None = None
        self.app: Any = None
        self.problem: ArbiterError | None = None
        self._tried_at = -1e9
        self._lock = threading.Lock()
        self._build()

    @property
    def routes(self) -> list[Any]:
        return list(getattr(self.app, "routes", ()))

    def _build(self) -> None:
        import time
        from dataclasses import replace

        from arbiter_cli.api.server import create_api
        from arbiter_cli.bootstrap import sql_engine
        from arbiter_cli.errors import ArbiterError

        with self._lock:
            if self.app is not None or time.monotonic() - self._tried_at < self.RETRY_S:
                return
            self._tried_at = time.monotonic()
            try:
                self.engine = sql_engine(self.settings,
                                         telemetry=replace(self.telemetry, metrics=self.metrics))
            except ArbiterError as exc:
                from arbiter_cli.observability import logging as log

                self.problem = exc  # answered without its message (api/errors.py): logged here
                log.get_logger().warning("serve.api_unavailable", code=exc.code,
                                         error=exc.message)
                return
            self.app = create_api(self.settings, self.engine)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.app is None:
            self._build()
        if self.app is not None:
            await self.app(scope, receive, send)
            return
        from starlette.responses import JSONResponse

        from arbiter_cli.api import errors as api_errors
        from arbiter_cli.errors import StorageUnavailable

        exc = self.problem or StorageUnavailable("the database cannot be opened")
        answer = JSONResponse(api_errors.body_of(exc), status_code=api_errors.status_of(exc),
                              headers=api_errors.headers_of(exc, unavailable_retry_s=self.RETRY_S))
        await answer(scope, receive, send)

    def dispose(self) -> None:
        if self.engine is not None:
            self.engine.dispose()


def _check_security(settings: Settings, host: str) -> None:
    """``security.enabled = false`` makes every caller admin: only on a loopback address."""
    import ipaddress

    from arbiter_cli.errors import ConfigInvalid

    if settings.security.enabled:
        return
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigInvalid(f"security.enabled = false is refused by serve on {host}: every "
                            "caller would be admin; bind 127.0.0.1 or enable security")


def _tls(cert: Path | None, key: Path | None) -> tuple[str, str] | None:
    """Both files or neither; checked here so a bad pair is one line, not a worker crash."""
    import ssl

    from arbiter_cli.errors import InvalidInput

    if cert is None and key is None:
        return None
    if cert is None or key is None:
        missing = "--tls-cert" if cert is None else "--tls-key"
        raise InvalidInput(f"{missing} is needed too: HTTPS takes a certificate and its key",
                           field=missing.lstrip("-"), rule="required")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
        raise InvalidInput(f"cannot use --tls-cert {cert} with --tls-key {key}: {reason}",
                           field="tls-cert", rule="readable") from None
    return str(cert), str(key)


def _uvicorn_options(settings: Settings, tls: tuple[str, str] | None,
                     forwarded_allow_ips: str | None, workers: int) -> dict[str, Any]:
    import math

    return {
        "workers": workers, "lifespan": "off", "interface": "asgi3", "ws": "none",
        "log_config": None, "access_log": False,  # requests are logged as serve.request
        "server_header": False, "headers": [("server", "arbiter")],
        "timeout_keep_alive": max(1, min(5, math.ceil(settings.serve.read_timeout))),
        "timeout_graceful_shutdown": settings.serve.shutdown_timeout,
        "proxy_headers": forwarded_allow_ips is not None,
        "forwarded_allow_ips": forwarded_allow_ips,
        "ssl_certfile": tls[0] if tls else None, "ssl_keyfile": tls[1] if tls else None,
    }


def _human(console: Console, summary: dict[str, Any]) -> None:
    if summary["replays"] is None:
        console.print(f"served on {summary['url']} by {summary['workers']} workers for "
                      f"{summary['uptime_s']:.1f} s")
        return
    console.print(f"served {summary['requests']} requests on {summary['url']} for "
                  f"{summary['uptime_s']:.1f} s; journal replays: "
                  + ", ".join(f"{k} {v}" for k, v in summary["replays"].items()))


@contextmanager
def _stop_on_signals(stop: threading.Event, received: list[str],
                     then: Callable[[], None] | None = None) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stop`` (and call ``then``) instead of killing the process
    (main thread only)."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return

    def handle(signum: int, _frame: Any) -> None:
        received.append(signal.Signals(signum).name)
        stop.set()
        if then is not None:
            then()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
