"""The agent domain: registration and update inputs, performance folding (SPEC §2.1, §2.3)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arbiter_cli.domain.agents import (
    PRIOR_LATENCY_MS,
    PRIOR_QUALITY,
    PRIOR_SUCCESS,
    STATUSES,
    FleetStats,
    Patch,
    Performance,
    Registration,
    RegistryPolicy,
    Status,
    TaskResult,
    fold,
    heartbeat,
    is_stale,
    record,
    rfc3339,
    set_status,
)
from arbiter_cli.errors import InvalidInput

T0 = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)
SMALL_POLICY = RegistryPolicy(task_types=("code-review", "testing", "general"),
                              languages=("Python", "Go", "C#"), default_capacity=7, window=4)


def invalid(call, *args, **kwargs) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        call(*args, **kwargs)
    assert caught.value.exit_code == 2
    return caught.value


def minimal(**fields):
    document = {"id": "a1", "name": "Agent one", "model_family": "claude", "task_types": ["general"]}
    document.update(fields)
    return document


# ---------------------------------------------------------------------------- constants


def test_new_agents_start_from_the_spec_prior():
    """SPEC §2.3: success 0.8, quality 0.7, latency 5000 ms, task_count 0."""
    assert (PRIOR_SUCCESS, PRIOR_QUALITY, PRIOR_LATENCY_MS) == (0.8, 0.7, 5000.0)
    assert Performance() == Performance(0.8, 0.7, 5000.0, 0)


def test_registry_policy_defaults_match_the_spec():
    """Default capacity 10, max_agents 10 000 and window 100."""
    policy = RegistryPolicy(task_types=("general",), languages=())
    assert (policy.default_capacity, policy.max_agents, policy.window) == (10, 10_000, 100)


def test_statuses_are_the_four_of_the_spec_in_order():
    """available, draining, offline, maintenance."""
    assert STATUSES == ("available", "draining", "offline", "maintenance")


# ---------------------------------------------------------------------------- Registration


def test_minimal_registration_gets_defaults_from_the_policy():
    """Missing optional fields default: capacity from policy, empty lists, metadata, prior."""
    spec = Registration.parse(minimal(), SMALL_POLICY)
    assert spec == Registration(
        id="a1", name="Agent one", model_family="claude", task_types=("general",), languages=(),
        specializations=(), capacity=7, metadata={}, performance=Performance(),
    )


def test_registration_canonicalizes_lists():
    """Task types and languages take canonical spelling, sorted; labels dedupe ignoring case."""
    spec = Registration.parse(minimal(
        task_types=["testing", "code-review", "testing"], languages=["go", "PYTHON", "c#"],
        specializations=["GPU", "api", "gpu"], capacity="12", metadata='{"team": "infra"}',
    ), SMALL_POLICY)
    assert spec.task_types == ("code-review", "testing")
    assert spec.languages == ("C#", "Go", "Python")
    assert spec.specializations == ("api", "GPU")
    assert spec.capacity == 12
    assert spec.metadata == {"team": "infra"}


def test_registration_accepts_a_single_string_for_a_list_field():
    """A lone string is a one-item list."""
    spec = Registration.parse(minimal(task_types="testing", languages="go", specializations="x"),
                              SMALL_POLICY)
    assert (spec.task_types, spec.languages, spec.specializations) == (("testing",), ("Go",), ("x",))


@pytest.mark.parametrize("name", ["id", "name", "model_family", "task_types"])
@pytest.mark.parametrize("empty", [None, "", []])
def test_required_fields_must_be_present_and_non_empty(name, empty):
    """id, name, model_family and task_types are required; empty counts as missing."""
    document = minimal()
    if empty is None:
        del document[name]
    else:
        document[name] = empty
    error = invalid(Registration.parse, document, SMALL_POLICY)
    assert (error.field, error.rule) == (name, "required")
    assert error.message == f"{name}: is required"


def test_unknown_fields_are_rejected_naming_the_first_sorted():
    """A misspelt field is an error, not ignored; the alphabetically first is reported."""
    error = invalid(Registration.parse, minimal(zeta=1, colour="red"), SMALL_POLICY)
    assert (error.field, error.rule) == ("colour", "unknown_field")
    assert error.message == "colour: is not an agent field"


def test_unknown_fields_are_reported_before_missing_ones():
    """A document with a typo'd required field reports the typo."""
    document = minimal()
    document["nmae"] = document.pop("name")
    assert invalid(Registration.parse, document, SMALL_POLICY).field == "nmae"


