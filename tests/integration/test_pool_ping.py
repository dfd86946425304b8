"""The PostgreSQL pool pings a connection only after it sat idle (``engine.ping_when_idle``).

- A connection used a moment ago is not pinged: no ``SELECT 1`` round trip per checkout.
- One idle for ``PING_IDLE_S`` is pinged, and a dead one is replaced before use, so even a
  caller without the resilience layer never sees it.
- One killed a moment after its last use (``pg_terminate_backend``) fails at its first
  statement; the resilience layer retries the call on a fresh connection: the next write of
  the same app commits (not journaled, not an error).
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine

from arbiter_cli.adapters.sql.engine import PING_IDLE_S, make_engine
from arbiter_cli.bootstrap import build, migrate
from arbiter_cli.domain.principal import Principal
from arbiter_cli.tools.setup import initialize
from tests.helpers import fresh_postgres_database

pytestmark = pytest.mark.postgres


@pytest.fixture
def db_url() -> Iterator[str]:
    with fresh_postgres_database("ping") as url:
        yield url


def pings(engine: Engine) -> list[int]:
    """A counter of the dialect's pings on ``engine`` (its first item)."""
    seen = [0]
    dialect: Any = engine.dialect
    real = dialect.do_ping

    def counting(dbapi_connection: Any) -> bool:
        seen[0] += 1
        return bool(real(dbapi_connection))

    dialect.do_ping = counting
    return seen


def terminate_all(url: str) -> int:
    """Terminate every arbiter backend connected to ``url``'s database; how many."""
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            return int(conn.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'arbiter' AND datname = current_database() "
                "AND pid <> pg_backend_pid()")).scalar_one())
    finally:
        admin.dispose()


def select_one(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT 1")).scalar_one())


def test_a_connection_used_a_moment_ago_is_not_pinged(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        seen = pings(engine)
        for _ in range(5):
            assert select_one(engine) == 1
        assert engine.pool.checkedin() == 1  # one connection, checked out five times
        assert seen[0] == 0
    finally:
        engine.dispose()


def test_an_idle_dead_connection_is_pinged_and_replaced_before_use(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        seen = pings(engine)
        assert select_one(engine) == 1
        assert terminate_all(db_url) == 1
        time.sleep(PING_IDLE_S + 0.2)
        assert select_one(engine) == 1  # no error: the ping found it dead, a new one answered
        assert seen[0] == 1
    finally:
        engine.dispose()


def test_a_connection_killed_right_after_use_is_retried_and_the_write_commits(
    db_url: str, test_settings: Any,
) -> None:
    migrate(test_settings, db_url, io.StringIO())
    app = build(test_settings, url=db_url, resilient=True)
    try:
        assert app.resilience is not None and app.engine is not None
        initialize(app.uow, lambda: None, app.clock)
        admin = Principal.local_admin()
        agent = {"id": "a1", "name": "A1", "model_family": "claude", "task_types": ["testing"]}
        app.agents.register(admin, [agent])
        assert app.writes[-1].state == "committed"
        assert app.engine.pool.checkedin() >= 1
        lost: list[bool] = []
        event.listen(app.engine, "handle_error", lambda ctx: lost.append(ctx.is_disconnect))
        assert terminate_all(db_url) >= 1  # the pooled connections die between two commands
        app.agents.register(admin, [{**agent, "id": "a2", "name": "A2"}])
        assert lost == [True]  # its first attempt met the dead connection ...
        assert app.writes[-1].state == "committed"  # ... the retry a new one: not journaled
        assert app.resilience.journal.pending() == 0
        assert app.resilience.outage is None
        assert app.resilience.breaker.snapshot().state == "closed"
        with create_engine(db_url).connect() as conn:  # straight from PostgreSQL
            ids = conn.execute(text("SELECT id FROM agents ORDER BY id")).scalars().all()
        assert ids == ["a1", "a2"]
    finally:
        app.close()
