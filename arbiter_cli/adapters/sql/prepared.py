"""Server-side prepared statements on PostgreSQL (SPEC §13.1).

psycopg2 sends every statement as text, so PostgreSQL parses and plans it on every call. On
the decision path that was half of the server's work: of 4.5 ms of statement time per decision,
2.4 ms was planning (the routing pool alone 1.4 ms, ``pg_stat_statements`` with
``track_planning``). A prepared statement is parsed once per connection, and after a few
executions PostgreSQL keeps a generic plan when it costs no more than the custom ones.

:func:`prepare_repeated` hooks SQLAlchemy's ``do_execute``: a compiled statement executed
``threshold`` times on one connection is prepared there (``PREPARE arbiter_<hash> (types) AS
…``) and from then on sent as ``EXECUTE arbiter_<hash>(%(a)s, …)`` with the same parameters,
rendered by psycopg2 as before. What a caller sees does not change: the same rows, row counts
and errors; statement events (``before_cursor_execute``: the bench's counter, telemetry) still
see the statement itself. A one-off command never reaches the threshold, so it pays no extra
round trip; a server or worker prepares each of its hot statements once per connection.

Parameter types are declared from SQLAlchemy's types (integers as ``bigint``, doubles,
booleans, time stamps, JSON), strings as ``text``, anything else left for PostgreSQL to infer
as it would for the literal. A statement PostgreSQL cannot prepare is never retried: the first
``PREPARE`` of each statement runs inside a savepoint, so its failure leaves the caller's
transaction as it was, and that statement is sent as text from then on (a ``PREPARE`` cut while
it waited, by ``statement_timeout`` or a cancel, is the statement's error instead, once, and is
tried again later). Nothing is prepared, deallocated or counted in a transaction already
aborted: the statement goes as text, and fails as it would have.

State per connection lives in the pool record's ``info``, which SQLAlchemy clears when the
connection is replaced (a reconnect after an outage starts with nothing prepared). At most
``capacity`` statements stay prepared per connection (the oldest is deallocated, and forgotten
only once it is). A schema change under a running server can make a prepared plan's result type
stale (PostgreSQL: "cached plan must not change result type", SQLSTATE 0A000 in any
``lc_messages``): that error, or any other 0A000, marks the connection's statements to be
deallocated before its next statement, and the call fails once, like any statement failing
during a migration.

Off unless ``database.prepare_threshold`` is above 0 (the default is 0). Measured on 2 cores
(docs/performance.md, third pass): one process spends 30 % less PostgreSQL CPU per decision,
but 4 processes routing for one tenant lost 8–11 % of their throughput, with more lost
audit-chain races: some statement's generic plan is slower under contention than its custom
plans, and until that statement is found the default stays off. Keep it 0 behind a
transaction-mode connection pooler (PgBouncer), which hands each transaction a different
server session, where a statement prepared by SQL does not exist.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.types import JSON, Boolean, DateTime, Float, Integer, Numeric, String

#: ``prepare_repeated``'s threshold when none is given (``database.prepare_threshold`` is 0,
#: off, unless set).
DEFAULT_THRESHOLD = 5
#: Statements kept prepared per connection; the oldest is deallocated beyond it.
CAPACITY = 128
_STATE = "arbiter_prepared"
_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%%")
_VERBS = ("SELECT", "WITH", "INSERT", "UPDATE", "DELETE")
_STALE_PLAN = "cached plan must not change result type"
#: Its SQLSTATE (feature_not_supported): the message is in the server's ``lc_messages``.
_STALE_PLAN_STATE = "0A000"
#: SQLSTATE classes of a PREPARE cut rather than refused: transaction rollback (deadlock),
#: insufficient resources, object not in prerequisite state (lock not available), operator
#: intervention (statement timeout, cancel).
_CUT = ("40", "53", "55", "57")


@dataclass(frozen=True)
class Form:
    """A statement's prepared form: its name, its ``PREPARE`` and its ``EXECUTE``."""

    name: str
    prepare: str
    execute: str


class _Connection:
    """What one database session has prepared (by statement, oldest first), and how often
    it ran the statements it has not prepared."""

    def __init__(self) -> None:
        self.prepared: OrderedDict[str, Form] = OrderedDict()
        self.seen: dict[str, int] = {}
        self.reset = False


def declared_type(bind: Any, dialect: Any) -> str:
    """The ``PREPARE`` type of a bound parameter: the SQL type a literal of its value had."""
    kind = bind.type
    if isinstance(kind, String):
        return "text"
    if isinstance(kind, Boolean):
        return "boolean"
    if isinstance(kind, Integer):
        return "bigint"
    if isinstance(kind, Float):
        return "double precision"
    if isinstance(kind, Numeric):
        return "numeric"
    impl = kind.dialect_impl(dialect)
    impl = getattr(impl, "impl", impl)  # a TypeDecorator: the type it stores as
    if isinstance(impl, DateTime):
        return "timestamptz" if impl.timezone else "timestamp"
    if isinstance(impl, JSON):
        return "jsonb" if type(impl).__name__ == "JSONB" else "json"
    if isinstance(impl, String):
        return "text"
    return "unknown"


