"""The transport of ``arbiter serve`` on the stdlib's ``http.server``: bounded, so that no
client can hold the server open (SPEC §15 "Transport").

One thread per connection, with three bounds:

- **a deadline per request**: the request line and headers must arrive whole within
  ``read_timeout_s`` of the connection being accepted. A timeout per ``recv`` alone never
  fires for a client that trickles one header line every few seconds; the deadline does. The
  same time bounds each write of the answer.
- **a cap on connections**: at most ``max_connections`` are open at once; the next one is
  answered ``503`` with ``Retry-After`` straight from the accepting thread and closed.
- **a bounded drain**: ``BoundedHTTPServer.drain(timeout_s)`` (at SIGTERM, after the listener
  is closed) waits for the open connections to finish for at most ``timeout_s``, then shuts
  their sockets down so that a blocked read or write returns and the thread ends. Request
  threads are daemons: once the drain is over nothing keeps the process alive.
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from arbiter_cli.observability import logging as log

_log = log.get_logger()
REFUSED = (b"HTTP/1.0 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
           b"Connection: close\r\n\r\n")
AFTER_CUT_S = 1.0  # how long the drain waits for threads whose sockets it shut down


@dataclass(frozen=True)
class Limits:
    read_timeout_s: float = 10.0
    max_connections: int = 64


class Connections:
    """The open client sockets: admitted under a cap, released when their thread ends."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: set[socket.socket] = set()
        self._changed = threading.Condition()

    def admit(self, sock: socket.socket) -> bool:
        with self._changed:
            if len(self._open) >= self.limit:
                return False
            self._open.add(sock)
            return True

    def release(self, sock: socket.socket) -> None:
        with self._changed:
            self._open.discard(sock)
            self._changed.notify_all()

    def wait_closed(self, timeout_s: float) -> list[socket.socket]:
        """Wait until every connection is closed, for at most ``timeout_s``; the ones left."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while self._open and (left := deadline - time.monotonic()) > 0:
                self._changed.wait(left)
            return list(self._open)


class DeadlineReader(io.RawIOBase):
    """Reads from ``sock`` until ``deadline`` (monotonic), then raises ``TimeoutError``."""

    def __init__(self, sock: socket.socket, deadline: float, io_timeout_s: float) -> None:
        super().__init__()
        self._sock = sock
        self._deadline = deadline
        self._io_timeout_s = io_timeout_s

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request did not arrive in time")
        self._sock.settimeout(left)
        try:
            return self._sock.recv_into(buffer)
        finally:
            self._sock.settimeout(self._io_timeout_s)  # the answer's writes


class BoundedHTTPServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` with a connection cap and a bounded drain."""

    daemon_threads = True  # the drain, not the interpreter, decides how long requests run
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: type[BoundedHandler],
                 limits: Limits) -> None:
        self.limits = limits
        self.connections = Connections(limits.max_connections)
        self.refused = 0
        self._warned_at = -1e9
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.connections.admit(request):
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.connections.release(request)  # its thread never started
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.release(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-answer is not a server error: one debug line."""
        import sys

        exc = sys.exc_info()[1]
        _log.debug("serve.connection_error", error=type(exc).__name__ if exc else None)

    def drain(self, timeout_s: float) -> int:
        """After ``shutdown()``: wait for open connections, then cut the rest; how many cut."""
        left = self.connections.wait_closed(timeout_s)
        for sock in left:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if left:
            self.connections.wait_closed(AFTER_CUT_S)
        return len(left)

    def _refuse(self, request: socket.socket) -> None:
        self.refused += 1
        with contextlib.suppress(OSError):
            request.setblocking(False)  # never wait on a client from the accepting thread
            request.send(REFUSED)
        self.shutdown_request(request)
        now = time.monotonic()
        if now - self._warned_at >= 10:
            self._warned_at = now
            _log.warning("serve.connection_limit", max_connections=self.limits.max_connections,
                         refused=self.refused, message="too many open connections: answered 503")


class BoundedHandler(BaseHTTPRequestHandler):
    """A handler whose request must arrive within the server's ``read_timeout_s``."""

    server: BoundedHTTPServer

    def setup(self) -> None:
        timeout = self.server.limits.read_timeout_s
        super().setup()
        self.connection.settimeout(timeout)  # each send of the answer
        self.rfile.close()  # replaced: the makefile() reader has no deadline
        self.rfile = io.BufferedReader(
            DeadlineReader(self.connection, time.monotonic() + timeout, timeout))
