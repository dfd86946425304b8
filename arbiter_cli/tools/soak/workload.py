"""The soak's operation mix, run through the real services as a token-holding caller would.

Every operation is admitted with a soak token first (authentication, role, rate bucket, as the
CLI does), then runs one service call: register, query, route, outcome, heartbeat or remove.
Register and remove keep the fleet near ``--agents`` (churn: a new agent in, the oldest idle one
out). ``leaky`` also keeps memory on purpose, at a fixed rate per second of the run
(``LEAK_BYTES_PER_S``, whatever the operation rate), to prove that the detector and memray's
view of what is still alive both find it: a rate per operation made the verdict depend on the
machine (a fast one reached ``--max-rss`` and aborted instead of reporting the leak).
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from arbiter_cli.domain.principal import Principal
from arbiter_cli.domain.routing import Outcome
from arbiter_cli.errors import ArbiterError
from arbiter_cli.tools.soak.latency import Histogram

if TYPE_CHECKING:
    from arbiter_cli.tools.wiring import Wired

TASK = {"task_type": "code-editing", "languages": ["TypeScript"]}
QUERY = {"task_type": "code-editing", "languages": ["TypeScript"], "max_utilization": 0.8}
COMMANDS = {"register": "agents register", "query": "agents query", "route": "route task",
            "outcome": "route outcome", "heartbeat": "agents heartbeat",
            "remove": "agents remove"}
#: The deliberate leak of ``--workload leaky``: 384 KiB per second of run = 1 350 MiB/h, far
#: over any sane ``--max-slope`` (the default is 1 MiB/h), while a default 10-minute run ends
#: about 225 MiB up, under the default ``--max-rss`` of 512 MiB (and its 80 % warning). It is
#: kept in 64 KiB pieces.
LEAK_BYTES_PER_S = 384 * 1024
LEAK_BYTES = 64 * 1024
MAX_PENDING = 500  # open decisions kept for outcomes; the oldest is closed past this

#: What ``--workload leaky`` keeps forever.
LEAKED: list[bytearray] = []


def leak_on_purpose() -> None:
    """One piece of the deliberate leak of ``--workload leaky`` (memray names this function)."""
    LEAKED.append(bytearray(LEAK_BYTES))


class Leak:
    """Keeps ``LEAK_BYTES_PER_S`` per second since ``start``: the same slope at any rate."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.started: float | None = None
        self.kept = 0

    def start(self) -> None:
        self.started = self.clock()

    def catch_up(self) -> None:
        """Keep what the time since ``start`` calls for (called between operations)."""
        if self.started is None:
            return
        due = (self.clock() - self.started) * LEAK_BYTES_PER_S
        while self.kept + LEAK_BYTES <= due:
            leak_on_purpose()
            self.kept += LEAK_BYTES


def agent_spec(number: int) -> dict[str, Any]:
    return {"id": f"soak-agent-{number}", "name": f"Soak agent {number}",
            "model_family": "claude-3.5", "task_types": ["code-editing", "debugging"],
            "languages": ["TypeScript", "Python"], "capacity": 1000}


