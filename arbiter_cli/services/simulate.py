"""`route simulate`: a deterministic, offline, in-memory bandit simulation (SPEC §3.7, §3.8).

Agents have a hidden success probability, which may follow a schedule, and may arrive late;
each task is routed by the real ``choose`` with the strategy under test, succeeds with the
chosen agent's probability at that task (quality 1.0, else 0.0), and the outcome updates the
arm and the agent's mean reward exactly as ``route outcome`` does. When tasks last
``duration`` routes, the chosen agent's slot is claimed until its outcome comes back.

Regret at a task is the success probability of the best agent that could take it (arrived,
with a free slot) minus the chosen agent's; the best agent is the best one present.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
from arbiter_cli.domain.scenarios import Fleet, SimAgent, parse_truth

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

CURVE_POINTS = 100
MAX_RUNS = 1000
#: Two-sided 97.5 % quantiles of Student's t by degrees of freedom (1.96 beyond 30).
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def truth_table(truth: Mapping[str, Any] | None, agents: int, seed: int) -> dict[str, float]:
    """Constant probabilities: the given ones, or ``agents`` drawn from U(0.3, 0.95)."""
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


def fleet_of(truth: Mapping[str, Any] | None, agents: int, seed: int) -> Fleet:
    """The fleet of a ``--truth`` document (schedules, arrivals), or a drawn one."""
    if truth is not None:
        return parse_truth(truth)
    table = truth_table(None, agents, seed)
    return Fleet(tuple(SimAgent(name, ((0, p),)) for name, p in table.items()))


def simulate(
    policy: RoutingPolicy, *, truth: Mapping[str, float] | Fleet, tasks: int,
    strategies: Sequence[str], seed: int, window: int = 100, runs: int = 1,
) -> dict[str, Any]:
    """Run every strategy ``runs`` times (seeds seed … seed+runs−1) and summarise."""
    fleet = truth if isinstance(truth, Fleet) else fleet_of(truth, 0, seed)
    tasks = v.integer(tasks, "tasks", low=1, high=1_000_000)
    runs = v.integer(runs, "runs", low=1, high=MAX_RUNS)
    for strategy in strategies:
        if strategy not in STRATEGIES:
            raise v.fail("strategy", "allowed", f"must be one of {', '.join(STRATEGIES)} or all")
    summaries = [_summary([_run(policy, fleet, tasks, strategy, seed + k, window)
                           for k in range(runs)], strategy) for strategy in strategies]
    last = fleet.agents[_best_rows(fleet, tasks)[-1]].name
    return {
        "seed": seed, "tasks": tasks, "runs": runs, "best_agent": last,
        "truth": {agent.name: agent.to_truth() for agent in fleet.agents},
        "strategies": summaries,
    }


@dataclass
class _Trace:
    """One run of one strategy: per task, the chosen row, the best row and the regret."""

    chosen: npt.NDArray[np.int64]
    best: npt.NDArray[np.int64]
    regret: npt.NDArray[np.float64]
    names: list[str]


def _best_rows(fleet: Fleet, tasks: int) -> list[int]:
    """The best present agent's row at each change point's task, expanded per task."""
    import numpy as np

    rows = np.empty(tasks, dtype=np.int64)
    points = [t for t in fleet.change_points() if t < tasks] + [tasks]
    for start, end in zip(points, points[1:], strict=False):
        present = [(agent.p_at(start), agent.name, i) for i, agent in enumerate(fleet.agents)
                   if agent.arrives_at <= start]
        rows[start:end] = max(present)[2] if present else 0
    result: list[int] = rows.tolist()
    return result


def _run(policy: RoutingPolicy, fleet: Fleet, tasks: int, strategy: str, seed: int,
         window: int) -> _Trace:
    import numpy as np

    rng = np.random.default_rng([seed, _stream(strategy)])
    agents, n = fleet.agents, len(fleet.agents)
    pool = Pool(
        ids=[a.name for a in agents], uids=[a.name for a in agents],
        active=np.zeros(n, dtype=np.int64),
        capacity=np.array([a.capacity for a in agents], dtype=np.int64),
        available=np.array([a.arrives_at == 0 for a in agents]),
        latency_ms=np.full(n, 5000.0), mean_reward=np.full(n, PRIOR_QUALITY),
        fit=np.ones(n), arm_alpha=np.zeros(n), arm_beta=np.zeros(n),
        arm_outcomes=np.zeros(n, dtype=np.int64), arm_total_alpha=np.zeros(n),
        arm_total_beta=np.zeros(n),
    )
    learner = _Learner(pool, policy.gamma, window)
    points = set(fleet.change_points())
    p = np.zeros(n)
    pending: deque[tuple[int, int, bool]] = deque()
    chosen = np.empty(tasks, dtype=np.int64)
    regret = np.empty(tasks)
    for step in range(tasks):
        if step in points:
            p = np.array([a.p_at(step) for a in agents])
            pool.available = np.array([a.arrives_at <= step for a in agents])
        while pending and pending[0][0] <= step:
            learner.learn(*pending.popleft()[1:])
        free = pool.available & (pool.active < pool.capacity)
        row = choose(pool, policy, strategy, rng).order[0]
        success = bool(rng.random() < p[row])
        regret[step] = float(p[free].max()) - p[row]
        chosen[step] = row
        if fleet.duration:
            pool.active[row] += 1
            pending.append((step + fleet.duration, row, success))
        else:
            learner.learn(row, success)
    return _Trace(chosen, np.array(_best_rows(fleet, tasks)), regret, pool.ids)


def _stream(strategy: str) -> int:
    """A strategy's generator: its place in STRATEGIES, except that thompson-stationary shares
    thompson's (common random numbers), so the two make the same choices until the change
    detector first resets an arm, and a difference between them is the detector's doing."""
    return STRATEGIES.index("thompson" if strategy == "thompson-stationary" else strategy)


