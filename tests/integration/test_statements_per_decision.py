"""Statements per decision on the real path (SPEC §13.1), counted as ``arbiter bench`` counts
them (``tools/bench.StatementCounter``: SQLAlchemy's ``before_cursor_execute``). The counts are
deterministic for one process on a warm agent (its arm exists), so they are pinned exactly: a
change that adds a round trip to the write path shows here."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from arbiter_cli.domain.principal import Principal
from arbiter_cli.domain.routing import Outcome
from arbiter_cli.tools.bench import StatementCounter
from tests.helpers import postgres_url

ADMIN = Principal.local_admin()
TASK = {"task_type": "code-editing", "languages": ["TypeScript"]}
#: admission, route (a named task), outcome; SQLite counts its own BEGIN IMMEDIATE. On
#: PostgreSQL the claim and the outcome's decision lock carry the audit chain head (no head
#: read before the audit insert) and the agent lock its capabilities and arms; on both, the
#: pool carries the exclusion counts, and an agent's capabilities come with its row
#: (``agents.capabilities``), never from a statement of their own.
EXPECTED = {"postgres": {"admission": 1, "route": 5, "outcome": 3},
            "sqlite": {"admission": 3, "route": 8, "outcome": 9}}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, test_settings: Any) -> Iterator[tuple[str, Any]]:
    from arbiter_cli.bootstrap import scratch_app

    url = postgres_url() if request.param == "postgres" else None
    with scratch_app(test_settings, request.param, purpose="t", database_url=url) as (app, _):
        yield request.param, app


def test_a_decision_takes_the_pinned_number_of_statements(backend: tuple[str, Any]) -> None:
    name, app = backend
    app.agents.register(ADMIN, [{"id": "a1", "name": "A", "model_family": "x",
                                 "task_types": ["code-editing"], "languages": ["TypeScript"],
                                 "capacity": 10}])
    token = app.security.issue(ADMIN, role="orchestrator", name="n", expires_in_s=None).token
    counter = StatementCounter(app.engine)
    for n in range(3):  # the first outcome creates the arm; the next ones are the steady state
        counter.totals.clear()
        counter.calls.clear()
        admitted = counter.count("admission", lambda: app.security.admit(token, "route task"))
        decision = counter.count("route", lambda: app.routing.route(
            admitted, {**TASK, "task_id": f"t-{n}"})).decision  # noqa: B023
        admitted = counter.count("admission", lambda: app.security.admit(token, "route outcome"))
        counter.count("outcome", lambda: app.routing.outcome(
            admitted, Outcome(success=True, quality=0.9),  # noqa: B023
            decision_id=decision.decision_id))  # noqa: B023
    assert counter.per_operation() == {**{op: float(n) for op, n in EXPECTED[name].items()},
                                       "decision": float(2 * EXPECTED[name]["admission"]
                                                         + EXPECTED[name]["route"]
                                                         + EXPECTED[name]["outcome"])}
