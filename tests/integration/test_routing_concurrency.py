"""Four OS processes route and report outcomes on one database: capacity holds, counts balance.

3 agents with capacity 2, 200 tasks, outcomes at random moments. A monitor thread samples
``active_tasks`` while the workers run; at no sample may it exceed capacity. At the end every
slot is free, every decision is closed, and the outcomes folded equal the tasks routed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.helpers import fresh_postgres_database

TASKS = 200

WORKER = textwrap.dedent(
    """
    import json, random, sys, time
    from arbiter_cli.bootstrap import build
    from arbiter_cli.config import load_settings
    from arbiter_cli.domain.principal import Principal
    from arbiter_cli.domain.routing import Outcome
    from arbiter_cli.errors import AtCapacity

    url, worker, tasks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(worker)
    app = build(load_settings(), url=url)
    routing, admin = app.routing, Principal.local_admin()
    open_ids, routed, reported, refused = [], 0, 0, 0

    def report_one():
        global reported
        decision_id = open_ids.pop(rng.randrange(len(open_ids)))
        routing.outcome(admin, Outcome(success=rng.random() < 0.7, quality=rng.random()),
                        decision_id=decision_id)
        reported += 1

    while routed < tasks:
        try:
            decision = routing.route(admin, {"task_type": "testing",
                                             "task_id": f"w{worker}-t{routed}"}).decision
            open_ids.append(decision.decision_id)
            routed += 1
        except AtCapacity:
            refused += 1
            if open_ids:
                report_one()
            else:
                time.sleep(0.002)
        if open_ids and rng.random() < 0.5:
            report_one()
    while open_ids:
        report_one()
    app.close()
    print(json.dumps({"routed": routed, "reported": reported, "refused": refused}))
    """
)


def _setup(url: str, settings) -> None:  # type: ignore[no-untyped-def]
    import io

    from arbiter_cli.adapters import migrations
    from arbiter_cli.adapters.sql.repository import SqlUnitOfWorkFactory
    from arbiter_cli.bootstrap import build, sql_engine, utc_now
    from arbiter_cli.domain.principal import Principal
    from arbiter_cli.tools.setup import initialize

    engine = sql_engine(settings, url, create=True)
    initialize(SqlUnitOfWorkFactory(engine),
               lambda: migrations.upgrade(engine, "head", io.StringIO())[1], utc_now)
    engine.dispose()
    app = build(settings, url=url)
    app.agents.register(Principal.local_admin(), [
        {"id": f"agent-{i}", "name": f"A{i}", "model_family": "x", "task_types": ["testing"],
         "capacity": 2} for i in range(3)])
    app.close()


def _run(url: str, settings, processes: int = 4, tasks: int = TASKS) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Race the workers on ``url`` and return what the monitor and the database saw."""
    _setup(url, settings)
    engine = create_engine(url)
    samples: list[int] = []
    over: list[tuple[str, int, int]] = []
    stop = threading.Event()

    def monitor() -> None:
        while not stop.is_set():
            with engine.connect() as conn:
                rows = conn.execute(text("SELECT id, active_tasks, capacity FROM agents")).all()
            samples.append(len(rows))
            over.extend((r[0], r[1], r[2]) for r in rows if r[1] > r[2])
            time.sleep(0.005)

    watcher = threading.Thread(target=monitor, daemon=True)
    watcher.start()
    each = tasks // processes
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, url, str(n), str(each)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for n in range(processes)]
    results = []
    for worker in workers:
        out, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err  # a crashed worker leaves nothing to judge
        results.append(json.loads(out.strip().splitlines()[-1]))
    stop.set()
    watcher.join()
    with engine.connect() as conn:
        active = conn.execute(text("SELECT sum(active_tasks), sum(task_count) FROM agents")).one()
        statuses = dict(conn.execute(text(
            "SELECT status, count(*) FROM decisions GROUP BY status")).all())
    engine.dispose()
    from arbiter_cli.bootstrap import build
    from arbiter_cli.domain.principal import Principal

    app = build(settings, url=url)
    verdict = app.security.verify(Principal.local_admin())  # appends from 4 processes
    app.close()
    return {
        "monitor_samples_over_10": len(samples) > 10,
        "over_capacity": over[:5],
        "routed": sum(r["routed"] for r in results),
        "reported": sum(r["reported"] for r in results),
        "active_tasks": active[0],
        "task_count": active[1],
        "open_decisions": statuses.get("open", 0),
        "decisions": sum(statuses.values()),
        "audit_chain_ok": verdict.ok,
        "audit_events": verdict.events,
    }


#: What the race must leave: the monitor watched, no sample over capacity, every task routed and
#: reported, every slot free, every decision closed, and an intact audit chain holding the
#: registration plus one route and one outcome per task.
CAPACITY_HELD = {
    "monitor_samples_over_10": True, "over_capacity": [], "routed": TASKS, "reported": TASKS,
    "active_tasks": 0, "task_count": TASKS, "open_decisions": 0, "decisions": TASKS,
    "audit_chain_ok": True, "audit_events": 1 + 2 * TASKS,
}


@pytest.mark.slow
def test_four_processes_on_sqlite_never_exceed_capacity(test_settings, tmp_path: Path):
    assert _run(f"sqlite:///{tmp_path / 'route.db'}", test_settings) == CAPACITY_HELD


@pytest.mark.slow
@pytest.mark.postgres
def test_four_processes_on_postgres_never_exceed_capacity(test_settings):
    with fresh_postgres_database("route") as url:
        assert _run(url, test_settings) == CAPACITY_HELD
