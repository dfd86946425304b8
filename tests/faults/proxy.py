"""An in-repo TCP fault proxy (no Toxiproxy server is available here; RELIABILITY.md §3.1).

It sits between arbiter and a PostgreSQL cluster and misbehaves on demand:

- ``pass``: forward both ways;
- ``reset``: new connections are reset at once, and switching to it resets every live one
  (RST: ``SO_LINGER`` 0, then close);
- ``blackhole``: accept and read, never forward, hold the connection open; a live connection
  switched to it stays blackholed until its client gives up;
- ``latency``: forward each chunk after ``latency_ms``.

The mode can change at any time (``set_mode``). ``accepted`` counts the connections that
reached the proxy, so a test can prove that nothing tried to connect while a breaker was open.
One thread accepts; each connection gets one thread that pumps both directions.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

MODES = ("pass", "reset", "blackhole", "latency")
_TICK_S = 0.05  # how often an idle pump looks at the mode


def reset_socket(sock: socket.socket) -> None:
    """Close with an RST instead of a FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@dataclass(eq=False)  # identity: links live in a set
class _Link:
    client: socket.socket
    upstream: socket.socket | None = None
    blackholed: bool = False
    closed: threading.Event = field(default_factory=threading.Event)


class FaultProxy:
    """``FaultProxy(("127.0.0.1", 5432)).start()`` listens on ``proxy.port``."""

    def __init__(self, upstream: tuple[str, int], *, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.upstream = upstream
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, port))
        self._listener.listen(128)
        self.host, self.port = self._listener.getsockname()[:2]
        self._lock = threading.Lock()
        self._mode = "pass"
        self._latency_s = 0.0
        self._accepted = 0
        self._forwarded = 0
        self._links: set[_Link] = set()
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._acceptor: threading.Thread | None = None

    # -- control -----------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._acceptor = threading.Thread(target=self._accept_loop, name="fault-proxy",
                                          daemon=True)
        self._acceptor.start()
        return self

    def set_mode(self, mode: str, *, latency_ms: float = 0.0) -> None:
        """Switch the behaviour now; ``reset`` also resets every live connection."""
        if mode not in MODES:
            raise ValueError(f"unknown proxy mode {mode!r}; one of {', '.join(MODES)}")
        with self._lock:
            self._mode = mode
            self._latency_s = max(0.0, latency_ms) / 1000.0
            live = list(self._links) if mode == "reset" else []
        for link in live:
            self._drop(link, rst=True)

    @property
    def mode(self) -> str:
        with self._lock:
            return self._mode

    @property
    def accepted(self) -> int:
        """Connections accepted since start (whatever the mode)."""
        with self._lock:
            return self._accepted

    @property
    def forwarded(self) -> int:
        """Connections that were connected through to the upstream."""
        with self._lock:
            return self._forwarded

    @property
    def live(self) -> int:
        with self._lock:
            return len(self._links)

    def close(self) -> None:
        """Stop accepting, close every connection, join the threads."""
        self._stopping.set()
        if self._acceptor is not None:
            self._acceptor.join(timeout=5)
        self._listener.close()
        with self._lock:
            links = list(self._links)
        for link in links:
            self._drop(link, rst=False)
        for thread in list(self._threads):
            thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            ready, _, _ = select.select([self._listener], [], [], _TICK_S)
            if not ready:
                continue
            try:
                client, _ = self._listener.accept()
            except OSError:
                continue
            with self._lock:
                self._accepted += 1
                mode = self._mode
            if mode == "reset":
                reset_socket(client)
                continue
            link = _Link(client, blackholed=mode == "blackhole")
            with self._lock:
                self._links.add(link)
            thread = threading.Thread(target=self._serve, args=(link,), daemon=True,
                                      name="fault-proxy-link")
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
            thread.start()

    def _serve(self, link: _Link) -> None:
        try:
            if not link.blackholed:
                try:
                    link.upstream = socket.create_connection(self.upstream, timeout=10)
                    link.upstream.settimeout(None)
                except OSError:
                    self._drop(link, rst=True)  # upstream down: the client sees a reset
                    return
                with self._lock:
                    self._forwarded += 1
            self._pump(link)
        finally:
            self._drop(link, rst=False)
            if link.upstream is not None:
                # A drop (cut, stop) that ran while create_connection was still connecting saw
                # no upstream yet and closed only the client: close this one too (idempotent).
                link.upstream.close()

    def _pump(self, link: _Link) -> None:
        while not self._stopping.is_set() and not link.closed.is_set():
            with self._lock:
                mode, delay = self._mode, self._latency_s
            if mode == "blackhole":
                link.blackholed = True
            watched = [link.client] if link.upstream is None else [link.client, link.upstream]
            try:
                ready, _, _ = select.select(watched, [], [], _TICK_S)
            except (OSError, ValueError):
                return
            for sock in ready:
                try:
                    chunk = sock.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return  # one side closed: close the other
                if link.blackholed or link.upstream is None:
                    continue  # read and drop, never forward
                if delay:
                    time.sleep(delay)
                target = link.upstream if sock is link.client else link.client
                try:
                    target.sendall(chunk)
                except OSError:
                    return

    def _drop(self, link: _Link, *, rst: bool) -> None:
        with self._lock:
            if link.closed.is_set():
                return
            link.closed.set()
            self._links.discard(link)
        for sock in (link.client, link.upstream):
            if sock is None:
                continue
            if rst:
                reset_socket(sock)
            else:
                sock.close()
