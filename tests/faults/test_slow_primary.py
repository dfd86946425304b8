"""Slowness of a healthy primary is not an outage (issue 12, H2; SPEC §7.1).

H2: `agents register --file` with 9 000 agents took about 8 s on a healthy PostgreSQL, ran
past the 5 s budget and was answered ``durability: journaled``; `journal replay` had the same
budget, so it exited 10 every time and every later write of that tenant queued behind it.

Here the throwaway cluster is made slow with the fault proxy's latency mode (every chunk waits
``LATENCY_MS``), so a few hundred agents are enough to need more than one second: the budget
of a batch grows with its items (``database.per_item_timeout``), a batch that still runs out of
time on a healthy primary is rolled back with exit 10 and never journaled (nor counted by the
breaker), and replay gives a journaled batch the budget its command had, counts three failed
replays, then keeps it as a conflict so the tenant's later writes go through.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from tests.faults.cluster import PgCluster
from tests.faults.conftest import arbiter_env
from tests.faults.harness import Arbiter, Run
from tests.faults.proxy import FaultProxy

pytestmark = [pytest.mark.faults, pytest.mark.slow]

LATENCY_MS = 5.0
BATCH = 150  # ~2 round trips per agent through the slow proxy: well over one second
BASE = {"ARBITER_DATABASE__COMMAND_TIMEOUT": "1s", "ARBITER_BREAKER__FAIL_MAX": "2",
        "ARBITER_BREAKER__RESET_TIMEOUT": "1s", "ARBITER_RESILIENCE__SNAPSHOT_INTERVAL": "0s"}
ROOMY = "60ms"  # per item: 150 agents get 1 s + 9 s
TIGHT = "0ms"  # per item: the batch keeps the bare 1 s


@dataclass
class Slow:
    cluster: PgCluster
    proxy: FaultProxy
    name: str
    home: Path

    def arbiter(self, per_item: str) -> Arbiter:
        url = self.cluster.url(self.name, port=self.proxy.port)
        return Arbiter(arbiter_env(self.home, url, **BASE,
                                   ARBITER_DATABASE__PER_ITEM_TIMEOUT=per_item))

    def agents(self) -> list[str]:
        conn = psycopg2.connect(self.cluster.dsn(self.name))
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT id FROM agents ORDER BY id")
                return [row[0] for row in cur.fetchall()]
        finally:
            conn.close()


@pytest.fixture
def slow(tmp_path: Path, running_cluster: PgCluster, fault_proxy: FaultProxy) -> Iterator[Slow]:
    name = f"slow_{uuid.uuid4().hex[:10]}"
    running_cluster.create_database(name)
    made = Slow(running_cluster, fault_proxy, name, tmp_path / "host")
    arbiter = made.arbiter(ROOMY)
    assert arbiter("--json", "init").exit == 0
    assert register(arbiter, ["seed"]).exit == 0
    assert arbiter("--json", "agents", "list").exit == 0  # the snapshot exists
    yield made
    fault_proxy.set_mode("pass")


def batch(prefix: str, n: int = BATCH) -> list[str]:
    return [f"{prefix}-{i:04d}" for i in range(n)]


def register(arbiter: Arbiter, ids: list[str]) -> Run:
    lines = [json.dumps({"id": agent, "name": agent, "model_family": "fault-test",
                         "task_types": ["testing"]}) for agent in ids]
    return arbiter("--json", "agents", "register", "--file", "-", input="\n".join(lines),
                   metrics=False)


def status(arbiter: Arbiter) -> dict[str, Any]:
    run = arbiter("--json", "journal", "status")
    assert run.exit == 0, run
    return run.json()


def test_the_deadline_tells_a_cut_handshake_from_a_cut_statement(
        slow: Slow, fault_proxy: FaultProxy) -> None:
    """What `faults.slowness` relies on, against the real libpq: our deadline marks whether it
    cut the handshake (unreachable) or a statement in flight (a probe must tell)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.pool import NullPool

    from arbiter_cli.adapters.sql import deadline
    from arbiter_cli.adapters.sql.faults import driver_error, slowness

    deadline.install()
    engine = create_engine(slow.cluster.url(slow.name, port=fault_proxy.port),
                           poolclass=NullPool)
    try:
        with deadline.Deadline(0.5).active(), pytest.raises(OperationalError) as sleeping, \
                engine.connect() as conn:
            conn.execute(text("SELECT pg_sleep(3)"))
        assert deadline.is_exceeded(driver_error(sleeping.value))
        assert slowness(sleeping.value) == "cut"
        fault_proxy.set_mode("blackhole")
        with deadline.Deadline(0.5).active(), pytest.raises(OperationalError) as handshake:
            engine.connect().close()
        assert deadline.is_exceeded(driver_error(handshake.value))
        assert slowness(handshake.value) is None
    finally:
        fault_proxy.set_mode("pass")
        engine.dispose()


