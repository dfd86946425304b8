"""Engines for both backends (SPEC §6), and the cheap schema-revision check.

SQLite: WAL, ``synchronous=FULL``, ``busy_timeout`` and foreign keys on every connection.
pysqlite's own transaction handling is switched off so that a write unit of work can start with
``BEGIN IMMEDIATE`` (take the write lock first: two read-modify-write transactions never
interleave), while reads start with a plain ``BEGIN``, and a read of one statement
(``ONE_STATEMENT_OPTION``) with none: the statement is its own snapshot.

PostgreSQL: psycopg2 with a pool, ``application_name=arbiter``, ``connect_timeout`` and
``statement_timeout``; with ``database.prepare_threshold`` above 0 (off by default), a
statement run that many times on a connection is prepared there (``prepared.py``). A pooled
connection is pinged (``SELECT 1``) before use only when it sat idle for ``PING_IDLE_S`` or
more (:func:`ping_when_idle`), not at every checkout. A read of one statement runs in
autocommit (no ``BEGIN``, no ``ROLLBACK`` round trip); the pool's checkin ends it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, InvalidatePoolError

from arbiter_cli.adapters.files import create_private_file, private_dir
from arbiter_cli.adapters.sql.faults import Fault, classify
from arbiter_cli.adapters.sql.schema_version import HEAD, KNOWN
from arbiter_cli.dburl import mask_url
from arbiter_cli.dburl import parse as parse_url
from arbiter_cli.errors import ConfigInvalid, SchemaOutdated, StorageUnavailable

if TYPE_CHECKING:
    from arbiter_cli.config import Settings

WRITE_OPTION = "arbiter_write"
#: A read unit of work of one statement: no transaction around it (``SqlUnitOfWork``).
ONE_STATEMENT_OPTION = "arbiter_one_statement"
#: A pooled PostgreSQL connection idle this long or longer is pinged before it is used.
PING_IDLE_S = 1.0
_IDLE_SINCE = "arbiter_idle_since"


def backend_of(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgres"


def sqlite_path(url: str) -> Path | None:
    database = make_url(url).database
    return None if not database or database == ":memory:" else Path(database)


def make_engine(
    url: str, *, pool_size: int = 5, max_overflow: int = 5, connect_timeout_s: float = 5,
    statement_timeout_s: float = 30, busy_timeout_s: float = 30, create: bool = False,
    prepare_threshold: int = 0,
) -> Engine:
    """An engine for ``url``; with ``create`` a missing SQLite file is made, 0600 in 0700 folders.

    Every URL (``database.url`` or a ``--database-url`` flag) is checked first: one that does
    not parse, or whose password cannot be isolated, is ``ConfigInvalid`` (exit 3), unechoed.
    """
    parse_url(url)
    if backend_of(url) == "sqlite":
        return _sqlite_engine(url, busy_timeout_s, create)
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        connect_args={
            "connect_timeout": max(1, int(connect_timeout_s)),
            "application_name": "arbiter",
            "options": f"-c statement_timeout={int(statement_timeout_s * 1000)}",
        },
    )
    ping_when_idle(engine)

    @event.listens_for(engine.pool, "checkin")
    def _transactional(dbapi_connection: Any, _record: Any) -> None:
        # a one-statement read switched the connection to autocommit (``SqlUnitOfWork``)
        if dbapi_connection is not None and dbapi_connection.autocommit:
            dbapi_connection.autocommit = False

    if prepare_threshold:
        from arbiter_cli.adapters.sql.prepared import prepare_repeated  # deferred: start-up

        prepare_repeated(engine, prepare_threshold)
    return engine


def ping_when_idle(engine: Engine, idle_s: float = PING_IDLE_S,
                   clock: Any = time.monotonic) -> None:
    """Ping a pooled connection at checkout only if it sat idle ``idle_s`` or longer.

    SQLAlchemy's ``pool_pre_ping`` costs a round trip at *every* checkout (four per routing
    decision). A connection handed back less than ``idle_s`` ago was talking to the server
    then; one the server dropped since (a restart, ``pg_terminate_backend``) fails at its
    first statement instead, and that is recovered like a ping failure would be: SQLAlchemy
    sees a disconnect, invalidates the pool (every connection older than the failure is
    replaced at its next checkout), and the resilience layer retries the call on a fresh
    connection (``resilience/retry.py``; nothing of it ran, so nothing is ambiguous). An idle
    connection, the usual casualty of a restart or an idle-session timeout, is pinged as
    before; a failed ping invalidates the pool exactly as ``pool_pre_ping`` does. So is one
    checked out after the command's budget ran out (:func:`_budget_spent`).
    """
    dialect = engine.dialect

    @event.listens_for(engine.pool, "checkin")
    def _idle_since(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info[_IDLE_SINCE] = clock()

    @event.listens_for(engine.pool, "checkout")
    def _ping(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop(_IDLE_SINCE, None)
        if since is None or (clock() - since < idle_s and not _budget_spent()):
            return  # a new connection, or one in use a moment ago
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi_connection, None):
                raise InvalidatePoolError(f"ping failed: {exc}") from exc
            raise


def _budget_spent() -> bool:
    """Whether the command's database budget (``deadline.py``) ran out before this checkout.

    Then the connection is pinged as ``pool_pre_ping`` did: the deadline cuts the ping, the
    pool is invalidated and the reconnect is cut too, so the call fails as an unreachable
    primary (SPEC §7.1: journaled, or served from the snapshot), exactly as before, instead of
    a statement cut on a live connection (``PrimarySlow``)."""
    # deferred: the deadline module is loaded by the resilience layer, not by every command
    from arbiter_cli.adapters.sql.deadline import current

    budget = current()
    return budget is not None and budget.expired()


def engine_for(settings: Settings, url: str | None = None, *, create: bool = False) -> Engine:
    """The engine on ``url`` (default ``database.url``) with the pool and timeouts of the
    settings (``bootstrap.sql_engine`` adds the command's telemetry to it)."""
    return make_engine(
        url or settings.database_url,
        pool_size=settings.database.pool_size,
        max_overflow=settings.database.max_overflow,
        connect_timeout_s=settings.database.connect_timeout,
        statement_timeout_s=settings.database.statement_timeout,
        busy_timeout_s=settings.database.busy_timeout,
        create=create,
        prepare_threshold=settings.database.prepare_threshold,
    )


def _sqlite_engine(url: str, busy_timeout_s: float, create: bool) -> Engine:
    path = sqlite_path(url)
    if path is not None:
        if create:
            _create_private(path)
        elif not path.exists():
            raise StorageUnavailable(f"no database at {path}: run `arbiter init`")
    engine = create_engine(url, connect_args={"timeout": busy_timeout_s})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        if options.get(ONE_STATEMENT_OPTION, False):
            return  # one read statement: SQLite runs it in a snapshot of its own
        conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get(WRITE_OPTION, False) else "BEGIN")

    return engine


