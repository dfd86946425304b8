"""Routing through the real services on memory, SQLite and PostgreSQL (SPEC §3)."""

from __future__ import annotations

from typing import Any

import pytest

from arbiter_cli.domain.principal import Principal
from arbiter_cli.domain.routing import BANDITS, STRATEGIES, Outcome
from arbiter_cli.errors import AtCapacity, Conflict, NoCapableAgent, NotFound
from tests.helpers import local_principals_only

TASK = {"task_type": "code-review", "languages": ["Python"]}


def fleet(n: int = 3, capacity: int = 2, **extra: Any) -> list[dict[str, Any]]:
    return [{"id": f"agent-{i}", "name": f"Agent {i}", "model_family": "x",
             "task_types": ["code-review"], "languages": ["Python"], "capacity": capacity,
             **extra} for i in range(n)]


@pytest.fixture
def routing(backend_app):  # type: ignore[no-untyped-def]
    return backend_app.routing


def active(agents, admin) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {a.id: a.active_tasks for a in agents.list(admin, limit=0).items}


def test_route_claims_one_slot_and_records_an_open_decision(agents, routing, admin):
    agents.register(admin, fleet())
    routed = routing.route(admin, {**TASK, "task_id": "T-1"}, seed=3)
    decision = routed.decision
    assert not routed.already_routed and decision.status == "open"
    assert active(agents, admin)[decision.agent_id] == 1
    assert sum(active(agents, admin).values()) == 1
    stored = routing.explain(admin, decision.decision_id)
    assert stored.to_dict() == decision.to_dict()
    assert [c["agent_id"] for c in stored.candidates][0] == decision.agent_id
    assert stored.seed == 3 and stored.requirements["languages"] == ["Python"]


def test_retried_route_returns_the_open_decision_and_claims_nothing(agents, routing, admin):
    agents.register(admin, fleet())
    first = routing.route(admin, {**TASK, "task_id": "T-1"})
    again = routing.route(admin, {**TASK, "task_id": "T-1"})
    assert again.already_routed and again.decision.decision_id == first.decision.decision_id
    assert sum(active(agents, admin).values()) == 1


def test_dry_run_changes_no_state(agents, routing, admin):
    """Property (d)."""
    agents.register(admin, fleet())
    before = [a.to_dict() for a in agents.list(admin, limit=0).items]
    dry = routing.route(admin, TASK, dry_run=True, seed=1).decision
    assert dry.decision_id is None
    assert [a.to_dict() for a in agents.list(admin, limit=0).items] == before
    assert routing.history(admin)[0] == []


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_same_state_seed_and_strategy_give_the_same_decision(agents, routing, admin, strategy):
    agents.register(admin, fleet(5))
    for seed in (1, 2):
        routed = routing.route(admin, TASK, seed=seed, strategy=strategy)
        routing.outcome(admin, Outcome(success=seed == 1, quality=0.7),
                        decision_id=routed.decision.decision_id)
    first = routing.route(admin, TASK, seed=42, strategy=strategy, dry_run=True).decision
    second = routing.route(admin, TASK, seed=42, strategy=strategy, dry_run=True).decision
    assert (first.agent_id, first.candidates, first.confidence) == (
        second.agent_id, second.candidates, second.confidence)


def test_capacity_is_never_exceeded_and_then_exit_9(agents, routing, admin):
    agents.register(admin, fleet(3, capacity=2))
    for i in range(6):
        routing.route(admin, {**TASK, "task_id": f"T-{i}"})
    assert active(agents, admin) == {"agent-0": 2, "agent-1": 2, "agent-2": 2}
    with pytest.raises(AtCapacity) as caught:
        routing.route(admin, {**TASK, "task_id": "T-7"})
    assert caught.value.exit_code == 9
    assert caught.value.details["excluded"] == {"capacity": 3}


def test_no_capable_agent_is_exit_8_with_counts(agents, routing, admin):
    agents.register(admin, fleet(2))
    agents.register(admin, [{"id": "tester", "name": "T", "model_family": "x",
                             "task_types": ["testing"]}])
    with pytest.raises(NoCapableAgent) as caught:
        routing.route(admin, {"task_type": "code-review", "languages": ["Rust"]})
    assert caught.value.exit_code == 8
    assert caught.value.details["excluded"] == {"task_type": 1, "language": 2}


def test_excluded_reasons_and_examples_are_recorded(agents, routing, admin):
    agents.register(admin, fleet(4))
    agents.set_status(admin, "agent-0", "draining")
    agents.update(admin, "agent-1", {"active_tasks": 2})
    agents.register(admin, [{"id": "rusty", "name": "R", "model_family": "x",
                             "task_types": ["code-review"], "languages": ["Rust"]}])
    decision = routing.route(admin, TASK).decision
    assert decision.excluded == {"language": 1, "status": 1, "capacity": 1}
    assert decision.examples == {"language": ["rusty"], "status": ["agent-0"],
                                 "capacity": ["agent-1"]}
    assert decision.agent_id in {"agent-2", "agent-3"}


