"""Scratch stores for benchmarks and soak runs: never a live database or tenant.

- ``memory``: a fresh in-memory store;
- ``sqlite``: a temporary file, migrated;
- ``postgres``: a new database ``<db>_<purpose>_<timestamp>`` on the server that the given URL
  names, migrated, and dropped afterwards.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from arbiter_cli.bootstrap import App, build, build_memory, sql_engine, utc_now
from arbiter_cli.config import Settings
from arbiter_cli.errors import ConfigInvalid, InvalidInput

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Engine
    from sqlalchemy.exc import DBAPIError

BACKENDS = ("memory", "sqlite", "postgres")


@contextmanager
def scratch_app(
    settings: Settings, backend: str, *, purpose: str, database_url: str | None = None,
    keep: bool = False,
) -> Iterator[tuple[App, str]]:
    """Yield an initialized app on a scratch store and a description of where it lives."""
    if backend not in BACKENDS:
        raise InvalidInput(f"backend: must be one of {', '.join(BACKENDS)}", field="backend",
                           rule="allowed")
    if backend == "memory":
        app = build_memory(settings)
        _create_default_tenant(app)
        yield app, "memory"
        return
    if backend == "sqlite":
        with _sqlite(settings, purpose, keep) as (app, where):
            yield app, where
        return
    with _postgres(settings, purpose, database_url, keep) as (app, where):
        yield app, where


def _create_default_tenant(app: App) -> None:
    from arbiter_cli.tools.setup import initialize

    initialize(app.uow, lambda: None, utc_now)


@contextmanager
def _sqlite(settings: Settings, purpose: str, keep: bool) -> Iterator[tuple[App, str]]:
    folder = Path(tempfile.mkdtemp(prefix=f"arbiter-{purpose}-"))
    url = f"sqlite:///{folder / 'scratch.db'}"
    try:
        _migrate(settings, url)
        app = build(settings, url=url)
        try:
            _create_default_tenant(app)
            yield app, str(folder / "scratch.db")
        finally:
            app.close()
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def _postgres(
    settings: Settings, purpose: str, database_url: str | None, keep: bool
) -> Iterator[tuple[App, str]]:
    from sqlalchemy.exc import DBAPIError

    from arbiter_cli.adapters.sql.engine import unavailable
    from arbiter_cli.dburl import render

    server = _server(database_url or settings.database_url)
    stamp = f"{time.strftime('%Y%m%d%H%M%S')}_{secrets.token_hex(3)}"
    name = f"{server.database or 'arbiter'}_{purpose}_{stamp}"
    admin = sql_engine(settings, render(server))
    admin = admin.execution_options(isolation_level="AUTOCOMMIT")
    try:
        _create_database(admin, name)
    except DBAPIError as exc:
        admin.engine.dispose()
        raise _refused_scratch(exc) or unavailable(admin.engine, exc) from None
    url = render(server.set(database=name))
    try:
        _migrate(settings, url)
        app = build(settings, url=url)
        try:
            _create_default_tenant(app)
            yield app, f"{server.host}:{server.port or 5432}/{name}"
        finally:
            app.close()
    finally:
        if not keep:
            _drop_database(admin, name)
        admin.engine.dispose()


def _server(url: str) -> URL:
    """The PostgreSQL server of ``url``: a refused URL is exit 3, another backend exit 2."""
    from sqlalchemy.engine import make_url

    from arbiter_cli.dburl import parse

    parse(url)  # ConfigInvalid, the URL not echoed, before SQLAlchemy sees it
    server = make_url(url)
    if not server.drivername.startswith("postgresql"):
        raise InvalidInput("the postgres backend needs a PostgreSQL --database-url or "
                           "database.url", field="database_url", rule="postgresql")
    return server


def _create_database(admin: Engine, name: str) -> None:
    from sqlalchemy import text

    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))


def _refused_scratch(exc: DBAPIError) -> ConfigInvalid | None:
    """A role that may not create databases is a configuration problem (exit 3), with a fix."""
    if getattr(exc.orig, "pgcode", None) == "42501":  # insufficient_privilege
        return ConfigInvalid("the database user may not create the scratch database: give it "
                             "CREATEDB (ALTER ROLE ... CREATEDB) or use another --database-url")
    return None


def _drop_database(admin: Engine, name: str) -> None:
    """Drop the scratch database; if the server is gone, say what is left behind."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    except DBAPIError as exc:
        from arbiter_cli.observability import logging as log

        log.get_logger().warning("scratch.not_dropped", database=name,
                                 error=(str(exc.orig).strip().splitlines() or [""])[0],
                                 hint=f'drop it later: DROP DATABASE "{name}"')


def _migrate(settings: Settings, url: str) -> None:
    import io

    from arbiter_cli.adapters import migrations

    engine = sql_engine(settings, url, create=True)
    try:
        migrations.upgrade(engine, "head", io.StringIO())
    finally:
        engine.dispose()


def refresh_statistics(app: App) -> None:
    """ANALYZE a bulk-loaded PostgreSQL scratch database before timing it.

    A freshly loaded table has no planner statistics until autovacuum runs (and the reference
    server runs with autovacuum off): the planner then chose a nested loop that took 78 ms for
    the capability query instead of 1.4 ms with a hash join.
    """
    if app.engine is None or app.engine.dialect.name != "postgresql":
        return
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from arbiter_cli.adapters.sql.engine import unavailable

    try:
        with app.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))
    except DBAPIError as exc:
        raise unavailable(app.engine, exc) from None
