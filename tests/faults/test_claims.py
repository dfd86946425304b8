"""Claims that hold across an outage and replay (issue 17: F2, F3, F6; SPEC §7, §7.1).

Hosts are separate data dirs and separate ``arbiter`` processes against one throwaway
cluster. Host A reaches PostgreSQL directly; host B goes through the fault proxy, so a test can
cut B off (``reset``) while A keeps writing. The snapshot interval is one hour: after the
first refresh, a host's snapshot learns of its own commits only by being written through
(F2), which is what the tests look at. ``fresh`` commands (interval 0 s) refresh it on purpose.

- F2: on one host with an agent of capacity 1, a route commits, the next exits 9, PostgreSQL
  stops, and a third route must exit 9 too (not be journaled onto the full agent); after the
  replay the agent holds one task. Journaled claims of the host count as well. A release
  committed before the outage frees the slot in the snapshot.
- F3: host A removes agent ``q4`` and registers it again with other task types while B is cut
  off with a journaled decision (and its outcome) on the old ``q4``: both conflict at replay,
  with their reasons, are audited, listed and resolvable; no arm is made for a task type the
  new ``q4`` does not have.
- F6: a claim journaled by B onto an agent that A set draining meanwhile is applied (it was
  acknowledged) and recorded as ``agent_unavailable``, not ``over_capacity``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.faults.cluster import PgCluster
from tests.faults.conftest import arbiter_env
from tests.faults.harness import Arbiter, Run, replay_until_empty, with_consent
from tests.faults.proxy import FaultProxy

pytestmark = [pytest.mark.faults, pytest.mark.slow]

SETTINGS = {
    "ARBITER_DATABASE__COMMAND_TIMEOUT": "2s",
    "ARBITER_DATABASE__CONNECT_TIMEOUT": "1s",
    "ARBITER_BREAKER__FAIL_MAX": "1",
    "ARBITER_BREAKER__RESET_TIMEOUT": "1s",
    "ARBITER_RESILIENCE__SNAPSHOT_INTERVAL": "1h",
}


@dataclass
class Host:
    """One host: its own data dir, through its own URL; ``fresh`` also refreshes the snapshot."""

    steady: Arbiter
    fresh: Arbiter

    def __call__(self, *argv: str, **kwargs: Any) -> Run:
        return self.steady("--json", *argv, **kwargs)

    def refreshed(self, *argv: str, **kwargs: Any) -> Run:
        return self.fresh("--json", *argv, **kwargs)


@dataclass
class Site:
    cluster: PgCluster
    proxy: FaultProxy
    dbname: str
    a: Host  # direct
    b: Host  # through the proxy

    def rows(self, sql: str) -> list[list[str]]:
        out = self.cluster.psql(sql, dbname=self.dbname)
        return [line.split("|") for line in out.splitlines() if line.strip()]

    def one(self, sql: str) -> str:
        rows = self.rows(sql)
        assert len(rows) == 1 and len(rows[0]) == 1, rows
        return rows[0][0].strip()


def host(home: Path, url: str, token: str | None) -> Host:
    extra = dict(SETTINGS)
    if token is not None:
        extra["ARBITER_TOKEN"] = token
    steady = Arbiter(arbiter_env(home, url, **extra))
    fresh = Arbiter(arbiter_env(home, url, **{**extra,
                                              "ARBITER_RESILIENCE__SNAPSHOT_INTERVAL": "0s"}))
    return Host(steady, fresh)


@pytest.fixture
def site(tmp_path: Path, running_cluster: PgCluster, fault_proxy: FaultProxy
         ) -> Iterator[Site]:
    name = f"cl_{uuid.uuid4().hex[:10]}"
    running_cluster.create_database(name)
    first = host(tmp_path / "a", running_cluster.url(name), None)
    init = first.refreshed("init")
    assert init.exit == 0, init
    token = init.json()["admin_token"]
    a = host(tmp_path / "a", running_cluster.url(name), token)
    b = host(tmp_path / "b", running_cluster.url(name, port=fault_proxy.port), token)
    yield Site(running_cluster, fault_proxy, name, a, b)
    fault_proxy.set_mode("pass")


def register(h: Host, agent: str, task_type: str, capacity: int) -> None:
    run = h.refreshed("agents", "register", "--id", agent, "--name", agent,
                      "--model-family", "fault-test", "--task-type", task_type,
                      "--capacity", str(capacity))
    assert run.exit == 0, run


def route(h: Host, task_type: str, task_id: str) -> Run:
    return h("route", "task", "--task-type", task_type, "--task-id", task_id)


def error_code(run: Run) -> str | None:
    """The code of the JSON error object among the stderr lines (warnings are lines too)."""
    for line in run.stderr.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
            return str(doc["error"].get("code"))
    return None


def durability(run: Run) -> str | None:
    return run.meta().get("durability")


# ---------------------------------------------------------------------------- F2


def test_a_degraded_host_never_assigns_what_it_knows_is_full(site: Site) -> None:
    """The issue's five steps on one host, plus the host's journaled claims counting."""
    a = site.a
    register(a, "solo", "code-review", 1)
    register(a, "pair", "testing", 2)
    first = route(a, "code-review", "T-1")
    assert first.exit == 0 and durability(first) == "committed", first
    assert first.json()["agent_id"] == "solo"
    full = route(a, "code-review", "T-2")
    assert full.exit == 9, full

    site.cluster.stop("immediate")
    third = route(a, "code-review", "T-3")
    assert third.exit == 9, f"journaled onto a full agent: {third}"
    assert error_code(third) == "at_capacity", third
    # the host's own journaled claims count against capacity too
    for task in ("U-1", "U-2"):
        run = route(a, "testing", task)
        assert run.exit == 0 and durability(run) == "journaled", run
        assert run.json()["agent_id"] == "pair"
    assert route(a, "testing", "U-3").exit == 9

    site.cluster.start()
    drained = replay_until_empty(a.steady)
    assert drained.exit == 0 and drained.json()["conflicts"] == 0, drained
    assert drained.json()["applied"] == 2, drained.json()
    held = dict(tuple(cell.strip() for cell in row) for row in site.rows(
        "SELECT id, active_tasks FROM agents ORDER BY id"))
    assert held == {"pair": "2", "solo": "1"}, held
    opened = site.rows("SELECT agent_id, count(*) FROM decisions WHERE status = 'open' "
                       "GROUP BY agent_id ORDER BY agent_id")
    assert [[c.strip() for c in r] for r in opened] == [["pair", "2"], ["solo", "1"]]
    assert site.one("SELECT count(*) FROM decisions WHERE over_capacity") == "0"


def test_a_release_committed_before_the_outage_frees_the_slot_in_the_snapshot(
    site: Site,
) -> None:
    a = site.a
    register(a, "solo", "code-review", 1)
    first = route(a, "code-review", "T-1")
    assert first.exit == 0 and durability(first) == "committed", first
    seen = a.refreshed("agents", "show", "solo")  # the snapshot now holds the claim
    assert seen.exit == 0 and seen.json()["active_tasks"] == 1, seen
    done = a("route", "outcome", "--task-id", "T-1", "--success")
    assert done.exit == 0 and durability(done) == "committed", done

    site.cluster.stop("immediate")
    second = route(a, "code-review", "T-2")
    assert second.exit == 0 and durability(second) == "journaled", \
        f"the slot freed before the outage is still taken in the snapshot: {second}"
    assert second.json()["agent_id"] == "solo"

    site.cluster.start()
    drained = replay_until_empty(a.steady)
    assert drained.exit == 0 and drained.json()["applied"] == 1, drained
    assert site.one("SELECT active_tasks FROM agents WHERE id = 'solo'") == "1"
    assert site.one("SELECT count(*) FROM decisions WHERE over_capacity") == "0"


# ---------------------------------------------------------------------------- F3


def test_a_decision_journaled_for_a_re_registered_agent_conflicts(site: Site) -> None:
    a, b = site.a, site.b
    register(a, "q4", "code-review", 4)
    old_uid = site.one("SELECT uid FROM agents WHERE id = 'q4'")
    seen = b.refreshed("agents", "list")  # B's snapshot knows the first q4
    assert seen.exit == 0 and seen.json()["count"] == 1, seen

    site.proxy.set_mode("reset")  # B is cut off; A is not
    routed = route(b, "code-review", "R-1")
    assert routed.exit == 0 and durability(routed) == "journaled", routed
    decision_id = routed.json()["decision_id"]
    done = b("route", "outcome", decision_id, "--success", "--quality", "0.9")
    assert done.exit == 0 and durability(done) == "journaled", done

    assert with_consent(a.steady, "--json", "agents", "remove", "q4").exit == 0
    again = a("agents", "register", "--id", "q4", "--name", "q4", "--model-family",
              "fault-test", "--task-type", "testing", "--capacity", "4")
    assert again.exit == 0, again
    new_uid = site.one("SELECT uid FROM agents WHERE id = 'q4'")
    assert new_uid != old_uid

    site.proxy.set_mode("pass")
    replayed = replay_until_empty(b.steady, within_s=20)
    report = replayed.json()
    assert (report["applied"], report["conflicts"]) == (0, 2), replayed
    conflicts = b("journal", "list", "--conflicts")
    assert conflicts.exit == 0, conflicts
    errors = {e["kind"]: e["error"] for e in conflicts.json()["items"]}
    assert set(errors) == {"routing.route", "routing.outcome"}, errors
    assert "registered again" in errors["routing.route"] and old_uid in errors["routing.route"]
    assert "journaled route conflicted" in errors["routing.outcome"], errors
    # nothing of it reached the new q4: no decision, no slot, no arm, no performance
    assert site.one(f"SELECT count(*) FROM decisions WHERE decision_id = '{decision_id}'") == "0"
    assert site.one("SELECT active_tasks || '/' || task_count FROM agents WHERE id = 'q4'") \
        == "0/0"
    assert site.one("SELECT count(*) FROM arms") == "0"
    assert site.one("SELECT count(*) FROM audit_events WHERE action = 'journal.conflict'") \
        == "2"
    for entry in conflicts.json()["items"]:
        dropped = b("journal", "resolve", entry["op_id"], "--drop", "--yes")
        assert dropped.exit == 0, dropped
    status = b("journal", "status")
    assert (status.json()["backlog"], status.json()["conflicts"]) == (0, 0), status


# ---------------------------------------------------------------------------- F6


def test_a_claim_replayed_onto_a_draining_agent_is_recorded_as_agent_unavailable(
    site: Site,
) -> None:
    a, b = site.a, site.b
    register(a, "d1", "code-review", 1)
    assert b.refreshed("agents", "list").exit == 0

    site.proxy.set_mode("reset")
    routed = route(b, "code-review", "D-1")
    assert routed.exit == 0 and durability(routed) == "journaled", routed
    decision_id = routed.json()["decision_id"]
    drained = a("agents", "status", "d1", "draining", "--reason", "deploying")
    assert drained.exit == 0, drained

    site.proxy.set_mode("pass")
    replayed = replay_until_empty(b.steady, within_s=20)
    assert replayed.exit == 0, replayed
    assert (replayed.json()["applied"], replayed.json()["conflicts"]) == (1, 0), replayed
    flags = site.rows(f"SELECT over_capacity, agent_unavailable FROM decisions "
                      f"WHERE decision_id = '{decision_id}'")
    assert [[c.strip() for c in r] for r in flags] == [["f", "t"]], flags
    assert site.one("SELECT active_tasks || ' ' || status FROM agents WHERE id = 'd1'") \
        == "1 draining"  # the agent does run it: its slot is held until the outcome
    details = json.loads(site.one(
        f"SELECT details FROM audit_events WHERE action = 'route.task' "
        f"AND target = '{decision_id}'"))
    assert details["agent_unavailable"] is True and details["over_capacity"] is False
    assert details["agent_status"] == "draining" and details["journaled"] is True
    explained = a("route", "explain", decision_id)
    assert explained.exit == 0 and explained.json()["agent_unavailable"] is True, explained
    done = a("route", "outcome", decision_id, "--success")
    assert done.exit == 0, done
    assert site.one("SELECT active_tasks FROM agents WHERE id = 'd1'") == "0"
