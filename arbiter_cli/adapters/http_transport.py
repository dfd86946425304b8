"""The transport of ``arbiter serve`` on uvicorn: bounded, so that no client can hold the server
open (SPEC §15 "Transport").

uvicorn's HTTP/1.1 protocol, httptools' (a C parser) when it is installed, else h11's (pure
Python, about 0.1 ms more CPU per request), with three bounds uvicorn has neither way:

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

try:  # uvicorn's C parser (a dependency; h11's pure-Python protocol is the fallback)
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

from arbiter_cli.errors import ConfigInvalid
from arbiter_cli.observability import logging as log

_log = log.get_logger()
REFUSED = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
           b"Connection: close\r\n\r\n")


@dataclass(frozen=True)
class Limits:
    read_timeout_s: float = 10.0
    max_connections: int = 64
    shutdown_timeout_s: float = 10.0
    #: ``serve.http``: auto (httptools when installed), httptools or h11.
    http: str = "auto"


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
                         http=protocol(limits.http), **options)
        self.build = build
        self.limits = limits
        self.stats = Stats()

    def load_app(self) -> Any:
        return self.build  # a factory: uvicorn calls it once, in the process that serves


class _Bounded(asyncio.Protocol):
    """The three bounds, for either of uvicorn's HTTP/1.1 protocols (the class after this one
    in the subclass's bases): the cap, the deadline and the drain."""

    connections: set[Any]
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    def _bound(self, config: BoundedConfig) -> None:
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

    # -- the drain
    def shutdown(self) -> None:
        """A connection with part of a request read is in flight: it may finish. Whatever is
        still open when the drain's time is up is aborted."""
        if self.transport.is_closing():
            return
        if self._idle() and self._partial():
            self._draining = True
        else:
            self._shutdown()
        if not self.transport.is_closing():
            self.loop.call_later(self.limits.shutdown_timeout_s, self._abort)

    def _abort(self) -> None:
        if not self.transport.is_closing():
            self.stats.add("cut")
            self.transport.abort()

    def _idle(self) -> bool:
        """No request is being answered on this connection."""
        raise NotImplementedError

    def _partial(self) -> bool:
        """Part of the next request has been read."""
        raise NotImplementedError

    def _shutdown(self) -> None:
        """uvicorn's own graceful shutdown of the connection."""
        raise NotImplementedError


class BoundedH11Protocol(_Bounded, H11Protocol):
    """uvicorn's h11 protocol (pure Python) with a request deadline, a connection cap and a
    bounded drain."""

    def __init__(self, config: BoundedConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self._bound(config)

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

    def _idle(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _partial(self) -> bool:
        return bool(self.conn.trailing_data[0])

    def _shutdown(self) -> None:
        H11Protocol.shutdown(self)


if HttpToolsProtocol is not None:
    class BoundedHttpToolsProtocol(_Bounded, HttpToolsProtocol):
        """uvicorn's httptools protocol (llhttp, in C) with the same bounds as
        ``BoundedH11Protocol``. It parses ahead: a pipelined request may be read whole while
        the previous one is answered, and part of the next one is read before its headers end."""

        def __init__(self, config: BoundedConfig, *args: Any, **kwargs: Any) -> None:
            super().__init__(config, *args, **kwargs)
            self._bound(config)
            self._begun = False

        def on_message_begin(self) -> None:
            self._begun = True
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self._begun = False  # from here on the request has its cycle
            super().on_headers_complete()
            if self._draining and self.cycle is not None and not self.cycle.response_complete:
                self.cycle.keep_alive = False  # answered during the drain: then closed

        def on_message_complete(self) -> None:
            self._disarm()  # the whole request is in: the app's time is not the client's
            super().on_message_complete()

        def on_response_complete(self) -> None:
            waiting = bool(self.pipeline) and not self.pipeline[-1][0].more_body
            if not self.transport.is_closing() and not waiting:
                self._arm()  # the next request on this connection has its own deadline
            super().on_response_complete()

        def _idle(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _partial(self) -> bool:
            return self._begun

        def _shutdown(self) -> None:
            HttpToolsProtocol.shutdown(self)


def protocol(http: str = "auto") -> type[_Bounded]:
    """The bounded HTTP/1.1 protocol of ``serve.http``: httptools' (a C parser: less CPU per
    request) for auto when it is installed, else h11's."""
    if http == "h11" or (http == "auto" and HttpToolsProtocol is None):
        return BoundedH11Protocol
    if HttpToolsProtocol is None:
        raise ConfigInvalid("serve.http = httptools needs the httptools package: "
                            "pip install httptools, or set serve.http = auto")
    return BoundedHttpToolsProtocol


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
