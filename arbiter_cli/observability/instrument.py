"""Spans, metrics and log events around service operations and database calls.

- ``instrument(service, telemetry, name)`` wraps a service at the composition root (the
  ``App`` properties): each public method call becomes a span ``<name>.<method>``, and the
  routing results feed ``arbiter_routing_*`` and ``arbiter_outcomes_total`` and an ``info``
  event. The services and the domain stay unaware of it; their signatures are unchanged.
- ``instrument_engine(engine, ...)`` listens to SQLAlchemy's engine events: a span and an
  ``arbiter_db_call_seconds{operation}`` observation per statement, and
  ``arbiter_db_errors_total{kind}`` per failure (``handle_error``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from arbiter_cli.errors import ArbiterError
from arbiter_cli.observability import logging as log
from arbiter_cli.observability.redact import Redactor

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer
    from sqlalchemy.engine import Engine

    from arbiter_cli.observability.metrics import Metrics
    from arbiter_cli.observability.runtime import Telemetry

S = TypeVar("S")
_log = log.get_logger()

#: Routing errors that are decisions too (nobody could take the task).
REFUSALS = frozenset({"no_capable_agent", "at_capacity"})


def instrument(service: S, telemetry: Telemetry, name: str) -> S:
    """``service`` with a span (and, for routing, metrics) around each public method."""
    return cast(S, _Instrumented(service, telemetry, name))


class _Instrumented:
    __slots__ = ("_name", "_target", "_telemetry")

    def __init__(self, target: Any, telemetry: Telemetry, name: str) -> None:
        self._target = target
        self._telemetry = telemetry
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._target, attr)
        if attr.startswith("_") or not callable(value):
            return value
        operation = f"{self._name}.{attr}"
        observer = OBSERVERS.get(operation)
        telemetry, target = self._telemetry, self._target

        def call(*args: Any, **kwargs: Any) -> Any:
            with telemetry.span(operation):
                try:
                    result = value(*args, **kwargs)
                except ArbiterError as exc:
                    if observer is not None:
                        observer(telemetry, target, kwargs, None, exc)
                    raise
            if observer is not None:
                observer(telemetry, target, kwargs, result, None)
            return result

        return call


Observer = Callable[["Telemetry", Any, Mapping[str, Any], Any, "ArbiterError | None"], None]


def _routed(telemetry: Telemetry, service: Any, kwargs: Mapping[str, Any], routed: Any,
            error: ArbiterError | None) -> None:
    metrics = telemetry.metrics
    if error is not None:
        if error.code not in REFUSALS:
            return
        policy = getattr(service, "policy", None)
        strategy = str(kwargs.get("strategy") or getattr(policy, "strategy", "unknown"))
        if metrics is not None:
            metrics.inc("arbiter_routing_decisions_total", strategy=strategy, explored="false",
                        result=error.code)
        _log.info("route.refused", code=error.code, strategy=strategy)
        return
    decision = routed.decision
    if routed.already_routed:
        result = "already_routed"
    else:
        result = "dry_run" if decision.decision_id is None else "routed"
    explored = "true" if decision.explored else "false"
    if metrics is not None:
        metrics.inc("arbiter_routing_decisions_total", strategy=decision.strategy,
                    explored=explored, result=result)
        if not routed.already_routed:
            metrics.observe("arbiter_routing_decision_seconds", decision.latency_us / 1e6)
    _log.info("route.decided", result=result, decision_id=decision.decision_id,
              task_id=decision.task_id, agent_id=decision.agent_id, strategy=decision.strategy,
              explored=decision.explored, latency_us=decision.latency_us)


def _recorded(telemetry: Telemetry, _service: Any, _kwargs: Mapping[str, Any], recorded: Any,
              error: ArbiterError | None) -> None:
    if error is not None:
        return
    decision = recorded.decision
    if telemetry.metrics is not None and not recorded.already_recorded:
        telemetry.metrics.inc("arbiter_outcomes_total", result=decision.status)
    _log.info("route.outcome", decision_id=decision.decision_id, task_id=decision.task_id,
              agent_id=decision.agent_id, status=decision.status,
              already_recorded=recorded.already_recorded)


def _reaped(telemetry: Telemetry, _service: Any, _kwargs: Mapping[str, Any], expired: Any,
            error: ArbiterError | None) -> None:
    if error is not None:
        return
    if telemetry.metrics is not None and expired:
        telemetry.metrics.inc("arbiter_outcomes_total", float(len(expired)), result="expired")
    _log.info("route.reaped", count=len(expired))


OBSERVERS: dict[str, Observer] = {
    "routing.route": _routed,
    "routing.outcome": _recorded,
    "routing.reap": _reaped,
}

# ----------------------------------------------------------------------------- database

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