def _create_private(path: Path) -> None:
    """The database file and the folders arbiter creates for it are private (SPEC §4.1).

    SQLite gives its ``-wal`` and ``-shm`` files the mode of the database file, so creating
    the (empty, hence valid) database file ourselves with 0600 covers all three.
    """
    try:
        private_dir(path.parent)
        create_private_file(path)
    except OSError as exc:
        raise StorageUnavailable(f"cannot create {exc.filename or path}: {exc.strerror}") from None


def check_revision(engine: Engine) -> str:
    """Read ``alembic_version`` and compare it with the head this package knows.

    Raises ``SchemaOutdated`` (exit 10) when the schema is missing, behind or ahead. No alembic
    import: this runs before every data command.
    """
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT version_num FROM alembic_version")).fetchall()
    except DBAPIError as exc:
        if _missing_table(exc):
            raise SchemaOutdated(
                f"database {describe(engine)} has no arbiter schema: run `arbiter init` "
                "or `arbiter db upgrade`"
            ) from None
        raise unavailable(engine, exc) from None
    current: str | None = str(rows[0][0]) if rows else None
    if current == HEAD:
        return current
    if current is None or current in KNOWN:
        raise SchemaOutdated(
            f"database schema is at {current or 'base'}, this arbiter needs {HEAD}: "
            "run `arbiter db upgrade`"
        )
    raise SchemaOutdated(
        f"database schema {current} is newer than this arbiter knows ({HEAD}): upgrade arbiter"
    )


def _missing_table(exc: DBAPIError) -> bool:
    message = str(exc.orig).lower()
    return "no such table" in message or getattr(exc.orig, "pgcode", None) == "42P01"


def unavailable(engine: Engine, exc: DBAPIError) -> ConfigInvalid | StorageUnavailable:
    """A one-line, password-free description of a database failure.

    ``ConfigInvalid`` (exit 3) when the configuration is at fault (SPEC §7.1: a wrong password,
    an unknown database or user, a host name that does not resolve, an option libpq refuses):
    it is not an outage, so nothing retries it, counts it or journals around it.
    ``StorageUnavailable`` (exit 10) otherwise.
    """
    text = str(exc.orig).strip()
    first_line = text.splitlines()[0] if text else type(exc).__name__
    if configuration_fault(exc.orig):
        return ConfigInvalid(f"database {describe(engine)} refused the configuration: "
                             f"{' '.join(first_line.split())} (check database.url, or "
                             "--database-url, and its password)")
    return StorageUnavailable(f"database {describe(engine)} unavailable: {first_line}",
                              driver=exc.orig)


def configuration_fault(err: BaseException | None) -> bool:
    """Whether a driver error is the configuration's fault rather than an outage (§7.1).

    One rule for every path: ``adapters/sql/faults.py`` classifies (SQLSTATE class 28 and 3D000,
    or libpq's connect-time message when there is no SQLSTATE yet).
    """
    if err is None:
        return False

    return classify(err) is Fault.CONFIG


def describe(engine: Engine) -> str:
    """The engine's URL for a message: no password, neither in the user info nor the query."""
    return mask_url(engine.url.render_as_string(hide_password=True))
