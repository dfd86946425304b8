"""Every repository test runs on memory, SQLite and PostgreSQL (SPEC §2.2 parity)."""

from __future__ import annotations

import pytest

from tests.helpers import FakeClock, fresh_postgres_database, postgres_url

BACKENDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=BACKENDS)
def backend_app(request: pytest.FixtureRequest, test_settings, clock):  # type: ignore[no-untyped-def]
    """An initialized app on a scratch store of each backend, with the fake clock."""
    from arbiter_cli.bootstrap import scratch_app

    url = postgres_url() if request.param == "postgres" else None
    with scratch_app(test_settings, request.param, purpose="t", database_url=url) as (app, _):
        app.clock = clock
        yield app


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
