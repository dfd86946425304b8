"""Every repository test runs on memory, SQLite and PostgreSQL (SPEC §2.2 parity)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import FakeClock, fresh_postgres_database, postgres_url, start_server

BACKENDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "api"]


class ThroughApi:
    """The fourth backend (SPEC §15): an app whose services are the remote ports, calling a
    live server on the SQLite store underneath; the store itself (``uow``, ``engine``) stays
    reachable for the test's own checks."""

    through_api = True  # tests.helpers.local_principals_only skips on it

    def __init__(self, app: Any, remote: Any) -> None:
        self._app = app
        self.agents, self.routing, self.security = remote.agents, remote.routing, remote.security

    def __getattr__(self, name: str) -> Any:
        return getattr(self._app, name)



@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=BACKENDS)
def backend_app(request: pytest.FixtureRequest, test_settings, clock):  # type: ignore[no-untyped-def]
    """An initialized app on a scratch store of each backend, with the fake clock."""
    from arbiter_cli.bootstrap import scratch_app

    if request.param == "api":
        yield from _through_api(test_settings, clock)
        return
    url = postgres_url() if request.param == "postgres" else None
    with scratch_app(test_settings, request.param, purpose="t", database_url=url) as (app, _):
        app.clock = clock
        yield app


def _through_api(test_settings: Any, clock: FakeClock) -> Iterator[Any]:
    import os

    from arbiter_cli.bootstrap import remote_app, scratch_app
    from arbiter_cli.config import load_settings
    from arbiter_cli.domain.principal import Principal

    with scratch_app(test_settings, "sqlite", purpose="t") as (app, where):
        app.clock = clock
        token = app.security.issue(Principal.local_admin(), role="admin", name="api backend",
                                   expires_in_s=None).token
        served = load_settings(environ={**os.environ, "ARBITER_DATABASE__URL":
                                        str(app.engine.url.render_as_string(False)),
                                        "ARBITER_SECURITY__RATE_LIMIT__RATE": "1000000",
                                        "ARBITER_SECURITY__RATE_LIMIT__BURST": "10000000"})
        for url in start_server(served):
            remote = remote_app(served, url, token, timeout_s=30, correlation_id="api-backend")
            try:
                yield ThroughApi(app, remote)
            finally:
                remote.close()


@pytest.fixture
def travel(backend_app, clock):  # type: ignore[no-untyped-def]
    """``travel(hours=3)``: the store's clock moves forward. The memory store's clock is the
    fake clock; a SQL store's is the database's, so what it stores is aged instead."""
    from tests.helpers import age_stored_times

    def move(**delta: float) -> None:
        if backend_app.engine is None:
            clock.advance(**delta)
        else:
            age_stored_times(backend_app.engine, **delta)

    return move


@pytest.fixture
def store_now(backend_app):  # type: ignore[no-untyped-def]
    """The store's own time (the database's clock on SQL)."""

    def now():  # type: ignore[no-untyped-def]
        with backend_app.uow() as uow:
            return uow.now()

    return now


@pytest.fixture
def agents(backend_app):  # type: ignore[no-untyped-def]
    return backend_app.agents


@pytest.fixture
def admin():  # type: ignore[no-untyped-def]
    from arbiter_cli.domain.principal import Principal

    return Principal.local_admin()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sql_url(request: pytest.FixtureRequest, tmp_path):  # type: ignore[no-untyped-def]
    """A new, empty database of each SQL backend: a SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'scratch.db'}"
    else:
        with fresh_postgres_database("sql") as url:
            yield url