@pytest.mark.parametrize(("fields", "field", "rule"), [
    ({"id": "-bad"}, "[3].id", "pattern"),
    ({"colour": "red"}, "[3].colour", "unknown_field"),
    ({"name": None}, "[3].name", "required"),
    ({"name": "bad\tname"}, "[3].name", "no_control_characters"),
    ({"model_family": "Claude"}, "[3].model_family", "pattern"),
    ({"task_types": ["Not A Slug"]}, "[3].task_types", "pattern"),
    ({"task_types": ["research"]}, "[3].task_types", "allowed"),
    ({"task_types": 5}, "[3].task_types", "type"),
    ({"languages": ["Cobol"]}, "[3].languages", "allowed"),
    ({"languages": 5}, "[3].languages", "type"),
    ({"specializations": ["x" * 65]}, "[3].specializations", "length"),
    ({"specializations": 5}, "[3].specializations", "type"),
    ({"capacity": 0}, "[3].capacity", "range"),
    ({"metadata": "[1]"}, "[3].metadata", "object"),
    ({"performance": {"success_rate": 2}}, "[3].performance.success_rate", "range"),
])
def test_errors_in_a_bulk_item_carry_the_item_prefix(fields, field, rule):
    """With where='[3].', every field path names the item."""
    error = invalid(Registration.parse, minimal(**fields), SMALL_POLICY, where="[3].")
    assert (error.field, error.rule) == (field, rule)


@pytest.mark.parametrize(("fields", "what"), [
    ({"id": "-x"}, "agent id"), ({"model_family": "X"}, "model family"),
    ({"task_types": ["X"]}, "task type"),
])
def test_pattern_errors_name_what_was_expected(fields, what):
    """The message says which kind of value was invalid."""
    assert f"is not a valid {what} (" in invalid(Registration.parse, minimal(**fields),
                                                 SMALL_POLICY).message


@pytest.mark.parametrize("capacity", [1, 1000])
def test_capacity_bounds_are_1_and_1000_inclusive(capacity):
    """Capacity 1 and 1000 are both accepted."""
    assert Registration.parse(minimal(capacity=capacity), SMALL_POLICY).capacity == capacity


@pytest.mark.parametrize("capacity", [0, 1001, -1, True, 2.5])
def test_capacity_outside_1_1000_or_not_an_integer_is_rejected(capacity):
    """Capacity 0, 1001, negatives, booleans and floats are invalid."""
    assert invalid(Registration.parse, minimal(capacity=capacity), SMALL_POLICY).field == "capacity"


def test_explicit_null_capacity_uses_the_default():
    """capacity: null is the same as leaving it out."""
    assert Registration.parse(minimal(capacity=None), SMALL_POLICY).capacity == 7


def test_registration_imports_performance_history():
    """A 'performance' object replaces the prior with imported figures."""
    spec = Registration.parse(minimal(performance={
        "success_rate": 1, "average_quality": 0, "average_latency_ms": "0", "task_count": "42",
    }), SMALL_POLICY)
    assert spec.performance == Performance(1.0, 0.0, 0.0, 42)


def test_partial_performance_keeps_the_prior_for_missing_figures():
    """Only the given figures change; the rest keep the prior and task_count 0."""
    spec = Registration.parse(minimal(performance={"success_rate": 0.5}), SMALL_POLICY)
    assert spec.performance == Performance(0.5, 0.7, 5000.0, 0)


@pytest.mark.parametrize(("performance", "field", "rule"), [
    ([0.5], "performance", "object"),
    ({"task_count": 1.5}, "performance.task_count", "type"),
    ({"succes_rate": 0.5}, "performance.succes_rate", "unknown_field"),
    ({"average_quality": 1.5}, "performance.average_quality", "range"),
    ({"average_latency_ms": -1}, "performance.average_latency_ms", "range"),
    ({"average_latency_ms": float("inf")}, "performance.average_latency_ms", "finite"),
    ({"task_count": -1}, "performance.task_count", "range"),
    ({"task_count": 2**62 + 1}, "performance.task_count", "range"),
])
def test_imported_performance_is_validated(performance, field, rule):
    """Imported performance obeys the same bounds as folded performance."""
    error = invalid(Registration.parse, minimal(performance=performance), SMALL_POLICY)
    assert (error.field, error.rule) == (field, rule)


