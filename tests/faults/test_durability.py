"""The Jepsen-style set test of SPEC §7 (issue 8, Done-when 1): nothing acknowledged is lost.

Four worker processes (tests/faults/worker.py, arbiter's ``main()`` in a loop) register
agents, route tasks and record outcomes, each with a unique id, logging invoke/ok/fail/info
to fsync'd histories. Meanwhile a nemesis stops the throwaway PostgreSQL with
``-m immediate`` and restarts it (at least 20 times) and SIGKILLs workers (at least 10 times),
starting a new generation of the killed worker each time. Then it heals: PostgreSQL up,
workers stopped, ``arbiter journal replay`` until the journal is empty. A final read straight
from PostgreSQL (psycopg2, not arbiter) must show 0 acknowledged writes lost, 0 duplicated,
0 unexpected. The test prints its counts.

``pytest tests/faults --long`` or ``ARBITER_FAULTS_LONG=1`` runs the long variant: 100
restarts and 50 kills (see docs/resilience.md for its measured result).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.faults.cluster import PgCluster
from tests.faults.conftest import arbiter_env, long_run
from tests.faults.harness import FLEET, ROOT, Arbiter, Run, initialize
from tests.faults.history import Event, SetReport, check_set, load

pytestmark = [pytest.mark.faults, pytest.mark.slow]

WORKERS = 4
SETTINGS = {
    "ARBITER_DATABASE__COMMAND_TIMEOUT": "2s",
    "ARBITER_BREAKER__RESET_TIMEOUT": "1s",  # probe often: writes alternate committed/journaled
}


@dataclass
class Plan:
    restarts: int
    kills: int
    up_s: tuple[float, float] = (1.5, 3.5)  # PostgreSQL up, then stopped -m immediate
    down_s: tuple[float, float] = (0.3, 2.0)  # stopped, then started again
    kill_every_s: tuple[float, float] = (2.5, 5.5)


@dataclass
class Faults:
    restarts: int = 0
    kills: int = 0
    started: float = field(default_factory=time.monotonic)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


class Workers:
    """The worker processes; a killed one is replaced by its next generation."""

    def __init__(self, env: dict[str, str], directory: Path, stop_file: Path) -> None:
        self.env = env
        self.directory = directory
        self.stop_file = stop_file
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.generation: dict[str, int] = {}
        self._logs: list[Any] = []

    def start(self, name: str) -> None:
        gen = self.generation.get(name, -1) + 1
        self.generation[name] = gen
        log = (self.directory / f"{name}-g{gen}.log").open("wb")
        self._logs.append(log)
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.worker", "set",
             "--history", str(self.directory / f"{name}-g{gen}.jsonl"),
             "--process", name, "--generation", str(gen), "--stop-file", str(self.stop_file)],
            env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        self.start(name)

    def dead(self) -> list[tuple[str, int]]:
        """Workers that exited on their own (a crash of the worker, not of the nemesis)."""
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
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        for log in self._logs:
            log.close()
        assert not hung, f"workers still running {within_s:.0f}s after the stop signal: {hung}"

    def histories(self) -> list[Path]:
        return sorted(self.directory.glob("*.jsonl"))


def nemesis(cluster: PgCluster, workers: Workers, plan: Plan, rng: random.Random) -> Faults:
    """Crash PostgreSQL and SIGKILL workers until the plan's counts are reached."""
    faults = Faults()
    names = sorted(workers.procs)
    pg_next = time.monotonic() + rng.uniform(*plan.up_s)
    kill_next = time.monotonic() + rng.uniform(*plan.kill_every_s)
    up = True
    while faults.restarts < plan.restarts or faults.kills < plan.kills or not up:
        now = time.monotonic()
        if now >= pg_next:
            if up and faults.restarts < plan.restarts:
                cluster.stop("immediate")
                up = False
                pg_next = time.monotonic() + rng.uniform(*plan.down_s)
            elif not up:
                cluster.start()
                faults.restarts += 1
                up = True
                pg_next = time.monotonic() + rng.uniform(*plan.up_s)
        if now >= kill_next and faults.kills < plan.kills:
            workers.kill(rng.choice(names))
            faults.kills += 1
            kill_next = time.monotonic() + rng.uniform(*plan.kill_every_s)
        crashed = workers.dead()
        assert not crashed, f"worker processes exited on their own (exit codes): {crashed}"
        time.sleep(0.05)
    return faults


