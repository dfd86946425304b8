"""Benchmarks of SPEC §13, run through the services on a scratch store.

Every timed operation is measured with ``perf_counter_ns``; a serial loop of queries gives the
throughput. Results have the shape of SPEC §13's JSON.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from arbiter_cli.adapters.scratch import scratch_app
from arbiter_cli.config import Settings
from arbiter_cli.domain.agents import TaskResult
from arbiter_cli.domain.principal import Principal
from arbiter_cli.errors import InvalidInput
from arbiter_cli.services.agents import AgentService

WORKLOADS = ("registry-v1", "registry-v2")
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


def run(
    settings: Settings, *, workload: str, agents: int, backend: str,
    database_url: str | None = None, queries: int = 1000, seconds: float = 5.0,
    log: Log | None = None,
) -> dict[str, Any]:
    if workload not in WORKLOADS:
        raise InvalidInput(f"workload: must be one of {', '.join(WORKLOADS)}",
                           field="workload", rule="allowed")
    say = log or (lambda _message: None)
    principal = Principal.local_admin()
    with scratch_app(settings, backend, purpose="bench", database_url=database_url) as (app, where):
        say(f"bench {workload} on {backend} ({where})")
        service = app.agents
        if workload == "registry-v1":
            timer, throughput, extra = _registry_v1(service, principal, agents, queries, seconds,
                                                    say)
        else:
            timer, throughput, extra = _registry_v2(service, principal, say)
            agents = 500
    return {
        "workload": workload, "backend": backend, "agents": agents,
        "operations": timer.summary(), "throughput": throughput, **extra,
    }


def _v1_agent(i: int) -> dict[str, Any]:
    return {
        "id": f"benchmark-agent-{i}", "name": f"Benchmark agent {i}", "model_family": "claude-3.5",
        "task_types": ["code-editing"], "languages": ["TypeScript"],
        "performance": {"success_rate": 0.8, "average_quality": 0.75,
                        "average_latency_ms": 5000.0},
    }


def _registry_v1(
    service: AgentService, principal: Principal, agents: int, queries: int, seconds: float,
    say: Log,
) -> tuple[Timer, dict[str, float], dict[str, Any]]:
    rng = random.Random(1)
    timer = Timer()
    start = time.perf_counter()
    for first in range(0, agents, 1000):
        service.register(principal, [_v1_agent(i) for i in range(first, min(agents, first + 1000))])
    say(f"registered {agents} agents in {time.perf_counter() - start:.2f} s")
    query = {"task_type": "code-editing", "languages": ["TypeScript"], "max_utilization": 0.8}
    everything = {**query, "limit": 0}
    for _ in range(queries):
        timer.time("query", partial(service.query, principal, query))
    all_samples = queries if agents <= 1000 else max(10, queries // 10)
    for _ in range(all_samples):
        timer.time("query_all", partial(service.query, principal, everything))
    for _ in range(queries):
        result = TaskResult(success=rng.random() > 0.2, quality=rng.random(),
                            latency_ms=rng.uniform(0, 5000))
        timer.time("update", partial(service.record, principal, "benchmark-agent-0", result))
    say(f"timed {queries} queries and updates; running the {seconds:g} s query loop")
    throughput = timer.throughput()
    done, deadline = 0, time.perf_counter() + seconds
    loop_start = time.perf_counter()
    while time.perf_counter() < deadline:
        service.query(principal, query)
        done += 1
    throughput["query"] = round(done / (time.perf_counter() - loop_start), 1)
    return timer, throughput, {"query_all_samples": all_samples}


def _registry_v2(
    service: AgentService, principal: Principal, say: Log
) -> tuple[Timer, dict[str, float], dict[str, Any]]:
    import psutil

    rng = random.Random(2)
    timer = Timer()
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
