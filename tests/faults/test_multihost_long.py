"""The long multi-host run of issue 17: three hosts, five outages, one clock 3 h ahead.

Three hosts (tests/faults/hosts.py: each its own ``ARBITER_DATA_DIR``, breaker, journal and
snapshot, its own fault proxy to one throwaway cluster) run worker processes
(tests/faults/worker.py, arbiter's ``main()`` in a loop): host h1 two, h2 and h3 one each.
They register agents, route tasks onto three small agents (capacities 2, 2, 3) and record
outcomes, each with a unique id, logging invoke/ok/fail/info to fsync'd histories. Host h3's
clock runs 3 h ahead (libfaketime), past ``routing.assignment_ttl``.

A nemesis runs a fixed schedule of five outages between stretches of normal service:

1. PostgreSQL stopped (``-m immediate``), then started;
2. a partial outage: host h2 alone cut off by its proxy (connections reset), the others go on;
3. PostgreSQL stopped again;
4. every host cut off by its proxy while PostgreSQL stays up (a network outage);
5. PostgreSQL stopped a third time.

Then it heals (PostgreSQL up, every proxy passing, workers stopped), runs ``journal replay``
on every host until its backlog is empty, and reads straight from PostgreSQL (psycopg2):

- the set checker (tests/faults/history.py): 0 lost, 0 duplicated, 0 unexpected writes;
- capacity within one host: on every agent, the decisions one host made never overlap beyond
  the agent's capacity (intervals ``[created_at, closed_at)``, open ones without end);
- ``over_capacity`` true to what happened: every flagged decision's interval holds a moment
  when more decisions than the capacity were open on its agent, and without the flagged
  decisions no agent is ever over capacity (no flag is missing);
- the usual invariants: open decisions = active tasks, each op applied once, no journal
  conflicts, no internal error, both committed and journaled writes acknowledged.

It prints its figures (docs/resilience.md, "The long multi-host run", records a run). It runs
in CI's plain ``pytest`` (marked ``slow`` like the other fault runs); it takes about 3 min.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.faults.cluster import PgCluster
from tests.faults.harness import ROOT, Arbiter, Run
from tests.faults.history import Event, check_set, load
from tests.faults.hosts import Host, admin_token, make_host, psql_rows, stop_all

pytestmark = [pytest.mark.faults, pytest.mark.slow]

AHEAD_S = 3 * 3600  # host h3's clock
TASK_TYPE = "documentation"
AGENTS = {"doc-a": 2, "doc-b": 2, "doc-c": 3}  # small: the workers keep them full
WORKERS = {"h1": 2, "h2": 1, "h3": 1}
SETTINGS = {
    "ARBITER_DATABASE__COMMAND_TIMEOUT": "2s",
    "ARBITER_BREAKER__RESET_TIMEOUT": "1s",  # probe often: writes alternate committed/journaled
}
#: (what, seconds): "up" is normal service; the others are the five outages
SCHEDULE: tuple[tuple[str, float], ...] = (
    ("up", 10), ("stop", 8), ("up", 10), ("cut:h2", 12), ("up", 8), ("stop", 6), ("up", 8),
    ("cut:all", 8), ("up", 8), ("stop", 6), ("up", 10),
)


@dataclass(frozen=True)
class Span:
    """One decision as PostgreSQL holds it."""

    task_id: str
    agent_id: str
    start: datetime
    end: datetime | None  # None: still open
    over_capacity: bool

    @property
    def host(self) -> str:
        return self.task_id.split("w", 1)[0]  # worker h1w2 → host h1

    def overlaps(self, other: Span) -> bool:
        return ((other.end is None or self.start < other.end)
                and (self.end is None or other.start < self.end))


def peak(spans: Iterable[Span], within: Span | None = None) -> int:
    """Most spans open at once (half-open intervals), optionally only during ``within``."""
    events: list[tuple[datetime, int]] = []
    for span in spans:
        if within is not None and not span.overlaps(within):
            continue
        start = span.start if within is None else max(span.start, within.start)
        events.append((start, 1))
        end = span.end
        if within is not None and within.end is not None:
            end = within.end if end is None else min(end, within.end)
        if end is not None:
            events.append((end, -1))
    events.sort(key=lambda e: (e[0], e[1]))  # an end before a start at the same instant
    level = top = 0
    for _, step in events:
        level += step
        top = max(top, level)
    return top


class Workers:
    def __init__(self, hosts: dict[str, Host], directory: Path, stop_file: Path) -> None:
        self.directory = directory
        self.stop_file = stop_file
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[Any] = []
        for host, count in WORKERS.items():
            for i in range(1, count + 1):
                name = f"{host}w{i}"
                log = (directory / f"{name}.log").open("wb")
                self._logs.append(log)
                self.procs[name] = subprocess.Popen(
                    [sys.executable, "-m", "tests.faults.worker", "set",
                     "--history", str(directory / f"{name}.jsonl"), "--process", name,
                     "--stop-file", str(stop_file), "--task-type", TASK_TYPE],
                    env=hosts[host].env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    def dead(self) -> list[tuple[str, int | None]]:
        return [(n, p.returncode) for n, p in self.procs.items() if p.poll() is not None]

    def stop(self, within_s: float) -> None:
        self.stop_file.touch()
        deadline = time.monotonic() + within_s
        hung = []
        for name, proc in self.procs.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                hung.append(name)
                proc.kill()
                proc.wait(timeout=30)
        for log in self._logs:
            log.close()
        assert not hung, f"workers still running {within_s:.0f}s after the stop signal: {hung}"


def nemesis(cluster: PgCluster, hosts: dict[str, Host], workers: Workers) -> dict[str, Any]:
    """Run SCHEDULE; returns what happened (outages by kind, seconds)."""
    started = time.monotonic()
    outages: Counter[str] = Counter()
    for what, seconds in SCHEDULE:
        if what == "stop":
            cluster.stop("immediate")
        elif what.startswith("cut:"):
            target = what.split(":", 1)[1]
            for name, host in hosts.items():
                if target in ("all", name):
                    host.cut_off()
        if what != "up":
            outages[what] += 1
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            crashed = workers.dead()
            assert not crashed, f"worker processes exited on their own: {crashed}"
            time.sleep(0.1)
        if what == "stop":
            cluster.start()
        for host in hosts.values():
            host.reconnect()
    return {"outages": dict(outages), "chaos_s": time.monotonic() - started}


def drain(arbiter: Arbiter, within_s: float = 90.0) -> tuple[Run, dict[str, Any]]:
    """``journal replay`` until it exits 0 with an empty backlog."""
    deadline = time.monotonic() + within_s
    while True:
        run = arbiter("--json", "journal", "replay", timeout=within_s)
        status = arbiter("--json", "journal", "status").json()
        if (run.exit == 0 and status["backlog"] == 0) or time.monotonic() > deadline:
            return run, status
        time.sleep(1.0)


def final_read(cluster: PgCluster, dbname: str) -> tuple[dict[str, list[str]], list[Span],
                                                          dict[str, int]]:
    rows = psql_rows(cluster, dbname, "SELECT id FROM agents WHERE tenant = 'default' "
                     "AND NOT (id = ANY(%s))", (list(AGENTS),))
    registered = [r[0] for r in rows]
    rows = psql_rows(cluster, dbname, "SELECT task_id, agent_id, created_at, closed_at, "
                     "over_capacity, status FROM decisions WHERE tenant = 'default'")
    spans = [Span(r[0], r[1], r[2], r[3] if r[5] != "open" else None, bool(r[4]))
             for r in rows]
    routed = [r[0] for r in rows]
    outcomes = [r[0] for r in rows if r[5] in ("succeeded", "failed")]
    (active,), = psql_rows(cluster, dbname, "SELECT coalesce(sum(active_tasks), 0) FROM agents "
                           "WHERE tenant = 'default' AND id = ANY(%s)", (list(AGENTS),))
    (ops, distinct), = psql_rows(cluster, dbname,
                                 "SELECT count(*), count(DISTINCT op_id) FROM applied_ops")
    (future,), = psql_rows(cluster, dbname, "SELECT count(*) FROM decisions WHERE created_at "
                           "> now() + interval '1 minute'")
    invariants = {"active_tasks": int(active),
                  "open_decisions": sum(1 for s in spans if s.end is None),
                  "applied_ops": int(ops), "distinct_applied_ops": int(distinct),
                  "stamped_in_the_future": int(future)}
    return {"register": registered, "route": routed, "outcome": outcomes}, spans, invariants


def capacity_report(spans: list[Span]) -> dict[str, Any]:
    """Over capacity within one host, and how true the over_capacity flags are."""
    by_agent: dict[str, list[Span]] = defaultdict(list)
    for span in spans:
        by_agent[span.agent_id].append(span)
    per_host_over: list[tuple[str, str, int]] = []  # (host, agent, peak)
    unflagged_over: list[tuple[str, int]] = []  # (agent, peak without the flagged): missing
    false_flags: list[str] = []
    peaks: dict[str, int] = {}
    for agent, mine in by_agent.items():
        capacity = AGENTS.get(agent)
        if capacity is None:
            continue  # never routed to: the workers' own agents are of another task type
        peaks[agent] = peak(mine)
        for host in sorted({s.host for s in mine}):
            top = peak(s for s in mine if s.host == host)
            if top > capacity:
                per_host_over.append((host, agent, top))
        top = peak(s for s in mine if not s.over_capacity)
        if top > capacity:
            unflagged_over.append((agent, top))
        for span in mine:
            if span.over_capacity and peak(mine, within=span) <= capacity:
                false_flags.append(span.task_id)
    return {"per_host_over": per_host_over, "missing_flags": unflagged_over,
            "false_flags": false_flags, "flagged": sum(s.over_capacity for s in spans),
            "peaks": peaks}


def acknowledged_ends(spans: list[Span], events: list[Event]) -> list[Span]:
    """The spans with each outcome's end at its acknowledgment (the worker's history, h3's
    clock corrected), not at its replay: tells which overlaps only a late ``closed_at`` made."""
    acked: dict[str, datetime] = {}
    for e in events:
        if e.type == "ok" and e.kind == "outcome":
            skew = AHEAD_S if e.process.startswith("h3") else 0
            acked[e.element] = datetime.fromtimestamp(e.time - skew, UTC)
    return [replace(s, end=min(s.end, acked[s.task_id])) if s.end is not None
            and s.task_id in acked else s for s in spans]


def test_three_hosts_five_outages_one_clock_ahead(tmp_path: Path, pg_cluster: PgCluster) -> None:
    started = time.monotonic()
    seed = int(os.environ.get("ARBITER_FAULTS_SEED", str(random.randrange(1 << 30))))
    dbname = f"mh_{uuid.uuid4().hex[:10]}"
    pg_cluster.create_database(dbname)
    hosts: dict[str, Host] = {}
    try:
        h1 = hosts["h1"] = make_host("h1", tmp_path, pg_cluster, dbname, **SETTINGS)
        run = h1.arbiter("--json", "init")
        assert run.exit == 0, run
        token = admin_token(h1)
        hosts["h2"] = make_host("h2", tmp_path, pg_cluster, dbname, token=token, **SETTINGS)
        hosts["h3"] = make_host("h3", tmp_path, pg_cluster, dbname, token=token,
                                clock_offset_s=AHEAD_S, **SETTINGS)
        for agent, capacity in AGENTS.items():
            run = h1.arbiter("--json", "agents", "register", "--id", agent, "--name", agent,
                             "--model-family", "multihost", "--task-type", TASK_TYPE,
                             "--capacity", str(capacity))
            assert run.exit == 0, run
        for host in hosts.values():  # every host has a snapshot before the first fault
            run = host.arbiter("--json", "agents", "list")
            assert run.exit == 0 and run.json()["count"] == len(AGENTS), run

        histories = tmp_path / "histories"
        histories.mkdir()
        workers = Workers(hosts, histories, tmp_path / "stop")
        try:
            chaos = nemesis(pg_cluster, hosts, workers)
        finally:
            try:
                workers.stop(within_s=60)  # first: a failing restart must not orphan them
            finally:
                for host in hosts.values():
                    host.reconnect()
                if not pg_cluster.running():
                    pg_cluster.start()
        drained = {name: drain(host.arbiter) for name, host in hosts.items()}
        skew = hosts["h3"].arbiter("health", "--json")
    finally:
        stop_all(list(hosts.values()))

    events = load(sorted(histories.glob("*.jsonl")))
    final, spans, invariants = final_read(pg_cluster, dbname)
    report = check_set(events, final)
    capacity = capacity_report(spans)
    completions = [e for e in events if e.type != "invoke"]
    ok = [e for e in completions if e.type == "ok"]
    per_host: dict[str, Counter[str]] = defaultdict(Counter)
    for e in completions:
        host = e.process.split("w", 1)[0]
        per_host[host]["ops"] += 1
        per_host[host][e.type] += 1
        if e.type == "ok":
            per_host[host][str(e.extra.get("durability"))] += 1
    internal = [e for e in completions if e.extra.get("exit") == 70]
    replayed = {name: run.json().get("applied") if run.exit == 0 else run.exit
                for name, (run, _) in drained.items()}
    elapsed = time.monotonic() - started

    print(f"\nmultihost (seed {seed}): {len(completions)} ops by {sum(WORKERS.values())} "
          f"workers on 3 hosts in {chaos['chaos_s']:.0f}s of faults, outages "
          f"{chaos['outages']}; whole test {elapsed:.0f}s")
    for host, counts in sorted(per_host.items()):
        print(f"  {host}: {dict(sorted(counts.items()))}; replayed {replayed[host]}")
    print(report.summary())
    print(f"capacity: peaks {capacity['peaks']} (capacities {AGENTS}); flagged "
          f"{capacity['flagged']}; over capacity within one host {capacity['per_host_over']}; "
          f"missing flags {capacity['missing_flags']}; false flags "
          f"{capacity['false_flags'][:10]}")
    print(f"invariants: {invariants}")
    at_ack = capacity_report(acknowledged_ends(spans, events))
    print(f"with outcomes ended at their acknowledgment: over capacity within one host "
          f"{at_ack['per_host_over']}; missing flags {at_ack['missing_flags']}; false flags "
          f"{len(at_ack['false_flags'])}")

    for name, (run, status) in drained.items():
        assert run.exit == 0 and status["backlog"] == 0, (name, run, status)
        assert status["conflicts"] == 0, (name, status)
    assert sum(chaos["outages"].values()) == 5 and chaos["outages"]["cut:h2"] == 1
    assert report.valid, "the set checker found anomalies (see the counts above)"
    totals = report.totals()
    assert totals["lost"] == 0 and totals["duplicated"] == 0 and totals["unexpected"] == 0
    assert not internal, f"internal errors (exit 70): {[e.extra for e in internal[:5]]}"
    assert invariants["active_tasks"] == invariants["open_decisions"], invariants
    assert invariants["applied_ops"] == invariants["distinct_applied_ops"], invariants
    assert invariants["stamped_in_the_future"] == 0, invariants  # h3's clock stamped nothing
    journaled = sum(1 for e in ok if e.extra.get("durability") == "journaled")
    assert journaled > 0 and len(ok) > journaled, "both paths must be exercised"
    assert all(per_host[h]["journaled"] > 0 for h in WORKERS), dict(per_host)
    # capacity: within one host always; across hosts, flagged true to the interval overlap
    assert capacity["per_host_over"] == [], capacity["per_host_over"]
    assert capacity["false_flags"] == [], capacity["false_flags"]
    assert capacity["missing_flags"] == [], capacity["missing_flags"]
    # host h3, 3 h ahead, says so
    assert skew.json()["checks"]["clock:skew"][0]["status"] == "warn", skew