def drain(arbiter: Arbiter, within_s: float = 120.0) -> tuple[Run, dict[str, Any]]:
    """``journal replay`` until it exits 0 with an empty backlog."""
    deadline = time.monotonic() + within_s
    while True:
        run = arbiter("--json", "journal", "replay", timeout=within_s)
        status = arbiter("--json", "journal", "status").json()
        if (run.exit == 0 and status["backlog"] == 0) or time.monotonic() > deadline:
            return run, status
        time.sleep(1.0)


def final_read(cluster: PgCluster, dbname: str) -> tuple[dict[str, list[str]], dict[str, int]]:
    """What PostgreSQL holds, read with psycopg2 straight from the cluster (not arbiter)."""
    import psycopg2

    conn = psycopg2.connect(cluster.dsn(dbname))
    try:
        with conn.cursor() as cur:
            fleet = tuple(FLEET)
            cur.execute("SELECT id FROM agents WHERE tenant = 'default' AND id NOT IN %s",
                        (fleet,))
            registered = [row[0] for row in cur.fetchall()]
            cur.execute("SELECT task_id FROM decisions WHERE tenant = 'default'")
            routed = [row[0] for row in cur.fetchall()]
            cur.execute("SELECT task_id FROM decisions WHERE tenant = 'default' "
                        "AND status IN ('succeeded', 'failed')")  # JSON outcome may hold null
            outcomes = [row[0] for row in cur.fetchall()]
            cur.execute("SELECT coalesce(sum(task_count), 0), coalesce(sum(active_tasks), 0) "
                        "FROM agents WHERE tenant = 'default' AND id IN %s", (fleet,))
            folded, active = cur.fetchone()
            cur.execute("SELECT count(*) FROM decisions WHERE tenant = 'default' "
                        "AND status = 'open'")
            (open_decisions,) = cur.fetchone()
            cur.execute("SELECT count(*), count(DISTINCT op_id) FROM applied_ops")
            ops, distinct_ops = cur.fetchone()
            # a decision made on the snapshot and replayed still names an agent that declares
            # the task's type (a damaged snapshot once routed code-review tasks to others)
            cur.execute("SELECT count(*) FROM decisions d WHERE d.tenant = 'default' AND NOT "
                        "EXISTS (SELECT 1 FROM agent_task_types t WHERE t.agent_uid = "
                        "d.agent_uid AND t.task_type = d.task_type)")
            (ineligible,) = cur.fetchone()
            cur.execute("SELECT count(*) FROM decisions WHERE tenant = 'default' "
                        "AND over_capacity")
            (over_capacity,) = cur.fetchone()
    finally:
        conn.close()
    invariants = {"outcomes_folded_into_agents": int(folded), "outcomes_read": len(outcomes),
                  "active_tasks": int(active), "open_decisions": int(open_decisions),
                  "applied_ops": int(ops), "distinct_applied_ops": int(distinct_ops),
                  "ineligible_decisions": int(ineligible), "over_capacity": int(over_capacity)}
    return {"register": registered, "route": routed, "outcome": outcomes}, invariants