def test_imported_performance_errors_explain_themselves():
    """A non-object or an unknown figure is named in the message."""
    assert invalid(Registration.parse, minimal(performance=[1]), SMALL_POLICY).message == (
        "performance: must be an object")
    assert invalid(Registration.parse, minimal(performance={"speed": 1}), SMALL_POLICY).message == (
        "performance.speed: is not a performance field")


def test_imported_task_count_may_be_2_to_the_62():
    """The task_count upper bound 2**62 is inclusive."""
    spec = Registration.parse(minimal(performance={"task_count": 2**62}), SMALL_POLICY)
    assert spec.performance.task_count == 2**62


@pytest.mark.parametrize("metadata", [[], False, 0])
def test_metadata_that_is_not_an_object_is_rejected_even_when_empty(metadata):
    """Regression: metadata is a JSON object (SPEC §2.1); a falsy [] or false is not one."""
    error = invalid(Registration.parse, minimal(metadata=metadata), SMALL_POLICY)
    assert (error.field, error.rule) == ("metadata", "object")


def test_new_agent_copies_the_registration_and_stamps_times():
    """A new agent is available, idle, at version 1, with all three timestamps at now."""
    spec = Registration.parse(minimal(capacity=3, specializations=["gpu"], metadata={"k": 1},
                                      performance={"task_count": 4}), SMALL_POLICY)
    agent = spec.new_agent(uid="u-1", tenant="acme", now=T0)
    assert (agent.metadata, agent.performance) == ({"k": 1}, Performance(task_count=4))
    assert (agent.uid, agent.tenant, agent.id, agent.name) == ("u-1", "acme", "a1", "Agent one")
    assert (agent.capacity, agent.specializations, agent.model_family) == (3, ("gpu",), "claude")
    assert (agent.registered_at, agent.updated_at, agent.last_active_at) == (T0, T0, T0)
    assert (agent.status, agent.status_reason, agent.active_tasks, agent.version) == (
        Status.AVAILABLE, None, 0, 1)


# ---------------------------------------------------------------------------- Patch


def test_empty_patch_changes_nothing():
    """No fields given: every attribute is None and there are no changes."""
    patch = Patch.parse({}, SMALL_POLICY)
    assert patch == Patch()
    assert patch.changes() == {}


def test_patch_parses_and_canonicalizes_every_field():
    """Each given field is validated like a registration."""
    patch = Patch.parse({
        "name": "Renamed", "task_types": ["TESTING", "general"], "languages": ["go"],
        "specializations": ["B", "a", "b"], "capacity": "3", "metadata": '{"k": 1}',
        "active_tasks": 0, "expect_version": 1,
    }, SMALL_POLICY)
    assert patch == Patch(name="Renamed", task_types=("general", "testing"), languages=("Go",),
                          specializations=("a", "B"), capacity=3, metadata={"k": 1},
                          active_tasks=0, expect_version=1)


def test_patch_changes_omit_unset_fields_and_the_expected_version():
    """changes() lists only the fields to write; expect_version is a precondition, not a change."""
    patch = Patch.parse({"capacity": 4, "languages": [], "expect_version": 2}, SMALL_POLICY)
    assert patch.changes() == {"capacity": 4, "languages": ()}


def test_patch_rejects_an_empty_task_type_list():
    """An agent must keep at least one task type."""
    error = invalid(Patch.parse, {"task_types": []}, SMALL_POLICY)
    assert (error.field, error.rule) == ("task_types", "required")
    assert error.message == "task_types: must not be empty"


@pytest.mark.parametrize(("raw", "field", "rule"), [
    ({"capacity": 0}, "capacity", "range"),
    ({"capacity": 1001}, "capacity", "range"),
    ({"active_tasks": -1}, "active_tasks", "range"),
    ({"active_tasks": 1_000_001}, "active_tasks", "range"),
    ({"expect_version": 0}, "expect_version", "range"),
    ({"expect_version": 2**62 + 1}, "expect_version", "range"),
    ({"task_types": 5}, "task_types", "type"),
    ({"languages": 5}, "languages", "type"),
    ({"specializations": 5}, "specializations", "type"),
    ({"specializations": [""]}, "specializations", "length"),
    ({"name": ""}, "name", "length"),
    ({"task_types": ["research"]}, "task_types", "allowed"),
    ({"languages": ["Cobol"]}, "languages", "allowed"),
    ({"metadata": "[]"}, "metadata", "object"),
])
def test_patch_validates_each_field(raw, field, rule):
    """Out-of-range or unknown values in a patch are invalid input."""
    error = invalid(Patch.parse, raw, SMALL_POLICY)
    assert (error.field, error.rule) == (field, rule)


