"""The database's top K is the one scorer's top K, bit for bit (SPEC §2.2, issue 13).

SQLite and PostgreSQL evaluate ``domain.query.match_score`` in SQL to pick the top K
(``adapters/sql/ranking.py``); these properties hold them to the memory store, which ranks
with numpy, on random fleets, queries, limits and weights: the same agents in the same order,
the same rounded scores and components, and, for every candidate, the same score bits.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arbiter_cli.domain.principal import Principal
from arbiter_cli.domain.query import Columns, Query, rank
from arbiter_cli.domain.results import Page
from tests.helpers import postgres_url

pytestmark = pytest.mark.slow

IDS = ["a", "A", "b", "B-2", "a.1", "a:1", "m", "M_x", "z", "Z9", "0", "n-n"]
TASKS = ["code-review", "testing", "debugging"]
LANGUAGES = ["Python", "Go", "Rust"]
LABELS = ["security", "Backend", "frontend"]
STATUSES = ["available", "draining", "offline", "maintenance"]
WEIGHTS = {"fit": 0.3, "success": 0.3, "quality": 0.2, "load": 0.2}
# few distinct values, so that agents often tie (young fleets all tie on the prior)
unit = st.one_of(st.sampled_from([0.0, 0.5, 0.8, 1.0]), st.sampled_from([0.1, 0.25, 0.7]),
                 st.floats(0, 1))


@st.composite
def fleets(draw: Any) -> list[dict[str, Any]]:
    ids = draw(st.lists(st.sampled_from(IDS), unique=True, max_size=10))
    profiles = draw(st.lists(st.fixed_dictionaries({"success_rate": unit,
                                                    "average_quality": unit}),
                             min_size=1, max_size=3))  # agents share them, so they tie
    fleet = []
    for agent_id in ids:
        capacity = draw(st.integers(1, 4))
        fleet.append({
            "id": agent_id, "name": agent_id, "model_family": "m",
            "task_types": draw(st.lists(st.sampled_from(TASKS), min_size=2, unique=True)),
            "languages": draw(st.lists(st.sampled_from(LANGUAGES), unique=True)),
            "specializations": draw(st.lists(st.sampled_from(LABELS), unique=True)),
            "capacity": capacity,
            "performance": draw(st.sampled_from(profiles)),
            "active_tasks": draw(st.sampled_from([0, 0, capacity, capacity + 2, 1])),
            "status": draw(st.sampled_from(STATUSES)),
        })
    return fleet


queries = st.builds(
    Query,
    task_type=st.sampled_from(TASKS),
    languages=st.just(()) | st.lists(st.sampled_from(LANGUAGES), unique=True, max_size=2)
    .map(tuple),
    specializations=st.just(()) | st.lists(st.sampled_from(LABELS), max_size=1).map(tuple),
    prefer=st.lists(st.sampled_from(["security", "backend", "Frontend", "other"]),
                    unique=True, max_size=3).map(tuple),
    # above 1 only when built by hand (a parsed query's bound is a fraction): the SQL load
    # clamps utilization only then (``ranking._statement``)
    max_utilization=st.sampled_from([1.0, 1.0, 0.5, 2.0]) | unit,
    min_success_rate=st.sampled_from([0.0, 0.0, 0.5]) | unit,
    status=st.sampled_from([None, None, None, *STATUSES]),
    limit=st.sampled_from([1, 2, 3, 0]),
)


@st.composite
def weight_sets(draw: Any) -> dict[str, float]:
    tenths = draw(st.lists(st.integers(0, 10), min_size=3, max_size=3).filter(
        lambda parts: sum(parts) <= 10))
    fit, success, quality = (part / 10 for part in tenths)
    return draw(st.sampled_from([
        WEIGHTS,
        {"fit": fit, "success": success, "quality": quality,
         "load": (10 - sum(tenths)) / 10},
    ]))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sql_app(request: pytest.FixtureRequest, test_settings) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    from arbiter_cli.bootstrap import scratch_app

    url = postgres_url() if request.param == "postgres" else None
    with scratch_app(test_settings, request.param, purpose="t", database_url=url) as (app, _):
        yield app


def seed(app: Any, fleet: list[dict[str, Any]]) -> None:
    admin = Principal.local_admin()
    keep = ("id", "name", "model_family", "task_types", "languages", "specializations",
            "capacity", "performance")
    app.agents.register(admin, [{k: raw[k] for k in keep} for raw in fleet])
    for raw in fleet:
        if raw["active_tasks"]:
            app.agents.update(admin, raw["id"], {"active_tasks": raw["active_tasks"]})
        if raw["status"] != "available":
            app.agents.set_status(admin, raw["id"], raw["status"])


def clear(app: Any) -> None:
    from sqlalchemy import delete

    from arbiter_cli.adapters.sql import tables as t

    with app.engine.begin() as conn:
        conn.execute(delete(t.agents))  # the capability rows go with them (ON DELETE CASCADE)


def search(app: Any, query: Query, weights: dict[str, float]) -> list[tuple[Any, ...]]:
    with app.uow() as uow:
        agents, ranking = uow.agents.search("default", query, weights)
    return list(zip([a.id for a in agents], ranking.scores, ranking.components, strict=True))


def test_ties_at_the_cut_keep_the_lowest_ids_bytewise(sql_app):  # type: ignore[no-untyped-def]
    """Identical agents tie; the top 3 are the three lowest ids, upper case first."""
    fleet = [{"id": agent_id, "name": agent_id, "model_family": "m", "task_types": ["testing"],
              "languages": [], "specializations": [], "capacity": 10,
              "performance": {"success_rate": 0.8, "average_quality": 0.7}, "active_tasks": 0,
              "status": "available"} for agent_id in ["b", "B-2", "a", "z", "A", "a.1"]]
    seed(sql_app, fleet)
    found = search(sql_app, Query("testing", limit=3), WEIGHTS)
    assert [agent_id for agent_id, *_ in found] == ["A", "B-2", "a"]
    assert {score for _, score, _ in found} == {0.88}  # 0.3·1 + 0.3·0.8 + 0.2·0.7 + 0.2·1


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(fleet=fleets(), query=queries, weights=weight_sets())
def test_sql_top_k_is_the_memory_top_k(sql_app, test_settings, fleet, query, weights):  # type: ignore[no-untyped-def]
    """Random fleets, queries, limits and weights: the same agents, order, scores and parts."""
    from arbiter_cli.bootstrap import build_memory
    from arbiter_cli.tools.setup import initialize
    from tests.helpers import FakeClock

    clock = FakeClock()
    reference = build_memory(test_settings, clock=clock)
    initialize(reference.uow, lambda: None, clock)
    clear(sql_app)
    seed(reference, fleet)
    seed(sql_app, fleet)
    assert search(sql_app, query, weights) == search(reference, query, weights)


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(fleet=fleets(), query=queries, weights=weight_sets())
def test_sql_scores_every_candidate_with_the_scorers_bits(sql_app, fleet, query, weights):  # type: ignore[no-untyped-def]
    """The score the database orders by equals ``rank``'s for every candidate, and so does
    the order (score descending, then id bytewise)."""
    from arbiter_cli.adapters.sql.ranking import top

    clear(sql_app)
    seed(sql_app, fleet)
    everything = replace(query, limit=0)
    with sql_app.engine.connect() as conn:
        rows = conn.execute(*top("default", everything, weights, conn.dialect.name)).fetchall()
    page: Page = sql_app.agents.list(Principal.local_admin(), limit=0)
    by_id = {agent.id: agent for agent in page.items}
    candidates = sorted((by_id[row.id] for row in rows), key=lambda agent: agent.id)
    ranking = rank(Columns.from_agents(candidates, query.prefer), everything, weights)
    assert [row.id for row in rows] == [candidates[i].id for i in ranking.rows]
    assert [row.score for row in rows] == ranking.scores


def test_a_bound_above_one_clamps_the_load_in_sql(sql_app):  # type: ignore[no-untyped-def]
    """An overloaded agent (utilization 2) under a hand-built bound of 2 has load 0 in the
    database's score too: the SQL load clamps utilization whenever the bound lets it past 1."""
    from arbiter_cli.adapters.sql.ranking import top

    fleet = [{"id": agent_id, "name": agent_id, "model_family": "m", "task_types": ["testing"],
              "languages": [], "specializations": [], "capacity": 2,
              "performance": {"success_rate": 0.9, "average_quality": 0.9},
              "active_tasks": active, "status": "available"}
             for agent_id, active in (("over", 4), ("idle", 0), ("full", 2))]
    seed(sql_app, fleet)
    query = Query("testing", max_utilization=2.0, limit=0)
    with sql_app.engine.connect() as conn:
        rows = conn.execute(*top("default", query, WEIGHTS, conn.dialect.name)).fetchall()
    assert [(row.id, row.score) for row in rows] == [
        (agent_id, score) for agent_id, score, _ in search(sql_app, query, WEIGHTS)]
    assert [row.id for row in rows] == ["idle", "full", "over"]
    assert rows[1].score == rows[2].score  # full and over: both load 0


