"""Benchmarks of SPEC §13, run through the services on a scratch store.

Every timed operation is measured with ``perf_counter_ns``; a serial loop of queries gives the
throughput. Results have the shape of SPEC §13's JSON.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from arbiter_cli.adapters.scratch import check_database_url, refresh_statistics
from arbiter_cli.config import Settings
from arbiter_cli.dburl import render
from arbiter_cli.domain.agents import TaskResult
from arbiter_cli.domain.principal import Principal
from arbiter_cli.domain.routing import OPEN, Outcome
from arbiter_cli.errors import InvalidInput
from arbiter_cli.observability.progress import NO_PROGRESS, Tracker
from arbiter_cli.ports import AgentsPort
from arbiter_cli.tools.spawn import python_command
from arbiter_cli.tools.wiring import ScratchStore

WORKLOADS = ("registry-v1", "registry-v2", "route", "e2e", "api")
Log = Callable[[str], None]


class Timer:
    """Latency samples per operation, and the wall time spent on each."""

    def __init__(self) -> None:
        self.samples: dict[str, list[int]] = {}

    def time(self, op: str, call: Callable[[], object]) -> object:
        start = time.perf_counter_ns()
        result = call()
        self.samples.setdefault(op, []).append(time.perf_counter_ns() - start)
        return result

    def summary(self) -> dict[str, dict[str, float]]:
        import numpy as np

        found = {}
        for op, values in self.samples.items():
            ms = np.asarray(values, dtype=np.float64) / 1e6
            found[op] = {
                "samples": int(ms.size),
                "p50_ms": round(float(np.percentile(ms, 50)), 4),
                "p95_ms": round(float(np.percentile(ms, 95)), 4),
                "p99_ms": round(float(np.percentile(ms, 99)), 4),
                "mean_ms": round(float(ms.mean()), 4),
            }
        return found

    def throughput(self) -> dict[str, float]:
        return {op: round(len(v) / (sum(v) / 1e9), 1) for op, v in self.samples.items() if sum(v)}


class _Counted(Timer):
    """A timer that counts each timed call as one step of the phase in progress."""

    def __init__(self, progress: Tracker) -> None:
        super().__init__()
        self.progress = progress

    def time(self, op: str, call: Callable[[], object]) -> object:
        result = super().time(op, call)
        self.progress.advance()
        return result


def _register_in_batches(progress: Tracker, agents: int,
                         register: Callable[[int, int], object]) -> None:
    """``register(first, last)`` for each batch of 1 000 agents, as the phase "registering"."""
    progress.update(0, total=agents, phase="registering agents")
    for first in range(0, agents, 1000):
        last = min(agents, first + 1000)
        register(first, last)
        progress.update(last)


def _loop(progress: Tracker, seconds: float, phase: str, call: Callable[[], object]) -> float:
    """Calls per second of ``call`` repeated for ``seconds`` (progress: the seconds spent)."""
    progress.update(0, total=seconds, phase=phase)
    done, started = 0, time.perf_counter()
    deadline = started + seconds
    while (now := time.perf_counter()) < deadline:
        call()
        done += 1
        if not done & 0xFF:
            progress.update(now - started)
    return round(done / (time.perf_counter() - started), 1)


def run(
    settings: Settings, *, workload: str, agents: int, backend: str,
    database_url: str | None = None, queries: int = 1000, seconds: float = 5.0,
    processes: int | None = None, warm_outcomes: int | None = None, log: Log | None = None,
    scratch_app: ScratchStore, progress: Tracker = NO_PROGRESS, server_workers: int = 1,
) -> dict[str, Any]:
    """Run ``workload`` on a store from ``scratch_app`` (``bootstrap.scratch_app``); each
    phase reports its progress (``observability.progress``)."""
    if workload not in WORKLOADS:
        raise InvalidInput(f"workload: must be one of {', '.join(WORKLOADS)}",
                           field="workload", rule="allowed")
    _check_processes(workload, backend, processes, server_workers)
    processes = processes or (4 if workload == "api" else 1)
    check_database_url(backend, database_url)
    say = log or (lambda _message: None)
    principal = Principal.local_admin()
    with scratch_app(settings, backend, purpose="bench", database_url=database_url) as (app, where):
        say(f"bench {workload} on {backend} ({where})")
        service = app.agents
        extra: dict[str, Any]
        if workload == "registry-v1":
            timer, throughput, extra = _registry_v1(service, principal, agents, queries, seconds,
                                                    say, partial(refresh_statistics, app.engine),
                                                    progress)
        elif workload == "registry-v2":
            timer, throughput, extra = _registry_v2(service, principal, say, progress)
            agents = 500
        elif workload == "route":
            timer, throughput, extra = _route(app, principal, agents, queries,
                                              10 * agents if warm_outcomes is None
                                              else warm_outcomes, say, progress)
        elif workload == "e2e":
            timer, throughput, extra = _e2e(app, principal, agents, seconds, processes, say,
                                            progress)
        else:
            timer, throughput, extra = _api(app, principal, agents, seconds, processes,
                                            server_workers, say, progress)
    return {
        "workload": workload, "backend": backend, "agents": agents,
        "operations": timer.summary(), "throughput": throughput, **extra,
    }


def _check_processes(workload: str, backend: str, processes: int | None,
                     server_workers: int) -> None:
    if workload == "api" and backend == "memory":
        raise InvalidInput("--workload api needs --backend sqlite or postgres (arbiter serve "
                           "runs in its own process)", field="backend", rule="allowed")
    if (processes or 1) > 1 and (workload not in ("e2e", "api") or backend == "memory"):
        raise InvalidInput("--processes > 1 needs --workload e2e or api on sqlite or postgres "
                           "(a memory store lives in one process)", field="processes",
                           rule="backend")
    if server_workers > 1 and workload != "api":
        raise InvalidInput("--server-workers > 1 needs --workload api", field="server_workers",
                           rule="workload")


def _v1_agent(i: int) -> dict[str, Any]:
    return {
        "id": f"benchmark-agent-{i}", "name": f"Benchmark agent {i}", "model_family": "claude-3.5",
        "task_types": ["code-editing"], "languages": ["TypeScript"],
        "performance": {"success_rate": 0.8, "average_quality": 0.75,
                        "average_latency_ms": 5000.0},
    }


def _registry_v1(
    service: AgentsPort, principal: Principal, agents: int, queries: int, seconds: float,
    say: Log, after_load: Callable[[], None], progress: Tracker,
) -> tuple[Timer, dict[str, float], dict[str, Any]]:
    rng = random.Random(1)
    timer = _Counted(progress)
    start = time.perf_counter()
    _register_in_batches(progress, agents, lambda first, last: service.register(
        principal, [_v1_agent(i) for i in range(first, last)]))
    say(f"registered {agents} agents in {time.perf_counter() - start:.2f} s")
    after_load()
    query = {"task_type": "code-editing", "languages": ["TypeScript"], "max_utilization": 0.8}
    everything = {**query, "limit": 0}
    all_samples = queries if agents <= 1000 else max(10, queries // 10)
    progress.update(0, total=2 * queries + all_samples, phase="timing queries and updates")
    for _ in range(queries):
        timer.time("query", partial(service.query, principal, query))
    for _ in range(all_samples):
        timer.time("query_all", partial(service.query, principal, everything))
    for _ in range(queries):
        result = TaskResult(success=rng.random() > 0.2, quality=rng.random(),
                            latency_ms=rng.uniform(0, 5000))
        timer.time("update", partial(service.record, principal, "benchmark-agent-0", result))
    say(f"timed {queries} queries and updates; running the {seconds:g} s query loop")
    throughput = timer.throughput()
    throughput["query"] = _loop(progress, seconds, "query loop",
                                partial(service.query, principal, query))
    return timer, throughput, {"query_all_samples": all_samples}


def _registry_v2(
    service: AgentsPort, principal: Principal, say: Log, progress: Tracker
) -> tuple[Timer, dict[str, float], dict[str, Any]]:
    import psutil

    rng = random.Random(2)
    timer = _Counted(progress)
    progress.update(0, total=REGISTRY_V2_OPS, phase="registry-v2 operations")
    families = ("gpt-4", "claude-3")
    for i in range(100):
        raw = {"id": f"agent-{i}", "name": f"Agent {i}", "model_family": families[i % 2],
               "task_types": ["code-editing"], "languages": ["TypeScript"]}
        timer.time("register", partial(service.register, principal, [raw]))
    for i in range(500):
        timer.time("show", partial(service.show, principal, f"agent-{i % 100}"))
    for i in range(200):
        task_type = ("code-editing", "debugging")[i % 2]
        timer.time("query", partial(service.query, principal, {"task_type": task_type}))
    for i in range(300):
        result = TaskResult(success=rng.random() > 0.2, quality=rng.random(),
                            latency_ms=rng.uniform(0, 5000))
        timer.time("update", partial(service.record, principal, f"agent-{i % 100}", result))
    kinds = ("code-editing", "debugging", "testing")
    languages = ("TypeScript", "Python")
    for i in range(100, 500):
        raw = {"id": f"agent-{i}", "name": f"Agent {i}", "model_family": families[i % 2],
               "task_types": [kinds[i % 3]], "languages": [languages[i % 2]]}
        timer.time("register_more", partial(service.register, principal, [raw]))
    rss = psutil.Process().memory_info().rss
    say(f"registry-v2 done; RSS {rss / 2**20:.1f} MiB")
    return timer, timer.throughput(), {"memory": {"rss_bytes": rss}}


def _route_agents(agents: int, capacity: int) -> list[dict[str, Any]]:
    return [{"id": f"route-agent-{i}", "name": f"Route agent {i}", "model_family": "claude-3.5",
             "task_types": ["code-editing"], "languages": ["TypeScript"], "capacity": capacity}
            for i in range(agents)]


REGISTRY_V2_OPS = 100 + 500 + 200 + 300 + 400  # its five loops below
TASK = {"task_type": "code-editing", "languages": ["TypeScript"]}


def _route(app: Any, principal: Principal, agents: int, decisions: int, warm_outcomes: int,
           say: Log, progress: Tracker) -> tuple[Timer, dict[str, float], dict[str, Any]]:
    """Decisions only (a dry run: choose, no claim, no commit), cold and after outcomes."""
    rng = random.Random(3)
    timer = _Counted(progress)
    _register_in_batches(progress, agents, lambda first, last: app.agents.register(
        principal, [{**a, "id": f"route-agent-{first + i}"}
                    for i, a in enumerate(_route_agents(last - first, 1000))]))
    refresh_statistics(app.engine)
    routing = app.routing
    progress.update(0, total=decisions, phase="routing (cold)")
    for i in range(decisions):
        timer.time("route_cold", partial(routing.route, principal, TASK, seed=i, dry_run=True))
    say(f"warming up with {warm_outcomes} routed tasks and outcomes")
    progress.update(0, total=warm_outcomes, phase="warm-up outcomes")
    for i in range(warm_outcomes):
        decision = routing.route(principal, TASK, seed=i).decision
        routing.outcome(principal, Outcome(success=rng.random() < 0.8, quality=rng.random()),
                        decision_id=decision.decision_id)
        progress.advance()
    progress.update(0, total=decisions, phase="routing (warm)")
    for i in range(decisions):
        timer.time("route_warm", partial(routing.route, principal, TASK, seed=10**6 + i,
                                         dry_run=True))
    return timer, timer.throughput(), {"warm_outcomes": warm_outcomes}


T = TypeVar("T")


class StatementCounter:
    """Database statements per operation, counted by SQLAlchemy's ``before_cursor_execute``
    event (every statement a cursor sends, not an estimate). ``BEGIN`` and ``COMMIT`` that the
    driver sends by itself (psycopg2) do not pass through a cursor and are not counted; on
    SQLite the ``BEGIN [IMMEDIATE]`` that arbiter issues is. No engine (the memory store):
    nothing is counted."""

    def __init__(self, engine: Any) -> None:
        self.totals: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self._seen = 0
        if engine is not None:
            from sqlalchemy import event

            event.listen(engine, "before_cursor_execute", self._statement)

    def _statement(self, *_args: Any) -> None:
        self._seen += 1

    def count(self, op: str, call: Callable[[], T]) -> T:
        before = self._seen
        result = call()
        self.totals[op] = self.totals.get(op, 0) + self._seen - before
        self.calls[op] = self.calls.get(op, 0) + 1
        return result

    def merge(self, totals: dict[str, int], calls: dict[str, int]) -> None:
        for op, n in totals.items():
            self.totals[op] = self.totals.get(op, 0) + n
        for op, n in calls.items():
            self.calls[op] = self.calls.get(op, 0) + n

    def per_operation(self) -> dict[str, float]:
        """Mean statements per call of each op, and per decision (route, outcome and the two
        admissions)."""
        found = {op: round(self.totals[op] / n, 2) for op, n in self.calls.items() if n}
        decisions = self.calls.get("route", 0)
        if decisions:
            found["decision"] = round(sum(self.totals.values()) / decisions, 2)
        return found


class CapacityWatch:
    """Checks, every 100 ms while the workers run (more often would take CPU from the workers
    on a 2-core machine) and once after, that no agent of the scratch
    store holds more active tasks than its capacity, nor more than its open decisions."""

    def __init__(self, engine: Any) -> None:
        import threading

        self._engine = engine
        self.checks = 0
        self._exceeded = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _check(self) -> None:
        from sqlalchemy import func, select

        from arbiter_cli.adapters.sql import tables as t

        a, d = t.agents.c, t.decisions.c
        open_count = (select(func.count()).where(d.agent_uid == a.uid, d.status == OPEN)
                      .scalar_subquery())
        with self._engine.connect() as conn:
            over = conn.execute(select(func.count()).select_from(t.agents).where(
                (a.active_tasks > a.capacity) | (open_count > a.capacity))).scalar_one()
        self.checks += 1
        self._exceeded = self._exceeded or bool(over)

    def _watch(self) -> None:
        while not self._done.wait(0.1):
            self._check()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()
        self._check()

    def held(self) -> bool:
        return not self._exceeded


E2E_WORKER = """
import json, random, sys, time
from arbiter_cli.bootstrap import build
from arbiter_cli.config import load_settings
from arbiter_cli.domain.principal import Principal
from arbiter_cli.domain.routing import OPEN, Outcome
job = json.loads(sys.stdin.readline())  # on stdin: argv is visible to every user of the host
url, worker, seconds, token = job["url"], job["worker"], job["seconds"], job["token"]
app = build(load_settings(), url=url)
routing, security, rng = app.routing, app.security, random.Random(worker)
from arbiter_cli.tools.bench import StatementCounter
counter = StatementCounter(app.engine)
task = {"task_type": "code-editing", "languages": ["TypeScript"]}
routes, outcomes, both = [], [], []
deadline = time.perf_counter() + seconds
n = 0
while time.perf_counter() < deadline:
    t0 = time.perf_counter_ns()
    admin = counter.count("admission", lambda: security.admit(token, "route task"))
    decision = counter.count("route", lambda: routing.route(
        admin, {**task, "task_id": f"w{worker}-{n}"})).decision
    t1 = time.perf_counter_ns()
    admin = counter.count("admission", lambda: security.admit(token, "route outcome"))
    counter.count("outcome", lambda: routing.outcome(
        admin, Outcome(success=rng.random() < 0.8, quality=rng.random()),
        decision_id=decision.decision_id))
    t2 = time.perf_counter_ns()
    routes.append(t1 - t0); outcomes.append(t2 - t1); both.append(t2 - t0)
    n += 1
