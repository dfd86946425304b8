"""A registry query runs its one statement outside a transaction (SPEC §13.1).

``AgentService.query`` is one read statement (``ranking.top``): a statement is its own
snapshot on both backends, so the unit of work opens no transaction around it
(``one_statement``). SQLite then runs no ``BEGIN``; psycopg2 is switched to autocommit for
it, so it sends neither its implicit ``BEGIN`` nor the ``ROLLBACK`` at the end: one round
trip instead of three. The connection goes back to the pool transactional again, so a unit of
work that follows on it is one transaction as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event

from arbiter_cli.domain.principal import Principal
from tests.helpers import postgres_url

ADMIN = Principal.local_admin()
QUERY = {"task_type": "code-editing", "languages": ["TypeScript"]}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def app(request: pytest.FixtureRequest, test_settings: Any) -> Iterator[Any]:
    from arbiter_cli.bootstrap import scratch_app

    url = postgres_url() if request.param == "postgres" else None
    with scratch_app(test_settings, request.param, purpose="t", database_url=url) as (app, _):
        app.agents.register(ADMIN, [{"id": f"a{i}", "name": "A", "model_family": "x",
                                     "task_types": ["code-editing"],
                                     "languages": ["TypeScript"]} for i in range(3)])
        yield app


def in_transaction(dbapi: Any) -> bool:
    """Whether the driver's connection has a transaction open."""
    if hasattr(dbapi, "in_transaction"):  # sqlite3
        return bool(dbapi.in_transaction)
    import psycopg2.extensions as ext

    return bool(dbapi.info.transaction_status != ext.TRANSACTION_STATUS_IDLE)


def test_a_query_is_one_statement_in_no_transaction(app: Any) -> None:
    seen: list[tuple[str, bool]] = []

    def note(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append((statement.split()[0], in_transaction(conn.connection.dbapi_connection)))

    event.listen(app.engine, "after_cursor_execute", note)
    found = app.agents.query(ADMIN, QUERY)
    assert [item["agent"]["id"] for item in found] == ["a0", "a1", "a2"]
    assert seen == [("SELECT", False)]


def test_the_connection_goes_back_transactional(app: Any) -> None:
    app.agents.query(ADMIN, QUERY)
    with app.engine.connect() as conn:  # the pool hands out the connection the query used
        dbapi = conn.connection.dbapi_connection
        if app.engine.dialect.name == "postgresql":
            assert dbapi.autocommit is False
        conn.exec_driver_sql("SELECT 1")
        assert in_transaction(dbapi)
    # a write after the query is still one transaction: all of it or nothing
    with pytest.raises(Exception, match="a0"):
        app.agents.register(ADMIN, [{"id": "b", "name": "B", "model_family": "x",
                                     "task_types": ["code-editing"]},
                                    {"id": "a0", "name": "A", "model_family": "x",
                                     "task_types": ["code-editing"]}])
    assert [a.id for a in app.agents.list(ADMIN).items] == ["a0", "a1", "a2"]