class _Learner:
    """What ``route outcome`` does to the pool's columns: release, fold, update the arm."""

    def __init__(self, pool: Pool, gamma: float, window: int) -> None:
        import numpy as np

        self.pool, self.gamma, self.window = pool, gamma, window
        self.recent = np.zeros((len(pool.ids), 2))
        self.changes = np.zeros(len(pool.ids), dtype=np.int64)
        self.tasks_done = np.zeros(len(pool.ids), dtype=np.int64)

    def learn(self, row: int, success: bool) -> None:
        pool = self.pool
        assert pool.arm_total_alpha is not None and pool.arm_total_beta is not None
        pool.active[row] = max(0, int(pool.active[row]) - 1)
        r = reward(success, 1.0)  # quality 1.0 on success, as the outcome default
        arm = update_arm(Arm(float(pool.arm_alpha[row]), float(pool.arm_beta[row]),
                             int(pool.arm_outcomes[row]), float(self.recent[row, 0]),
                             float(self.recent[row, 1]), float(pool.arm_total_alpha[row]),
                             float(pool.arm_total_beta[row]), int(self.changes[row])),
                         r, self.gamma)
        pool.arm_alpha[row], pool.arm_beta[row], pool.arm_outcomes[row] = (
            arm.alpha, arm.beta, arm.outcomes)
        self.recent[row] = arm.recent_alpha, arm.recent_beta
        pool.arm_total_alpha[row], pool.arm_total_beta[row] = arm.total_alpha, arm.total_beta
        self.changes[row] = arm.changes
        folded = fold(Performance(average_quality=float(pool.mean_reward[row]),
                                  task_count=int(self.tasks_done[row])),
                      TaskResult(success=success, quality=r), self.window)
        pool.mean_reward[row] = folded.average_quality
        self.tasks_done[row] = folded.task_count


def _summary(traces: list[_Trace], strategy: str) -> dict[str, Any]:
    import numpy as np

    names = traces[0].names
    regrets = np.array([t.regret.sum() for t in traces])
    shares = np.array([_share(t, None) for t in traces])
    counts = np.sum([np.bincount(t.chosen, minlength=len(names)) for t in traces], axis=0)
    curves = np.mean([np.cumsum(t.regret) for t in traces], axis=0)
    tasks = len(curves)
    marks = sorted({max(1, math.ceil(k * tasks / CURVE_POINTS)) for k in range(1, 101)})
    edges = [0, *marks]
    return {
        "strategy": strategy,
        "best_agent_share": _round(shares.mean()),
        "best_agent_share_last_500": _round(np.mean([_share(t, 500) for t in traces])),
        "best_agent_share_last_1000": _round(np.mean([_share(t, 1000) for t in traces])),
        "cumulative_regret": round(float(regrets.mean()), 4),
        "regret_ci95": _interval(regrets),
        "share_ci95": [_round(x) for x in _interval(shares)],
        "counts": {name: int(counts[i]) for i, name in enumerate(names)},
        "regret_curve": [[mark, round(float(curves[mark - 1]), 4)] for mark in marks],
        "share_curve": [[end, _round(np.mean([
            (t.chosen[start:end] == t.best[start:end]).mean() for t in traces]))]
            for start, end in zip(edges, edges[1:], strict=False)],
    }


def _share(trace: _Trace, last: int | None) -> float:
    chosen, best = (trace.chosen, trace.best) if last is None else (
        trace.chosen[-last:], trace.best[-last:])
    return float((chosen == best).mean())


def _interval(values: npt.NDArray[np.float64]) -> list[float]:
    """Mean ± t·s/√K, the 95 % interval of the mean over K runs (a point when K = 1)."""
    mean = float(values.mean())
    if values.size < 2:
        return [round(mean, 4), round(mean, 4)]
    t = T975[values.size - 2] if values.size - 1 <= len(T975) else 1.96
    half = t * float(values.std(ddof=1)) / math.sqrt(values.size)
    return [round(mean - half, 4), round(mean + half, 4)]


def _round(value: Any) -> float:
    return round(float(value), 4)