app.close()
print(json.dumps({"samples": {"route": routes, "outcome": outcomes, "e2e": both},
                  "statements": counter.totals, "calls": counter.calls}))
"""


def _e2e(app: Any, principal: Principal, agents: int, seconds: float, processes: int,
         say: Log, progress: Tracker) -> tuple[Timer, dict[str, float], dict[str, Any]]:
    """Route + outcome, committed, from ``processes`` OS processes on one store.

    As a real command would: each call is admitted with a bench token (authenticated,
    authorized, rate-limited with a bucket too large to refuse) and audited.
    """
    import json
    import subprocess

    app.agents.register(principal, _route_agents(agents, 1000))
    refresh_statistics(app.engine)
    token = app.security.issue(principal, role="orchestrator", name="bench",
                               expires_in_s=None, rate=1e6, burst=10**7).token
    timer = Timer()
    started = time.perf_counter()
    progress.update(0, total=seconds, phase="routing and reporting")
    counter = StatementCounter(app.engine if app.engine is None else None)  # workers count
    watch = None if app.engine is None else CapacityWatch(app.engine)
    if watch is None:  # memory: one process, in this one
        _e2e_loop(app, token, timer, seconds, counter, progress)
    else:
        url = render(app.engine.url)
        say(f"{processes} processes routing and reporting for {seconds:g} s")
        workers = [subprocess.Popen(python_command("-c", E2E_WORKER), stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for _ in range(processes)]
        for number, worker in enumerate(workers):  # the URL and token never go in argv
            assert worker.stdin is not None
            worker.stdin.write(json.dumps({"url": url, "worker": number, "seconds": seconds,
                                           "token": token}) + "\n")
            worker.stdin.flush()
        while (spent := time.perf_counter() - started) < seconds:  # they print at the end
            progress.update(spent)
            time.sleep(min(0.25, seconds - spent))
        progress.update(seconds)
        for worker in workers:
            out, err = worker.communicate(timeout=seconds * 10 + 120)
            if worker.returncode != 0:
                raise RuntimeError(f"bench worker failed: {err.strip().splitlines()[-1:]}")
            found = json.loads(out.strip().splitlines()[-1])
            for op, values in found["samples"].items():
                timer.samples.setdefault(op, []).extend(values)
            counter.merge(found["statements"], found["calls"])
        watch.stop()
    wall = time.perf_counter() - started
    decisions = len(timer.samples.get("route", []))
    throughput = {op: round(len(values) / wall, 1) for op, values in timer.samples.items()}
    throughput["decisions"] = round(decisions / wall, 1)
    verdict = app.security.verify(principal)
    return timer, throughput, {"processes": processes, "wall_s": round(wall, 2),
                               "decisions": decisions, "security": "on", "audit": "on",
                               "statements": counter.per_operation(),
                               "capacity_never_exceeded": watch is None or watch.held(),
                               "capacity_checks": 0 if watch is None else watch.checks,
                               "audit_verifies": verdict.ok, "audit_events": verdict.events}


def _e2e_loop(app: Any, token: str, timer: Timer, seconds: float,
              counter: StatementCounter, progress: Tracker = NO_PROGRESS) -> None:
    security, routing = app.security, app.routing
    started = time.perf_counter()
    deadline, n = started + seconds, 0
    while (now := time.perf_counter()) < deadline:
        if not n & 0xF:
            progress.update(now - started)
        t0 = time.perf_counter_ns()
        admitted = counter.count("admission", partial(security.admit, token, "route task"))
        decision = counter.count("route", partial(routing.route, admitted,
                                                  {**TASK, "task_id": f"t-{n}"})).decision
        t1 = time.perf_counter_ns()
        admitted = counter.count("admission", partial(security.admit, token, "route outcome"))
        counter.count("outcome", partial(routing.outcome, admitted,
                                         Outcome(success=True, quality=0.9),
                                         decision_id=decision.decision_id))
        t2 = time.perf_counter_ns()
        for op, value in (("route", t1 - t0), ("outcome", t2 - t1), ("e2e", t2 - t0)):
            timer.samples.setdefault(op, []).append(value)
        n += 1
    progress.update(min(time.perf_counter() - started, seconds))  # the last, whatever n was


def _api(app: Any, principal: Principal, agents: int, seconds: float, processes: int,
         workers: int, say: Log, progress: Tracker,
         ) -> tuple[Timer, dict[str, float], dict[str, Any]]:
    """Route + outcome over HTTP against ``arbiter serve --workers N`` (``tools.bench_api``)."""
    from arbiter_cli.tools.bench_api import run_api

    app.agents.register(principal, _route_agents(agents, 1000))
    refresh_statistics(app.engine)
    samples, extra = run_api(app, principal, seconds=seconds, processes=processes,
                             workers=workers, say=say, progress=progress,
                             watch_capacity=CapacityWatch)
    timer = Timer()
    timer.samples = samples
    wall = extra["wall_s"] or 1.0
    throughput = {op: round(len(values) / wall, 1) for op, values in samples.items()}
    throughput["decisions"] = round(extra["decisions"] / wall, 1)
    return timer, throughput, {"security": "on", "audit": "on", **extra}
