"""Simulated fleets for `route simulate` (SPEC §3.8): schedules, arrivals and the scenarios.

A ``--truth`` document maps agent ids to a success probability, a schedule
``[[task_index, p], …]`` (p holds from its task on; the first entry also before it), or an
object ``{"p": p | schedule, "arrives_at": N, "capacity": C}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from arbiter_cli.domain import validation as v

SCENARIOS = ("easy", "close", "drift", "newcomer", "capacity")
SIM_CAPACITY = 1000  # an agent's capacity unless its truth says otherwise
MAX_TASK = 1_000_000


@dataclass(frozen=True)
class SimAgent:
    """One simulated agent: its success probability over tasks, arrival and capacity."""

    name: str
    schedule: tuple[tuple[int, float], ...]  # (from task index, p), ascending
    arrives_at: int = 0
    capacity: int = SIM_CAPACITY

    def p_at(self, task: int) -> float:
        p = self.schedule[0][1]
        for start, value in self.schedule:
            if start > task:
                break
            p = value
        return p

    def to_truth(self) -> Any:
        p: Any = self.schedule[0][1] if len(self.schedule) == 1 else [
            [start, value] for start, value in self.schedule]
        if self.arrives_at == 0 and self.capacity == SIM_CAPACITY:
            return p
        return {"p": p, "arrives_at": self.arrives_at, "capacity": self.capacity}


@dataclass(frozen=True)
class Fleet:
    """Agents in id order, the default run length, and how many routes a task lasts."""

    agents: tuple[SimAgent, ...]
    tasks: int = 3000
    duration: int = 0  # 0: the outcome arrives before the next route

    def change_points(self) -> list[int]:
        """Task indices at which some agent's probability or presence changes."""
        points = {0}
        for agent in self.agents:
            points.add(agent.arrives_at)
            points.update(start for start, _ in agent.schedule)
        return sorted(points)


def parse_truth(truth: Mapping[str, Any]) -> Fleet:
    if not truth:
        raise v.fail("truth", "required", "must name at least one agent")
    agents = [_agent(v.pattern(name, v.AGENT_ID_RE, "truth", "agent id"), value)
              for name, value in truth.items()]
    if all(agent.arrives_at > 0 for agent in agents):
        raise v.fail("truth", "arrives_at", "at least one agent must be there from task 0")
    return Fleet(tuple(sorted(agents, key=lambda agent: agent.name)))


def _agent(name: str, value: Any) -> SimAgent:
    field = f"truth.{name}"
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"p", "arrives_at", "capacity"})
        if unknown:
            raise v.fail(f"{field}.{unknown[0]}", "unknown_field", "is not a truth field")
        if "p" not in value:
            raise v.fail(f"{field}.p", "required", "is required")
        return SimAgent(name, _schedule(value["p"], f"{field}.p"),
                        arrives_at=v.integer(value.get("arrives_at", 0), f"{field}.arrives_at",
                                             low=0, high=MAX_TASK),
                        capacity=v.integer(value.get("capacity", SIM_CAPACITY),
                                           f"{field}.capacity", low=1, high=SIM_CAPACITY))
    return SimAgent(name, _schedule(value, field))


def _schedule(value: Any, field: str) -> tuple[tuple[int, float], ...]:
    if not isinstance(value, list):
        return ((0, v.fraction(value, field)),)
    if not value:
        raise v.fail(field, "required", "a schedule needs at least one [task_index, p]")
    steps: dict[int, float] = {}
    for entry in value:
        if not isinstance(entry, list) or len(entry) != 2:
            raise v.fail(field, "schedule", "entries are [task_index, p]")
        steps[v.integer(entry[0], field, low=0, high=MAX_TASK)] = v.fraction(entry[1], field)
    return tuple(sorted(steps.items()))


def scenario(name: str) -> Fleet:
    """The built-in fleets of SPEC §3.8."""
    if name not in SCENARIOS:
        raise v.fail("scenario", "allowed", f"must be one of {', '.join(SCENARIOS)}")
    fixed = SimAgent
    if name == "easy":
        return Fleet((fixed("a", ((0, 0.9),)),
                      *(fixed(n, ((0, 0.5),)) for n in ("b", "c", "d", "e"))), tasks=3000)
    if name == "close":
        return Fleet(tuple(fixed(f"a{i}", ((0, round(0.60 - 0.02 * i, 2)),))
                           for i in range(10)), tasks=10_000)
    if name == "drift":  # at the middle the best breaks and another one improves
        return Fleet((fixed("a", ((0, 0.9), (2000, 0.4))), fixed("b", ((0, 0.5), (2000, 0.8))),
                      fixed("c", ((0, 0.6),)), fixed("d", ((0, 0.55),)),
                      fixed("e", ((0, 0.5),))), tasks=4000)
    if name == "newcomer":
        return Fleet((fixed("a", ((0, 0.6),)), fixed("b", ((0, 0.55),)),
                      fixed("c", ((0, 0.5),)), fixed("d", ((0, 0.45),)),
                      fixed("new", ((0, 0.8),), arrives_at=1000)), tasks=3000)
    return Fleet((fixed("a", ((0, 0.9),), capacity=2),
                  *(fixed(n, ((0, p),)) for n, p in (("b", 0.6), ("c", 0.5), ("d", 0.5)))),
                 tasks=3000, duration=20)
