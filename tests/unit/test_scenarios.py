"""domain/scenarios (SPEC §3.8, docs/routing.md): simulated agents, `--truth` schedules and the
built-in fleets of `route simulate`, by pure calls (no simulation runs)."""

from __future__ import annotations

import pytest

from arbiter_cli.domain.scenarios import (
    MAX_TASK,
    SCENARIOS,
    SIM_CAPACITY,
    Fleet,
    SimAgent,
    parse_truth,
    scenario,
)
from arbiter_cli.errors import InvalidInput


def invalid(call, *args) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        call(*args)
    assert caught.value.exit_code == 2
    return caught.value


def refusal(truth) -> tuple[str | None, str | None, str]:
    error = invalid(parse_truth, truth)
    return error.field, error.rule, error.message


# --- limits and defaults ---------------------------------------------------------------------

def test_limits_are_a_capacity_of_1000_and_a_million_tasks():
    assert (SIM_CAPACITY, MAX_TASK) == (1000, 1_000_000)


def test_the_scenario_names_are_the_five_of_spec_3_8_in_order():
    assert SCENARIOS == ("easy", "close", "drift", "newcomer", "capacity")


def test_an_agent_is_present_from_task_0_with_the_simulation_capacity_by_default():
    agent = SimAgent("a", ((0, 0.5),))
    assert (agent.arrives_at, agent.capacity) == (0, 1000)


def test_a_fleet_runs_3000_tasks_whose_outcome_arrives_before_the_next_route_by_default():
    fleet = Fleet((SimAgent("a", ((0, 0.5),)),))
    assert (fleet.tasks, fleet.duration) == (3000, 0)


# --- p_at ------------------------------------------------------------------------------------

DRIFTING = SimAgent("a", ((0, 0.9), (2000, 0.4), (3000, 0.7)))


@pytest.mark.parametrize(("task", "p"), [(0, 0.9), (1999, 0.9), (2000, 0.4), (2001, 0.4),
                                         (2999, 0.4), (3000, 0.7), (3001, 0.7), (MAX_TASK, 0.7)])
def test_p_at_holds_each_value_from_its_task_on(task, p):
    assert DRIFTING.p_at(task) == p


@pytest.mark.parametrize(("task", "p"), [(0, 0.3), (99, 0.3), (100, 0.3), (199, 0.3),
                                         (200, 0.7), (201, 0.7)])
def test_p_at_uses_the_first_value_also_before_the_first_index(task, p):
    assert SimAgent("a", ((100, 0.3), (200, 0.7))).p_at(task) == p


def test_p_at_of_a_constant_agent_is_its_probability_everywhere():
    agent = SimAgent("a", ((0, 0.25),))
    assert [agent.p_at(task) for task in (0, 1, 5000)] == [0.25, 0.25, 0.25]


# --- to_truth --------------------------------------------------------------------------------

def test_to_truth_of_a_constant_present_agent_is_its_probability():
    assert SimAgent("a", ((0, 0.25),)).to_truth() == 0.25


def test_to_truth_of_a_schedule_is_a_list_of_index_probability_pairs():
    assert DRIFTING.to_truth() == [[0, 0.9], [2000, 0.4], [3000, 0.7]]


def test_to_truth_of_a_single_step_starting_later_is_the_bare_probability():
    """One step holds before its index too, so it is the same agent as a constant one."""
    assert SimAgent("a", ((7, 0.25),)).to_truth() == 0.25


def test_to_truth_of_a_late_agent_is_an_object():
    assert SimAgent("a", ((0, 0.8),), arrives_at=1000).to_truth() == {
        "p": 0.8, "arrives_at": 1000, "capacity": 1000}


def test_to_truth_of_a_limited_agent_is_an_object():
    assert SimAgent("a", ((0, 0.9), (5, 0.1)), capacity=2).to_truth() == {
        "p": [[0, 0.9], [5, 0.1]], "arrives_at": 0, "capacity": 2}