class Counters:
    """Operations, errors by kind and latency per operation; shared with the sampler thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ops: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.latency: dict[str, Histogram] = {}
        self.interval: dict[str, Histogram] = {}

    def record(self, op: str, ns: int, error: str | None) -> None:
        with self.lock:
            self.ops[op] = self.ops.get(op, 0) + 1
            if error is not None:
                self.errors[error] = self.errors.get(error, 0) + 1
            self.latency.setdefault(op, Histogram()).add(ns)
            self.interval.setdefault(op, Histogram()).add(ns)

    def take_interval(self) -> tuple[int, int, dict[str, Histogram]]:
        """Totals so far, and the latencies since the previous call."""
        with self.lock:
            interval, self.interval = self.interval, {}
            return sum(self.ops.values()), sum(self.errors.values()), interval


class Workload:
    def __init__(self, app: Wired, *, agents: int, mix: dict[str, float], leaky: bool,
                 counters: Counters, seed: int = 1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.fleet = agents
        self.leak = Leak(clock) if leaky else None
        self.counters = counters
        self.rng = random.Random(seed)
        names = [op for op, weight in mix.items() if weight > 0]
        self.ops: list[str] = names
        self.weights = [mix[op] for op in names]
        self.live: deque[str] = deque()
        self.busy: dict[str, int] = {}  # agent id -> open decisions
        self.pending: deque[tuple[str, str]] = deque()  # (decision id, agent id)
        self.next_agent = 0
        self.token = ""
        self.follow_up: list[str] = []
        self.agents = app.agents
        self.routing = app.routing
        self.security = app.security

    def setup(self) -> None:
        """Register the fleet (batches of 1 000) and issue the soak's token."""
        admin = Principal.local_admin()
        while self.next_agent < self.fleet:
            batch = [agent_spec(self.next_agent + i)
                     for i in range(min(1000, self.fleet - self.next_agent))]
            self.agents.register(admin, batch)
            self.live.extend(a["id"] for a in batch)
            self.next_agent += len(batch)
        self.token = self.security.issue(admin, role="manager", name="soak", expires_in_s=None,
                                         rate=1e6, burst=10**7).token

    def prime(self) -> None:
        """One of each operation before measuring: first-call imports and caches are no leak."""
        for op in COMMANDS:
            getattr(self, f"_{op}")(self.security.admit(self.token, COMMANDS[op]))
        for op in self.follow_up:
            getattr(self, f"_{op}")(self.security.admit(self.token, COMMANDS[op]))
        self.follow_up.clear()

    def step(self) -> None:
        """One operation of the mix, timed and counted (errors are counted, not raised)."""
        op = self.rng.choices(self.ops, self.weights)[0]
        self.run(op, getattr(self, f"_{op}"))
        while self.follow_up:  # churn that keeps the fleet and the open decisions bounded
            op = self.follow_up.pop()
            self.run(op, getattr(self, f"_{op}"))

    def run(self, op: str, call: Callable[[Principal], None]) -> None:
        error: str | None = None
        started = time.perf_counter_ns()
        try:
            call(self.security.admit(self.token, COMMANDS[op]))
        except ArbiterError as exc:
            error = f"{op}:{exc.code}"
        except Exception as exc:  # noqa: BLE001 - a soak counts every failure by kind and goes on
            error = f"{op}:{type(exc).__name__}"
        self.counters.record(op, time.perf_counter_ns() - started, error)
        self.tick()

    def start_measuring(self) -> None:
        """From now on ``leaky`` keeps its fixed rate (the fleet setup and priming are not
        part of the run)."""
        if self.leak is not None:
            self.leak.start()

    def tick(self) -> None:
        """Between operations, and while the driver waits: the leak keeps up with the clock."""
        if self.leak is not None:
            self.leak.catch_up()

    # ------------------------------------------------------------------ operations

    def _register(self, who: Principal) -> None:
        spec = agent_spec(self.next_agent)
        self.next_agent += 1
        self.agents.register(who, [spec])
        self.live.append(spec["id"])
        if len(self.live) > self.fleet + max(1, self.fleet // 10):
            self.follow_up.append("remove")

    def _remove(self, who: Principal) -> None:
        if len(self.live) <= max(1, self.fleet - self.fleet // 10):
            self._register(who)
        victim = next((a for a in self.live if not self.busy.get(a)), None)
        if victim is None:
            return
        self.live.remove(victim)
        self.agents.remove(who, victim)

    def _query(self, who: Principal) -> None:
        self.agents.query(who, QUERY)

    def _route(self, who: Principal) -> None:
        decision = self.routing.route(who, TASK).decision
        assert decision.decision_id is not None
        self.pending.append((decision.decision_id, decision.agent_id))
        self.busy[decision.agent_id] = self.busy.get(decision.agent_id, 0) + 1
        if len(self.pending) > MAX_PENDING:
            self.follow_up.append("outcome")

    def _outcome(self, who: Principal) -> None:
        if not self.pending:
            self._route(who)
        decision_id, agent_id = self.pending.popleft()
        left = self.busy.get(agent_id, 1) - 1
        if left:
            self.busy[agent_id] = left
        else:
            self.busy.pop(agent_id, None)
        self.routing.outcome(who, Outcome(success=self.rng.random() < 0.8,
                                          quality=round(self.rng.random(), 3),
                                          latency_ms=round(self.rng.uniform(100, 9000), 1)),
                             decision_id=decision_id)

    def _heartbeat(self, who: Principal) -> None:
        if self.live:
            self.agents.heartbeat(who, self.live[self.rng.randrange(len(self.live))])
