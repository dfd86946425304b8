"""Deferred writes (``adapters/sql/deferred.py``): sent with the next statement, never after a
read that follows them, and a deferred write that changes no row is a ``Conflict``."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, select

from arbiter_cli.adapters.sql import tables as t
from arbiter_cli.adapters.sql.deferred import DeferringConnection, UpdateOf
from arbiter_cli.domain.principal import Principal
from arbiter_cli.errors import Conflict
from tests.helpers import fresh_postgres_database

pytestmark = pytest.mark.postgres
ag = t.agents.c
RENAME = UpdateOf(t.agents, ("id",), ("name",), ("uid",))


@pytest.fixture
def app(test_settings: Any) -> Any:
    from arbiter_cli.bootstrap import scratch_app

    with fresh_postgres_database("deferred") as url, \
            scratch_app(test_settings, "postgres", purpose="t", database_url=url) as (app, _):
        app.agents.register(Principal.local_admin(), [
            {"id": agent_id, "name": "A", "model_family": "x", "task_types": ["code-editing"],
             "capacity": 5} for agent_id in ("a1", "a2")])
        yield app


def test_a_read_after_a_deferred_write_sees_it_and_sends_it_once(app: Any) -> None:
    with app.engine.connect() as conn:
        deferring = DeferringConnection(conn)
        deferring.defer(RENAME, {"where_id": "a1", "name": "B"}, "gone")
        assert deferring.execute(select(ag.name).where(ag.id == "a1")).scalar_one() == "B"
        assert not deferring.pending
        assert deferring.flush() is None  # nothing left to send


def test_a_deferred_write_that_changed_no_row_is_a_conflict(app: Any) -> None:
    with app.engine.connect() as conn:
        deferring = DeferringConnection(conn)
        deferring.defer(RENAME, {"where_id": "nobody", "name": "B"},
                        "agent 'nobody' changed meanwhile; retry")
        with pytest.raises(Conflict, match="changed meanwhile"):
            deferring.flush()


def test_the_returned_rows_reach_on_row_and_main_comes_back(app: Any) -> None:
    seen: list[dict[str, Any]] = []
    with app.engine.connect() as conn:
        deferring = DeferringConnection(conn)
        deferring.defer(UpdateOf(t.agents, ("id",), ("name",), tuple(t.agents.c.keys())),
                        {"where_id": "a1", "name": "C"},
                        "gone", seen.append)
        row = deferring.flush(RENAME, {"where_id": "nobody", "name": "D"})
        assert row is None  # main changed no row: None, as ``.first()`` would say
        assert [(r["id"], r["name"]) for r in seen] == [("a1", "C")]


def test_writes_of_one_kind_keep_their_own_values(app: Any) -> None:
    with app.engine.connect() as conn:
        deferring = DeferringConnection(conn)
        deferring.defer(RENAME, {"where_id": "a1", "name": "E"}, "gone")
        deferring.defer(RENAME, {"where_id": "a2", "name": "F"}, "gone")
        names = deferring.execute(select(ag.id, ag.name).order_by(ag.id)).all()
        assert [tuple(row) for row in names] == [("a1", "E"), ("a2", "F")]


def test_a_shape_is_built_once(app: Any) -> None:
    """The same kinds in the same order send the very statement object again (SQLAlchemy then
    reuses its compiled form): only the values change."""
    sent: list[Any] = []
    event.listen(app.engine, "before_execute", lambda _c, element, *_a: sent.append(element))
    with app.engine.connect() as conn:
        deferring = DeferringConnection(conn)
        for name in ("G", "H"):
            deferring.defer(RENAME, {"where_id": "a1", "name": name}, "gone")
            deferring.defer(RENAME, {"where_id": "a2", "name": name}, "gone")
            deferring.flush(RENAME, {"where_id": "nobody", "name": name})
        assert sent[0] is sent[1]
        assert conn.execute(select(ag.name).where(ag.id == "a2")).scalar_one() == "H"