def test_a_large_register_on_a_slow_healthy_primary_commits_within_its_grown_budget(
        slow: Slow, fault_proxy: FaultProxy) -> None:
    """H2: the batch needs more than database.command_timeout; its budget grows by
    database.per_item_timeout per agent, so it commits and says so, and the tenant's next
    write is not stuck behind anything."""
    arbiter = slow.arbiter(ROOMY)
    fault_proxy.set_mode("latency", latency_ms=LATENCY_MS)
    ids = batch("big")
    started = time.monotonic()
    run = register(arbiter, ids)
    took = time.monotonic() - started
    print(f"\nslow primary: {BATCH} agents through {LATENCY_MS:g} ms latency took {took:.1f}s "
          f"(wall, with start-up); exit {run.exit}")
    assert run.exit == 0, run
    assert run.json()["count"] == BATCH
    assert run.meta()["durability"] == "committed", run
    assert "journaled" not in run.stderr
    after = register(arbiter, ["after"])
    assert after.exit == 0 and after.meta()["durability"] == "committed", after
    assert status(arbiter)["backlog"] == 0
    assert set(ids) | {"seed", "after"} == set(slow.agents())


def test_a_batch_that_still_runs_out_of_time_is_rolled_back_not_journaled(
        slow: Slow, fault_proxy: FaultProxy) -> None:
    """The same batch with no per-item budget: exit 10 with a hint, nothing written, nothing
    journaled, the breaker untouched, and the next write commits."""
    from arbiter_cli.config import load_settings
    from arbiter_cli.resilience.breaker import breaker_for

    tight = slow.arbiter(TIGHT)
    fault_proxy.set_mode("latency", latency_ms=LATENCY_MS)
    for _ in range(3):  # more than breaker.fail_max
        run = register(tight, batch("big"))
        assert run.exit == 10, run
        error = json.loads(run.stderr.strip().splitlines()[-1])["error"]
        assert "did not finish within" in error["message"], error
        assert "per_item_timeout" in error["message"]
    assert status(tight)["backlog"] == 0
    breaker = breaker_for(load_settings(environ=tight.env)).snapshot()
    assert (breaker.state, breaker.failures) == ("closed", 0)
    after = register(tight, ["after"])
    assert after.exit == 0 and after.meta()["durability"] == "committed", after
    assert slow.agents() == ["after", "seed"]


def test_replay_gives_a_journaled_batch_its_budget_and_a_stuck_one_becomes_a_conflict(
        slow: Slow, fault_proxy: FaultProxy) -> None:
    """A batch journaled during a real outage blocks its tenant's later writes until it is
    replayed. A command's own replay (resilience.replay_budget) cannot finish it; `journal
    replay` gives it its full budget. Where even that is not enough on a healthy primary, it
    fails three replays and becomes a conflict, and the tenant's writes go through again."""
    roomy, tight = slow.arbiter(ROOMY), slow.arbiter(TIGHT)
    fault_proxy.set_mode("reset")
    journaled = register(roomy, batch("outage"))
    assert journaled.exit == 0 and journaled.meta()["durability"] == "journaled", journaled
    fault_proxy.set_mode("latency", latency_ms=LATENCY_MS)
    time.sleep(1.1)  # breaker.reset_timeout: the next call may probe
    behind = register(roomy, ["behind"])  # its replay (1 s) cannot finish the batch first
    assert behind.exit == 0 and behind.meta()["durability"] == "journaled", behind
    assert "wait in the journal" in behind.stderr
    # Without its per-item budget the batch cannot finish even with `journal replay`:
    for attempt in (1, 2, 3):
        replayed = tight("--json", "journal", "replay")
        assert replayed.exit == (0 if attempt == 3 else 10), (attempt, replayed)
    drained = status(tight)
    assert (drained["backlog"], drained["conflicts"]) == (0, 1), drained
    (conflict,) = tight("--json", "journal", "list", "--conflicts").json()["items"]
    assert conflict["kind"] == "agents.register" and conflict["attempts"] == 3
    assert "failed 3 replays" in conflict["error"]
    assert slow.agents() == ["behind", "seed"]  # the later write went through after it
    # Retried with its full budget, `journal replay` (no --budget) applies it.
    retried = roomy("--json", "journal", "resolve", conflict["op_id"], "--retry")
    assert retried.exit == 0, retried
    replayed = roomy("--json", "journal", "replay")
    assert replayed.exit == 0 and replayed.json()["applied"] == 1, replayed
    assert set(slow.agents()) == set(batch("outage")) | {"behind", "seed"}