@pytest.mark.parametrize(("raw", "expected"), [
    ({"capacity": 1}, {"capacity": 1}), ({"capacity": 1000}, {"capacity": 1000}),
    ({"active_tasks": 0}, {"active_tasks": 0}),
    ({"active_tasks": 1_000_000}, {"active_tasks": 1_000_000}),
])
def test_patch_bounds_are_inclusive(raw, expected):
    """Capacity 1..1000 and active_tasks 0..1 000 000 are accepted at both ends."""
    assert Patch.parse(raw, SMALL_POLICY).changes() == expected


def test_expected_version_may_be_2_to_the_62():
    """The expect_version upper bound is inclusive."""
    assert Patch.parse({"expect_version": 2**62}, SMALL_POLICY).expect_version == 2**62


def test_apply_replaces_lists_and_bumps_the_version(make_agent):
    """A list field replaces the old list; version +1; updated_at moves; the rest stays."""
    agent = make_agent(languages=("Python", "Go"), specializations=("gpu",), version=3)
    patch = Patch.parse({"languages": ["C#"], "name": "New"}, SMALL_POLICY)
    changed = patch.apply(agent, T1)
    assert changed == replace(agent, languages=("C#",), name="New", version=4, updated_at=T1)
    assert changed.last_active_at == T0
    assert changed.registered_at == T0


def test_capacity_may_drop_below_active_tasks(make_agent):
    """Lowering capacity under active_tasks is allowed and utilization reads above 1."""
    changed = Patch(capacity=2).apply(make_agent(active_tasks=3), T1)
    assert changed.capacity == 2
    assert changed.utilization == 1.5


# ---------------------------------------------------------------------------- TaskResult


@pytest.mark.parametrize(("success", "quality"), [(True, 1.0), (False, 0.0)])
def test_quality_defaults_to_1_on_success_and_0_on_failure(success, quality):
    """Without --quality, success means 1.0 and failure 0.0."""
    assert TaskResult.parse(success=success) == TaskResult(success, quality, None, None)


@pytest.mark.parametrize("quality", [0, 1, "0.5"])
def test_explicit_quality_in_0_1_is_kept(quality):
    """Quality 0 and 1 are both valid, even against the outcome."""
    assert TaskResult.parse(success=True, quality=quality).quality == float(quality)


@pytest.mark.parametrize(("kwargs", "field", "rule"), [
    ({"quality": 1.01}, "quality", "range"),
    ({"quality": -0.01}, "quality", "range"),
    ({"quality": float("nan")}, "quality", "finite"),
    ({"latency_ms": -0.5}, "latency_ms", "range"),
    ({"latency_ms": float("inf")}, "latency_ms", "finite"),
    ({"latency_ms": "fast"}, "latency_ms", "type"),
])
def test_task_result_inputs_are_validated(kwargs, field, rule):
    """Quality in [0, 1], latency >= 0, no NaN or infinity (SPEC §2.3)."""
    error = invalid(TaskResult.parse, success=True, **kwargs)
    assert (error.field, error.rule) == (field, rule)


def test_latency_of_zero_is_accepted():
    """latency_ms 0 is the inclusive lower bound."""
    assert TaskResult.parse(success=False, latency_ms=0).latency_ms == 0.0


def test_task_type_is_canonicalized_against_the_policy():
    """With a policy, the task type is matched ignoring case and stored canonically."""
    result = TaskResult.parse(success=True, task_type="TESTING", policy=SMALL_POLICY)
    assert result.task_type == "testing"
    error = invalid(TaskResult.parse, success=True, task_type="research", policy=SMALL_POLICY)
    assert (error.field, error.rule) == ("task_type", "allowed")