@pytest.mark.parametrize("agent", [
    SimAgent("a", ((0, 0.25),)),
    DRIFTING,
    SimAgent("a", ((0, 0.8),), arrives_at=1000),
    SimAgent("a", ((0, 0.9),), capacity=2),
    SimAgent("a", ((0, 0.1), (MAX_TASK, 1.0)), arrives_at=MAX_TASK, capacity=1),
])
def test_to_truth_round_trips_through_the_parser(agent):
    present = SimAgent("z", ((0, 0.5),))
    fleet = parse_truth({"z": present.to_truth(), "a": agent.to_truth()})
    assert fleet.agents == (agent, present)


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_built_in_agent_round_trips_through_the_parser(name):
    fleet = scenario(name)
    assert parse_truth({agent.name: agent.to_truth() for agent in fleet.agents}).agents \
        == fleet.agents


# --- change_points ---------------------------------------------------------------------------

def test_a_stationary_fleet_changes_only_at_task_0():
    assert Fleet((SimAgent("a", ((0, 0.5),)), SimAgent("b", ((0, 0.6),)))).change_points() == [0]


def test_change_points_are_schedule_steps_and_arrivals_sorted_without_repeats():
    fleet = Fleet((SimAgent("a", ((0, 0.9), (3000, 0.1), (2000, 0.4))),
                   SimAgent("b", ((0, 0.5), (2000, 0.8)), arrives_at=500),
                   SimAgent("c", ((10, 0.5),), arrives_at=3000)))
    assert fleet.change_points() == [0, 10, 500, 2000, 3000]


def test_change_points_always_include_task_0():
    assert Fleet((SimAgent("a", ((5, 0.5),), arrives_at=7),)).change_points() == [0, 5, 7]


# --- parse_truth: accepted documents ---------------------------------------------------------

def test_plain_probabilities_become_constant_agents_sorted_by_id():
    fleet = parse_truth({"b": 0.5, "a": "1", "c": 0})
    assert fleet == Fleet((SimAgent("a", ((0, 1.0),)), SimAgent("b", ((0, 0.5),)),
                           SimAgent("c", ((0, 0.0),))))
    assert (fleet.tasks, fleet.duration) == (3000, 0)


def test_a_schedule_is_sorted_by_index_and_a_repeated_index_keeps_the_last_value():
    fleet = parse_truth({"a": [[2000, 0.4], [0, 0.9], ["100", "0.5"], [2000, 0.3]]})
    assert fleet.agents == (SimAgent("a", ((0, 0.9), (100, 0.5), (2000, 0.3))),)


def test_schedule_indices_and_probabilities_accept_their_bounds():
    fleet = parse_truth({"a": [[0, 0.0], [MAX_TASK, 1.0]]})
    assert fleet.agents[0].schedule == ((0, 0.0), (MAX_TASK, 1.0))


def test_an_object_with_only_p_is_a_present_agent_with_the_simulation_capacity():
    assert parse_truth({"a": {"p": 0.5}}).agents == (SimAgent("a", ((0, 0.5),), 0, 1000),)


def test_an_object_takes_a_schedule_an_arrival_and_a_capacity():
    fleet = parse_truth({"a": 0.5, "b": {"p": [[0, 0.2], [10, 0.6]], "arrives_at": "10",
                                          "capacity": 3}})
    assert fleet.agents[1] == SimAgent("b", ((0, 0.2), (10, 0.6)), arrives_at=10, capacity=3)


@pytest.mark.parametrize(("arrives_at", "capacity"), [(0, 1), (MAX_TASK, SIM_CAPACITY),
                                                      (1, 999)])
def test_arrival_and_capacity_accept_their_bounds(arrives_at, capacity):
    fleet = parse_truth({"a": 0.5, "b": {"p": 0.5, "arrives_at": arrives_at,
                                          "capacity": capacity}})
    assert (fleet.agents[1].arrives_at, fleet.agents[1].capacity) == (arrives_at, capacity)


