"""The in-memory store: our fake of the ports, checked on its own state."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from arbiter_cli.adapters.memory import (
    CAPABLE_SHAPES,
    POOL_SHAPES,
    MemoryUnitOfWorkFactory,
    _Bits,
)
from arbiter_cli.domain.agents import Status
from arbiter_cli.domain.query import Query
from arbiter_cli.domain.routing import Arm, Task
from arbiter_cli.errors import ArbiterError
from tests.unit.conftest import T0

WEIGHTS = {"fit": 0.3, "success": 0.3, "quality": 0.2, "load": 0.2}


def stored(factory: MemoryUnitOfWorkFactory, tenant: str = "default") -> dict:
    return dict(factory.store.agents.get(tenant, {}))


def add(factory, *agents):
    with factory(write=True) as uow:
        uow.agents.add_many(agents)
        uow.commit()


# ---------------------------------------------------------------------------- unit of work


def test_rolls_back_uncommitted_work_by_default(uow_factory, make_agent):
    """Leaving a unit of work without commit undoes what it added."""
    with uow_factory(write=True) as uow:
        uow.agents.add_many([make_agent("a1"), make_agent("a2")])
        assert uow.agents.count("default") == 2
    assert stored(uow_factory) == {}


def test_committed_work_persists(uow_factory, make_agent):
    """After commit, a new unit of work sees the agent."""
    agent = make_agent("a1")
    add(uow_factory, agent)
    with uow_factory() as uow:
        assert uow.agents.get("default", "a1") == agent


def test_an_exception_rolls_the_unit_of_work_back(uow_factory, make_agent):
    """An error inside the block undoes its writes and propagates."""
    with pytest.raises(RuntimeError), uow_factory(write=True) as uow:
        uow.agents.add_many([make_agent("a1")])
        raise RuntimeError("boom")
    assert stored(uow_factory) == {}


def test_rollback_restores_updated_and_removed_agents(uow_factory, make_agent):
    """Uncommitted updates and removals are undone in reverse order."""
    a1, a2 = make_agent("a1"), make_agent("a2")
    add(uow_factory, a1, a2)
    with uow_factory(write=True) as uow:
        assert uow.agents.update(replace(a1, name="changed", version=2), expect_version=1)
        assert uow.agents.remove("default", "a2")
    assert stored(uow_factory) == {"a1": a1, "a2": a2}


def test_commit_keeps_only_changes_made_before_it(uow_factory, make_agent):
    """Work after a commit, in the same unit of work, is still rolled back."""
    with uow_factory(write=True) as uow:
        uow.agents.add_many([make_agent("a1")])
        uow.commit()
        uow.agents.add_many([make_agent("a2")])
    assert list(stored(uow_factory)) == ["a1"]


def test_the_store_lock_is_released_on_exit(uow_factory):
    """A unit of work leaves the store unlocked, even after an error."""
    with pytest.raises(ValueError), uow_factory(write=True):
        raise ValueError
    assert uow_factory.store.lock.acquire(blocking=False)
    uow_factory.store.lock.release()


def test_factories_share_one_store(make_agent):
    """Units of work from one factory see the same state; a new factory starts empty."""
    factory = MemoryUnitOfWorkFactory()
    add(factory, make_agent("a1"))
    assert MemoryUnitOfWorkFactory(factory.store)(write=False).agents.count("default") == 1
    assert MemoryUnitOfWorkFactory()(write=False).agents.count("default") == 0


def test_tenants_are_added_once_and_rolled_back_unless_committed(uow_factory, clock):
    """add() reports whether the tenant is new; an uncommitted add is undone."""
    with uow_factory(write=True) as uow:
        assert uow.tenants.add("acme", clock()) is True
        assert uow.tenants.add("acme", clock()) is False
        assert uow.tenants.exists("acme")
    with uow_factory(write=True) as uow:
        assert not uow.tenants.exists("acme")
        uow.tenants.add("zeta", clock())
        uow.tenants.add("acme", clock())
        uow.commit()
    with uow_factory() as uow:
        assert uow.tenants.list() == ["acme", "zeta"]
    assert uow_factory.store.tenants == {"acme": clock(), "zeta": clock()}


# ---------------------------------------------------------------------------- repository


def test_update_needs_the_expected_version_and_the_same_uid(uow_factory, make_agent):
    """update() refuses a stale version, a different uid and a missing agent."""
    agent = make_agent("a1", version=3)
    add(uow_factory, agent)
    with uow_factory(write=True) as uow:
        assert not uow.agents.update(replace(agent, version=4), expect_version=2)
        assert not uow.agents.update(replace(agent, uid="other", version=4), expect_version=3)
        assert not uow.agents.update(make_agent("ghost"), expect_version=1)
        assert uow.agents.update(replace(agent, name="n", version=4), expect_version=3)
        uow.commit()
    assert stored(uow_factory)["a1"].name == "n"


def test_remove_reports_whether_anything_was_removed(uow_factory, make_agent):
    """remove() is True for an existing agent and False for a missing one."""
    add(uow_factory, make_agent("a1"))
    with uow_factory(write=True) as uow:
        assert uow.agents.remove("default", "a1") is True
        assert uow.agents.remove("default", "a1") is False
        uow.commit()
    assert stored(uow_factory) == {}


def test_tenants_do_not_see_each_others_agents(uow_factory, make_agent):
    """get, count, list, search and stats are scoped to one tenant."""
    add(uow_factory, make_agent("a1", tenant="acme"), make_agent("b1", tenant="zeta"))
    with uow_factory() as uow:
        assert uow.agents.get("acme", "b1") is None
        assert uow.agents.count("acme") == 1
        assert [a.id for a in uow.agents.list("zeta")] == ["b1"]
        found, _ = uow.agents.search("acme", Query(task_type="code-review"), WEIGHTS)
        assert [a.id for a in found] == ["a1"]
        assert uow.agents.stats("zeta").total == 1
        assert uow.agents.stats("nobody").total == 0


def test_list_orders_by_id_and_pages_after_an_id(uow_factory, make_agent):
    """Agents come in id order; ``after`` starts strictly after that id; limit 0 is all."""
    add(uow_factory, *(make_agent(i) for i in ["c", "a", "e", "b", "d"]))
    with uow_factory() as uow:
        assert [a.id for a in uow.agents.list("default", limit=0)] == ["a", "b", "c", "d", "e"]
        assert [a.id for a in uow.agents.list("default", limit=2)] == ["a", "b"]
        assert [a.id for a in uow.agents.list("default", after="b", limit=2)] == ["c", "d"]
        assert [a.id for a in uow.agents.list("default", after="bb", limit=0)] == ["c", "d", "e"]
        assert uow.agents.list("default", after="e") == []


def test_list_returns_100_agents_by_default(uow_factory, make_agent):
    """The repository's default page size is 100."""
    add(uow_factory, *(make_agent(f"a{i:03d}") for i in range(101)))
    with uow_factory() as uow:
        assert len(uow.agents.list("default")) == 100