def test_outcome_releases_folds_and_is_idempotent(agents, routing, admin):
    agents.register(admin, fleet(1))
    decision = routing.route(admin, {**TASK, "task_id": "T-1"}).decision
    done = routing.outcome(admin, Outcome(success=True, quality=0.9, latency_ms=100),
                           task_id="T-1")
    assert done.decision.status == "succeeded" and not done.already_recorded
    agent = agents.show(admin, "agent-0")
    assert agent.active_tasks == 0 and agent.performance.task_count == 1
    assert agent.performance.average_quality == pytest.approx(0.9)
    again = routing.outcome(admin, Outcome(success=True, quality=0.9, latency_ms=100),
                            decision_id=decision.decision_id)
    assert again.already_recorded
    assert agents.show(admin, "agent-0").performance.task_count == 1
    with pytest.raises(Conflict):
        routing.outcome(admin, Outcome(success=False, quality=0.0),
                        decision_id=decision.decision_id)
    with pytest.raises(NotFound):
        routing.outcome(admin, Outcome(success=True, quality=1.0),
                        decision_id="01900000-0000-7000-8000-000000000000")


def test_another_tenants_decision_answers_like_a_missing_one(backend_app, agents, routing,
                                                              admin, clock):
    local_principals_only(backend_app)
    from arbiter_cli.tools.setup import initialize

    agents.register(admin, fleet(1))
    decision = routing.route(admin, TASK).decision
    initialize(backend_app.uow, lambda: None, clock, tenant="other")
    other = Principal(tenant="other", role="admin")
    with pytest.raises(NotFound) as theirs:
        routing.explain(other, decision.decision_id)
    with pytest.raises(NotFound) as missing:
        routing.explain(other, "01900000-0000-7000-8000-000000000000")
    assert str(theirs.value).replace(decision.decision_id, "X") == str(missing.value).replace(
        "01900000-0000-7000-8000-000000000000", "X")
    with pytest.raises(NotFound):
        routing.outcome(other, Outcome(success=True, quality=1.0),
                        decision_id=decision.decision_id)
    assert routing.history(other)[0] == []


def test_expired_assignments_release_their_slot_and_leave_statistics(agents, routing, admin,
                                                                      travel):
    agents.register(admin, fleet(1))
    decision = routing.route(admin, TASK).decision
    before = agents.show(admin, "agent-0").performance
    travel(hours=2, seconds=1)
    expired = routing.reap(admin)
    assert [d.decision_id for d in expired] == [decision.decision_id]
    agent = agents.show(admin, "agent-0")
    assert agent.active_tasks == 0 and agent.performance == before
    assert routing.explain(admin, decision.decision_id).status == "expired"
    assert routing.reap(admin) == []
    late = routing.outcome(admin, Outcome(success=True, quality=1.0),
                           decision_id=decision.decision_id)
    assert late.decision.status == "succeeded"
    assert agents.show(admin, "agent-0").active_tasks == 0


def test_route_reaps_before_choosing(agents, routing, admin, travel):
    agents.register(admin, fleet(1, capacity=1))
    routing.route(admin, TASK)
    with pytest.raises(AtCapacity):
        routing.route(admin, TASK)
    travel(hours=3)
    assert routing.route(admin, TASK).decision.agent_id == "agent-0"


def test_outcome_for_a_removed_agent_only_closes_the_decision(agents, routing, admin):
    agents.register(admin, fleet(2))
    decision = routing.route(admin, TASK).decision
    agents.remove(admin, decision.agent_id)
    agents.register(admin, [{**fleet(1)[0], "id": decision.agent_id}])
    closed = routing.outcome(admin, Outcome(success=True, quality=1.0),
                             decision_id=decision.decision_id).decision
    assert closed.status == "succeeded"
    assert agents.show(admin, decision.agent_id).performance.task_count == 0


@pytest.mark.parametrize("strategy", sorted(BANDITS))
def test_a_late_agent_is_chosen_within_20_routes(agents, routing, admin, strategy):
    """Property (c): forced exploration of untried arms prevents starvation."""
    agents.register(admin, fleet(4, capacity=50))
    for i in range(30):
        decision = routing.route(admin, TASK, strategy=strategy, seed=i).decision
        routing.outcome(admin, Outcome(success=True, quality=0.95),
                        decision_id=decision.decision_id)
    agents.register(admin, [{**fleet(1)[0], "id": "newcomer", "capacity": 50}])
    chosen = []
    for i in range(20):
        decision = routing.route(admin, TASK, strategy=strategy, seed=100 + i).decision
        chosen.append(decision.agent_id)
        routing.outcome(admin, Outcome(success=False, quality=0.0),
                        decision_id=decision.decision_id)
    assert "newcomer" in chosen


def test_history_pages_newest_first_and_stats_count(agents, routing, admin):
    agents.register(admin, fleet(3, capacity=10))
    ids = []
    for i in range(5):
        decision = routing.route(admin, {**TASK, "task_id": f"T-{i}"}).decision
        ids.append(decision.decision_id)
        if i % 2 == 0:
            routing.outcome(admin, Outcome(success=True, quality=0.8), task_id=f"T-{i}")
    page, cursor = routing.history(admin, limit=3)
    rest, end = routing.history(admin, limit=3, cursor=cursor)
    assert [d.decision_id for d in page + rest] == ids[::-1] and end is None
    assert [d.task_id for d in routing.history(admin, status="open")[0]] == ["T-3", "T-1"]
    stats = routing.stats(admin, by="strategy")
    assert stats["decisions"] == 5 and stats["without_outcome"] == 2 and stats["open"] == 2
    assert stats["groups"]["thompson"]["decisions"] == 5
    assert sum(arm["outcomes"] for arm in stats["arms"]) == 3