def test_one_agent_present_from_task_0_is_enough():
    fleet = parse_truth({"late": {"p": 0.9, "arrives_at": 1}, "early": 0.1})
    assert [(agent.name, agent.arrives_at) for agent in fleet.agents] == [("early", 0),
                                                                           ("late", 1)]


# --- parse_truth: refusals -------------------------------------------------------------------

def test_an_empty_truth_is_refused():
    assert refusal({}) == ("truth", "required", "truth: must name at least one agent")


@pytest.mark.parametrize("name", ["not an id", "-a", "", "a" * 129])
def test_keys_must_be_agent_ids(name):
    field, rule, message = refusal({"ok": 0.5, name: 0.5})
    assert (field, rule) == ("truth", "pattern")
    assert "is not a valid agent id" in message


@pytest.mark.parametrize("arrivals", [[1], [1, 1000], [MAX_TASK]])
def test_a_truth_where_nobody_is_there_at_task_0_is_refused(arrivals):
    truth = {f"a{i}": {"p": 0.5, "arrives_at": at} for i, at in enumerate(arrivals)}
    assert refusal(truth) == ("truth", "arrives_at",
                              "truth: at least one agent must be there from task 0")


@pytest.mark.parametrize(("value", "field", "rule"), [
    (1.5, "truth.a", "range"), (-0.1, "truth.a", "range"), (float("nan"), "truth.a", "finite"),
    (None, "truth.a", "type"), (True, "truth.a", "type"), ("x", "truth.a", "type"),
    ({"p": 2}, "truth.a.p", "range"), ({"p": None}, "truth.a.p", "type"),
])
def test_a_probability_outside_zero_to_one_is_refused(value, field, rule):
    assert refusal({"a": value})[:2] == (field, rule)


def test_an_unknown_object_field_is_refused_naming_the_first_alphabetically():
    assert refusal({"a": {"p": 0.5, "zeta": 1, "beta": 2}}) == (
        "truth.a.beta", "unknown_field", "truth.a.beta: is not a truth field")


def test_an_object_without_p_is_refused():
    assert refusal({"a": {"arrives_at": 0}}) == ("truth.a.p", "required",
                                                 "truth.a.p: is required")


@pytest.mark.parametrize(("arrives_at", "rule", "got"), [
    (-1, "range", "(got -1)"), (MAX_TASK + 1, "range", "(got 1000001)"), (1.5, "type", ""),
    (True, "type", "")])
def test_an_arrival_outside_zero_to_max_task_is_refused(arrives_at, rule, got):
    field, found, message = refusal({"b": 0.5, "a": {"p": 0.5, "arrives_at": arrives_at}})
    assert (field, found) == ("truth.a.arrives_at", rule)
    if rule == "range":
        assert message == f"truth.a.arrives_at: must be from 0 to 1000000 {got}"


@pytest.mark.parametrize(("capacity", "rule"), [(0, "range"), (SIM_CAPACITY + 1, "range"),
                                                (-1, "range"), ("two", "type")])
def test_a_capacity_outside_one_to_sim_capacity_is_refused(capacity, rule):
    field, found, message = refusal({"a": {"p": 0.5, "capacity": capacity}})
    assert (field, found) == ("truth.a.capacity", rule)
    if rule == "range":
        assert message == f"truth.a.capacity: must be from 1 to 1000 (got {capacity})"


@pytest.mark.parametrize("field", ["truth.a", "truth.a.p"])
def test_an_empty_schedule_is_refused(field):
    truth = {"a": []} if field == "truth.a" else {"a": {"p": []}}
    assert refusal(truth) == (field, "required",
                              f"{field}: a schedule needs at least one [task_index, p]")


@pytest.mark.parametrize("entry", [[0], [0, 0.5, 1], [], 0.5, (0, 0.5), "0,0.5", {"0": 0.5}])
def test_a_schedule_entry_must_be_an_index_probability_pair(entry):
    for truth, field in (({"a": [[0, 0.5], entry]}, "truth.a"),
                         ({"a": {"p": [entry]}}, "truth.a.p")):
        assert refusal(truth) == (field, "schedule", f"{field}: entries are [task_index, p]")


