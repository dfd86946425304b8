"""Replayed decisions and outcomes (journal replay) on the in-memory store: the over_capacity
flag follows the decisions' intervals, whatever the replay order, and a replayed outcome closes
its decision at the time it was acknowledged, not at replay time."""

from __future__ import annotations

from datetime import timedelta

import pytest

from arbiter_cli.domain.routing import Decision, Outcome
from tests.unit.test_routing_service import ADMIN, T0, TASK, World, build

WIN = Outcome(success=True, quality=1.0)


def cut_off_host(capacity: int = 1) -> World:
    """A host's degraded view: the same agent (same uid) as the primary, from its snapshot."""
    host = build()
    host.register("solo", capacity=capacity)
    return host


def routed_on(host: World, task_id: str, minutes: float) -> Decision:
    host.clock.now = T0 + timedelta(minutes=minutes)
    return host.routing.route(ADMIN, {**TASK, "task_id": task_id}).decision


def flags(world: World) -> dict[str, bool]:
    decisions, _ = world.routing.history(ADMIN, limit=0)
    return {d.task_id: d.over_capacity for d in decisions}


@pytest.fixture
def primary() -> World:
    world = build()
    world.register("solo", capacity=1)
    world.clock.now = T0 + timedelta(hours=1)  # replay happens later than every write
    return world


@pytest.mark.parametrize("order", [("A", "B"), ("B", "A")])
def test_two_hosts_live_tasks_on_a_capacity_one_agent_are_flagged_in_either_order(
        primary, order) -> None:
    """Both tasks held the agent at once: both decisions are flagged, whichever replays first."""
    journaled = {"A": routed_on(cut_off_host(), "TA", 1), "B": routed_on(cut_off_host(), "TB", 2)}
    for host in order:
        primary.routing.apply_decision(ADMIN, journaled[host])
    assert flags(primary) == {"TA": True, "TB": True}
    assert primary.agent("solo").active_tasks == 2


def test_a_task_finished_before_another_host_routed_is_not_flagged(primary) -> None:
    """A's task ran [1, 2) min; B routed live at 3 min: they never shared the agent."""
    host = cut_off_host()
    mine = routed_on(host, "TA", 1)
    host.clock.now = T0 + timedelta(minutes=2)
    host.routing.outcome(ADMIN, WIN, decision_id=mine.decision_id)
    primary.clock.now = T0 + timedelta(minutes=3)
    theirs = primary.route("TB")
    primary.clock.now = T0 + timedelta(hours=1)
    routed = primary.routing.apply_decision(ADMIN, mine)
    assert flags(primary) == {"TA": True, "TB": True}  # until A's outcome replays
    assert routed.flags == {mine.decision_id: True, theirs.decision_id: True}
    closed = primary.routing.apply_outcome(ADMIN, WIN, decision_id=mine.decision_id,
                                           acknowledged_at=T0 + timedelta(minutes=2))
    assert closed.decision.closed_at == T0 + timedelta(minutes=2)
    assert closed.flags == {mine.decision_id: False, theirs.decision_id: False}
    assert flags(primary) == {"TA": False, "TB": False}
    assert primary.agent("solo").active_tasks == 1


def test_a_replayed_outcome_closes_the_decision_when_it_was_acknowledged(primary) -> None:
    decision = routed_on(cut_off_host(capacity=5), "TA", 1)
    primary.routing.apply_decision(ADMIN, decision)
    closed = primary.routing.apply_outcome(ADMIN, WIN, decision_id=decision.decision_id,
                                           acknowledged_at=T0 + timedelta(minutes=7))
    assert closed.decision.created_at == T0 + timedelta(minutes=1)  # acknowledged, not replayed
    assert closed.decision.closed_at == T0 + timedelta(minutes=7)


def test_acknowledgement_times_are_kept_between_creation_and_the_databases_now(primary) -> None:
    """A skewed host clock cannot close a decision before it began, nor in the future."""
    early = routed_on(cut_off_host(), "TA", 10)
    primary.routing.apply_decision(ADMIN, early)
    closed = primary.routing.apply_outcome(ADMIN, WIN, decision_id=early.decision_id,
                                           acknowledged_at=T0)
    assert closed.decision.closed_at == T0 + timedelta(minutes=10)
    ahead = routed_on(cut_off_host(), "TB", 24 * 60)  # a host a day ahead of the database
    applied = primary.routing.apply_decision(ADMIN, ahead).decision
    assert applied.created_at == primary.clock.now
    closed = primary.routing.apply_outcome(ADMIN, WIN, decision_id=ahead.decision_id,
                                           acknowledged_at=T0 + timedelta(days=2))
    assert closed.decision.closed_at == primary.clock.now


def test_history_lists_only_the_flagged_decisions_on_request(primary) -> None:
    primary.routing.apply_decision(ADMIN, routed_on(cut_off_host(), "TA", 1))
    primary.routing.apply_decision(ADMIN, routed_on(cut_off_host(), "TB", 2))
    primary.register("other", capacity=5)
    assert primary.route("TC").agent_id == "other"  # solo is full: an unflagged decision
    found, _ = primary.routing.history(ADMIN, over_capacity=True)
    assert sorted(d.task_id for d in found) == ["TA", "TB"]
    assert all(d.to_dict()["over_capacity"] is True for d in found)


def test_a_replayed_outcome_that_ends_an_expired_decision_later_flags_what_it_now_overlaps(
        primary) -> None:
    """A decision reaped at 10 min whose journaled outcome says 30 min held the agent until
    then: a decision that ran [20, 25) shared it, and both are flagged."""
    mine = routed_on(cut_off_host(), "TA", 1)
    primary.clock.now = T0 + timedelta(minutes=2)
    primary.routing.apply_decision(ADMIN, mine)
    primary.clock.now = T0 + timedelta(minutes=10)
    with primary.uow(write=True) as uow:  # the reaper, at 10 min (as after its TTL)
        stored = uow.decisions.get(mine.decision_id or "")
        assert stored is not None
        uow.decisions.save(stored.expire(primary.clock.now), was="open")
        uow.routing.release(ADMIN.tenant, stored.agent_uid)
        uow.commit()
    primary.clock.now = T0 + timedelta(minutes=20)
    theirs = primary.route("TB")
    primary.clock.now = T0 + timedelta(minutes=25)
    primary.succeed(theirs)  # TB ran [20, 25): it ends before A's acknowledged outcome
    primary.clock.now = T0 + timedelta(hours=1)
    assert flags(primary) == {"TA": False, "TB": False}
    closed = primary.routing.apply_outcome(ADMIN, WIN, decision_id=mine.decision_id,
                                           acknowledged_at=T0 + timedelta(minutes=30))
    assert closed.decision.closed_at == T0 + timedelta(minutes=30)
    assert flags(primary) == {"TA": True, "TB": True}

