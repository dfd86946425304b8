"""Races the capacity guarantee must survive: concurrent reaps and concurrent outcomes.

Each race is made deterministic with a unit of work that, for the thread named in ``stall``,
sleeps just before committing while holding its locks, so the other thread runs inside the
window that used to release a slot twice or fold an outcome twice. Time passes by ageing the
stored time stamps: the stores keep time on the database's clock.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from arbiter_cli.domain.principal import Principal
from arbiter_cli.domain.routing import Outcome
from arbiter_cli.errors import Conflict
from tests.helpers import age_stored_times, fresh_postgres_database


class Stalling:
    """A unit-of-work factory whose commits sleep 0.4 s in the threads named in ``stall``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.stall: set[str] = set()

    def __call__(self, *, write: bool = False) -> Any:
        uow = self.inner(write=write)
        commit = uow.commit

        def stalled_commit() -> None:
            if threading.current_thread().name in self.stall:
                time.sleep(0.4)
            commit()

        uow.commit = stalled_commit
        return uow


def _apps(sql_url: str, settings, n: int = 2):  # type: ignore[no-untyped-def]
    """``n`` apps on one new database, each with its own engine, sharing one stall set."""
    import io

    from arbiter_cli.adapters import migrations
    from arbiter_cli.adapters.sql.repository import SqlUnitOfWorkFactory
    from arbiter_cli.bootstrap import build, sql_engine, utc_now
    from arbiter_cli.tools.setup import initialize

    engine = sql_engine(settings, sql_url, create=True)
    initialize(SqlUnitOfWorkFactory(engine),
               lambda: migrations.upgrade(engine, "head", io.StringIO())[1], utc_now)
    engine.dispose()
    apps = [build(settings, url=sql_url) for _ in range(n)]
    stall: set[str] = set()
    for app in apps:
        app.uow = Stalling(app.uow)
        app.uow.stall = stall
    return apps, stall


def _run(*targets) -> list[object]:  # type: ignore[no-untyped-def]
    results: list[object] = [None] * len(targets)

    def runner(i: int, target) -> None:  # type: ignore[no-untyped-def]
        try:
            results[i] = target()
        except Exception as exc:  # noqa: BLE001 - the test inspects what each side got
            results[i] = exc

    threads = [threading.Thread(target=runner, args=(i, t), name=f"side-{i}")
               for i, t in enumerate(targets)]
    for thread in threads:
        thread.start()
        time.sleep(0.05)  # side-0 takes its locks first
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_two_concurrent_reaps_release_each_slot_once(sql_url: str, test_settings):
    (first, second), stall = _apps(sql_url, test_settings)
    admin = Principal.local_admin()
    first.agents.register(admin, [{"id": f"a{i}", "name": "A", "model_family": "x",
                                   "task_types": ["testing"], "capacity": 100} for i in range(3)])
    for _ in range(30):
        first.routing.route(admin, {"task_type": "testing"})
    age_stored_times(first.engine, hours=1)
    for _ in range(9):
        first.routing.route(admin, {"task_type": "testing"})
    age_stored_times(first.engine, hours=1, seconds=1)
    stall.add("side-0")
    reaped = _run(lambda: first.routing.reap(admin), lambda: second.routing.reap(admin))
    counts = [len(r) for r in reaped if isinstance(r, list)]
    assert sorted(counts) == [0, 30], reaped
    active = sum(a.active_tasks for a in first.agents.list(admin, limit=0).items)
    assert active == 9  # the 9 live assignments still hold their slots
    for app in (first, second):
        app.close()


def test_two_concurrent_different_outcomes_fold_once(sql_url: str, test_settings):
    (first, second), stall = _apps(sql_url, test_settings)
    admin = Principal.local_admin()
    first.agents.register(admin, [{"id": "solo", "name": "S", "model_family": "x",
                                   "task_types": ["testing"], "capacity": 2}])
    decision = first.routing.route(admin, {"task_type": "testing", "task_id": "T"}).decision
    stall.add("side-0")
    results = _run(
        lambda: first.routing.outcome(admin, Outcome(success=True, quality=1.0),
                                      decision_id=decision.decision_id),
        lambda: second.routing.outcome(admin, Outcome(success=False, quality=0.0),
                                       decision_id=decision.decision_id))
    assert [type(r).__name__ for r in results] == ["Recorded", "Conflict"], results
    assert isinstance(results[1], Conflict)
    agent = first.agents.show(admin, "solo")
    assert agent.performance.task_count == 1 and agent.active_tasks == 0
    assert first.routing.explain(admin, decision.decision_id).status == "succeeded"
    for app in (first, second):
        app.close()


@pytest.mark.postgres
def test_a_claim_that_waited_for_a_release_begins_after_the_released_interval(test_settings,
                                                                              monkeypatch):
    """A route reads the pool while the agent has a free slot; before it claims, another
    host routes (taking that slot) and closes its task (releasing it); the claim then
    succeeds. The decision must not begin at the start of its transaction: its interval
    would overlap the other task's, two decisions on a capacity-1 agent, neither flagged."""
    from arbiter_cli.adapters.sql.routing import SqlDecisions

    with fresh_postgres_database("sql") as url:
        (first, second), _ = _apps(url, test_settings)
        admin = Principal.local_admin()
        first.agents.register(admin, [{"id": "solo", "name": "S", "model_family": "x",
                                       "task_types": ["testing"], "capacity": 1}])
        claim = SqlDecisions.claim_and_add  # the claim and the decision's insert: one statement
        meanwhile: list[str] = []  # the other host's decision id

        def claim_after_the_other_host(self, decision):  # type: ignore[no-untyped-def]
            if not meanwhile:
                meanwhile.append("")
                other = second.routing.route(admin, {"task_type": "testing",
                                                     "task_id": "OTHER"}).decision
                second.routing.outcome(admin, Outcome(success=True, quality=1.0),
                                       decision_id=other.decision_id)
                meanwhile[0] = str(other.decision_id)
            return claim(self, decision)

        monkeypatch.setattr(SqlDecisions, "claim_and_add", claim_after_the_other_host)
        mine = first.routing.route(admin, {"task_type": "testing", "task_id": "MINE"}).decision
        monkeypatch.undo()
        other = first.routing.explain(admin, meanwhile[0])
        assert other.task_id == "OTHER" and other.closed_at is not None
        assert mine.created_at >= other.closed_at, (mine.created_at, other.closed_at)
        stored = first.routing.explain(admin, mine.decision_id)
        assert stored.created_at == mine.created_at
        for app in (first, second):
            app.close()
