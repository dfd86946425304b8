"""Deferred writes (``adapters/sql/deferred.py``): sent with the next statement, never after a
read that follows them, and a deferred write that changes no row is a ``Conflict``."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, update

from arbiter_cli.adapters.sql import tables as t
from arbiter_cli.adapters.sql.deferred import DeferringConnection, bound
from arbiter_cli.domain.principal import Principal
from arbiter_cli.errors import Conflict
from tests.helpers import fresh_postgres_database

pytestmark = pytest.mark.postgres
ag = t.agents.c


@pytest.fixture
def app(test_settings: Any) -> Any:
    from arbiter_cli.bootstrap import scratch_app

    with fresh_postgres_database("deferred") as url, \
            scratch_app(test_settings, "postgres", purpose="t", database_url=url) as (app, _):
        app.agents.register(Principal.local_admin(), [
            {"id": "a1", "name": "A", "model_family": "x", "task_types": ["code-editing"],
             "capacity": 5}])
        yield app


def test_a_read_after_a_deferred_write_sees_it_and_sends_it_once(app: Any) -> None:
    with app.engine.connect() as conn:
        deferring = DeferringConnection(conn)
        deferring.defer(update(t.agents).where(ag.id == "a1")
                        .values(**bound(t.agents, {"name": "B"})).returning(ag.uid), "gone")
        assert deferring.execute(select(ag.name).where(ag.id == "a1")).scalar_one() == "B"
        assert not deferring.pending
        assert deferring.flush() is None  # nothing left to send


def test_a_deferred_write_that_changed_no_row_is_a_conflict(app: Any) -> None:
    with app.engine.connect() as conn:
        deferring = DeferringConnection(conn)
        deferring.defer(update(t.agents).where(ag.id == "nobody")
                        .values(**bound(t.agents, {"name": "B"})).returning(ag.uid),
                        "agent 'nobody' changed meanwhile; retry")
        with pytest.raises(Conflict, match="changed meanwhile"):
            deferring.flush()


def test_the_returned_rows_reach_on_row_and_main_comes_back(app: Any) -> None:
    seen: list[dict[str, Any]] = []
    with app.engine.connect() as conn:
        deferring = DeferringConnection(conn)
        deferring.defer(update(t.agents).where(ag.id == "a1")
                        .values(**bound(t.agents, {"name": "C"})).returning(*t.agents.c),
                        "gone", seen.append)
        row = deferring.flush(update(t.agents).where(ag.id == "nobody")
                              .values(**bound(t.agents, {"name": "D"})).returning(ag.uid))
        assert row is None  # main changed no row: None, as ``.first()`` would say
        assert [(r["id"], r["name"]) for r in seen] == [("a1", "C")]
