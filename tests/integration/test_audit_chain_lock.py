"""A route's claim and an outcome's agent lock take the tenant's audit chain lock
(``adapters/sql/security.py``, ``chain_lock``) once their row is locked, so that appends of
one tenant queue instead of racing for the next ``seq``.

While another transaction holds the lock, the statement waits; an event committed meanwhile
(by an append that does not take the lock) moves the head, and the waiting append, knowing its
head is as old as the wait, reads it again once and inserts once: no lost race, no retry.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import pytest
from sqlalchemy import event, text

from arbiter_cli.adapters.sql.security import CHAIN_LOCK_CLASS
from arbiter_cli.domain.principal import Principal
from tests.helpers import deadlocks, fresh_postgres_database, waiting_for_chain_lock


@pytest.mark.postgres
@pytest.mark.parametrize("action", ["route.task", "route.outcome"])
def test_an_append_that_waited_for_the_chain_lock_reads_the_head_once_and_inserts_once(
        test_settings: Any, action: str) -> None:
    from arbiter_cli.bootstrap import scratch_app
    from arbiter_cli.domain.routing import Outcome

    with fresh_postgres_database("chainlock") as url, \
            scratch_app(test_settings, "postgres", purpose="t", database_url=url) as (app, _):
        admin = Principal.local_admin()
        app.agents.register(admin, [{"id": "a1", "name": "A", "model_family": "x",
                                     "task_types": ["code-editing"], "capacity": 5}])
        decision_id = None
        if action == "route.outcome":
            decision_id = app.routing.route(admin, {"task_type": "code-editing",
                                                    "task_id": "t-0"}).decision.decision_id
        inserts: list[str] = []
        head_reads: list[str] = []

        def count(_conn, _cursor, statement, params, _context, _many):  # type: ignore[no-untyped-def]
            if "INSERT INTO audit_events" in statement and action in params.values():
                inserts.append(action)
            if statement.lstrip().startswith("SELECT") and "audit_head_seq" in statement:
                head_reads.append(statement)

        done: dict[str, Any] = {}

        def ours() -> None:
            try:
                if action == "route.task":
                    done["result"] = app.routing.route(admin, {"task_type": "code-editing",
                                                               "task_id": "t-1"})
                else:
                    done["result"] = app.routing.outcome(admin, Outcome(success=True,
                                                                        quality=0.8),
                                                         decision_id=decision_id)
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                done["error"] = exc

        holder = app.engine.connect()
        try:
            holder.execute(text("SELECT pg_advisory_xact_lock(:cls, hashtext('default'))"),
                           {"cls": CHAIN_LOCK_CLASS})
            event.listen(app.engine, "before_cursor_execute", count)
            thread = threading.Thread(target=ours)
            thread.start()
            deadline = time.monotonic() + 10
            while not waiting_for_chain_lock(app):
                assert time.monotonic() < deadline, "the decision never waited for the chain lock"
                assert thread.is_alive(), f"the decision did not wait: {done}"
                time.sleep(0.02)
            # Meanwhile an append that takes no chain lock commits: the head moves.
            with app.uow(write=True) as other:
                won = other.audit.append("default", actor=None, action="winner", target=None,
                                         result="ok", correlation_id=None, details={})
                other.commit()
            holder.commit()  # releases the chain lock
        finally:
            holder.close()
        thread.join(10)
        event.remove(app.engine, "before_cursor_execute", count)
        assert not thread.is_alive() and "error" not in done, done

        assert inserts == [action]  # inserted at the first try: it never lost a race
        # the head came with the locking statement, stale after the wait, and once more
        assert len(head_reads) == 2
        with app.uow() as uow:
            events = uow.audit.events("default", ascending=True)
        mine = next(e for e in events if e.action == action and e.seq > won.seq)
        assert mine.seq == won.seq + 1 and mine.prev_hash == won.hash
        assert app.security.verify(admin).ok


@pytest.mark.postgres
def test_a_free_chain_lock_keeps_the_primed_head_one_insert_per_append(test_settings: Any
                                                                      ) -> None:
    """Nobody holds the lock: the head read with the claim and with the agent lock is used,
    so each append is one statement (the pinned count of test_statements_per_decision), and
    the lock is held until the commit, no longer."""
    from arbiter_cli.bootstrap import scratch_app
    from arbiter_cli.domain.routing import Outcome

    with fresh_postgres_database("chainfree") as url, \
            scratch_app(test_settings, "postgres", purpose="t", database_url=url) as (app, _):
        admin = Principal.local_admin()
        app.agents.register(admin, [{"id": "a1", "name": "A", "model_family": "x",
                                     "task_types": ["code-editing"], "capacity": 5}])
        head_reads: list[str] = []

        def count(_conn, _cursor, statement, _params, _context, _many):  # type: ignore[no-untyped-def]
            if "audit_head_seq" in statement and "pg_try_advisory_xact_lock" not in statement:
                head_reads.append(statement)

        event.listen(app.engine, "before_cursor_execute", count)
        try:
            decision = app.routing.route(admin, {"task_type": "code-editing",
                                                 "task_id": "t-1"}).decision
            app.routing.outcome(admin, Outcome(success=True, quality=0.8),
                                decision_id=decision.decision_id)
        finally:
            event.remove(app.engine, "before_cursor_execute", count)
        assert head_reads == []  # no head read of its own: both appends were primed
        with app.engine.connect() as conn:  # and nothing holds the lock after the commits
            assert conn.execute(text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = :cls"),
                {"cls": CHAIN_LOCK_CLASS}).scalar_one() == 0
        assert app.security.verify(admin).ok


@pytest.mark.postgres
def test_routes_outcomes_and_agent_changes_on_shared_agents_never_deadlock(test_settings: Any
                                                                           ) -> None:
    """Threads route, report outcomes and change the same agents (each takes its rows, then
    the chain lock): no deadlock is ever detected, every call succeeds, the chain verifies."""
    import random

    from arbiter_cli.bootstrap import scratch_app
    from arbiter_cli.domain.agents import TaskResult
    from arbiter_cli.domain.routing import Outcome
    from arbiter_cli.errors import AtCapacity

    with fresh_postgres_database("chainmix") as url, \
            scratch_app(test_settings, "postgres", purpose="t", database_url=url) as (app, _):
        admin = Principal.local_admin()
        app.agents.register(admin, [{"id": f"a{i}", "name": "A", "model_family": "x",
                                     "task_types": ["code-editing"], "capacity": 3}
                                    for i in range(2)])
        with app.engine.connect() as conn:
            before = deadlocks(conn)
        errors: list[BaseException] = []

        def worker(seed: int) -> None:
            rng, open_ids = random.Random(seed), []
            try:
                for n in range(40):
                    roll = rng.random()
                    if roll < 0.4:
                        with contextlib.suppress(AtCapacity):
                            open_ids.append(app.routing.route(admin, {
                                "task_type": "code-editing",
                                "task_id": f"w{seed}-{n}"}).decision.decision_id)
                    elif roll < 0.8 and open_ids:
                        app.routing.outcome(admin, Outcome(success=True, quality=0.5),
                                            decision_id=open_ids.pop())
                    elif roll < 0.9:
                        app.agents.record(admin, f"a{rng.randrange(2)}",
                                          TaskResult(success=True, quality=0.7,
                                                     latency_ms=None, task_type=None))
                    else:
                        app.agents.heartbeat(admin, f"a{rng.randrange(2)}")
                for decision_id in open_ids:
                    app.routing.outcome(admin, Outcome(success=False, quality=0.1),
                                        decision_id=decision_id)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not any(thread.is_alive() for thread in threads)
        assert errors == []
        app.engine.dispose()  # every backend exits and reports its statistics
        time.sleep(0.5)
        with app.engine.connect() as conn:
            assert deadlocks(conn) == before
            assert conn.execute(text("SELECT sum(active_tasks) FROM agents")).scalar_one() == 0
        assert app.security.verify(admin).ok