def test_task_type_is_kept_as_given_without_a_policy():
    """Without a policy there is nothing to check the task type against."""
    assert TaskResult.parse(success=True, task_type="Whatever").task_type == "Whatever"


# ---------------------------------------------------------------------------- fold


def test_first_task_replaces_the_prior():
    """x + (v - x)/1 = v: the first task's figures replace 0.8/0.7/5000."""
    folded = fold(Performance(), TaskResult(True, 0.9, 1200.0), window=100)
    assert folded == Performance(1.0, 0.9, 1200.0, 1)


def test_first_failure_sets_success_to_zero():
    """A failed first task gives success 0 and its quality."""
    folded = fold(Performance(), TaskResult(False, 0.25, 10.0), window=100)
    assert folded == Performance(0.0, 0.25, 10.0, 1)


def test_below_the_window_performance_is_the_cumulative_mean():
    """With fewer than ``window`` tasks, each figure is the plain mean of the tasks."""
    perf = Performance()
    results = [TaskResult(True, 0.5, 100.0), TaskResult(False, 1.0, 300.0),
               TaskResult(True, 0.0, 200.0), TaskResult(True, 0.5, 400.0)]
    for result in results:
        perf = fold(perf, result, window=100)
    assert perf.success_rate == pytest.approx(0.75, abs=1e-12)
    assert perf.average_quality == pytest.approx(0.5, abs=1e-12)
    assert perf.average_latency_ms == pytest.approx(250.0, abs=1e-9)
    assert perf.task_count == 4


@pytest.mark.parametrize(("task_count", "expected"), [
    (0, 1.0),               # first task replaces
    (1, 0.5 + 0.5 / 2),     # cumulative mean, divisor n + 1 = 2
    (2, 0.5 + 0.5 / 3),     # divisor 3
    (3, 0.5 + 0.5 / 4),     # divisor 4 = window: last cumulative step
    (4, 0.5 + 0.5 / 4),     # n = window: EMA with alpha = 1/window
    (5, 0.5 + 0.5 / 4),     # after the window: still alpha = 1/window
    (1000, 0.5 + 0.5 / 4),
])
def test_divisor_switches_from_n_plus_1_to_window_exactly_at_window(task_count, expected):
    """Cumulative mean below window (4 here), EMA with alpha = 1/window at and after it."""
    perf = Performance(success_rate=0.5, average_quality=0.5, average_latency_ms=500.0,
                       task_count=task_count)
    folded = fold(perf, TaskResult(True, 1.0, 1000.0), window=4)
    assert folded.success_rate == expected
    assert folded.average_quality == expected
    assert folded.average_latency_ms == 500.0 + 500.0 * (expected - 0.5) / 0.5
    assert folded.task_count == task_count + 1


def test_ema_at_the_default_window_uses_alpha_one_hundredth():
    """At 100 tasks with window 100, one success moves 0.5 by (1 - 0.5)/100."""
    folded = fold(Performance(0.5, 0.5, 100.0, 100), TaskResult(True, 0.0, 200.0), window=100)
    assert folded == Performance(0.505, 0.495, 101.0, 101)


def test_missing_latency_leaves_latency_unchanged():
    """A task without latency folds success and quality but not latency; task_count still +1."""
    folded = fold(Performance(0.5, 0.5, 750.0, 1), TaskResult(False, 0.0, None), window=100)
    assert folded == Performance(0.25, 0.25, 750.0, 2, latency_count=1)


def test_first_measured_latency_replaces_the_latency_prior():
    """An agent whose only measured latency is 100 ms reports 100 ms, not (5000 + 100) / 2."""
    perf = fold(Performance(), TaskResult(True, 1.0, None), window=100)
    perf = fold(perf, TaskResult(True, 1.0, 100.0), window=100)
    assert perf.average_latency_ms == 100.0


def test_window_of_one_makes_every_task_replace():
    """window=1: alpha = 1, so each task's figures replace the previous ones."""
    folded = fold(Performance(0.5, 0.25, 3.0, 50), TaskResult(False, 0.75, 7.0), window=1)
    assert folded == Performance(0.0, 0.75, 7.0, 51)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.floats(0, 1), st.floats(0, 1e6)), min_size=1,
                max_size=30))
