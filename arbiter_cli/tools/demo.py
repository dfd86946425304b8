"""The demo fleet: agents with a hidden true skill, and simulated work that teaches the router.

Each simulated task goes through the real services: ``route task`` picks an agent with the
configured bandit strategy and claims a slot, the task succeeds with the agent's hidden
probability, and ``route outcome`` releases the slot, folds performance and updates the arm.
Under the ``drift`` scenario, half-way through the best agent breaks and another one improves
(SPEC §3.8), so the share moving to the new best agent shows the router noticing the change.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from arbiter_cli.domain.principal import Principal
from arbiter_cli.domain.routing import Outcome
from arbiter_cli.ports import AgentsPort, RoutingPort

FLEET: tuple[dict[str, Any], ...] = (
    {"id": "atlas", "model_family": "claude-3.5", "skill": 0.62,
     "task_types": ["code-editing", "code-review", "refactoring"], "languages": ["Python", "Go"],
     "specializations": ["backend"]},
    {"id": "beacon", "model_family": "gpt-4", "skill": 0.78,
     "task_types": ["code-editing", "testing", "debugging"], "languages": ["Python", "TypeScript"],
     "specializations": ["testing"]},
    {"id": "cobalt", "model_family": "claude-3", "skill": 0.64,
     "task_types": ["code-editing", "documentation"], "languages": ["Python", "Rust"],
     "specializations": ["docs"]},
    {"id": "delta", "model_family": "gpt-4o", "skill": 0.85,
     "task_types": ["code-review", "analysis", "research"], "languages": ["Python", "Java"],
     "specializations": ["security"]},
    {"id": "ember", "model_family": "llama-3", "skill": 0.55,
     "task_types": ["code-editing", "script-execution"], "languages": ["Python", "Go"],
     "specializations": ["devops"]},
    {"id": "fjord", "model_family": "claude-3.5", "skill": 0.88,
     "task_types": ["code-editing", "api-design"], "languages": ["TypeScript", "JavaScript"],
     "specializations": ["frontend"]},
    {"id": "garnet", "model_family": "gemini-1.5", "skill": 0.93,
     "task_types": ["code-editing", "debugging", "testing"], "languages": ["Python", "C++"],
     "specializations": ["performance"]},
    {"id": "harbor", "model_family": "mistral-large", "skill": 0.60,
     "task_types": ["code-editing", "general"], "languages": ["Python", "Rust", "Go"],
     "specializations": ["cli"]},
)


DEMO_SCENARIOS = ("steady", "drift")
#: drift: from the middle of the run, these agents' hidden skills (garnet breaks, harbor improves).
DRIFT = {"garnet": 0.40, "harbor": 0.95}


@dataclass
class DemoReport:
    tasks: int
    best_agent: str
    scenario: str = "steady"
    changed_at: int | None = None  # the first task of the drifted skills
    windows: list[dict[str, Any]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    successes: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {"tasks": self.tasks, "best_agent": self.best_agent, "scenario": self.scenario,
                "changed_at": self.changed_at, "windows": self.windows,
                "counts": dict(self.counts), "successes": dict(self.successes)}


def register_fleet(agents: AgentsPort, principal: Principal) -> None:
    raws = [{**{k: v for k, v in spec.items() if k != "skill"}, "name": spec["id"].title(),
             "capacity": 4} for spec in FLEET]
    agents.register(principal, raws)


def simulate(
    routing: RoutingPort, principal: Principal, *, tasks: int, seed: int, window: int = 50,
    strategy: str | None = None, progress: Callable[[int], None] | None = None,
    scenario: str = "steady",
) -> DemoReport:
    """Route ``tasks`` Python code-editing tasks and report simulated outcomes back.

    Each window reports the share of its tasks routed to the agent that was best at the time.
    """
    rng = random.Random(seed)
    skill = {spec["id"]: float(spec["skill"]) for spec in FLEET}
    capable = [s["id"] for s in FLEET if "code-editing" in s["task_types"]
               and "Python" in s["languages"]]
    changed_at = tasks // 2 + 1 if scenario == "drift" else None
    report = DemoReport(tasks=tasks, best_agent=max(capable, key=skill.__getitem__),
                        scenario=scenario, changed_at=changed_at)
    hits = routed = 0
    task = {"task_type": "code-editing", "languages": ["Python"]}
    for n in range(1, tasks + 1):
        if n == changed_at:
            skill.update(DRIFT)
            report.best_agent = max(capable, key=skill.__getitem__)
        decision = routing.route(principal, {**task, "task_id": f"demo-{n}"}, strategy=strategy,
                                 seed=rng.getrandbits(63)).decision
        chosen = decision.agent_id
        success = rng.random() < skill[chosen]
        quality = min(1.0, max(0.0, rng.gauss(skill[chosen], 0.08))) if success else 0.0
        routing.outcome(principal, Outcome(success=success, quality=round(quality, 4),
                                           latency_ms=round(rng.uniform(800, 9000), 1)),
                        decision_id=decision.decision_id)
        report.counts[chosen] += 1
        report.successes[chosen] += int(success)
        hits, routed = hits + (chosen == report.best_agent), routed + 1
        if n % window == 0 or n == tasks or n + 1 == changed_at:
            report.windows.append({"through_task": n, "best_agent": report.best_agent,
                                   "best_agent_share": round(hits / routed, 4)})
            hits = routed = 0
        if progress:
            progress(1)
    return report
