"""The transport of ``arbiter serve`` on uvicorn: bounded, so that no client can hold the server
open (SPEC §15 "Transport").

uvicorn's h11 protocol, with three bounds uvicorn does not have by itself:

- **a deadline per request**: the request (line, headers and body) must arrive whole within
  ``read_timeout_s`` of the connection being accepted, or of the previous answer on a
  kept-alive connection. uvicorn's keep-alive timer is reset by every byte, so a client that
  trickles one header line every few seconds would never be cut off; the deadline is armed
  once and is not moved by data.
- **a cap on connections**: at most ``max_connections`` are open at once (per process); the
  next one is answered ``503`` with ``Retry-After`` as it is accepted, and closed.
- **a bounded drain**: at shutdown uvicorn closes idle connections and lets requests in flight
  finish. A connection that has sent part of a request counts as in flight (it is answered
  if it completes in time), and every connection still open ``shutdown_timeout_s`` after the
  shutdown began is aborted, so uvicorn's wait for open connections ends on time.

``BoundedConfig`` carries the limits to each protocol instance (and, pickled, to each worker
process of ``--workers N``); its ``build`` makes the ASGI app inside the process that serves.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.supervisors import Multiprocess

from arbiter_cli.observability import logging as log

_log = log.get_logger()
REFUSED = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
           b"Connection: close\r\n\r\n")


@dataclass(frozen=True)
class Limits:
    read_timeout_s: float = 10.0
    max_connections: int = 64
    shutdown_timeout_s: float = 10.0


@dataclass
class Stats:
    """What the transport of one process did (read by ``serve``'s summary)."""

    refused: int = 0
    cut: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def __getstate__(self) -> dict[str, Any]:  # pickled into worker processes: no lock
        return {"refused": self.refused, "cut": self.cut}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]


class BoundedConfig(uvicorn.Config):
    """uvicorn's configuration plus our limits; ``build()`` makes the app in the serving
    process (a worker builds its own engine and app)."""

    def __init__(self, build: Callable[[], Any], limits: Limits, **options: Any) -> None:
        super().__init__(app="arbiter_cli:built-by-BoundedConfig", factory=True,
                         http=BoundedH11Protocol, **options)
        self.build = build
        self.limits = limits
        self.stats = Stats()

    def load_app(self) -> Any:
        return self.build  # a factory: uvicorn calls it once, in the process that serves


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request deadline, a connection cap and a bounded drain."""

    config: BoundedConfig

    def __init__(self, config: BoundedConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.limits = config.limits
        self.stats = config.stats
        self._deadline: asyncio.TimerHandle | None = None
        self._refused = False
        self._draining = False

    # -- the cap
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            self._refused = True
            self.transport = transport
            self.stats.add("refused")
            transport.write(REFUSED)
            transport.close()
            if self.stats.refused == 1 or self.stats.refused % 100 == 0:
                _log.warning("serve.connection_limit", max_connections=self.limits.max_connections,
                             refused=self.stats.refused,
                             message="too many open connections: answered 503")
            return
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._refused:
            return
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)

    # -- the deadline
    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.limits.read_timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.stats.add("cut")
            _log.debug("serve.read_timeout", read_timeout_s=self.limits.read_timeout_s)
            self.transport.close()

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
            self._disarm()  # the whole request is in: the app's time is not the client's
        if self._draining and self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # answered during the drain: then closed

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():
            self._arm()  # the next request on this connection has its own deadline
        super().on_response_complete()

    # -- the drain
    def shutdown(self) -> None:
        """A connection with part of a request read is in flight: it may finish. Whatever is
        still open when the drain's time is up is aborted."""
        if self.transport.is_closing():
            return
        idle = self.cycle is None or self.cycle.response_complete
        if idle and self.conn.trailing_data[0]:
            self._draining = True
        else:
            super().shutdown()
        if not self.transport.is_closing():
            self.loop.call_later(self.limits.shutdown_timeout_s, self._abort)

    def _abort(self) -> None:
        if not self.transport.is_closing():
            self.stats.add("cut")
            self.transport.abort()


class Supervisor(Multiprocess):
    """uvicorn's worker supervisor, remembering which signal stopped it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stopped_by: str | None = None

    def handle_int(self) -> None:
        self.stopped_by = self.stopped_by or "SIGINT"
        super().handle_int()

    def handle_term(self) -> None:
        self.stopped_by = self.stopped_by or "SIGTERM"
        super().handle_term()
