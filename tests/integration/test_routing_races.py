"""Races the capacity guarantee must survive: concurrent reaps and concurrent outcomes.

Each race is made deterministic with a clock that, on the call a transaction makes just
before committing, sleeps while holding its locks, so the other thread runs inside the window
that used to release a slot twice or fold an outcome twice.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from arbiter_cli.domain.principal import Principal
from arbiter_cli.domain.routing import Outcome
from arbiter_cli.errors import Conflict


class SlowClock:
    """Shared time; the thread named in ``stall`` sleeps on its second reading."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
        self.stall: set[str] = set()
        self._calls: dict[str, int] = {}

    def __call__(self) -> datetime:
        name = threading.current_thread().name
        self._calls[name] = self._calls.get(name, 0) + 1
        if name in self.stall and self._calls[name] == 2:
            time.sleep(0.4)
        return self.now


def _apps(sql_url: str, settings, clock, n: int = 2):  # type: ignore[no-untyped-def]
    import io

    from arbiter_cli.adapters import migrations
    from arbiter_cli.adapters.sql.repository import SqlUnitOfWorkFactory
    from arbiter_cli.bootstrap import build, sql_engine
    from arbiter_cli.services.setup import initialize

    engine = sql_engine(settings, sql_url, create=True)
    initialize(SqlUnitOfWorkFactory(engine),
               lambda: migrations.upgrade(engine, "head", io.StringIO())[1], clock)
    engine.dispose()
    return [build(settings, url=sql_url, clock=clock) for _ in range(n)]



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
    clock = SlowClock()
    first, second = _apps(sql_url, test_settings, clock)
    admin = Principal.local_admin()
    first.agents.register(admin, [{"id": f"a{i}", "name": "A", "model_family": "x",
                                   "task_types": ["testing"], "capacity": 100} for i in range(3)])
    for _ in range(30):
        first.routing.route(admin, {"task_type": "testing"})
    clock.now += timedelta(hours=1)
    for _ in range(9):
        first.routing.route(admin, {"task_type": "testing"})
    clock.now += timedelta(hours=1, seconds=1)
    clock.stall = {"side-0"}
    reaped = _run(lambda: first.routing.reap(admin), lambda: second.routing.reap(admin))
    counts = [len(r) for r in reaped if isinstance(r, list)]
    assert sorted(counts) == [0, 30], reaped
    active = sum(a.active_tasks for a in first.agents.list(admin, limit=0).items)
    assert active == 9  # the 9 live assignments still hold their slots
    for app in (first, second):
        app.close()


def test_two_concurrent_different_outcomes_fold_once(sql_url: str, test_settings):
    clock = SlowClock()
    first, second = _apps(sql_url, test_settings, clock)
    admin = Principal.local_admin()
    first.agents.register(admin, [{"id": "solo", "name": "S", "model_family": "x",
                                   "task_types": ["testing"], "capacity": 2}])
    decision = first.routing.route(admin, {"task_type": "testing", "task_id": "T"}).decision
    clock.stall = {"side-0"}
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