def test_list_filters_by_status_and_task_type(uow_factory, make_agent):
    """status and task_type filters combine, and the limit counts matches only."""
    add(uow_factory, make_agent("a", status=Status.DRAINING),
        make_agent("b", task_types=("testing",)), make_agent("c"), make_agent("d"))
    with uow_factory() as uow:
        assert [a.id for a in uow.agents.list("default", status="available", limit=0)] == [
            "b", "c", "d"]
        assert [a.id for a in uow.agents.list("default", task_type="code-review", limit=0)] == [
            "a", "c", "d"]
        assert [a.id for a in uow.agents.list("default", status="available",
                                              task_type="code-review", limit=1)] == ["c"]


def test_silent_since_is_strictly_before_the_cutoff_in_id_order(uow_factory, make_agent, clock):
    """Agents last active before the cutoff, sorted by id; exactly at the cutoff is not silent."""
    now = clock()
    add(uow_factory, make_agent("z", last_active_at=now - timedelta(hours=2)),
        make_agent("m", last_active_at=now - timedelta(hours=1)),
        make_agent("a", last_active_at=now - timedelta(hours=3)), make_agent("n", last_active_at=now))
    with uow_factory() as uow:
        assert [a.id for a in uow.agents.silent_since("default", now - timedelta(hours=1))] == [
            "a", "z"]


