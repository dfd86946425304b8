"""What the agent registry writes to the audit chain (SPEC §4): one event per write, naming
the actor, the action, the agent and what changed; refused corrections and replayed uids.

The memory store is the fake of the ports; events are read back through its audit port.
"""

from __future__ import annotations

from typing import Any

import pytest

from arbiter_cli.adapters.memory import MemoryUnitOfWorkFactory
from arbiter_cli.domain.agents import TaskResult
from arbiter_cli.domain.principal import Principal
from arbiter_cli.domain.routing import RoutingPolicy
from arbiter_cli.errors import Conflict, Forbidden, InvalidInput
from arbiter_cli.services.agents import AgentService
from arbiter_cli.services.routing import RoutingService
from arbiter_cli.tools.setup import initialize

ADMIN = Principal("default", "admin", "admintoken01")
MANAGER = Principal("default", "manager", "managertok01")


@pytest.fixture
def audited(uow_factory: MemoryUnitOfWorkFactory, clock: Any) -> MemoryUnitOfWorkFactory:
    """The store after ``arbiter init``: tenant default exists, so refusals are audited too."""
    initialize(uow_factory, lambda: None, clock)
    return uow_factory


def events(store: MemoryUnitOfWorkFactory) -> list[tuple[Any, ...]]:
    """Every event of tenant default, oldest first, as (actor, action, target, result, details)."""
    with store() as uow:
        chain = uow.audit.events("default", ascending=True)
    return [(e.actor, e.action, e.target, e.result, dict(e.details)) for e in chain]


def test_each_write_appends_one_event_naming_actor_action_agent_and_change(
        service: AgentService, audited, raw):
    service.register(ADMIN, [raw("a")])
    service.update(ADMIN, "a", {"name": "New name", "capacity": 3})
    service.set_status(ADMIN, "a", "draining", "deploy")
    service.heartbeat(ADMIN, "a")
    service.record(ADMIN, "a", TaskResult(success=True, quality=0.5, latency_ms=120.0,
                                          task_type="code-review"))
    service.remove(ADMIN, "a")
    assert events(audited) == [
        ("admintoken01", "agent.register", "a", "ok",
         {"count": 1, "ids": ["a"], "truncated": False}),
        ("admintoken01", "agent.update", "a", "ok", {"fields": ["capacity", "name"]}),
        ("admintoken01", "agent.status", "a", "ok", {"status": "draining", "reason": "deploy"}),
        ("admintoken01", "agent.heartbeat", "a", "ok", {}),
        ("admintoken01", "agent.record", "a", "ok", {
            "success": True, "quality": 0.5, "latency_ms": 120.0, "task_type": "code-review"}),
        ("admintoken01", "agent.remove", "a", "ok", {"uid": "uid-0001"}),
    ]


def test_a_registration_of_many_agents_names_the_first_hundred_and_no_target(
        service: AgentService, audited, raw):
    service.register(ADMIN, [raw(f"a{i:03d}") for i in range(101)])
    [event] = events(audited)
    assert event[:4] == ("admintoken01", "agent.register", None, "ok")
    assert event[4] == {"count": 101, "ids": [f"a{i:03d}" for i in range(100)],
                        "truncated": True}


def test_cleanup_audits_the_agents_it_marked_offline(service: AgentService, audited, raw,
                                                      clock):
    """One event: the threshold, the first hundred ids and the count of marked agents."""
    service.register(ADMIN, [raw(f"a{i:03d}") for i in range(101)])
    clock.advance(seconds=120)
    marked = service.cleanup(ADMIN, 60.0, dry_run=False)
    assert len(marked) == 101
    assert events(audited)[-1] == ("admintoken01", "agent.cleanup", None, "ok", {
        "older_than_s": 60.0, "ids": [f"a{i:03d}" for i in range(100)], "count": 101})


def test_a_cleanup_that_marks_nobody_writes_no_event(service: AgentService, audited, raw):
    service.register(ADMIN, [raw("a")])
    assert service.cleanup(ADMIN, 60.0, dry_run=False) == []
    assert [e[1] for e in events(audited)] == ["agent.register"]