@pytest.mark.parametrize(("index", "rule", "message"), [
    (-1, "range", "truth.a: must be from 0 to 1000000 (got -1)"),
    (MAX_TASK + 1, "range", "truth.a: must be from 0 to 1000000 (got 1000001)"),
    (0.5, "type", "truth.a: must be an integer"), (None, "type", "truth.a: must be an integer"),
])
def test_a_schedule_index_outside_zero_to_max_task_is_refused(index, rule, message):
    assert refusal({"a": [[index, 0.5]]}) == ("truth.a", rule, message)


@pytest.mark.parametrize(("p", "rule"), [(1.01, "range"), (-0.01, "range"), ("x", "type")])
def test_a_schedule_probability_outside_zero_to_one_is_refused(p, rule):
    assert refusal({"a": [[0, 0.5], [10, p]]})[:2] == ("truth.a", rule)
    assert refusal({"a": {"p": [[0, p]]}})[:2] == ("truth.a.p", rule)


# --- built-in scenarios (SPEC §3.8, docs/routing.md) -----------------------------------------

def constant(name: str, p: float, **kwargs) -> SimAgent:
    return SimAgent(name, ((0, p),), **kwargs)


def test_easy_is_one_0_9_among_four_0_5s_for_3000_tasks():
    assert scenario("easy") == Fleet((constant("a", 0.9), constant("b", 0.5), constant("c", 0.5),
                                      constant("d", 0.5), constant("e", 0.5)), tasks=3000,
                                     duration=0)


def test_close_is_ten_agents_from_0_60_down_to_0_42_for_10000_tasks():
    fleet = scenario("close")
    assert fleet == Fleet(tuple(constant(f"a{i}", p) for i, p in enumerate(
        (0.6, 0.58, 0.56, 0.54, 0.52, 0.5, 0.48, 0.46, 0.44, 0.42))), tasks=10_000, duration=0)


def test_drift_breaks_a_and_improves_b_at_task_2000_of_4000():
    fleet = scenario("drift")
    assert fleet == Fleet((SimAgent("a", ((0, 0.9), (2000, 0.4))),
                           SimAgent("b", ((0, 0.5), (2000, 0.8))),
                           constant("c", 0.6), constant("d", 0.55), constant("e", 0.5)),
                          tasks=4000, duration=0)
    assert fleet.change_points() == [0, fleet.tasks // 2]
    a, b = fleet.agents[:2]
    assert (a.p_at(1999), a.p_at(2000), b.p_at(1999), b.p_at(2000)) == (0.9, 0.4, 0.5, 0.8)


def test_newcomer_is_a_0_8_agent_joining_at_task_1000_of_3000():
    fleet = scenario("newcomer")
    assert fleet == Fleet((constant("a", 0.6), constant("b", 0.55), constant("c", 0.5),
                           constant("d", 0.45), constant("new", 0.8, arrives_at=1000)),
                          tasks=3000, duration=0)
    assert fleet.change_points() == [0, 1000]


def test_capacity_gives_the_best_agent_capacity_2_and_tasks_lasting_20_routes():
    fleet = scenario("capacity")
    assert fleet == Fleet((constant("a", 0.9, capacity=2), constant("b", 0.6),
                           constant("c", 0.5), constant("d", 0.5)), tasks=3000, duration=20)
    assert [agent.capacity for agent in fleet.agents] == [2, 1000, 1000, 1000]


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_scenario_has_someone_at_task_0_and_agents_in_id_order(name):
    agents = scenario(name).agents
    assert [agent.name for agent in agents] == sorted(agent.name for agent in agents)
    assert any(agent.arrives_at == 0 for agent in agents)


@pytest.mark.parametrize("name", ["", "EASY", "easy ", "stationary", "capacityx"])
def test_an_unknown_scenario_is_refused(name):
    error = invalid(scenario, name)
    assert (error.field, error.rule, error.message) == (
        "scenario", "allowed", "scenario: must be one of easy, close, drift, newcomer, capacity")