def test_fold_below_window_equals_the_arithmetic_mean(tasks):
    """For up to ``window`` tasks the folded figures are the means of the inputs."""
    perf = Performance()
    for success, quality, latency in tasks:
        perf = fold(perf, TaskResult(success, quality, latency), window=30)
    n = len(tasks)
    assert perf.task_count == n
    assert perf.success_rate == pytest.approx(sum(s for s, _, _ in tasks) / n, abs=1e-9)
    assert perf.average_quality == pytest.approx(sum(q for _, q, _ in tasks) / n, abs=1e-9)
    assert perf.average_latency_ms == pytest.approx(sum(lat for _, _, lat in tasks) / n,
                                                    rel=1e-9, abs=1e-6)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.floats(0, 1)), min_size=1, max_size=40),
       st.integers(1, 10))
def test_folded_fractions_stay_within_0_1(tasks, window):
    """Success and quality remain fractions whatever the sequence and window."""
    perf = Performance()
    for success, quality in tasks:
        perf = fold(perf, TaskResult(success, quality), window=window)
        assert 0.0 <= perf.success_rate <= 1.0
        assert 0.0 <= perf.average_quality <= 1.0


# ---------------------------------------------------------------------------- record / status


def test_record_folds_and_touches_the_agent(make_agent):
    """record() folds performance, bumps version and sets last_active_at and updated_at."""
    agent = make_agent(version=5)
    changed = record(agent, TaskResult(True, 0.6, 42.0), window=100, now=T1)
    assert changed.performance == Performance(1.0, 0.6, 42.0, 1)
    assert (changed.version, changed.last_active_at, changed.updated_at) == (6, T1, T1)
    assert changed.registered_at == T0


@pytest.mark.parametrize("status", STATUSES)
def test_set_status_accepts_each_status(make_agent, status):
    """Each of the four statuses can be set, bumping version and updated_at."""
    changed = set_status(make_agent(), status, "why", T1)
    assert (changed.status, changed.status_reason) == (Status(status), "why")
    assert (changed.version, changed.updated_at, changed.last_active_at) == (2, T1, T0)


@pytest.mark.parametrize("status", ["busy", "Available", ""])
def test_set_status_rejects_unknown_statuses(make_agent, status):
    """Statuses are exact lower-case words."""
    error = invalid(set_status, make_agent(), status, None, T1)
    assert (error.field, error.rule) == ("status", "allowed")
    assert error.message == "status: must be one of available, draining, offline, maintenance"


def test_status_reason_is_at_most_500_characters(make_agent):
    """A reason of 500 characters is kept; 501 is rejected."""
    assert set_status(make_agent(), "draining", "r" * 500, T1).status_reason == "r" * 500
    error = invalid(set_status, make_agent(), "draining", "r" * 501, T1)
    assert (error.field, error.rule) == ("reason", "length")


def test_setting_a_status_without_reason_clears_the_old_reason(make_agent):
    """The reason belongs to the status it was given with."""
    agent = make_agent(status=Status.DRAINING, status_reason="deploy")
    assert set_status(agent, "available", None, T1).status_reason is None


def test_heartbeat_touches_last_active_and_updated(make_agent):
    """A heartbeat moves both timestamps and the version, nothing else."""
    agent = make_agent(status=Status.DRAINING, version=2)
    beat = heartbeat(agent, T1)
    assert beat == replace(agent, last_active_at=T1, updated_at=T1, version=3)


@pytest.mark.parametrize(("last_active", "active_tasks", "status", "stale"), [
    (T0 - timedelta(microseconds=1), 0, Status.AVAILABLE, True),
    (T0, 0, Status.AVAILABLE, False),                     # exactly at the cutoff: not silent
    (T0 + timedelta(seconds=1), 0, Status.AVAILABLE, False),
    (T0 - timedelta(days=9), 1, Status.AVAILABLE, False),  # still working
    (T0 - timedelta(days=9), 0, Status.OFFLINE, False),    # already offline
    (T0 - timedelta(days=9), 0, Status.DRAINING, True),
    (T0 - timedelta(days=9), 0, Status.MAINTENANCE, True),
])
def test_is_stale_means_silent_before_cutoff_idle_and_not_offline(
    make_agent, last_active, active_tasks, status, stale
):
    """Only agents silent strictly before the cutoff, with no active tasks, not yet offline."""
    agent = make_agent(last_active_at=last_active, active_tasks=active_tasks, status=status)
    assert is_stale(agent, cutoff=T0) is stale