def form_of(statement: str, compiled: Any, dialect: Any) -> Form | None:
    """The prepared form of ``statement`` (psycopg2's ``pyformat`` SQL of ``compiled``), or
    None when it has none: not a query or DML, or a parameter not bound by name (an expanded
    ``IN`` list renders a different statement for each length)."""
    if not statement.lstrip()[:6].upper().startswith(_VERBS):
        return None
    binds = {name: bind for bind, name in compiled.bind_names.items()}
    order: list[str] = []

    def positional(match: re.Match[str]) -> str:
        if match.group(0) == "%%":
            return "%"
        if match.group(1) not in order:
            order.append(match.group(1))
        return f"${order.index(match.group(1)) + 1}"

    body = _PLACEHOLDER.sub(positional, statement)
    if any(name not in binds or binds[name].expanding for name in order):
        return None
    name = "arbiter_" + hashlib.sha1(statement.encode()).hexdigest()[:20]
    types = ", ".join(declared_type(binds[n], dialect) for n in order)
    return Form(name=name,
                prepare=f"PREPARE {name} ({types}) AS {body}" if order
                else f"PREPARE {name} AS {body}",
                execute=f"EXECUTE {name}({', '.join(f'%({n})s' for n in order)})" if order
                else f"EXECUTE {name}")


def prepare_repeated(engine: Engine, threshold: int = DEFAULT_THRESHOLD,
                     capacity: int = CAPACITY) -> None:
    """Prepare, on each PostgreSQL connection of ``engine``, every statement it ran
    ``threshold`` times (see the module); nothing when ``threshold`` is 0."""
    if threshold <= 0 or engine.dialect.name != "postgresql":
        return
    dialect = engine.dialect
    driver_error = dialect.loaded_dbapi.Error
    in_error = dialect.loaded_dbapi.extensions.TRANSACTION_STATUS_INERROR
    forms: dict[str, Form | None] = {}  # by statement, for the process; None: sent as text
    proven: set[str] = set()  # prepared without error once: no savepoint needed again

    @event.listens_for(engine, "do_execute")
    def _execute(cursor: Any, statement: str, parameters: Any, context: Any) -> bool | None:
        if (context.compiled is None or cursor.connection.autocommit or cursor.name
                or cursor.connection.info.transaction_status == in_error):
            # Driver SQL; outside a transaction; a server-side (named) cursor; an aborted
            # transaction (as text, to fail as it would have).
            return None
        state = context.root_connection.info.get(_STATE)
        if state is None:
            state = context.root_connection.info[_STATE] = _Connection()
        if state.reset:  # a stale plan was reported on this session: start afresh
            cursor.execute("DEALLOCATE ALL")
            state.prepared.clear()
            state.reset = False
        form = state.prepared.get(statement)
        if form is not None:
            state.prepared.move_to_end(statement)
        else:
            seen = state.seen.get(statement, 0) + 1
            if seen < threshold:
                if len(state.seen) >= capacity * 8:
                    state.seen.clear()
                state.seen[statement] = seen
                return None
            if statement not in forms:
                if len(forms) >= capacity * 8:
                    forms.clear()
                    proven.clear()
                forms[statement] = form_of(statement, context.compiled, dialect)
            form = forms[statement]
            if form is None:
                return None
            if len(state.prepared) >= capacity:  # forgotten once deallocated, not before
                evicted, oldest = next(iter(state.prepared.items()))
                cursor.execute(f"DEALLOCATE {oldest.name}")
                del state.prepared[evicted]
            if statement in proven:
                cursor.execute(form.prepare)
            elif _prepare_first(cursor, form, driver_error, dialect):
                proven.add(statement)
            else:
                forms[statement] = None
                return None
            state.prepared[statement] = form
            state.seen.pop(statement, None)
        cursor.execute(form.execute, parameters)
        return True

    @event.listens_for(engine, "handle_error")
    def _stale(context: Any) -> None:
        error = context.original_exception
        if context.connection is None or not (
                getattr(error, "pgcode", None) == _STALE_PLAN_STATE or _STALE_PLAN in str(error)):
            return
        try:
            state = context.connection.info.get(_STATE)
        except Exception:  # noqa: BLE001 - an invalidated connection has no info to read
            return
        if state is not None:
            state.reset = True


def _prepare_first(cursor: Any, form: Form, driver_error: type[Exception], dialect: Any
                   ) -> bool:
    """The first ``PREPARE`` of a statement in this process, in a savepoint: False, and the
    transaction as it was, when PostgreSQL cannot prepare it. A lost connection raises, as
    the statement itself would have; so does a PREPARE cut while it waited (a lock held by a
    migration until ``statement_timeout``, a cancel, a deadlock): the statement would have
    waited for the same locks, and PostgreSQL may well prepare it next time."""
    try:
        cursor.execute(f"SAVEPOINT arbiter_prepare; {form.prepare}; "
                       "RELEASE SAVEPOINT arbiter_prepare")
    except driver_error as exc:
        if dialect.is_disconnect(exc, cursor.connection, cursor):
            raise
        cursor.execute("ROLLBACK TO SAVEPOINT arbiter_prepare; "
                       "RELEASE SAVEPOINT arbiter_prepare")
        if str(getattr(exc, "pgcode", None) or "")[:2] in _CUT:
            raise
        return False
    return True