def test_stats_aggregate_one_tenant(uow_factory, make_agent):
    """Counts by status, busy/idle, means and totals."""
    add(uow_factory, make_agent("a", active_tasks=5, capacity=10),
        make_agent("b", active_tasks=0, capacity=4, status=Status.OFFLINE),
        make_agent("c", active_tasks=3, capacity=3, status=Status.OFFLINE))
    with uow_factory() as uow:
        stats = uow.agents.stats("default")
    assert stats.to_dict() == {
        "tenant": "default", "agents": 3,
        "by_status": {"available": 1, "draining": 0, "offline": 2, "maintenance": 0},
        "busy": 2, "idle": 1, "mean_utilization": 0.5, "mean_success": 0.8,
        "total_capacity": 17, "total_active_tasks": 8,
    }


def test_one_active_task_makes_an_agent_busy(uow_factory, make_agent):
    """busy means active_tasks > 0."""
    add(uow_factory, make_agent("a", active_tasks=1), make_agent("b"))
    with uow_factory() as uow:
        stats = uow.agents.stats("default")
    assert (stats.busy, stats.idle) == (1, 1)


def test_stats_of_an_empty_tenant_are_zero(uow_factory):
    """No agents: zero counts and zero means, no division by zero."""
    with uow_factory() as uow:
        stats = uow.agents.stats("default")
        assert uow.agents.silent_since("nobody", datetime(9999, 1, 1, tzinfo=UTC)) == []
    assert (stats.total, stats.busy, stats.idle, stats.mean_utilization, stats.mean_success,
            stats.total_capacity, stats.total_active_tasks) == (0, 0, 0, 0.0, 0.0, 0, 0)


# ---------------------------------------------------------------------------- search and the index


def search_ids(factory, query: Query, tenant: str = "default") -> list[str]:
    with factory() as uow:
        found, ranking = uow.agents.search(tenant, query, WEIGHTS)
    assert len(found) == len(ranking.rows) == len(ranking.scores)
    return [a.id for a in found]


def test_search_narrows_by_task_type_languages_and_specializations(uow_factory, make_agent):
    """Capable means the task type, every language and every required label (any case)."""
    add(uow_factory,
        make_agent("a", languages=("Python", "Go"), specializations=("GPU",)),
        make_agent("b", languages=("Python",), specializations=("gpu",)),
        make_agent("c", languages=("Go",), task_types=("testing",)),
        make_agent("d", languages=("Go", "Python"), specializations=("web",)))
    everyone = Query(task_type="code-review", limit=0)
    assert search_ids(uow_factory, everyone) == ["a", "b", "d"]
    assert search_ids(uow_factory, replace(everyone, languages=("Go", "Python"))) == ["a", "d"]
    assert search_ids(uow_factory, replace(everyone, specializations=("gpu",))) == ["a", "b"]
    assert search_ids(uow_factory, replace(everyone, languages=("Go",),
                                           specializations=("Gpu",))) == ["a"]
    assert search_ids(uow_factory, Query(task_type="testing")) == ["c"]


def test_search_requires_task_type_and_languages_together(uow_factory, make_agent):
    """An agent with the language but not the task type is not capable."""
    add(uow_factory, make_agent("a", task_types=("testing",), languages=("Go",)),
        make_agent("b", languages=("Python",)), make_agent("c", languages=()))
    assert search_ids(uow_factory, Query(task_type="code-review", languages=("Go",))) == []
    assert search_ids(uow_factory, Query(task_type="code-review", languages=("Python",))) == ["b"]
    assert search_ids(uow_factory, Query(task_type="code-review")) == ["b", "c"]


def test_search_filters_labels_even_when_every_agent_has_the_task_type(uow_factory, make_agent):
    """Required specializations narrow a fleet whose every agent has the task type."""
    add(uow_factory, make_agent("a", specializations=("gpu",)), make_agent("b"))
    assert search_ids(uow_factory, Query(task_type="code-review", specializations=("GPU",))) == ["a"]
    assert search_ids(uow_factory, Query(task_type="code-review", specializations=("web",))) == []


def test_search_scores_preferred_labels_among_a_capable_subset(uow_factory, make_agent):
    """Fit is computed for the capable rows only, and it decides the order."""
    add(uow_factory, make_agent("a", task_types=("testing",), specializations=("gpu",)),
        make_agent("b"), make_agent("c", specializations=("gpu",)))
    with uow_factory() as uow:
        found, ranking = uow.agents.search(
            "default", Query(task_type="code-review", prefer=("gpu",)), WEIGHTS)
    assert [a.id for a in found] == ["c", "b"]
    assert [c["fit"] for c in ranking.components] == [0.3, 0.0]


