"""A database budget per command, enforced inside psycopg2's blocking calls (SPEC §7).

psycopg2 blocks in C, so a timeout around the call cannot interrupt it, and a peer that
accepts and never answers (a blackholing middlebox) hangs it forever: ``connect_timeout``
covers only the handshake, ``statement_timeout`` only a server that answers, and TCP
keepalives never fire because the middlebox ACKs. psycopg2's *wait callback* makes libpq
non-blocking and lets Python wait on the socket instead; our callback waits at most until the
active deadline, then shuts the socket down so libpq sees the connection as lost (SQLAlchemy
then discards it from the pool) and raises ``DeadlineExceeded``.
"""

from __future__ import annotations

import contextvars
import select
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_active: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("arbiter_deadline",
                                                                         default=None)
_installed = False


def _driver_error_base() -> type[Exception]:
    import psycopg2

    return psycopg2.OperationalError  # type: ignore[no-any-return]


class Deadline:
    """``budget_s`` seconds from now, shared by every database call made under it."""

    def __init__(self, budget_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.budget_s = budget_s
        self._clock = clock
        self._ends = clock() + budget_s

    def remaining(self) -> float:
        return max(0.0, self._ends - self._clock())

    def extended(self, extra_s: float) -> Deadline:
        """The same deadline, ``extra_s`` later (a batch write's budget grows with its items)."""
        longer = Deadline(self.budget_s + extra_s, self._clock)
        longer._ends = self._ends + extra_s
        return longer

    def expired(self) -> bool:
        return self._clock() >= self._ends

    @contextmanager
    def active(self) -> Iterator[Deadline]:
        """Make psycopg2 calls in this block (this thread or task) respect the deadline."""
        token = _active.set(self)
        try:
            yield self
        finally:
            _active.reset(token)


def current() -> Deadline | None:
    return _active.get()


_exceeded: type[Exception] | None = None


def exceeded_type() -> type[Exception]:
    """``DeadlineExceeded``: a psycopg2 ``OperationalError``, so SQLAlchemy wraps it like any
    lost connection and discards the connection (its message says the connection closed)."""
    global _exceeded
    if _exceeded is None:
        base = _driver_error_base()
        _exceeded = type("DeadlineExceeded", (base,), {
            "__doc__": "The command's database budget ran out while waiting on the server."})
    return _exceeded


def is_exceeded(exc: BaseException) -> bool:
    return _exceeded is not None and isinstance(exc, _exceeded)


def while_connecting(exc: BaseException) -> bool:
    """Whether a ``DeadlineExceeded`` cut a connection that had not finished connecting (the
    server never answered the handshake) rather than one waiting for a statement's result."""
    return bool(getattr(exc, "connecting", True))


def install() -> None:
    """Install the wait callback once per process (idempotent; needs psycopg2)."""
    global _installed
    if _installed:
        return
    import psycopg2.extensions

    exceeded_type()
    psycopg2.extensions.set_wait_callback(_wait)
    _installed = True


def _wait(conn: Any) -> None:
    import psycopg2.extensions as ext

    while True:
        state = conn.poll()
        if state == ext.POLL_OK:
            return
        deadline = _active.get()
        timeout = None if deadline is None else deadline.remaining()
        if timeout is not None and timeout <= 0:
            _expire(conn)
        fd = conn.fileno()
        try:
            if state == ext.POLL_READ:
                ready = select.select([fd], [], [], timeout)[0]
            elif state == ext.POLL_WRITE:
                ready = select.select([], [fd], [], timeout)[1]
            else:  # pragma: no cover - libpq has no other state
                raise _driver_error_base()(f"unexpected poll state {state}")
        except InterruptedError:  # pragma: no cover - PEP 475 retries select itself
            continue
        if not ready and deadline is not None and deadline.expired():
            _expire(conn)


def _expire(conn: Any) -> None:
    """Cut the connection under libpq's feet, then raise: nothing may wait on it again."""
    budget = _active.get()
    try:
        sock = socket.socket(fileno=_dup(conn.fileno()))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()
    except OSError:
        pass
    spent = "" if budget is None else f" ({budget.budget_s:g}s)"
    error = exceeded_type()(f"database call exceeded the command's budget{spent}: "
                            "server closed the connection unexpectedly")
    error.connecting = _connecting(conn)  # type: ignore[attr-defined]
    raise error


def _connecting(conn: Any) -> bool:
    """libpq's handshake is still running (psycopg2 reports an internal ``CONNECTING``
    status until the connection is ready; measured with libpq 17)."""
    import psycopg2.extensions as ext

    try:
        return conn.status not in (ext.STATUS_READY, ext.STATUS_BEGIN, ext.STATUS_PREPARED)
    except Exception:  # noqa: BLE001 - a closed or odd handle: treat as not connected
        return True


def _dup(fd: int) -> int:
    import os

    return os.dup(fd)