# ---------------------------------------------------------------------------- Agent


@pytest.mark.parametrize(("active", "capacity", "expected"), [(0, 1, 0.0), (3, 10, 0.3),
                                                                (10, 10, 1.0), (15, 10, 1.5)])
def test_utilization_is_active_tasks_over_capacity(make_agent, active, capacity, expected):
    """utilization = active_tasks / capacity, possibly above 1."""
    assert make_agent(active_tasks=active, capacity=capacity).utilization == expected


def test_language_and_specialization_checks_ignore_case(make_agent):
    """has_languages and has_specializations need every wanted item, in any case."""
    agent = make_agent(languages=("Python", "Go"), specializations=("GPU", "api"))
    assert agent.has_languages(("python", "GO"))
    assert agent.has_languages(())
    assert not agent.has_languages(("Python", "Rust"))
    assert agent.has_specializations(("gpu", "API"))
    assert not agent.has_specializations(("gpu", "web"))


def test_to_dict_has_the_full_documented_shape(make_agent):
    """Agent.to_dict carries every field of SPEC §2.1 with RFC 3339 timestamps."""
    agent = make_agent(
        tenant="acme", name="Coder", task_types=("code-review", "testing"),
        languages=("Go",), specializations=("gpu",), capacity=3, active_tasks=1,
        status=Status.DRAINING, status_reason="deploy", metadata={"k": "v"}, version=7,
        performance=Performance(0.9, 0.8, 120.5, 12), last_active_at=T1, updated_at=T1,
    )
    assert agent.to_dict() == {
        "id": "a1", "tenant": "acme", "name": "Coder", "model_family": "claude",
        "task_types": ["code-review", "testing"], "languages": ["Go"],
        "specializations": ["gpu"], "capacity": 3, "active_tasks": 1, "status": "draining",
        "status_reason": "deploy", "utilization": 0.333333,
        "performance": {"success_rate": 0.9, "average_quality": 0.8,
                        "average_latency_ms": 120.5, "task_count": 12},
        "metadata": {"k": "v"},
        "registered_at": "2025-01-02T03:04:05.678Z",
        "last_active_at": "2025-01-02T03:09:05.678Z",
        "updated_at": "2025-01-02T03:09:05.678Z",
        "version": 7,
    }


@pytest.mark.parametrize(("moment", "expected"), [
    (datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), "2025-01-02T03:04:05.678Z"),
    (datetime(2025, 1, 2, 3, 4, 5, 0, tzinfo=UTC), "2025-01-02T03:04:05.000Z"),
    (datetime(2025, 1, 2, 3, 4, 5, 999, tzinfo=UTC), "2025-01-02T03:04:05.000Z"),
    (datetime(2025, 1, 2, 3, 4, 5, 999999, tzinfo=UTC), "2025-01-02T03:04:05.999Z"),
    (datetime(2025, 1, 2, 5, 4, 5, 1000, tzinfo=timezone(timedelta(hours=2))),
     "2025-01-02T03:04:05.001Z"),
    (datetime(2024, 12, 31, 22, 0, 0, 0, tzinfo=timezone(timedelta(hours=-3))),
     "2025-01-01T01:00:00.000Z"),
])
def test_rfc3339_is_utc_with_truncated_milliseconds_and_z(moment, expected):
    """Output timestamps are UTC, 3-digit milliseconds (truncated), suffix Z."""
    assert rfc3339(moment) == expected


# ---------------------------------------------------------------------------- FleetStats


def test_fleet_stats_to_dict_lists_every_status_and_rounds_means():
    """Missing statuses read 0, in spec order; means are rounded to 6 decimals."""
    stats = FleetStats(tenant="acme", total=3, by_status={"draining": 1, "available": 2}, busy=1,
                       idle=2, mean_utilization=1 / 3, mean_success=2 / 3, total_capacity=30,
                       total_active_tasks=10)
    document = stats.to_dict()
    assert document == {
        "tenant": "acme", "agents": 3,
        "by_status": {"available": 2, "draining": 1, "offline": 0, "maintenance": 0},
        "busy": 1, "idle": 2, "mean_utilization": 0.333333, "mean_success": 0.666667,
        "total_capacity": 30, "total_active_tasks": 10,
    }
    assert list(document["by_status"]) == list(STATUSES)