def test_capability_filters_are_exact_on_awkward_labels_and_follow_updates(sql_app):  # type: ignore[no-untyped-def]
    """The row's ``capabilities`` string narrows exactly: separators, ``=`` and escapes inside
    labels never match another label, case is ignored as the memory store ignores it, and an
    update of the languages moves the agent between queries."""
    def agent(agent_id: str, task_types: list[str], languages: list[str],
              labels: list[str]) -> dict[str, Any]:
        return {"id": agent_id, "name": agent_id, "model_family": "m", "task_types": task_types,
                "languages": languages, "specializations": labels, "capacity": 10,
                "performance": {"success_rate": 0.8, "average_quality": 0.7},
                "active_tasks": 0, "status": "available"}

    seed(sql_app, [agent("p", ["testing"], ["Python"], ["x|sFoo", "a=b"]),
                   agent("q", ["testing", "debugging"], ["Go"], ["foo"]),
                   agent("r", ["debugging"], [], ["%7C", "%"])])

    def ids(query: Query) -> list[str]:
        return sorted(agent_id for agent_id, *_ in search(sql_app, query, WEIGHTS))

    assert ids(Query("testing", specializations=("foo",))) == ["q"]
    assert ids(Query("testing", specializations=("FOO",))) == ["q"]
    assert ids(Query("testing", specializations=("x|sfoo",))) == ["p"]
    assert ids(Query("testing", specializations=("a=b",))) == ["p"]
    assert ids(Query("testing", specializations=("a",))) == []
    assert ids(Query("debugging", specializations=("|",))) == []
    assert ids(Query("debugging", specializations=("%7c",))) == ["r"]
    assert ids(Query("debugging", specializations=("%",))) == ["r"]
    assert ids(Query("testing", languages=("PYTHON",))) == ["p"]
    assert ids(Query("testing", languages=("Py",))) == []
    assert ids(Query("code-review")) == []
    fits = {agent_id: parts["fit"] for agent_id, _, parts in
            search(sql_app, Query("testing", prefer=("FOO", "a=b", "x|sfoo")), WEIGHTS)}
    assert fits == {"p": 0.2, "q": 0.1}  # weighted: 0.3 · 2/3 and 0.3 · 1/3
    sql_app.agents.update(Principal.local_admin(), "q", {"languages": ["Rust"]})
    assert ids(Query("testing", languages=("go",))) == []
    assert ids(Query("testing", languages=("rust",))) == ["q"]
    with sql_app.uow() as uow:
        moved = uow.agents.get("default", "q")
    assert moved is not None and moved.languages == ("Rust",)


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_the_ranking_statement_reads_no_child_table(dialect: str) -> None:
    """Capability filters and the fit share test the agents row's ``capabilities``: the scan
    neither joins nor semi-joins agent_task_types, agent_languages or agent_specializations."""
    from arbiter_cli.adapters.sql.ranking import top

    query = Query("testing", languages=("Go", "Rust"), specializations=("a",), prefer=("b", "c"),
                  status="available", limit=3)
    stmt, _ = top("default", query, WEIGHTS, dialect)
    sql = str(stmt)
    assert "capabilities" in sql
    assert not any(child in sql for child in
                   ("agent_task_types", "agent_languages", "agent_specializations"))


def test_a_query_and_a_listing_take_the_pinned_number_of_statements(sql_app):  # type: ignore[no-untyped-def]
    """Agents come with their capabilities from their own row: a query is its ranking
    statement alone (no transaction around it), a listing its select (SQLite adds the BEGIN
    it issues), with no second statement for the child rows."""
    from arbiter_cli.tools.bench import StatementCounter

    admin = Principal.local_admin()
    sql_app.agents.register(admin, [
        {"id": f"a{i}", "name": "A", "model_family": "m", "task_types": ["testing"],
         "languages": ["Go"], "specializations": ["x", "y"]} for i in range(3)])
    counter = StatementCounter(sql_app.engine)
    found = counter.count("query", lambda: sql_app.agents.query(
        admin, {"task_type": "testing", "languages": ["go"], "prefer": ["x"]}))
    listed = counter.count("list", lambda: sql_app.agents.list(admin))
    begin = 1 if sql_app.engine.dialect.name == "sqlite" else 0
    assert counter.per_operation() == {"query": 1.0, "list": 1.0 + begin}
    assert len(found) == 3
    assert [(a.task_types, a.languages, a.specializations) for a in listed.items] == [
        (("testing",), ("Go",), ("x", "y"))] * 3