def test_search_for_unseen_task_types_or_languages_finds_nothing(uow_factory, make_agent):
    """A task type or language no agent has ever declared matches no one."""
    add(uow_factory, make_agent("a"))
    assert search_ids(uow_factory, Query(task_type="debugging")) == []
    assert search_ids(uow_factory, Query(task_type="code-review", languages=("Rust",))) == []


def test_queries_never_intern_new_labels(uow_factory, make_agent):
    """Searching for unseen labels leaves the 64-bit label tables untouched."""
    add(uow_factory, make_agent("a"))
    search_ids(uow_factory, Query(task_type="debugging"))
    search_ids(uow_factory, Query(task_type="code-review", languages=("Rust",)))
    assert uow_factory.store.task_bits.mask(("debugging",), grow=False) is None
    assert uow_factory.store.language_bits.mask(("Rust",), grow=False) is None


def test_search_maps_ranked_rows_back_to_the_right_agents(uow_factory, make_agent):
    """When only some rows are capable, the ranking's rows still point at the right agents."""
    add(uow_factory,
        make_agent("a", task_types=("testing",)),
        make_agent("b", active_tasks=8),
        make_agent("c", task_types=("testing",)),
        make_agent("d", active_tasks=2))
    with uow_factory() as uow:
        found, ranking = uow.agents.search("default", Query(task_type="code-review"), WEIGHTS)
    assert [a.id for a in found] == ["d", "b"]
    assert ranking.scores == [0.84, 0.72]
    assert ranking.matched == 2


def test_index_follows_in_place_updates(uow_factory, make_agent):
    """After a same-shape update (status, load), a query sees the new values."""
    a, b = make_agent("a"), make_agent("b")
    add(uow_factory, a, b)
    assert search_ids(uow_factory, Query(task_type="code-review", status="available")) == ["a", "b"]
    with uow_factory(write=True) as uow:
        uow.agents.update(replace(a, status=Status.DRAINING, version=2), expect_version=1)
        uow.agents.update(replace(b, active_tasks=9, version=2), expect_version=1)
        uow.commit()
    assert search_ids(uow_factory, Query(task_type="code-review", status="available")) == ["b"]
    assert search_ids(uow_factory, Query(task_type="code-review", max_utilization=0.5)) == ["a"]


def test_index_follows_capability_changes_removals_and_additions(uow_factory, make_agent):
    """Changing task types, removing and adding agents all show up in the next query."""
    a, b = make_agent("a"), make_agent("b")
    add(uow_factory, a, b)
    assert search_ids(uow_factory, Query(task_type="code-review")) == ["a", "b"]
    with uow_factory(write=True) as uow:
        uow.agents.update(replace(a, task_types=("testing",), version=2), expect_version=1)
        uow.commit()
    assert search_ids(uow_factory, Query(task_type="code-review")) == ["b"]
    assert search_ids(uow_factory, Query(task_type="testing")) == ["a"]
    with uow_factory(write=True) as uow:
        uow.agents.remove("default", "b")
        uow.agents.add_many([make_agent("c")])
        uow.commit()
    assert search_ids(uow_factory, Query(task_type="code-review")) == ["c"]


def test_index_follows_a_language_change(uow_factory, make_agent):
    """Changing only an agent's languages is visible to language queries."""
    a = make_agent("a", languages=("Python",))
    add(uow_factory, a, make_agent("b", languages=("Go",)))
    assert search_ids(uow_factory, Query(task_type="code-review", languages=("Go",))) == ["b"]
    with uow_factory(write=True) as uow:
        uow.agents.update(replace(a, languages=("Go",), version=2), expect_version=1)
        uow.commit()
    assert search_ids(uow_factory, Query(task_type="code-review", languages=("Go",))) == ["a", "b"]
    assert search_ids(uow_factory, Query(task_type="code-review", languages=("Python",))) == []


def test_index_is_restored_by_a_rollback(uow_factory, make_agent):
    """A rolled-back status change leaves queries answering from the old state."""
    a = make_agent("a")
    add(uow_factory, a)
    assert search_ids(uow_factory, Query(task_type="code-review", status="available")) == ["a"]
    with uow_factory(write=True) as uow:
        uow.agents.update(replace(a, status=Status.OFFLINE, version=2), expect_version=1)
        assert search_ids(uow_factory, Query(task_type="code-review", status="available")) == []
    assert search_ids(uow_factory, Query(task_type="code-review", status="available")) == ["a"]


