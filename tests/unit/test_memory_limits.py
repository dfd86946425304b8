"""Memory limits on the core's hot paths (pytest-memray markers, SPEC §11).

The fixture builds a 1 000-agent fleet on the memory store and warms each path up, so first-call
imports and caches are not counted; the marked test body then runs the path many times.
``limit_leaks`` fails when any one allocation site keeps more than the limit once the test is
over; ``limit_memory`` bounds the peak allocated while the test runs. The limits are several times
the measured figures (docs/memory.md), low enough that a per-call leak of a few hundred bytes
over these loops, or a copy of the fleet per call, fails them.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest

from arbiter_cli.bootstrap import App
from arbiter_cli.domain.principal import Principal
from arbiter_cli.tools.soak.workload import QUERY, TASK, agent_spec

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="memray does not run on Windows"),
    # Each marked test runs under a memray Tracker (native stacks for limit_leaks): seconds, not
    # milliseconds, so they stay out of mutmut's per-mutant runs, which kill no mutant with them.
    pytest.mark.skipif("MUTANT_UNDER_TEST" in os.environ, reason="not part of mutation runs"),
]

FLEET = 1000
CALLS = 500
ADMIN = Principal.local_admin()


@pytest.fixture
def fleet(test_settings: Any) -> App:
    from arbiter_cli.bootstrap import scratch_app

    with scratch_app(test_settings, "memory", purpose="test") as (app, _where):
        app.agents.register(ADMIN, [agent_spec(i) for i in range(FLEET)])
        for i in range(50):  # warm-up: imports, caches, first-call paths
            app.agents.query(ADMIN, QUERY)
            app.routing.route(ADMIN, TASK, seed=i, dry_run=True)
        return app


@pytest.mark.limit_leaks("64 KB")
def test_registry_queries_keep_nothing_per_call(fleet: App) -> None:
    agents = fleet.agents
    for _ in range(CALLS):
        found = agents.query(ADMIN, QUERY)
    assert len(found) > 0


@pytest.mark.limit_memory("4 MB")
def test_a_registry_query_over_1000_agents_stays_small(fleet: App) -> None:
    agents = fleet.agents
    for _ in range(20):
        found = agents.query(ADMIN, {**QUERY, "limit": 0})
    assert len(found) == FLEET  # every agent scored and returned: the whole path ran


@pytest.mark.limit_leaks("64 KB")
def test_route_decisions_keep_nothing_per_call(fleet: App) -> None:
    routing = fleet.routing
    for i in range(CALLS):
        decision = routing.route(ADMIN, TASK, seed=1000 + i, dry_run=True).decision
    assert decision.agent_id.startswith("soak-agent-")


@pytest.mark.limit_memory("2 MB")
def test_a_route_decision_over_1000_agents_stays_small(fleet: App) -> None:
    routing = fleet.routing
    for i in range(20):
        decision = routing.route(ADMIN, TASK, seed=i, dry_run=True).decision
    assert decision.agent_id.startswith("soak-agent-")
