"""Scratch databases for benchmarks and soak runs: never a live database or tenant.

The database work of ``bootstrap.scratch_app``, which wires the app on top: the PostgreSQL
server a URL names, ``CREATE DATABASE``/``DROP DATABASE`` of the scratch database, and the
``ANALYZE`` after a bulk load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from arbiter_cli.adapters.sql.engine import unavailable
from arbiter_cli.dburl import parse
from arbiter_cli.errors import ConfigInvalid, InvalidInput
from arbiter_cli.observability import logging as log

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Engine
    from sqlalchemy.exc import DBAPIError

BACKENDS = ("memory", "sqlite", "postgres")


def check_database_url(backend: str, database_url: str | None) -> None:
    """``--database-url`` names the server of ``--backend postgres`` only: with memory or
    sqlite (a temporary file) it would be silently ignored, so it is refused (exit 2)."""
    if database_url is not None and backend in ("memory", "sqlite"):
        raise InvalidInput(f"--database-url applies only to --backend postgres (the {backend} "
                           "backend runs on its own scratch store): drop it, or use --backend "
                           "postgres", field="database_url", rule="backend")


def server_of(url: str) -> URL:
    """The PostgreSQL server of ``url``: a refused URL is exit 3, another backend exit 2."""
    from sqlalchemy.engine import make_url

    parse(url)  # ConfigInvalid, the URL not echoed, before SQLAlchemy sees it
    server = make_url(url)
    if not server.drivername.startswith("postgresql"):
        raise InvalidInput("the postgres backend needs a PostgreSQL --database-url or "
                           "database.url", field="database_url", rule="postgresql")
    return server


def create_database(admin: Engine, name: str) -> None:
    from sqlalchemy import text

    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))


def refused_scratch(exc: DBAPIError) -> ConfigInvalid | None:
    """A role that may not create databases is a configuration problem (exit 3), with a fix."""
    if getattr(exc.orig, "pgcode", None) == "42501":  # insufficient_privilege
        return ConfigInvalid("the database user may not create the scratch database: give it "
                             "CREATEDB (ALTER ROLE ... CREATEDB) or use another --database-url")
    return None


def drop_database(admin: Engine, name: str) -> None:
    """Drop the scratch database; if the server is gone, say what is left behind."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    except DBAPIError as exc:
        log.get_logger().warning("scratch.not_dropped", database=name,
                                 error=(str(exc.orig).strip().splitlines() or [""])[0],
                                 hint=f'drop it later: DROP DATABASE "{name}"')


def refresh_statistics(engine: Engine | None) -> None:
    """ANALYZE a bulk-loaded PostgreSQL scratch database before timing it.

    A freshly loaded table has no planner statistics until autovacuum runs (and the reference
    server runs with autovacuum off): the planner then chose a nested loop that took 78 ms for
    the capability query instead of 1.4 ms with a hash join.
    """
    if engine is None or engine.dialect.name != "postgresql":
        return
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))
    except DBAPIError as exc:
        raise unavailable(engine, exc) from None
