"""The ``over_capacity`` flag across hosts (issue 17, F4; SPEC §7; docs/resilience.md).

Two hosts, each with its own data dir (journal, snapshot, breaker) and its own fault proxy in
front of one throwaway PostgreSQL; every command is a real ``arbiter`` process. A host is cut
off by its proxy (connections reset), so its writes are journaled and replayed later.

- Two hosts each route a task to the same capacity-1 agent while cut off: both tasks ran at
  once, so after replay both decisions are flagged, whichever host replays first.
- A task that finished (outcome acknowledged) before another host routed to the agent never
  shared it: nothing is flagged, and the journaled outcome closes its decision at the time it
  was acknowledged, not at replay time.
- The flag shows in ``route history`` (table and ``--json``), ``route explain``, the report
  of ``journal replay`` (and its ``--metrics-file``), ``health`` (``routing:overCapacity``,
  warn) and the fleet metrics (``arbiter_decisions_over_capacity``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.faults.cluster import PgCluster
from tests.faults.conftest import arbiter_env
from tests.faults.harness import Arbiter, Run, initialize, replay_until_empty
from tests.faults.proxy import FaultProxy

pytestmark = [pytest.mark.faults, pytest.mark.slow]

SETTINGS = {"ARBITER_DATABASE__COMMAND_TIMEOUT": "2s", "ARBITER_BREAKER__RESET_TIMEOUT": "1s",
            "ARBITER_RESILIENCE__SNAPSHOT_INTERVAL": "0s"}  # every command refreshes it


@dataclass
class Host:
    """One arbiter host: its own data dir and its own way to the database (a fault proxy)."""

    name: str
    arbiter: Arbiter
    proxy: FaultProxy

    def ok(self, *argv: str, **kwargs: Any) -> Any:
        run = self.arbiter("--json", *argv, **kwargs)
        assert run.exit == 0, run
        return run.json()

    def journaled(self, *argv: str) -> dict[str, Any]:
        run = self.arbiter("--json", *argv)
        assert run.exit == 0 and run.meta().get("durability") == "journaled", run
        return dict(run.json())

    def cut(self) -> None:
        self.proxy.set_mode("reset")

    def heal(self) -> None:
        self.proxy.set_mode("pass")

    def replay(self) -> Run:
        run = replay_until_empty(self.arbiter)
        assert run.exit == 0, run
        return run


@dataclass
class Site:
    database: str
    cluster: PgCluster
    a: Host
    b: Host

    def decisions(self) -> dict[str, dict[str, Any]]:
        """Straight from PostgreSQL: task id → flag and interval."""
        rows = self.cluster.psql(
            "SELECT task_id, over_capacity, extract(epoch FROM created_at), "
            "coalesce(extract(epoch FROM closed_at)::text, '') FROM decisions ORDER BY task_id",
            dbname=self.database)
        found = {}
        for line in rows.splitlines():
            task_id, flag, created, closed = line.split("|")
            found[task_id] = {"over_capacity": flag == "t", "created_at": float(created),
                              "closed_at": float(closed) if closed else None}
        return found


@pytest.fixture
def site(tmp_path: Path, running_cluster: PgCluster, fault_proxy: FaultProxy) -> Iterator[Site]:
    name = f"oc_{uuid.uuid4().hex[:10]}"
    running_cluster.create_database(name)
    with FaultProxy(("127.0.0.1", running_cluster.port)) as second:
        a = Arbiter(arbiter_env(tmp_path / "a", running_cluster.url(name, port=fault_proxy.port),
                                **SETTINGS), metrics_dir=tmp_path)
        initialize(a)
        run = a("--json", "agents", "register", "--id", "solo", "--name", "Solo",
                "--model-family", "fault-test", "--task-type", "testing", "--capacity", "1")
        assert run.exit == 0, run
        token = _token_of(tmp_path / "a")
        b = Arbiter(arbiter_env(tmp_path / "b", running_cluster.url(name, port=second.port),
                                ARBITER_TOKEN=token, **SETTINGS), metrics_dir=tmp_path)
        hosts = Host("a", a, fault_proxy), Host("b", b, second)
        for host in hosts:  # each host's snapshot knows solo, free
            assert host.ok("agents", "show", "solo")["active_tasks"] == 0
        yield Site(name, running_cluster, *hosts)


def _token_of(home: Path) -> str:
    from arbiter_cli.adapters.credentials import load_token

    token = load_token(home / "config" / "credentials.toml", "default")
    assert token
    return token


def _route(host: Host, task_id: str) -> dict[str, Any]:
    routed = host.journaled("route", "task", "--task-type", "testing", "--task-id", task_id)
    assert routed["agent_id"] == "solo", routed
    return routed


@pytest.mark.parametrize("first", ["a", "b"])
def test_two_hosts_live_tasks_on_a_capacity_one_agent_are_flagged_in_either_replay_order(
        site: Site, first: str, tmp_path: Path) -> None:
    hosts = {"a": site.a, "b": site.b}
    for host in hosts.values():
        host.cut()
    mine, theirs = _route(site.a, "TA"), _route(site.b, "TB")
    for host in hosts.values():
        host.heal()
    order = [hosts[first], hosts["b" if first == "a" else "a"]]
    reports = [host.replay().json() for host in order]
    assert [r["over_capacity"] for r in reports] == [0, 2], reports
    decisions = site.decisions()
    assert {t: d["over_capacity"] for t, d in decisions.items()} == {"TA": True, "TB": True}

    # Shown wherever decisions are shown.
    history = site.a.ok("route", "history")["items"]
    assert {d["task_id"]: d["over_capacity"] for d in history} == {"TA": True, "TB": True}
    flagged = site.b.ok("route", "history", "--over-capacity")["items"]
    assert sorted(d["task_id"] for d in flagged) == ["TA", "TB"]
    wide = Arbiter({**site.a.arbiter.env, "COLUMNS": "200"})  # the table on one line
    table = wide("route", "history")
    assert table.exit == 0 and "over capacity" in table.stdout, table
    assert all(line.rstrip("│ ").endswith("yes") for line in table.stdout.splitlines()
               if "TA" in line or "TB" in line), table
    for routed in (mine, theirs):
        assert site.b.ok("route", "explain", routed["decision_id"])["over_capacity"] is True
    human = wide("route", "explain", mine["decision_id"])
    assert human.exit == 0 and "over capacity" in human.stdout, human
    health = site.a.arbiter("--json", "health")
    assert health.exit == 1, health
    (check,) = health.json()["checks"]["routing:overCapacity"]
    assert (check["status"], check["observedValue"]) == ("warn", 2), check
    assert _fleet_gauge(site, "arbiter_decisions_over_capacity") == 2.0


def test_the_replay_report_counts_the_flags_in_its_output_and_metrics_file(
        site: Site, tmp_path: Path) -> None:
    for host in (site.a, site.b):
        host.cut()
    _route(site.a, "TA")
    _route(site.b, "TB")
    for host in (site.a, site.b):
        host.heal()
    site.a.replay()
    run = _replay_with_metrics(site.b)
    assert "2 decision(s) flagged over_capacity" in run.stdout, run
    assert run.metrics is not None and "arbiter_journal_replay_over_capacity 2.0" in run.metrics


def test_a_task_finished_before_another_host_routed_is_not_flagged(site: Site) -> None:
    """A's task ran and finished while A was cut off; B routed to the agent afterwards,
    live. They never shared it, whatever the order of replay. A's journaled outcome closes
    its decision when it was acknowledged."""
    site.a.cut()
    _route(site.a, "TA")
    time.sleep(1.0)
    site.a.journaled("route", "outcome", "--task-id", "TA", "--success")
    acknowledged = time.time()
    time.sleep(1.5)
    routed = site.b.ok("route", "task", "--task-type", "testing", "--task-id", "TB")
    assert (routed["agent_id"], routed["meta"]["durability"]) == ("solo", "committed"), routed
    time.sleep(2.0)
    site.a.heal()
    replayed_at = time.time()
    report = site.a.replay().json()
    decisions = site.decisions()
    closed_at = decisions["TA"]["closed_at"]
    assert closed_at is not None and abs(closed_at - acknowledged) < 1.0, (
        closed_at, acknowledged, replayed_at)
    assert decisions["TA"]["created_at"] < closed_at < decisions["TB"]["created_at"]
    assert {t: d["over_capacity"] for t, d in decisions.items()} == {"TA": False, "TB": False}
    assert report["over_capacity"] == 0, report
    (check,) = site.a.ok("health")["checks"]["routing:overCapacity"]
    assert (check["status"], check["observedValue"]) == ("pass", 0), check
    assert _fleet_gauge(site, "arbiter_decisions_over_capacity") == 0.0


@dataclass
class MetricsRun:
    stdout: str
    metrics: str | None


def _replay_with_metrics(host: Host) -> MetricsRun:
    path = host.arbiter.metrics_dir / f"replay-{host.name}.prom"  # type: ignore[operator]
    deadline = time.monotonic() + 90
    while True:
        run = host.arbiter("--metrics-file", str(path), "journal", "replay")
        if run.exit == 0 or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert run.exit == 0, run
    return MetricsRun(run.stdout, path.read_text() if path.exists() else None)


def _fleet_gauge(site: Site, name: str) -> float:
    """What ``serve``'s fleet collector exposes for ``name``, read from PostgreSQL."""
    from sqlalchemy import create_engine

    from arbiter_cli.adapters.sql.fleet import SqlFleetQuery
    from arbiter_cli.observability.fleet import FleetCollector

    collector = FleetCollector(lambda: create_engine(site.cluster.url(site.database)),
                               SqlFleetQuery())
    try:
        for family in collector.collect():
            if family.name == name:
                return float(family.samples[0].value)
    finally:
        collector.close()
    raise AssertionError(f"{name} not collected")