# ---------------------------------------------------------------------------- corrections


def test_a_correction_of_active_tasks_is_audited_with_the_open_decisions(
        service: AgentService, audited, raw):
    """An admin correction records from, to and the open decisions it had to respect."""
    service.register(ADMIN, [raw("a", capacity=4)])
    service.update(ADMIN, "a", {"active_tasks": 2})
    assert events(audited)[-1] == ("admintoken01", "agent.update", "a", "ok", {
        "fields": ["active_tasks"],
        "active_tasks": {"from": 0, "to": 2, "open_decisions": 0}})


def test_a_manager_correcting_active_tasks_is_refused_and_audited(
        service: AgentService, audited, raw, clock):
    """Only an admin corrects active_tasks: a manager gets exit 6 and an authz.denied event."""
    service.register(ADMIN, [raw("a", capacity=4)])
    with pytest.raises(Forbidden) as caught:
        service.update(MANAGER, "a", {"active_tasks": 2})
    assert events(audited)[-1] == ("managertok01", "authz.denied", None, "denied", {
        "reason": caught.value.message, "command": "agents update", "field": "active_tasks",
        "window_start": int(clock().timestamp())})
    assert service.show(ADMIN, "a").active_tasks == 0


def test_a_manager_may_change_other_fields(service: AgentService, audited, raw):
    service.register(ADMIN, [raw("a")])
    assert service.update(MANAGER, "a", {"capacity": 7, "active_tasks": None}).capacity == 7


@pytest.fixture
def routing(audited: MemoryUnitOfWorkFactory, policy) -> RoutingService:
    return RoutingService(audited, policy, RoutingPolicy())


def test_active_tasks_may_not_go_below_the_open_decisions(
        service: AgentService, routing: RoutingService, audited, raw):
    """Two open decisions hold two slots: 1 is refused (exit 5, saying why), 2 is allowed."""
    service.register(ADMIN, [raw("a", capacity=4)])
    for n in range(2):
        routing.route(ADMIN, {"task_type": "code-review", "task_id": f"t{n}"})
    with pytest.raises(Conflict) as caught:
        service.update(ADMIN, "a", {"active_tasks": 1})
    assert caught.value.message == (
        "agent 'a' holds 2 open decision(s): --active-tasks must be at least 2 (record their "
        "outcomes, or `arbiter route reap` expired ones, first)")
    assert service.update(ADMIN, "a", {"active_tasks": 2}).active_tasks == 2
    assert events(audited)[-1][4]["active_tasks"] == {"from": 2, "to": 2, "open_decisions": 2}


# ---------------------------------------------------------------------------- replayed uids


def test_a_replayed_registration_keeps_the_uids_it_was_given(service: AgentService, raw):
    created = service.register(ADMIN, [raw("a"), raw("b")], uids=["host-uid-1", "host-uid-2"])
    assert [a.uid for a in created] == ["host-uid-1", "host-uid-2"]


@pytest.mark.parametrize(("uids", "message", "rule"), [
    (["only-one"], "uids: give one uid per agent (2)", "count"),
    ("ab", "uids: give one uid per agent (2)", "count"),
    (["ok-1", "not a uid"], "uids: not a uid", "pattern"),
    (["ok-1", "x" * 37], "uids: not a uid", "pattern"),
    (["ok-1", 7], "uids: not a uid", "pattern"),
], ids=["too-few", "a-string", "a-space", "too-long", "not-text"])
def test_replayed_uids_must_be_one_well_formed_uid_per_agent(service: AgentService, raw, uids,
                                                             message, rule):
    with pytest.raises(InvalidInput) as caught:
        service.register(ADMIN, [raw("a"), raw("b")], uids=uids)
    error = caught.value
    assert (error.message, error.field, error.rule) == (message, "uids", rule)
    assert service.list(ADMIN, limit=0).items == []
