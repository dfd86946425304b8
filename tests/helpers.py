"""Helpers for tests of every tier (importable as ``tests.helpers``)."""

from __future__ import annotations

import os
import secrets
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

PG_ENV = "ARBITER_TEST_DATABASE_URL"


def postgres_url() -> str:
    """The server for PostgreSQL tests, or a skip (a failure when CI requires PostgreSQL)."""
    url = os.environ.get(PG_ENV)
    if not url:
        reason = f"PostgreSQL tests need {PG_ENV} (e.g. postgresql+psycopg2://postgres@127.0.0.1/test)"
        if os.environ.get("ARBITER_TEST_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason + ", and ARBITER_TEST_REQUIRE_POSTGRES=1 forbids skipping")
        pytest.skip(reason)
    return url


@contextmanager
def fresh_postgres_database(purpose: str = "t") -> Iterator[str]:
    """A new, empty database on the test server; dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    server = make_url(postgres_url())
    name = f"arbiter_{purpose}_{secrets.token_hex(5)}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()




def cli_commands() -> dict[str, Any]:
    """Every leaf command of the CLI by its path (``"agents list"``), as Click objects.

    Walks with ``list_commands``/``get_command``, which load the root's lazy command modules.
    """
    import typer.main

    from arbiter_cli.cli.app import build_app

    found: dict[str, Any] = {}

    def walk(command: Any, path: tuple[str, ...], ctx: Any) -> None:
        if not hasattr(command, "list_commands"):
            found[" ".join(path)] = command
            return
        for name in command.list_commands(ctx):
            walk(command.get_command(ctx, name), (*path, name), ctx)

    root = typer.main.get_command(build_app())
    walk(root, (), root.make_context("arbiter", [], resilient_parsing=True))
    return found


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class CliResult:
    def __init__(self, exit_code: int, stdout: str, stderr: str) -> None:
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr

    def json(self) -> dict:  # type: ignore[type-arg]
        import json

        return json.loads(self.stdout)  # type: ignore[no-any-return]

    def error(self) -> dict:  # type: ignore[type-arg]
        import json

        return json.loads(self.stderr)["error"]  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"CliResult(exit={self.exit_code}, stdout={self.stdout!r}, stderr={self.stderr!r})"


def cli(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> CliResult:
    """Run ``main()`` — the real entry point — with captured stdin/stdout/stderr."""
    from typer.testing import CliRunner

    from arbiter_cli.cli.app import main

    runner = CliRunner()
    with runner.isolation(input=input, env=env) as (out, err, _mixed):
        code = main(list(args))
        sys.stdout.flush()
        sys.stderr.flush()
        stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    return CliResult(code, stdout, stderr)


def age_stored_times(engine, **delta: float) -> None:  # type: ignore[no-untyped-def]
    """Move every stored time stamp ``delta`` into the past.

    SQL stores keep time on the database's clock (SPEC §4.1), which a test cannot move: ageing
    what is stored is the same as that clock moving forward. Audit stamps are left alone
    (they are sealed into the chain, and they only record when things happened).
    """
    from sqlalchemy import Interval, cast, func, literal, update

    from arbiter_cli.adapters.sql import tables as t
    from arbiter_cli.adapters.sql.types import UtcDateTime

    seconds = timedelta(**delta).total_seconds()
    postgres = engine.dialect.name == "postgresql"
    with engine.begin() as conn:
        for table in t.metadata.sorted_tables:
            if table is t.audit_events:
                continue
            values = {}
            for column in table.c:
                if isinstance(column.type, UtcDateTime):
                    values[column.name] = (
                        column - cast(literal(f"{seconds} seconds"), Interval) if postgres else
                        func.strftime("%Y-%m-%d %H:%M:%f", column, f"-{seconds} seconds"))
            if table is t.rate_buckets:
                values["updated_at"] = table.c.updated_at - seconds
            if values:
                conn.execute(update(table).values(**values))


class Ticks:
    """A float clock (seconds) the test moves by hand."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def start_server(settings: Any) -> Iterator[str]:
    """uvicorn serving create_api on 127.0.0.1:<free port> in a thread, stopped afterwards."""
    from arbiter_cli.api.server import create_api
    from arbiter_cli.bootstrap import sql_engine

    engine = sql_engine(settings)
    try:
        yield from serve_app(create_api(settings, engine))
    finally:
        engine.dispose()


def serve_app(app: Any) -> Iterator[str]:
    """uvicorn serving the ASGI ``app`` on 127.0.0.1:<free port> in a thread."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                            lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def local_principals_only(app: Any) -> None:
    """Skip on the API backend a test that acts as principals of other tenants or roles, or
    reads internal fields (uids): through the API the token is the caller, and those cases are
    the isolation matrix's, run through the API by the remote CLI
    (tests/integration/test_isolation_matrix.py)."""
    if getattr(app, "through_api", False):
        pytest.skip("through the API the token is the caller: see the isolation matrix's "
                    "api backend")


def deadlocks(conn: Any) -> int:
    """Deadlocks PostgreSQL detected in ``conn``'s database so far (``pg_stat_database``)."""
    from sqlalchemy import text

    return int(conn.execute(text("SELECT deadlocks FROM pg_stat_database "
                                 "WHERE datname = current_database()")).scalar_one())


def waiting_for_chain_lock(app: Any) -> bool:
    """Whether a session of ``app``'s database waits for a tenant's audit chain lock."""
    from sqlalchemy import text

    from arbiter_cli.adapters.sql.security import CHAIN_LOCK_CLASS

    with app.engine.connect() as conn:
        return bool(conn.execute(text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND classid = :cls AND database = (SELECT oid FROM pg_database "
            "WHERE datname = current_database())"), {"cls": CHAIN_LOCK_CLASS}).scalar_one())
