"""``agents update --active-tasks`` (SPEC §2.1): active_tasks changes through claims and
outcomes, and through admin correction only, audited; never below the open decisions.

Choice (docs/security.md): a correction below the number of the agent's open decisions is
refused (5). Each open decision holds one claim that its outcome (or the reaper) will release,
so such a "correction" would let the agent take more than its capacity now and release below
the truth later. A correction at or above that number is allowed, so an operator can repair a
count that drifted upwards.
"""

from __future__ import annotations

import time

import pytest

from arbiter_cli.domain.principal import Principal
from arbiter_cli.domain.routing import Outcome
from arbiter_cli.errors import Conflict, Forbidden
from tests.helpers import cli, local_principals_only

AGENT = {"id": "a1", "name": "A", "model_family": "x", "task_types": ["testing"], "capacity": 3}
TASK = {"task_type": "testing"}
ADMIN = Principal("default", "admin", "admin0000000")
MANAGER = Principal("default", "manager", "manager00000")


def next_second(app, clock, store_now) -> None:  # type: ignore[no-untyped-def]
    """Wait until the store's clock is in a later whole second (the fake clock is moved)."""
    if app.engine is None:
        clock.advance(seconds=1)
        return
    start = int(store_now().timestamp())
    while int(store_now().timestamp()) == start:
        time.sleep(0.02)


def audit(app, action: str | None = None):  # type: ignore[no-untyped-def]
    with app.uow() as uow:
        return uow.audit.events("default", action=action)


@pytest.mark.parametrize("role", ["manager", "orchestrator", "viewer"])
def test_only_an_admin_may_correct_active_tasks_and_a_refusal_is_audited(backend_app, role,
                                                                        clock, store_now):
    """Any other role: exit 6 before the input is even read, audited authz.denied (one event
    per second, SPEC §4: the second refusal is made in the next second of the store's clock)."""
    local_principals_only(backend_app)
    backend_app.agents.register(ADMIN, [AGENT])
    caller = Principal("default", role, f"{role[:8]:0<12}")
    with pytest.raises(Forbidden) as caught:
        backend_app.agents.update(caller, "a1", {"active_tasks": 0})
    assert caught.value.exit_code == 6 and "active_tasks" in caught.value.message
    next_second(backend_app, clock, store_now)
    with pytest.raises(Forbidden):  # permission comes before the input model (SPEC §0)
        backend_app.agents.update(caller, "a1", {"active_tasks": "not a number"})
    denials = audit(backend_app, "authz.denied")
    assert [(e.actor, e.result, e.details["field"]) for e in denials] == [
        (caller.token_id, "denied", "active_tasks")] * 2
    assert backend_app.agents.show(ADMIN, "a1").version == 1


def test_a_manager_keeps_every_other_field(backend_app):
    backend_app.agents.register(ADMIN, [AGENT])
    assert backend_app.agents.update(MANAGER, "a1", {"capacity": 5}).capacity == 5


def test_a_correction_below_the_open_decisions_is_a_conflict(backend_app):
    """Two open decisions: 0 and 1 are refused (5) and change nothing; 2 and more are taken."""
    backend_app.agents.register(ADMIN, [AGENT])
    first = backend_app.routing.route(ADMIN, TASK).decision
    backend_app.routing.route(ADMIN, TASK)
    for below in (0, 1):
        with pytest.raises(Conflict) as caught:
            backend_app.agents.update(ADMIN, "a1", {"active_tasks": below})
        assert "2 open decision" in caught.value.message
    assert backend_app.agents.show(ADMIN, "a1").active_tasks == 2
    backend_app.agents.update(ADMIN, "a1", {"active_tasks": 3})  # drifted up: repaired down later
    fixed = backend_app.agents.update(ADMIN, "a1", {"active_tasks": 2})
    assert fixed.active_tasks == 2
    [event] = audit(backend_app, "agent.update")[:1]
    assert event.details["active_tasks"] == {"from": 3, "to": 2, "open_decisions": 2}
    assert first.decision_id is not None
    backend_app.routing.outcome(ADMIN, Outcome(success=True, quality=1.0),
                                decision_id=first.decision_id)
    assert backend_app.agents.update(ADMIN, "a1", {"active_tasks": 1}).active_tasks == 1


def test_the_cli_exit_codes(clean_env):
    """Through main() on SQLite: manager 6, admin below the open decisions 5, admin at it 0."""
    admin_token = cli("--json", "init").json()["admin_token"]
    manager = cli("--json", "--token", admin_token, "tokens", "create", "--role", "manager",
                  "--name", "ops").json()["token"]
    assert cli("--token", admin_token, "agents", "register", "--id", "a1", "--name", "A",
               "--model-family", "x", "--task-type", "testing").exit_code == 0
    assert cli("--token", admin_token, "route", "task", "--task-type", "testing").exit_code == 0
    refused = cli("--json", "--token", manager, "agents", "update", "a1", "--active-tasks", "0")
    assert refused.exit_code == 6 and refused.error()["code"] == "forbidden", refused
    below = cli("--json", "--token", admin_token, "agents", "update", "a1", "--active-tasks", "0")
    assert below.exit_code == 5 and below.error()["code"] == "conflict", below
    at = cli("--json", "--token", admin_token, "agents", "update", "a1", "--active-tasks", "1")
    assert at.exit_code == 0 and at.json()["active_tasks"] == 1, at