def test_no_acknowledged_write_is_lost_duplicated_or_invented(
    tmp_path: Path, pytestconfig: pytest.Config, pg_cluster: PgCluster,
) -> None:
    long = long_run(pytestconfig)
    plan = Plan(restarts=100, kills=50) if long else Plan(restarts=20, kills=10)
    seed = int(os.environ.get("ARBITER_FAULTS_SEED", str(random.randrange(1 << 30))))
    rng = random.Random(seed)
    name = f"dur_{uuid.uuid4().hex[:10]}"
    pg_cluster.create_database(name)
    env = arbiter_env(tmp_path, pg_cluster.url(name), **SETTINGS)
    arbiter = Arbiter(env)
    initialize(arbiter)

    histories = tmp_path / "histories"
    histories.mkdir()
    workers = Workers(env, histories, tmp_path / "stop")
    for i in range(1, WORKERS + 1):
        workers.start(f"w{i}")
    try:
        faults = nemesis(pg_cluster, workers, plan, rng)
    finally:
        if not pg_cluster.running():
            pg_cluster.start()
        workers.stop(within_s=60)
    chaos_s = faults.elapsed()

    replayed, status = drain(arbiter)
    events = load(workers.histories())
    final, invariants = final_read(pg_cluster, name)
    report = check_set(events, final)
    completions = [e for e in events if e.type != "invoke"]
    ok = [e for e in completions if e.type == "ok"]
    by_durability = {d: sum(1 for e in ok if e.extra.get("durability") == d)
                     for d in ("committed", "journaled")}
    by_warning = {"journaled": sum(1 for e in ok if e.extra.get("journal_op")),
                  "committed": sum(1 for e in ok if not e.extra.get("journal_op"))}
    internal = [e for e in completions if e.extra.get("exit") == 70]
    exits: dict[int, int] = {}
    for e in completions:
        code = int(e.extra.get("exit", -1))
        exits[code] = exits.get(code, 0) + 1

    print(f"\ndurability ({'long' if long else 'CI'} run, seed {seed}): {faults.restarts} "
          f"PostgreSQL crashes (stop -m immediate) and restarts, {faults.kills} worker SIGKILLs "
          f"in {chaos_s:.0f}s; {len(workers.histories())} worker generations")
    print(report.summary())
    print(f"acknowledged: {by_warning} (by the warning), {by_durability} (by meta.durability); "
          f"exit codes: {dict(sorted(exits.items()))}; "
          f"replay: {replayed.stdout.strip()[:200]}; journal after: {status}")
    print(f"invariants: {invariants}")
    reasons: dict[tuple[str, int, str], int] = {}
    for e in completions:
        if e.type != "ok":
            key = (e.kind, int(e.extra.get("exit", -1)), str(e.extra.get("stderr", ""))[:160])
            reasons[key] = reasons.get(key, 0) + 1
    for (kind, code, why), n in sorted(reasons.items(), key=lambda kv: -kv[1])[:10]:
        print(f"  {n:5d} x {kind} exit {code}: {why}")

    try:
        verdict(report, replayed, status, faults, plan, internal, invariants, by_warning)
        mislabelled = [e for e in ok if e.extra.get("journal_op")
                       and e.extra.get("durability") != "journaled"]
        assert not mislabelled, (f"{len(mislabelled)} journaled writes said durability "
                                 f"{mislabelled[0].extra.get('durability')!r} in meta")
    except AssertionError:
        kept = keep_artifacts(tmp_path, seed)
        lost = [(kind, e) for kind, k in report.kinds.items() for e in k.lost]
        print(f"artifacts kept in {kept}")
        print("lost writes, followed:", trace_lost(lost, events, pg_cluster, name))
        raise


def verdict(report: SetReport, replayed: Run, status: dict[str, Any], faults: Faults,
            plan: Plan, internal: list[Event], invariants: dict[str, int],
            by_warning: dict[str, int]) -> None:
    assert replayed.exit == 0 and status["backlog"] == 0, (replayed, status)
    assert faults.restarts >= plan.restarts and faults.kills >= plan.kills
    assert report.valid, "the set checker found anomalies (see the counts above)"
    totals = report.totals()
    assert totals["lost"] == 0 and totals["duplicated"] == 0 and totals["unexpected"] == 0
    assert status["conflicts"] == 0, "journaled writes conflicted at replay"
    assert not internal, f"internal errors (exit 70): {[e.extra for e in internal[:5]]}"
    # each outcome folded into its agent exactly once; each open decision holds one slot
    assert invariants["outcomes_folded_into_agents"] == invariants["outcomes_read"], invariants
    assert invariants["active_tasks"] == invariants["open_decisions"], invariants
    assert invariants["applied_ops"] == invariants["distinct_applied_ops"], invariants
    assert invariants["ineligible_decisions"] == 0, invariants
    # the run exercised both paths, or it proved little
    assert by_warning["committed"] > 0 and by_warning["journaled"] > 0, by_warning
    assert all(report.kinds[k].ok > 0 for k in ("register", "route", "outcome")), totals


def keep_artifacts(tmp_path: Path, seed: int) -> Path:
    """Histories, worker logs and arbiter's data dir, kept past pytest's tmp_path rotation."""
    kept = Path(tempfile.gettempdir()) / f"arbiter-faults-durability-{seed}"
    shutil.rmtree(kept, ignore_errors=True)
    shutil.copytree(tmp_path, kept, ignore=shutil.ignore_patterns("*.lock"))
    return kept


def trace_lost(lost: list[tuple[str, str]], events: list[Event], cluster: PgCluster,
               dbname: str) -> list[dict[str, Any]]:
    """For each lost element: how it was acknowledged, and whether its op id was applied."""
    import psycopg2

    traced = []
    conn = psycopg2.connect(cluster.dsn(dbname))
    try:
        for kind, element in lost[:20]:
            acked = [e for e in events if e.type == "ok" and e.kind == kind
                     and e.element == element]
            extra = acked[0].extra if acked else {}
            op = extra.get("journal_op")
            applied = None
            if op:
                with conn.cursor() as cur:
                    cur.execute("SELECT kind, applied_at FROM applied_ops WHERE op_id = %s",
                                (op,))
                    applied = cur.fetchone()
            traced.append({"kind": kind, "element": element, "ack": extra,
                           "at": acked[0].time if acked else None,
                           "journal_op_applied": None if applied is None else str(applied)})
    finally:
        conn.close()
    return traced
