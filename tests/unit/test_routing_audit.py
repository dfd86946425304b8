"""What routing writes to the audit chain and how it refuses (SPEC §3, §4.1, §7): routes,
outcomes, reaps and replayed decisions each leave one event with what happened; a decision
that is missing or another tenant's is refused and audited the same way.

Built on the ``world`` DSL of test_routing_service.py (the memory store, a hand-moved clock).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from arbiter_cli.domain.principal import Principal
from arbiter_cli.domain.routing import Decision, Outcome
from arbiter_cli.errors import Conflict, InvalidInput, NotFound
from tests.unit.test_routing_service import ADMIN, OTHER, T0, TASK, TTL, World, build

ROUTER = Principal("default", "manager", "routertoken1")
WIN = Outcome(success=True, quality=0.75)


@pytest.fixture
def world() -> World:
    return build()


def events(world: World, tenant: str = "default") -> list[tuple[Any, ...]]:
    """(actor, action, target, result, details) of every event of ``tenant``, oldest first."""
    with world.uow() as uow:
        chain = uow.audit.events(tenant, ascending=True)
    return [(e.actor, e.action, e.target, e.result, dict(e.details)) for e in chain]


def test_a_route_and_its_outcome_are_audited_with_what_was_decided(world):
    world.register("a1")
    routed = world.routing.route(ROUTER, {**TASK, "task_id": "T-1"}, strategy="weighted",
                                 seed=11).decision
    world.routing.outcome(ROUTER, WIN, decision_id=routed.decision_id)
    assert events(world)[-2:] == [
        ("routertoken1", "route.task", routed.decision_id, "ok",
         {"task_id": "T-1", "agent_id": "a1", "strategy": "weighted", "seed": 11}),
        ("routertoken1", "route.outcome", routed.decision_id, "ok",
         {"task_id": "T-1", "agent_id": "a1", "status": "succeeded", "quality": 0.75}),
    ]


def test_a_dry_run_neither_claims_nor_audits(world):
    world.register("a1")
    before = events(world)
    decision = world.routing.route(ADMIN, {**TASK, "task_id": "T-1"}, dry_run=True).decision
    assert (decision.decision_id, decision.agent_id) == (None, "a1")
    assert events(world) == before
    assert world.active("a1") == [0]


def test_a_dry_run_decision_carries_the_correlation_id(world):
    """The decision a dry run returns is the one a claim would store, correlation id included
    (built once, not copied with it afterwards)."""
    world.register("a1")
    decision = world.routing.route(ADMIN, {**TASK, "task_id": "T-1"}, dry_run=True, seed=4,
                                   correlation_id="c-dry").decision
    assert (decision.correlation_id, decision.seed, decision.task_id) == ("c-dry", 4, "T-1")
    assert decision.status == "open" and decision.confidence == 1.0
    assert [c["agent_id"] for c in decision.candidates] == ["a1"]


def test_a_reap_is_audited_with_the_count_and_the_first_hundred_ids(world):
    world.register("a1", capacity=200)
    routed = [world.route(f"T-{n:03d}") for n in range(101)]
    world.clock.now = T0 + TTL + timedelta(seconds=1)
    assert len(world.routing.reap(ROUTER)) == 101
    [event] = [e for e in events(world) if e[1] == "route.reap"]
    reaped = [d.decision_id for d in routed]
    assert event == ("routertoken1", "route.reap", None, "ok",
                     {"count": 101, "decision_ids": reaped[:100]})


def test_a_reap_that_expires_nothing_writes_no_event(world):
    world.register("a1")
    world.route("T-1")
    assert world.routing.reap(ROUTER) == []
    assert [e[1] for e in events(world)].count("route.reap") == 0


# ---------------------------------------------------------------------------- finding decisions


@pytest.mark.parametrize(("ids", "field", "message"), [
    ({}, "decision_id", "decision_id: give a DECISION_ID or --task-id, not both"),
    ({"decision_id": "d", "task_id": "t"}, "decision_id",
     "decision_id: give a DECISION_ID or --task-id, not both"),
    ({"decision_id": "a b"}, "decision_id",
     "decision_id: 'a b' is not a valid decision id (^[A-Za-z0-9._:-]{1,128}$)"),
    ({"task_id": "a b"}, "task_id", "task_id: 'a b' is not a valid task id "
     "(^[A-Za-z0-9._:-]{1,128}$)"),
], ids=["neither", "both", "bad-decision-id", "bad-task-id"])
def test_an_outcome_names_its_decision_once_and_well_formed(world, ids, field, message):
    with pytest.raises(InvalidInput) as caught:
        world.routing.outcome(ADMIN, WIN, **ids)
    assert (caught.value.field, caught.value.message) == (field, message)


def test_an_outcome_for_an_unknown_task_says_so(world):
    with pytest.raises(NotFound) as caught:
        world.routing.outcome(ADMIN, WIN, task_id="T-9")
    assert caught.value.message == "no decision for task 'T-9'"


@pytest.mark.parametrize("action", ["route.outcome", "route.explain"])
def test_another_tenant_s_decision_is_refused_like_a_missing_one_and_audited(world, action):
    """The caller's chain says 'not found' either way; the owner's names the attempt."""
    world.register("a1")
    theirs = world.route("T-1")
    for decision_id in (theirs.decision_id, "no-such-decision"):
        with pytest.raises(NotFound) as caught:
            if action == "route.outcome":
                world.routing.outcome(OTHER, WIN, decision_id=decision_id)
            else:
                world.routing.explain(OTHER, decision_id)
        assert caught.value.message == f"decision {decision_id!r} not found"
    assert events(world, "other")[-2:] == [
        (None, action, theirs.decision_id, "denied", {"reason": "not found"}),
        (None, action, "no-such-decision", "denied", {"reason": "not found"}),
    ]
    assert events(world)[-1] == (None, action, theirs.decision_id, "denied",
                                 {"reason": "cross-tenant", "caller_tenant": "other"})


def test_explain_checks_the_decision_id_first(world):
    with pytest.raises(InvalidInput) as caught:
        world.routing.explain(ADMIN, "a b")
    assert (caught.value.field, caught.value.rule) == ("decision_id", "pattern")


# ---------------------------------------------------------------------------- history


@pytest.mark.parametrize("status", ["open", "succeeded", "failed", "expired"])
def test_history_accepts_each_decision_status(world, status):
    assert world.routing.history(ADMIN, status=status) == ([], None)


def test_history_refuses_another_status_saying_which_exist(world):
    with pytest.raises(InvalidInput) as caught:
        world.routing.history(ADMIN, status="closed")
    assert (caught.value.field, caught.value.message) == (
        "status", "status: must be open, succeeded, failed or expired")


def test_history_pages_by_a_hundred_by_default(world):
    world.register("a1", capacity=200)
    for n in range(101):
        world.route(f"T-{n:03d}")
    page, cursor = world.routing.history(ADMIN)
    assert len(page) == 100 and cursor == page[-1].decision_id


# ---------------------------------------------------------------------------- replayed decisions


def journaled(task_id: str = "T-J", minutes: float = 1, **changes: Any) -> Decision:
    """A decision a cut-off host acknowledged for agent a1 (uid-0001, capacity 1) at T0 plus
    ``minutes``."""
    host = build()
    host.register("a1", capacity=1)
    host.clock.now = T0 + timedelta(minutes=minutes)
    return replace(host.route(task_id), **changes)


@pytest.fixture
def primary() -> World:
    world = build()
    world.register("a1", capacity=1)
    world.clock.now = T0 + timedelta(hours=1)
    return world


def test_a_replayed_decision_is_audited_as_journaled(primary):
    decision = journaled(strategy="ucb", seed=5)
    applied = primary.routing.apply_decision(ROUTER, decision)
    assert (applied.already_routed, applied.decision.created_at) == (False, T0 + timedelta(
        minutes=1))
    assert events(primary)[-1] == ("routertoken1", "route.task", decision.decision_id, "ok", {
        "task_id": "T-J", "agent_id": "a1", "strategy": "ucb", "seed": 5, "journaled": True,
        "over_capacity": False, "agent_unavailable": False})


def test_a_decision_replayed_twice_is_stored_once(primary):
    decision = journaled()
    primary.routing.apply_decision(ADMIN, decision)
    before = events(primary)
    again = primary.routing.apply_decision(ADMIN, decision)
    assert (again.already_routed, again.decision.decision_id) == (True, decision.decision_id)
    assert events(primary) == before
    assert primary.active("a1") == [1]


def test_a_replayed_claim_on_an_unavailable_agent_is_applied_flagged_and_audited(primary):
    primary.agents.set_status(ADMIN, "a1", "draining")
    decision = journaled()
    applied = primary.routing.apply_decision(ADMIN, decision).decision
    assert (applied.agent_unavailable, applied.over_capacity) == (True, False)
    assert primary.active("a1") == [1]
    details = events(primary)[-1][4]
    assert (details["agent_unavailable"], details["agent_status"]) == (True, "draining")


def test_a_replayed_claim_over_capacity_is_applied_flagged_and_audited(primary):
    """Two cut-off hosts each gave the capacity-1 agent a task at once: the second replay
    flags both, and its event names the other decision whose flag it changed."""
    first = journaled("T-A", minutes=1)
    second = journaled("T-B", minutes=2)
    primary.routing.apply_decision(ADMIN, first)
    routed = primary.routing.apply_decision(ADMIN, second)
    assert routed.decision.over_capacity is True
    assert routed.flags == {first.decision_id: True, second.decision_id: True}
    details = events(primary)[-1][4]
    assert (details["over_capacity"], details["over_capacity_changed"]) == (
        True, {first.decision_id: True})


def test_a_journaled_decision_needs_its_id_and_the_caller_s_tenant(primary):
    for decision in (journaled(decision_id=None), journaled(tenant="other")):
        with pytest.raises(InvalidInput) as caught:
            primary.routing.apply_decision(ADMIN, decision)
        assert caught.value.message == "a journaled decision needs its id and its caller's tenant"


def test_a_journaled_decision_whose_id_another_tenant_holds_conflicts_and_is_audited(primary):
    primary.register("b1", principal=OTHER)
    theirs = primary.routing.route(OTHER, {**TASK, "task_id": "T-O"}).decision
    with pytest.raises(Conflict) as caught:
        primary.routing.apply_decision(ADMIN, journaled(decision_id=theirs.decision_id))
    assert caught.value.message == (
        f"the journaled decision id {theirs.decision_id} is already in use")
    assert events(primary)[-1] == (None, "route.task", theirs.decision_id, "denied",
                                   {"reason": "not found"})


def test_a_journaled_decision_for_a_removed_agent_conflicts(primary):
    decision = journaled()
    primary.agents.remove(ADMIN, "a1")
    with pytest.raises(Conflict) as caught:
        primary.routing.apply_decision(ADMIN, decision)
    assert caught.value.message == (f"agent 'a1' was removed before the journaled decision "
                                    f"{decision.decision_id} reached the database")


def test_a_journaled_decision_for_an_agent_registered_again_conflicts(primary):
    decision = journaled(agent_uid="uid-host")
    with pytest.raises(Conflict) as caught:
        primary.routing.apply_decision(ADMIN, decision)
    assert caught.value.message == (
        f"agent 'a1' was removed and registered again before the journaled decision "
        f"{decision.decision_id} reached the database: it was made for the earlier agent "
        f"(uid uid-host), not this one (uid uid-0001)")


def test_a_replayed_outcome_is_audited_as_journaled(primary):
    decision = journaled()
    primary.routing.apply_decision(ADMIN, decision)
    primary.routing.apply_outcome(ROUTER, WIN, decision_id=decision.decision_id,
                                  acknowledged_at=T0 + timedelta(minutes=2))
    assert events(primary)[-1] == ("routertoken1", "route.outcome", decision.decision_id, "ok", {
        "task_id": "T-J", "agent_id": "a1", "status": "succeeded", "quality": 0.75,
        "journaled": True})
