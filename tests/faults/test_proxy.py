"""The fault proxy itself, against a tiny echo server (no PostgreSQL needed)."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.faults.proxy import FaultProxy


class EchoServer:
    """Echoes every byte back; counts the connections it accepted."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.address: tuple[str, int] = self.sock.getsockname()[:2]
        self.accepted = 0
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            watched = [self.sock, *self._conns]
            ready, _, _ = select.select(watched, [], [], 0.05)
            for sock in ready:
                if sock is self.sock:
                    conn, _ = self.sock.accept()
                    self.accepted += 1
                    self._conns.append(conn)
                    continue
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if data:
                    sock.sendall(data)
                else:
                    self._conns.remove(sock)
                    sock.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self._conns:
            conn.close()
        self.sock.close()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[FaultProxy]:
    with FaultProxy(echo.address) as p:
        yield p


def connect(proxy: FaultProxy, timeout: float = 2.0) -> socket.socket:
    return socket.create_connection((proxy.host, proxy.port), timeout=timeout)


def roundtrip(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    received = b""
    while len(received) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def wait_for(predicate, timeout: float = 2.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


def test_pass_mode_forwards_both_ways_and_counts_connections(proxy: FaultProxy, echo: EchoServer) -> None:
    for i in range(3):
        with connect(proxy) as sock:
            assert roundtrip(sock, b"hello %d" % i) == b"hello %d" % i
    assert proxy.accepted == 3
    assert proxy.forwarded == 3
    assert wait_for(lambda: echo.accepted == 3)


def test_pass_mode_forwards_a_large_payload_intact(proxy: FaultProxy) -> None:
    payload = bytes(range(256)) * 2048  # 512 KiB
    with connect(proxy, timeout=10) as sock:
        assert roundtrip(sock, payload) == payload


def talk_until_reset(proxy: FaultProxy) -> None:
    """Connect and talk; the RST may already fail the connect, or arrive after a send."""
    with connect(proxy) as sock:
        roundtrip(sock, b"x")
        roundtrip(sock, b"x")


def test_reset_mode_resets_new_connections(proxy: FaultProxy, echo: EchoServer) -> None:
    proxy.set_mode("reset")
    with pytest.raises(ConnectionResetError):
        talk_until_reset(proxy)
    assert proxy.accepted == 1
    assert echo.accepted == 0


def test_switching_to_reset_resets_live_connections(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        assert roundtrip(sock, b"before") == b"before"
        proxy.set_mode("reset")
        with pytest.raises(ConnectionResetError):
            roundtrip(sock, b"after")
            roundtrip(sock, b"after")
    assert proxy.live == 0


def test_blackhole_accepts_reads_and_never_answers_or_closes(proxy: FaultProxy, echo: EchoServer) -> None:
    proxy.set_mode("blackhole")
    with connect(proxy, timeout=0.3) as sock:
        sock.sendall(b"anyone there?")
        with pytest.raises(TimeoutError):
            sock.recv(1)  # neither data nor EOF: the connection is held open
        sock.sendall(b"still reading")  # the proxy keeps draining what we send
    assert proxy.accepted == 1
    assert proxy.forwarded == 0
    assert echo.accepted == 0


def test_a_live_connection_switched_to_blackhole_stops_forwarding(proxy: FaultProxy) -> None:
    with connect(proxy, timeout=0.3) as sock:
        assert roundtrip(sock, b"ok") == b"ok"
        proxy.set_mode("blackhole")
        time.sleep(0.1)  # let the pump see the new mode
        sock.sendall(b"lost")
        with pytest.raises(TimeoutError):
            sock.recv(1)
        proxy.set_mode("pass")
        with pytest.raises(TimeoutError):
            sock.recv(1)  # it stays blackholed; only new connections are healed
    with connect(proxy) as fresh:
        assert roundtrip(fresh, b"healed") == b"healed"


def test_latency_mode_delays_each_chunk(proxy: FaultProxy) -> None:
    proxy.set_mode("latency", latency_ms=200)
    with connect(proxy, timeout=5) as sock:
        started = time.monotonic()
        assert roundtrip(sock, b"slow") == b"slow"
        elapsed = time.monotonic() - started
    # a lower bound only: the proxy must add at least its latency (each way), never less
    assert elapsed >= 0.4


def test_an_unreachable_upstream_resets_the_client() -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        dead = placeholder.getsockname()[:2]
    with FaultProxy(dead) as p, pytest.raises(ConnectionResetError):
        talk_until_reset(p)


def test_unknown_mode_is_refused(proxy: FaultProxy) -> None:
    with pytest.raises(ValueError, match="unknown proxy mode"):
        proxy.set_mode("chaos")


def test_close_ends_every_connection_and_thread(echo: EchoServer) -> None:
    p = FaultProxy(echo.address).start()
    socks = [connect(p) for _ in range(3)]
    for s in socks:
        assert roundtrip(s, b"x") == b"x"
    p.close()
    for s in socks:
        s.settimeout(1)
        with contextlib.suppress(ConnectionResetError):
            assert s.recv(1) == b""
        s.close()
    assert p.live == 0
