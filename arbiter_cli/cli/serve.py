"""``arbiter serve``: health and Prometheus metrics over HTTP (SPEC §8, §9)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer

from arbiter_cli.cli import render
from arbiter_cli.cli.boundary import command
from arbiter_cli.cli.options import JsonOpt, state_of

if TYPE_CHECKING:
    from rich.console import Console

WAIT_TICK_S = 0.5  # how often the main thread looks up from waiting for a signal


def add_commands(app: typer.Typer) -> None:
    command(app, "serve")(serve)


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port; 0 picks a free one (printed).",
                                      min=0, max=65535)] = 8787,
    json_out: JsonOpt = False,
) -> None:
    """Serve /livez, /readyz, /health and /metrics; replay the journal in the background.

    /readyz and /health answer 200 on pass or warn and 503 on fail, with an
    application/health+json body. /metrics shows the whole fleet, read from the database at
    each scrape. The listening address is printed on stderr. A client must send its request
    within serve.read_timeout; at most serve.max_connections are served at once (503 past
    it). SIGTERM or SIGINT stops it gracefully: requests in flight get serve.shutdown_timeout
    to finish, then exit 0; --json then prints a summary.

    Example: arbiter serve --host 0.0.0.0 --port 8787
    """
    import time

    from arbiter_cli.bootstrap import replay_pending, sql_engine  # deferred: start-up of `arbiter --help`
    from arbiter_cli.observability import logging as log  # deferred: start-up of `arbiter --help`
    from arbiter_cli.observability.metrics import Metrics  # deferred: start-up of `arbiter --help`
    from arbiter_cli.tools.serve import Server  # deferred: start-up of `arbiter --help`

    state = state_of(ctx)
    settings = state.settings
    assert state.telemetry is not None  # set by the boundary before every command body
    server = Server(settings, state.telemetry, Metrics(), host=host, port=port,
                    engine=sql_engine,
                    replay=lambda given, budget_s: replay_pending(given, budget_s=budget_s))
    stop = threading.Event()
    received: list[str] = []
    started = time.monotonic()
    with _stop_on_signals(stop, received):
        server.start()
        bound_host, bound_port = server.address
        url = server.summary(0)["url"]
        log.announce(f"listening on {url}", url=url, host=bound_host, port=bound_port)
        try:
            while not stop.wait(WAIT_TICK_S):
                pass
        finally:
            server.stop()
    summary = {**server.summary(time.monotonic() - started),
               "stopped_by": received[0] if received else None}
    log.announce("stopped", requests=summary["requests"], stopped_by=summary["stopped_by"])
    render.emit(state, summary, lambda console: _human(console, summary))


def _human(console: Console, summary: dict[str, Any]) -> None:
    console.print(f"served {summary['requests']} requests on {summary['url']} for "
                  f"{summary['uptime_s']:.1f} s; journal replays: "
                  + ", ".join(f"{k} {v}" for k, v in summary["replays"].items()))


@contextmanager
def _stop_on_signals(stop: threading.Event, received: list[str]) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stop`` instead of killing the process (main thread only)."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return

    def handle(signum: int, _frame: Any) -> None:
        received.append(signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