def pool_of(factory, task_type="code-review", languages=("Python",), specializations=()):
    task = Task(task_id="t", task_type=task_type, languages=languages,
                specializations=specializations)
    with factory() as uow:
        return uow.routing.pool("default", task)


def test_routing_pool_keeps_capable_rows_but_reads_live_columns(uow_factory, make_agent):
    """The pool's capable rows are kept per task shape while the index stands, but its load,
    status and arm columns are the agents' current ones. The pool itself is kept while nothing
    in the store changes, and is read-only: no caller can change what the next one reads."""
    a, b = make_agent("a"), make_agent("b", languages=("Go",))
    add(uow_factory, a, b)
    first = pool_of(uow_factory)
    assert first.ids == ["a"] and first.excluded == {"task_type": 0, "language": 1,
                                                     "specialization": 0}
    assert dict(first.examples) == {"language": ("b",)}
    assert first.shared and pool_of(uow_factory) is first  # nothing changed: the same pool
    with pytest.raises(TypeError):
        first.excluded["language"] = 99  # type: ignore[index]
    with pytest.raises(TypeError):
        first.examples["language"] = ["x"]  # type: ignore[index]
    for column in (first.active, first.capacity, first.available, first.latency_ms,
                   first.mean_reward, first.fit, first.arm_alpha, first.arm_beta,
                   first.arm_outcomes, first.arm_total_alpha, first.arm_total_beta):
        with pytest.raises(ValueError):
            column[0] = 99
    with uow_factory(write=True) as uow:
        uow.agents.update(replace(a, active_tasks=3, status=Status.DRAINING, version=2),
                          expect_version=1)
        uow.routing.save_arm("default", a.uid, "code-review", Arm(alpha=2.0, beta=1.0,
                                                                  outcomes=3), T0)
        uow.commit()
    again = pool_of(uow_factory)
    assert again is not first and first.active.tolist() == [0]  # a kept pool never moves
    assert again.ids == ["a"] and again.excluded["language"] == 1
    assert dict(again.examples) == {"language": ("b",)}
    assert again.active.tolist() == [3] and again.available.tolist() == [False]
    assert again.arm_alpha.tolist() == [2.0] and again.arm_outcomes.tolist() == [3]
    everyone = pool_of(uow_factory, languages=())
    assert everyone.ids == ["a", "b"] and everyone.active.tolist() == [3, 0]
    assert pool_of(uow_factory, languages=()) is everyone


def test_a_kept_routing_pool_is_dropped_by_every_change_and_every_rollback(uow_factory,
                                                                           make_agent):
    """An agent's update, a claim, an arm's update and their rollbacks each give a new pool
    with the current columns."""
    a = make_agent("a")
    add(uow_factory, a, make_agent("b"))
    kept = pool_of(uow_factory)
    with uow_factory(write=True) as uow:
        assert uow.routing.claim("default", a.uid)
        uow.commit()
    claimed = pool_of(uow_factory)
    assert claimed is not kept and claimed.active.tolist() == [1, 0]
    with uow_factory(write=True) as uow:
        uow.routing.save_arm("default", a.uid, "code-review", Arm(alpha=1.0, outcomes=1), T0)
        inside = pool_of(uow_factory)
        assert inside.arm_alpha.tolist() == [1.0, 0.0]
        uow.rollback()
    assert pool_of(uow_factory).arm_alpha.tolist() == [0.0, 0.0]
    with uow_factory(write=True) as uow:
        assert uow.routing.release("default", a.uid)
        assert pool_of(uow_factory).active.tolist() == [0, 0]
        uow.rollback()
    assert pool_of(uow_factory).active.tolist() == [1, 0]
    with uow_factory(write=True) as uow:
        uow.routing.save_arm("default", a.uid, "code-review", Arm(alpha=2.0, outcomes=2), T0)
        uow.commit()
    assert pool_of(uow_factory).arm_alpha.tolist() == [2.0, 0.0]
    assert pool_of(uow_factory).arm_outcomes.tolist() == [2, 0]


