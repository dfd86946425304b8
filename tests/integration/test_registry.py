"""The agent registry behaves the same on memory, SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from arbiter_cli.domain.agents import TaskResult
from arbiter_cli.domain.principal import Principal
from arbiter_cli.errors import Conflict, InvalidInput, NotFound
from tests.helpers import local_principals_only

FLEET: list[dict[str, Any]] = [
    {"id": "zeta", "name": "Zeta", "model_family": "gpt-4", "task_types": ["code-review"],
     "languages": ["Python", "Go"], "specializations": ["Security", "backend"], "capacity": 4},
    {"id": "alpha", "name": "Alpha", "model_family": "claude-3.5",
     "task_types": ["code-review", "testing"], "languages": ["python"],
     "specializations": ["security"], "capacity": 2},
    {"id": "Beta", "name": "Beta", "model_family": "claude-3", "task_types": ["code-review"],
     "languages": ["Python", "Rust"], "capacity": 10,
     "performance": {"success_rate": 0.95, "average_quality": 0.9}},
    {"id": "gamma.1", "name": "Gamma", "model_family": "llama-3", "task_types": ["testing"],
     "languages": ["TypeScript"], "capacity": 1},
    {"id": "delta:2", "name": "Delta", "model_family": "gpt-4o", "task_types": ["code-review"],
     "languages": ["Python"], "specializations": ["frontend"], "capacity": 3,
     "performance": {"success_rate": 0.8, "average_quality": 0.7}},
    {"id": "eps-3", "name": "Eps", "model_family": "gpt-4o", "task_types": ["code-review"],
     "languages": ["Python"], "capacity": 3,
     "performance": {"success_rate": 0.8, "average_quality": 0.7}},
]

QUERIES: list[dict[str, Any]] = [
    {"task_type": "code-review"},
    {"task_type": "code-review", "languages": ["PYTHON"]},
    {"task_type": "code-review", "languages": ["Python", "Go"]},
    {"task_type": "code-review", "specializations": ["SECURITY"]},
    {"task_type": "code-review", "prefer": ["security", "backend"]},
    {"task_type": "code-review", "min_success_rate": 0.9},
    {"task_type": "code-review", "max_utilization": 0.0},
    {"task_type": "code-review", "status": "draining"},
    {"task_type": "code-review", "limit": 2},
    {"task_type": "code-review", "limit": 0},
    {"task_type": "testing", "languages": ["Rust"]},
    {"task_type": "debugging"},
]


def seed(agents: Any, admin: Principal) -> None:
    agents.register(admin, FLEET)
    agents.update(admin, "alpha", {"active_tasks": 1})
    agents.set_status(admin, "delta:2", "draining", "rolling out")
    agents.record(admin, "zeta", TaskResult(success=True, quality=0.5, latency_ms=1000))


def summary(items: list[dict[str, Any]]) -> list[tuple[str, float, dict[str, float]]]:
    return [(i["agent"]["id"], i["match_score"], i["components"]) for i in items]


@pytest.mark.parametrize("query", QUERIES, ids=[str(q) for q in QUERIES])
def test_query_answers_match_the_in_memory_reference(agents, admin, test_settings, clock, query):
    """Every backend ranks exactly like the in-memory store (one scorer, SPEC §2.2)."""
    from arbiter_cli.bootstrap import build_memory

    reference = build_memory(test_settings, clock=clock)
    from arbiter_cli.tools.setup import initialize

    initialize(reference.uow, lambda: None, clock)
    seed(reference.agents, admin)
    seed(agents, admin)
    assert summary(agents.query(admin, query)) == summary(reference.agents.query(admin, query))


def test_query_orders_by_score_then_id(agents, admin):
    """Equal scores are ordered by id, bytewise (upper case before lower case)."""
    seed(agents, admin)
    items = agents.query(admin, {"task_type": "code-review", "limit": 0})
    ranked = [(-i["match_score"], i["agent"]["id"]) for i in items]
    assert ranked == sorted(ranked)
    ids = [i["agent"]["id"] for i in items]
    assert ids.index("delta:2") < ids.index("eps-3")
    assert items[0]["agent"]["id"] == "Beta"


def test_registered_agent_round_trips_every_field(agents, admin, store_now):
    """What register stores is what show returns, on every backend; the time stamps are the
    store's (the database's clock on SQL)."""
    before = store_now()
    agents.register(admin, [{**FLEET[0], "metadata": {"team": "core", "n": [1, 2]}}])
    after = store_now()
    shown = agents.show(admin, "zeta").to_dict()
    assert shown["languages"] == ["Go", "Python"]
    assert shown["specializations"] == ["backend", "Security"]
    assert shown["metadata"] == {"team": "core", "n": [1, 2]}
    agent = agents.show(admin, "zeta")
    assert before <= agent.registered_at == agent.updated_at <= after
    assert shown["performance"] == {"success_rate": 0.8, "average_quality": 0.7,
                                    "average_latency_ms": 5000.0, "task_count": 0}
    assert shown["version"] == 1


def test_duplicate_registration_is_a_conflict_and_writes_nothing(agents, admin):
    """A file with one existing id registers none of its agents."""
    agents.register(admin, [FLEET[0]])
    with pytest.raises(Conflict):
        agents.register(admin, [FLEET[1], FLEET[0]])
    assert [a.id for a in agents.list(admin).items] == ["zeta"]


def test_invalid_item_in_a_batch_writes_nothing(agents, admin):
    """Validation of every item happens before the first write."""
    with pytest.raises(InvalidInput) as caught:
        agents.register(admin, [FLEET[0], {**FLEET[1], "capacity": 0}])
    assert caught.value.field == "[1].capacity"
    assert agents.list(admin).items == []


def test_update_replaces_lists_and_bumps_the_version(agents, admin):
    """A list flag replaces that list; version goes up by one per change."""
    seed(agents, admin)
    before = agents.show(admin, "Beta")
    after = agents.update(admin, "Beta", {"languages": ["Go"], "specializations": ["cli"],
                                          "expect_version": before.version})
    assert after.version == before.version + 1
    stored = agents.show(admin, "Beta")
    assert stored.languages == ("Go",)
    assert stored.specializations == ("cli",)
    assert stored.task_types == before.task_types
    assert agents.query(admin, {"task_type": "code-review", "languages": ["Rust"]}) == []


def test_version_mismatch_is_a_conflict(agents, admin):
    seed(agents, admin)
    with pytest.raises(Conflict):
        agents.update(admin, "Beta", {"capacity": 5, "expect_version": 99})
    assert agents.show(admin, "Beta").capacity == 10


def test_removed_id_registered_again_is_a_new_agent(backend_app, agents, admin):
    """Removal deletes; a new registration of the id gets a new uid and fresh statistics."""
    local_principals_only(backend_app)
    seed(agents, admin)
    old = agents.show(admin, "zeta")
    agents.remove(admin, "zeta")
    with pytest.raises(NotFound):
        agents.show(admin, "zeta")
    agents.register(admin, [FLEET[0]])
    new = agents.show(admin, "zeta")
    assert new.uid != old.uid
    assert new.performance.task_count == 0


def test_record_folds_performance(agents, admin):
    """The first task replaces the prior; later tasks take the cumulative mean."""
    agents.register(admin, [FLEET[3]])
    agents.record(admin, "gamma.1", TaskResult(success=True, quality=0.6, latency_ms=100))
    agents.record(admin, "gamma.1", TaskResult(success=False, quality=0.0, latency_ms=300))
    perf = agents.show(admin, "gamma.1").performance
    assert perf.task_count == 2
    assert perf.success_rate == pytest.approx(0.5)
    assert perf.average_quality == pytest.approx(0.3)
    assert perf.average_latency_ms == pytest.approx(200.0)


def test_list_pages_by_id_with_a_cursor(agents, admin):
    seed(agents, admin)
    first = agents.list(admin, limit=4)
    second = agents.list(admin, limit=4, cursor=first.next_cursor)
    ids = [a.id for a in first.items + second.items]
    assert ids == sorted(a["id"] for a in FLEET)
    assert second.next_cursor is None
    assert [a.id for a in agents.list(admin, limit=0).items] == ids


def test_list_filters_by_status_and_task_type(agents, admin):
    seed(agents, admin)
    assert [a.id for a in agents.list(admin, status="draining").items] == ["delta:2"]
    assert [a.id for a in agents.list(admin, task_type="testing").items] == ["alpha", "gamma.1"]


def test_stats_aggregate_the_tenant(agents, admin):
    seed(agents, admin)
    stats = agents.stats(admin).to_dict()
    assert stats["agents"] == 6
    assert stats["by_status"] == {"available": 5, "draining": 1, "offline": 0, "maintenance": 0}
    assert stats["busy"] == 1 and stats["idle"] == 5
    assert stats["total_capacity"] == 23
    assert stats["total_active_tasks"] == 1
    assert stats["mean_utilization"] == pytest.approx(0.5 / 6, abs=1e-6)


def test_cleanup_marks_only_silent_idle_agents_offline(agents, admin, travel):
    """cleanup never deletes; a dry run changes nothing."""
    seed(agents, admin)
    travel(hours=25)
    agents.heartbeat(admin, "zeta")
    assert {a.id for a in agents.cleanup(admin, 24 * 3600, dry_run=True)} == {
        "Beta", "gamma.1", "delta:2", "eps-3"}
    assert agents.show(admin, "Beta").status == "available"
    marked = agents.cleanup(admin, 24 * 3600, dry_run=False)
    assert {a.id for a in marked} == {"Beta", "gamma.1", "delta:2", "eps-3"}
    assert agents.show(admin, "Beta").status == "offline"
    assert agents.show(admin, "alpha").status == "available"  # busy
    assert len(agents.list(admin, limit=0).items) == 6


def test_other_tenants_agents_are_invisible(backend_app, agents, admin, clock):
    """Every query filters on the caller's tenant."""
    local_principals_only(backend_app)
    from arbiter_cli.tools.setup import initialize

    initialize(backend_app.uow, lambda: None, clock, tenant="other")
    other = Principal(tenant="other", role="admin")
    agents.register(other, [FLEET[0]])
    seed(agents, admin)
    assert [a.id for a in agents.list(other, limit=0).items] == ["zeta"]
    assert agents.stats(other).total == 1
    with pytest.raises(NotFound):
        agents.show(other, "Beta")
    agents.remove(other, "zeta")
    assert agents.show(admin, "zeta").id == "zeta"
    assert [i["agent"]["id"] for i in agents.query(other, {"task_type": "code-review"})] == []
