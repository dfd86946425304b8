"""A journaled decision replayed (``apply_decision``) takes its agent's lock and with it the
tenant's audit chain lock (``chain_lock``), then inserts its decision. A live route for the
same task id on another agent may meanwhile have claimed its agent and inserted its open
decision, and wait for the chain lock: the replay's insert then waits for the route's open-task
key (``uq_decisions_open_task``), which the route holds while it waits for the chain lock the
replay holds. That wait must never become a deadlock.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import pytest
from sqlalchemy import event, text

from arbiter_cli.adapters.sql.security import CHAIN_LOCK_CLASS
from arbiter_cli.domain.principal import Principal
from arbiter_cli.ids import uuid7
from tests.helpers import deadlocks, fresh_postgres_database, waiting_for_chain_lock


@pytest.mark.postgres
def test_a_replayed_decision_and_a_live_route_of_one_task_never_deadlock(test_settings: Any
                                                                         ) -> None:
    from arbiter_cli.bootstrap import scratch_app
    from arbiter_cli.errors import ArbiterError

    with fresh_postgres_database("chainreplay") as url, \
            scratch_app(test_settings, "postgres", purpose="t", database_url=url) as (app, _):
        admin = Principal.local_admin()
        app.agents.register(admin, [
            {"id": "a1", "name": "A", "model_family": "x", "task_types": ["code-editing"],
             "capacity": 5},
            {"id": "a2", "name": "B", "model_family": "x", "task_types": ["code-review"],
             "capacity": 5}])
        # The decision a cut-off host made for task T on a1, journaled: its replay below.
        planned = app.routing.route(admin, {"task_type": "code-editing", "task_id": "T"},
                                    dry_run=True).decision
        journaled = dataclasses.replace(planned, decision_id=uuid7())
        assert journaled.agent_id == "a1"
        with app.engine.connect() as conn:
            before = deadlocks(conn)

        done: dict[str, Any] = {}
        replaying: list[threading.Thread] = []

        def hold_the_insert(_conn, _cursor, statement, _params, _context, _many):  # type: ignore[no-untyped-def]
            # The replay holds a1 and the chain lock: its decision's insert waits until the
            # live route has claimed a2, inserted its decision and waits for the chain lock.
            if (threading.current_thread() in replaying
                    and statement.lstrip().startswith("INSERT INTO decisions")):
                deadline = time.monotonic() + 10
                while not waiting_for_chain_lock(app) and time.monotonic() < deadline:
                    time.sleep(0.02)

        def replay() -> None:
            try:
                done["replay"] = app.routing.apply_decision(admin, journaled)
            except ArbiterError as exc:
                done["replay"] = exc
            except BaseException as exc:  # noqa: BLE001 - reported by the assertions below
                done["replay_error"] = exc

        def live() -> None:
            try:
                done["live"] = app.routing.route(admin, {"task_type": "code-review", "task_id": "T"})
            except ArbiterError as exc:
                done["live"] = exc
            except BaseException as exc:  # noqa: BLE001 - reported by the assertions below
                done["live_error"] = exc

        event.listen(app.engine, "before_cursor_execute", hold_the_insert)
        try:
            first = threading.Thread(target=replay)
            replaying.append(first)
            first.start()
            # The replay's agent lock (and chain lock) first: then the live route.
            deadline = time.monotonic() + 10
            while True:
                with app.engine.connect() as conn:
                    if conn.execute(text(
                            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                            "AND granted AND classid = :cls"),
                            {"cls": CHAIN_LOCK_CLASS}).scalar_one():
                        break
                assert time.monotonic() < deadline and first.is_alive(), done
                time.sleep(0.01)
            second = threading.Thread(target=live)
            second.start()
            first.join(30)
            second.join(30)
        finally:
            event.remove(app.engine, "before_cursor_execute", hold_the_insert)
        assert not first.is_alive() and not second.is_alive()
        assert "replay_error" not in done and "live_error" not in done, done
        app.engine.dispose()  # every backend reports its statistics
        time.sleep(0.5)
        with app.engine.connect() as conn:
            assert deadlocks(conn) == before, {k: repr(v) for k, v in done.items()}
            # exactly one open decision for T, and the chain verifies
            assert conn.execute(text("SELECT count(*) FROM decisions WHERE task_id = 'T' "
                                     "AND status = 'open'")).scalar_one() == 1
        assert app.security.verify(admin).ok