def test_routing_pool_follows_capability_changes(uow_factory, make_agent):
    """A change of task types, languages or labels rebuilds what the pool keeps."""
    a = make_agent("a")
    add(uow_factory, a, make_agent("b"))
    assert pool_of(uow_factory).ids == ["a", "b"]
    assert pool_of(uow_factory, specializations=("react",)).ids == []
    with uow_factory(write=True) as uow:
        uow.agents.update(replace(a, languages=("Go",), specializations=("react",), version=2),
                          expect_version=1)
        uow.commit()
    assert pool_of(uow_factory).ids == ["b"]
    assert pool_of(uow_factory, languages=("Go",), specializations=("react",)).ids == ["a"]
    with uow_factory(write=True) as uow:
        uow.agents.add_many([make_agent("c")])
        uow.commit()
    assert pool_of(uow_factory).ids == ["b", "c"]


def test_routing_pool_keeps_a_bounded_number_of_task_shapes(uow_factory, make_agent):
    add(uow_factory, make_agent("a"))
    for k in range(CAPABLE_SHAPES + 5):
        pool_of(uow_factory, specializations=(f"label-{k}",))
    assert 0 < len(uow_factory.store.capable_cache) <= CAPABLE_SHAPES
    assert 0 < len(uow_factory.store.pools) <= POOL_SHAPES
    assert pool_of(uow_factory).ids == ["a"]


def _kept_bytes(store) -> int:
    """The arrays the store's kept pools hold, with what choose prepared on them."""
    import numpy as np

    total = 0
    for pool in store.pools.values():
        arrays = [value for value in vars(pool).values() if isinstance(value, np.ndarray)]
        for _, prepared in pool.prepared.values():
            arrays += [prepared.a, prepared.b, prepared.matrix, prepared.base, prepared.tail]
        total += sum(array.nbytes for array in arrays)
    return total


def test_kept_routing_pools_are_bounded_in_size_not_only_in_shapes(uow_factory, make_agent):
    """A large fleet asked for many task shapes (here 32 preferences, every strategy) while
    nothing changes: the kept pools hold a bounded amount, not POOL_SHAPES whole fleets (at
    10 000 agents that was 190 MB of arrays kept by a dry-run-only store)."""
    import numpy as np

    from arbiter_cli.domain.routing import STRATEGIES, RoutingPolicy, choose

    add(uow_factory, *(make_agent(f"a{i:05d}") for i in range(6000)))
    policy = RoutingPolicy()
    for k in range(POOL_SHAPES):
        task = Task(task_id="t", task_type="code-review", languages=("Python",),
                    prefer=(f"label-{k}",))
        with uow_factory() as uow:
            pool = uow.routing.pool("default", task)
            for strategy in STRATEGIES:
                choose(pool, policy, strategy, np.random.default_rng(1))
    assert pool.size == 6000 and uow_factory.store.pools  # the last one is kept
    assert _kept_bytes(uow_factory.store) < 32 * 2**20, _kept_bytes(uow_factory.store)


def test_kept_routing_pools_are_only_those_of_the_current_state(uow_factory, make_agent):
    """Once anything changes, every kept pool is dropped, not only the one asked for next."""
    a = make_agent("a")
    add(uow_factory, a)
    pool_of(uow_factory)
    pool_of(uow_factory, languages=())
    assert len(uow_factory.store.pools) == 2
    with uow_factory(write=True) as uow:
        assert uow.routing.claim("default", a.uid)
        uow.commit()
    assert pool_of(uow_factory).active.tolist() == [1]
    assert len(uow_factory.store.pools) == 1


# ---------------------------------------------------------------------------- label bits


def test_bits_intern_labels_case_insensitively():
    """The same label in any case gets the same bit; bits are assigned in order of arrival."""
    bits = _Bits()
    assert bits.mask(("Python",), grow=True) == 0b1
    assert bits.mask(("go", "PYTHON"), grow=True) == 0b11
    assert bits.mask(("GO",), grow=False) == 0b10
    assert bits.mask((), grow=False) == 0


def test_bits_without_growing_report_unknown_labels_as_none():
    """An unseen label, when not growing, means no agent can match."""
    bits = _Bits()
    bits.mask(("a",), grow=True)
    assert bits.mask(("a", "b"), grow=False) is None


def test_bits_hold_at_most_64_labels():
    """The 64th label takes bit 63; a 65th is an error."""
    bits = _Bits()
    for i in range(63):
        bits.mask((f"l{i}",), grow=True)
    assert bits.mask(("l63",), grow=True) == 1 << 63
    with pytest.raises(ArbiterError, match="^more than 64 distinct labels in one memory store$"):
        bits.mask(("l64",), grow=True)
