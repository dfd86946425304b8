"""Spans, metrics and log events around database calls (the services' own spans and the
routing metrics: ``observed.py``).

- ``instrument_engine(engine, ...)`` listens to SQLAlchemy's engine events: a span and an
  ``arbiter_db_call_seconds{operation}`` observation per statement, and
  ``arbiter_db_errors_total{kind}`` per failure (``handle_error``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from arbiter_cli.observability import logging as log
from arbiter_cli.observability.redact import Redactor

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer
    from sqlalchemy.engine import Engine

    from arbiter_cli.observability.metrics import Metrics

_log = log.get_logger()

VERBS = frozenset({"select", "insert", "update", "delete", "begin", "commit", "rollback",
                   "savepoint", "release", "with", "pragma", "create", "alter", "drop", "set",
                   "show", "lock"})
DBAPI_FAMILIES = ("IntegrityError", "OperationalError", "ProgrammingError", "DataError",
                  "InternalError", "NotSupportedError", "InterfaceError", "DatabaseError")
_STACK = "arbiter_observed_calls"


def operation_of(statement: str) -> str:
    """The SQL verb of a statement, as a bounded label value."""
    head = statement.lstrip().split(None, 1)
    verb = head[0].lower() if head else ""
    return verb if verb in VERBS else "other"


def error_kind(exc: BaseException | None) -> str:
    """The DBAPI family of a driver error (``operational``, ``integrity``, ...)."""
    for cls in type(exc).__mro__ if exc is not None else ():
        if cls.__name__ in DBAPI_FAMILIES:
            return cls.__name__.removesuffix("Error").lower().replace("notsupported",
                                                                       "not_supported")
    return "other"


def instrument_engine(engine: Engine, *, tracer: Tracer | None = None,
                      metrics: Metrics | None = None, attributes: Mapping[str, Any] | None = None,
                      redact: Redactor = str) -> None:
    """Spans, latency and errors of every statement ``engine`` runs."""
    from sqlalchemy import event

    system = "postgresql" if engine.dialect.name.startswith("postgres") else engine.dialect.name
    base = {"db.system": system, **(attributes or {})}
    debug = log.enabled("debug")

    def before(conn: Any, _cursor: Any, statement: str, _params: Any, _context: Any,
               _many: bool) -> None:
        verb = operation_of(statement)
        span = None
        if tracer is not None:
            span = tracer.start_span(f"db {verb}", attributes={
                **base, "db.operation": verb, "db.statement": redact(statement[:2000])})
        conn.info.setdefault(_STACK, []).append((time.perf_counter(), verb, span))

    def after(conn: Any, _cursor: Any, _statement: str, _params: Any, _context: Any,
              _many: bool) -> None:
        stack = conn.info.get(_STACK)
        if not stack:
            return
        started, verb, span = stack.pop()
        elapsed = time.perf_counter() - started
        if metrics is not None:
            metrics.observe("arbiter_db_call_seconds", elapsed, operation=verb)
        if span is not None:
            span.end()
        if debug:
            _log.debug("db.call", operation=verb, duration_ms=round(elapsed * 1000, 3))

    def failed(context: Any) -> None:
        if getattr(context, "is_pre_ping", False):
            return  # a stale pooled connection, replaced transparently
        kind = error_kind(context.original_exception)
        if metrics is not None:
            metrics.inc("arbiter_db_errors_total", kind=kind)
        stack = _calls(context.connection)
        verb = "connect"
        if stack:
            _started, verb, span = stack.pop()
            if span is not None:
                _fail_span(span, kind, redact(_first_line(context.original_exception)))
                span.end()
        _log.debug("db.error", kind=kind, operation=verb)

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    event.listen(engine, "handle_error", failed)


def _calls(conn: Any) -> list[Any] | None:
    """The open statements of ``conn``, if it is still usable."""
    if conn is None:
        return None
    try:
        return cast("list[Any] | None", conn.info.get(_STACK))
    except Exception:  # noqa: BLE001 - an invalidated connection has no info to read
        return None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _fail_span(span: Span, kind: str, message: str) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("error.kind", kind)
    span.add_event("exception", {"exception.message": message})
    span.set_status(Status(StatusCode.ERROR, f"{kind}: {message}"))
