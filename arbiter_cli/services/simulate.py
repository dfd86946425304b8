"""`route simulate`: a deterministic, offline, in-memory bandit simulation (SPEC §3.7).

Agents have a hidden success probability; each task is routed by the real ``choose`` with the
strategy under test, succeeds with the chosen agent's probability (quality 1.0, else 0.0), and
the outcome updates the arm and the agent's mean reward exactly as ``route outcome`` does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from arbiter_cli.domain import validation as v
from arbiter_cli.domain.agents import PRIOR_QUALITY, Performance, TaskResult, fold
from arbiter_cli.domain.routing import (
    STRATEGIES,
    Arm,
    Pool,
    RoutingPolicy,
    choose,
    reward,
    update_arm,
)


def truth_table(truth: Mapping[str, Any] | None, agents: int, seed: int) -> dict[str, float]:
    import numpy as np

    if truth is not None:
        if not truth:
            raise v.fail("truth", "required", "must name at least one agent")
        return {v.pattern(name, v.AGENT_ID_RE, "truth", "agent id"):
                v.fraction(p, f"truth.{name}") for name, p in truth.items()}
    agents = v.integer(agents, "agents", low=1, high=100_000)
    drawn = np.random.default_rng(seed).uniform(0.3, 0.95, agents)
    width = len(str(agents - 1))
    return {f"agent-{i:0{width}d}": round(float(p), 4) for i, p in enumerate(drawn)}


def simulate(
    policy: RoutingPolicy, *, truth: Mapping[str, float], tasks: int, strategies: Sequence[str],
    seed: int, window: int = 100,
) -> dict[str, Any]:
    tasks = v.integer(tasks, "tasks", low=1, high=1_000_000)
    for strategy in strategies:
        if strategy not in STRATEGIES:
            raise v.fail("strategy", "allowed", f"must be one of {', '.join(STRATEGIES)} or all")
    names = sorted(truth)
    best = max(names, key=lambda name: (truth[name], name))
    return {
        "seed": seed, "tasks": tasks, "best_agent": best, "truth": dict(truth),
        "strategies": [_run(policy, names, truth, best, tasks, strategy, seed,
                            STRATEGIES.index(strategy), window) for strategy in strategies],
    }


def _run(policy: RoutingPolicy, names: list[str], truth: Mapping[str, float], best: str,
         tasks: int, strategy: str, seed: int, index: int, window: int) -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng([seed, index])  # index: the strategy's place in STRATEGIES
    n = len(names)
    p = np.array([truth[name] for name in names])
    pool = Pool(
        ids=names, uids=names, active=np.zeros(n, dtype=np.int64),
        capacity=np.full(n, 1000, dtype=np.int64), available=np.ones(n, dtype=bool),
        latency_ms=np.full(n, 5000.0), mean_reward=np.full(n, PRIOR_QUALITY),
        fit=np.ones(n), arm_alpha=np.zeros(n), arm_beta=np.zeros(n),
        arm_outcomes=np.zeros(n, dtype=np.int64),
    )
    tasks_done = np.zeros(n, dtype=np.int64)
    counts = np.zeros(n, dtype=np.int64)
    best_row = names.index(best)
    chosen_rows = np.empty(tasks, dtype=np.int64)
    regret = 0.0
    gamma = policy.gamma
    for step in range(tasks):
        row = choose(pool, policy, strategy, rng).order[0]
        success = bool(rng.random() < p[row])
        r = reward(success, 1.0)  # quality 1.0 on success, as the outcome default
        arm = update_arm(Arm(float(pool.arm_alpha[row]), float(pool.arm_beta[row]),
                             int(pool.arm_outcomes[row])), r, gamma)
        pool.arm_alpha[row], pool.arm_beta[row], pool.arm_outcomes[row] = (
            arm.alpha, arm.beta, arm.outcomes)
        folded = fold(Performance(average_quality=float(pool.mean_reward[row]),
                                  task_count=int(tasks_done[row])),
                      TaskResult(success=success, quality=r), window)
        pool.mean_reward[row] = folded.average_quality
        tasks_done[row] = folded.task_count
        counts[row] += 1
        chosen_rows[step] = row
        regret += p[best_row] - p[row]
    last = chosen_rows[-500:]
    return {
        "strategy": strategy,
        "best_agent_share": round(float(counts[best_row] / tasks), 4),
        "best_agent_share_last_500": round(float((last == best_row).mean()), 4),
        "cumulative_regret": round(regret, 4),
        "counts": {name: int(counts[i]) for i, name in enumerate(names)},
    }
