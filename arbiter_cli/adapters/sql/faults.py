"""Which database failures are worth retrying, which count against the breaker, and which are
not outages at all (SPEC §7, §7.1).

Classification looks at the *driver* exception (psycopg2's class and ``pgcode``), never at
SQLAlchemy's wrapper class: SQLAlchemy wraps a lost connection and a unique violation alike.
The table behind it is measured in ``RELIABILITY.md`` §3.2.

A configuration error (wrong password, unknown role or database, a host name that does not
resolve) is not an outage: ``CONFIG`` is never retried, never counted by the breaker, never
journaled and never served from the snapshot; the command exits 3.
"""

from __future__ import annotations

import functools
import re
from enum import Enum


class Fault(Enum):
    TRANSIENT = "transient"  # retried, and counted by the breaker
    COUNTED = "counted"  # not retried, but counted by the breaker
    CALLER = "caller"  # never retried, never counted: the request itself is at fault
    CONFIG = "config"  # never retried, never counted: arbiter is pointed at the wrong place


# SQLSTATE codes (PostgreSQL appendix A).
RETRIED_CODES = frozenset({
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "53300",  # too_many_connections
    "57P01",  # admin_shutdown
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now
})
COUNTED_CODES = frozenset({
    "57014",  # query_canceled (statement_timeout)
    "53100",  # disk_full
    "53200",  # out_of_memory
    "55P03",  # lock_not_available (lock_timeout)
    "58030",  # io_error
    "XX000",  # internal_error ("could not extend file … File too large")
})
RETRIED_CLASSES = ("08",)  # connection_exception
CONFIG_CODES = frozenset({
    "3D000",  # invalid_catalog_name: the database does not exist
})
CONFIG_CLASSES = ("28",)  # invalid_authorization_specification, invalid_password (28P01)

# At connect time libpq raises a plain OperationalError with pgcode None, even for the server's
# FATAL 28P01 or 3D000 (measured against PostgreSQL 15 with libpq 17, with and without our wait
# callback): the message is all there is. These are libpq's own texts and the server's English
# ones; a server whose ``lc_messages`` is another language translates its FATALs, and those then
# classify as TRANSIENT, as every connect failure did before. tests/faults/test_trust.py checks
# the texts against a real server, so a libpq that rewords them fails loudly.
CONFIG_MESSAGES = re.compile(
    r"authentication failed for user"  # password, md5/scram, ident, peer, GSS: 28P01 / 28000
    r"|no password supplied"  # libpq: the server asks for a password and none was given
    r"|no pg_hba\.conf entry for"  # 28000: this host/user/database is not allowed at all
    r'|role "[^"]*" does not exist'  # 28000
    r'|database "[^"]*" does not exist'  # 3D000
    r"|could not translate host name"  # DNS; a resolver that is down is kept transient below
    r"|invalid connection option|invalid dsn|invalid (?:sslmode|integer) value"  # libpq options
)
DNS_TRANSIENT = "temporary failure in name resolution"  # EAI_AGAIN: the resolver, not the name
# The server itself gave up on a statement: it is alive, only slow or contended.
SLOW_CODES = frozenset({"57014", "55P03"})  # query_canceled (statement_timeout), lock_timeout


def driver_error(exc: BaseException) -> BaseException:
    """The driver's exception behind ``exc``: SQLAlchemy's ``.orig``, our ``.driver``, or itself."""
    seen = 0
    while seen < 5:
        seen += 1
        inner = getattr(exc, "orig", None) or getattr(exc, "driver", None)
        if not isinstance(inner, BaseException) or inner is exc:
            return exc
        exc = inner
    return exc


def sqlstate(err: BaseException) -> str | None:
    """The SQLSTATE of a driver error: its ``pgcode``, else the one its psycopg2 class stands for.

    A server error raised by libpq carries its ``pgcode``; the same class built in Python (a
    test double, a wrapper re-raising it) has ``pgcode`` None but still names one SQLSTATE.
    """
    code = getattr(err, "pgcode", None)
    if isinstance(code, str) and code:
        return code
    return _class_codes().get(type(err))


@functools.cache
def _class_codes() -> dict[type, str]:
    """``psycopg2.errors`` class → SQLSTATE, for every code psycopg2 has a class for."""
    try:
        import psycopg2.errorcodes
        import psycopg2.errors
    except ImportError:  # pragma: no cover - psycopg2 is a dependency
        return {}
    found: dict[type, str] = {}
    for name, value in vars(psycopg2.errorcodes).items():
        if name.isupper() and isinstance(value, str) and len(value) == 5:
            try:
                found[psycopg2.errors.lookup(value)] = value
            except KeyError:  # success and warning codes have no exception class
                continue
    return found


def classify(exc: BaseException) -> Fault:
    """TRANSIENT, COUNTED, CALLER or CONFIG for any exception a database call can raise."""
    # deferred: start-up of `arbiter agents list`
    from arbiter_cli.adapters.sql.deadline import is_exceeded

    err = driver_error(exc)
    if is_exceeded(err):
        return Fault.COUNTED  # the budget is spent: retrying cannot help, the breaker must know
    code = sqlstate(err)
    if code is not None:
        if code in CONFIG_CODES or code.startswith(CONFIG_CLASSES):
            return Fault.CONFIG
        if code in RETRIED_CODES or code.startswith(RETRIED_CLASSES):
            return Fault.TRANSIENT
        if code in COUNTED_CODES or code.startswith(("53", "58")):
            return Fault.COUNTED
        return Fault.CALLER  # integrity (23), data (22), syntax/access (42), …
    module = type(err).__module__.split(".")[0]
    name = type(err).__name__
    if module == "psycopg2":
        if name in ("OperationalError", "ProgrammingError") and is_misconfigured(str(err)):
            return Fault.CONFIG
        if name in ("OperationalError", "InterfaceError"):
            return Fault.TRANSIENT  # lost, refused, reset, "too many clients", dead handle
        if name in ("DatabaseError", "InternalError"):
            return Fault.COUNTED
        return Fault.CALLER
    if module == "sqlalchemy" and name == "TimeoutError":  # pool exhausted while waiting
        return Fault.COUNTED
    if isinstance(err, ConnectionError | TimeoutError):
        return Fault.TRANSIENT
    return Fault.CALLER


def is_misconfigured(message: str) -> bool:
    """A connect-time failure message that names a configuration error (see CONFIG_MESSAGES)."""
    return CONFIG_MESSAGES.search(message) is not None and DNS_TRANSIENT not in message.lower()


def slowness(exc: BaseException) -> str | None:
    """How a failure says the primary may only be slow (SPEC §7.1), or None.

    ``"timeout"``: the server answered with a statement or lock timeout, so it is alive.
    ``"cut"``: our deadline cut a connection that was waiting for a statement's result; a dead
    primary and a slow one look alike there, and only a liveness probe tells them apart. A
    deadline that cut the *handshake* is an unreachable primary: None.
    """
    # deferred: start-up of `arbiter agents list`
    from arbiter_cli.adapters.sql.deadline import is_exceeded, while_connecting

    err = driver_error(exc)
    if is_exceeded(err):
        return None if while_connecting(err) else "cut"
    return "timeout" if sqlstate(err) in SLOW_CODES else None
