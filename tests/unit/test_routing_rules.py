"""Routing rules of SPEC §3 in the pure domain: policy, task input, arms, ``choose``, decisions.

Pools are built by hand from numpy columns (rows in id order), and every random draw comes from
a seeded ``numpy.random.Generator``, so each test is deterministic.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import FrozenInstanceError
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arbiter_cli.config import DEFAULT_LANGUAGES, DEFAULT_TASK_TYPES
from arbiter_cli.domain.agents import RegistryPolicy
from arbiter_cli.domain.routing import (
    BANDITS,
    CAPABILITY_REASONS,
    CONFIDENCE_TOP,
    EXAMPLES_PER_REASON,
    EXPIRED,
    FAILED,
    OPEN,
    PRIOR_WEIGHT,
    REASONS,
    REEVALUATE,
    SEED_LIMIT,
    STRATEGIES,
    SUCCEEDED,
    THOMPSONS,
    Arm,
    Choice,
    Decision,
    Outcome,
    Pool,
    RoutingPolicy,
    Task,
    choose,
    parse_seed,
    parse_strategy,
    prior,
    reward,
    shifted,
    update_arm,
)
from arbiter_cli.errors import AtCapacity, InvalidInput, NoCapableAgent

T0 = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
REGISTRY = RegistryPolicy(task_types=tuple(DEFAULT_TASK_TYPES), languages=tuple(DEFAULT_LANGUAGES))
DEFAULT_HASH = "f8c7d1713783d180531bf84e81cf0da2c42aaffe13293427834dd7250b21448e"
GENERATED = "task-generated"


def config_hash(policy: RoutingPolicy) -> str:
    """The policy's hash, whether the package exposes it as a method or as a cached property."""
    value: Any = policy.config_hash
    return str(value() if callable(value) else value)


def make_pool(n: int = 3, *, ids: list[str] | None = None, **columns: Any) -> Pool:
    """A pool of ``n`` available, idle, untried agents a00, a01, ...; keywords replace columns."""
    defaults: dict[str, tuple[Any, Any]] = {
        "active": (0, np.int64), "capacity": (10, np.int64), "available": (True, np.bool_),
        "latency_ms": (5000.0, np.float64), "mean_reward": (0.7, np.float64),
        "fit": (1.0, np.float64), "arm_alpha": (0.0, np.float64), "arm_beta": (0.0, np.float64),
        "arm_outcomes": (0, np.int64),
    }
    excluded = columns.pop("excluded", {})
    examples = columns.pop("examples", {})
    arrays = {name: np.array(columns.pop(name, [default] * n), dtype=dtype)
              for name, (default, dtype) in defaults.items()}
    assert not columns, f"unknown pool columns {sorted(columns)}"
    names = ids if ids is not None else [f"a{i:02d}" for i in range(n)]
    return Pool(ids=names, uids=[f"uid-{name}" for name in names], excluded=excluded,
                examples=examples, **arrays)


def tried_pool(means: list[float], outcomes: int = 10, **columns: Any) -> Pool:
    """Every arm tried ``outcomes`` times, with evidence matching each mean reward."""
    return make_pool(
        len(means), mean_reward=means, arm_alpha=[m * outcomes for m in means],
        arm_beta=[(1 - m) * outcomes for m in means], arm_outcomes=[outcomes] * len(means),
        **columns)


def pick(pool: Pool, strategy: str, seed: int = 0, policy: RoutingPolicy | None = None) -> Choice:
    return choose(pool, policy or RoutingPolicy(), strategy, np.random.default_rng(seed))


def invalid(call: Any, *args: Any, **kwargs: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        call(*args, **kwargs)
    assert caught.value.exit_code == 2
    return caught.value


# ---------------------------------------------------------------------------- policy


def test_policy_defaults_are_the_documented_values():
    """Defaults follow SPEC §3: thompson, half-life 200, weights 0.6/0.2/0.1/0.1, ε 0.2/0.05/0.995."""
    policy = RoutingPolicy()
    assert policy.strategy == "thompson"
    assert policy.half_life == 200.0
    assert dict(policy.weights) == {"performance": 0.6, "load": 0.2, "fit": 0.1, "latency": 0.1}
    assert policy.latency_ref_ms == 5000.0
    assert (policy.epsilon_initial, policy.epsilon_min, policy.epsilon_decay) == (0.2, 0.05, 0.995)
    assert (policy.record_candidates, policy.max_claim_attempts) == (20, 5)
    assert policy.assignment_ttl_s == 7200.0


@pytest.mark.parametrize(("half_life", "gamma"), [
    (1.0, 0.5), (2.0, math.sqrt(0.5)), (200.0, 2.0 ** (-1.0 / 200.0)), (0.5, 0.25)])
def test_gamma_is_two_to_the_minus_one_over_half_life(half_life, gamma):
    """γ = 2^(−1/half_life)."""
    assert RoutingPolicy(half_life=half_life).gamma == pytest.approx(gamma, rel=1e-12)


def test_gamma_halves_evidence_after_one_half_life():
    """Applying γ half_life times leaves half the evidence."""
    assert RoutingPolicy(half_life=200.0).gamma ** 200 == pytest.approx(0.5, rel=1e-12)


def test_epsilon_decays_from_the_initial_value_down_to_the_floor():
    """ε(n) = max(ε_min, ε0·decay^n): the schedule, then the floor once it is reached."""
    policy = RoutingPolicy(epsilon_initial=0.4, epsilon_decay=0.5, epsilon_min=0.1)
    assert [policy.epsilon(n) for n in range(5)] == [0.4, 0.2, 0.1, 0.1, 0.1]


def test_epsilon_uses_the_documented_defaults():
    """Defaults: ε(0) = 0.2, ε(1) = 0.2·0.995, and ε(n) reaches the 0.05 floor."""
    policy = RoutingPolicy()
    assert policy.epsilon(0) == pytest.approx(0.2, rel=1e-12)
    assert policy.epsilon(1) == pytest.approx(0.199, rel=1e-12)
    assert policy.epsilon(100) == pytest.approx(0.2 * 0.995 ** 100, rel=1e-12)
    assert policy.epsilon(10_000) == 0.05


def test_config_hash_is_a_stable_sha256_of_the_default_settings():
    """The default hash is pinned: stored decisions stay comparable across releases."""
    assert config_hash(RoutingPolicy()) == DEFAULT_HASH
    assert config_hash(RoutingPolicy()) == config_hash(RoutingPolicy())


def test_config_hash_ignores_the_order_weights_are_given_in():
    """Weights are hashed sorted by name."""
    shuffled = {"latency": 0.1, "fit": 0.1, "load": 0.2, "performance": 0.6}
    assert config_hash(RoutingPolicy(weights=shuffled)) == DEFAULT_HASH


@pytest.mark.parametrize("change", [
    {"strategy": "ucb"}, {"half_life": 100.0},
    {"weights": {"performance": 0.5, "load": 0.3, "fit": 0.1, "latency": 0.1}},
    {"weights": {"performance": 0.6, "load": 0.2, "fit": 0.15, "latency": 0.05}},
    {"latency_ref_ms": 4000.0}, {"epsilon_initial": 0.3}, {"epsilon_min": 0.01},
    {"epsilon_decay": 0.99}, {"record_candidates": 10}, {"max_claim_attempts": 9},
], ids=lambda change: "-".join(change))
def test_config_hash_changes_with_each_setting_that_shapes_a_decision(change):
    """Every hashed setting changes the hash."""
    assert config_hash(RoutingPolicy(**change)) != config_hash(RoutingPolicy())


# ---------------------------------------------------------------------------- task input


def test_task_parse_fills_documented_defaults():
    """A bare task gets the generated id, priority 5, and empty requirements."""
    task = Task.parse({"task_type": "code-review"}, REGISTRY, GENERATED)
    assert task == Task(task_id=GENERATED, task_type="code-review", languages=(),
                        specializations=(), prefer=(), priority=5, metadata={})
    assert task.requirements() == {"task_type": "code-review", "languages": [],
                                   "specializations": [], "prefer_specializations": [],
                                   "priority": 5}


def test_task_parse_keeps_a_given_task_id_instead_of_generating_one():
    """The generated id is used only when task_id is absent (or null)."""
    assert Task.parse({"task_type": "testing", "task_id": "T-1"}, REGISTRY, GENERATED).task_id == "T-1"
    assert Task.parse({"task_type": "testing", "task_id": None}, REGISTRY, GENERATED).task_id == GENERATED


@pytest.mark.parametrize("task_id", ["a", "Z9", "job.1:step_2-x", "-starts-with-dash",
                                     ".dot", "x" * 128])
def test_task_parse_accepts_ids_matching_the_task_id_pattern(task_id):
    """task_id matches ^[A-Za-z0-9._:-]{1,128}$ (a leading dot or dash is allowed)."""
    assert Task.parse({"task_type": "testing", "task_id": task_id}, REGISTRY, GENERATED).task_id == task_id


@pytest.mark.parametrize("task_id", ["", "x" * 129, "has space", "a/b", "é", 7, ["T-1"]])
def test_task_parse_rejects_invalid_task_ids(task_id):
    """An invalid task id is rejected with field task_id and rule pattern, never rewritten."""
    error = invalid(Task.parse, {"task_type": "testing", "task_id": task_id}, REGISTRY, GENERATED)
    assert (error.field, error.rule) == ("task_id", "pattern")


@pytest.mark.parametrize("raw", [{}, {"task_type": ""}, {"task_type": None}])
def test_task_parse_requires_a_task_type(raw):
    """A missing or empty task type is rule required."""
    error = invalid(Task.parse, raw, REGISTRY, GENERATED)
    assert (error.field, error.rule) == ("task_type", "required")


def test_task_parse_canonicalises_the_task_type_and_rejects_unknown_ones():
    """Task types match case-insensitively and come back in the registry's spelling."""
    assert Task.parse({"task_type": "Code-REVIEW"}, REGISTRY, GENERATED).task_type == "code-review"
    error = invalid(Task.parse, {"task_type": "cooking"}, REGISTRY, GENERATED)
    assert (error.field, error.rule) == ("task_type", "allowed")


def test_task_parse_canonicalises_languages_sorted_and_deduplicated():
    """Languages take the canonical spelling, deduplicated, in sorted order."""
    task = Task.parse({"task_type": "testing", "languages": ["rust", "PYTHON", "Python"]},
                      REGISTRY, GENERATED)
    assert task.languages == ("Python", "Rust")
    assert Task.parse({"task_type": "testing", "languages": "go"}, REGISTRY, GENERATED).languages == ("Go",)


@pytest.mark.parametrize("raw", [
    {"task_type": "testing"}, {"task_type": "Code-REVIEW", "languages": ["rust", "PYTHON", "Python"]},
    {"task_type": "testing", "languages": []}, {"task_type": "testing", "languages": None},
    {"task_type": "testing", "languages": "go"}, {"task_type": "testing", "languages": ("Go",)},
    {"languages": ["Go"]}, {"task_type": "", "languages": ["Go"]}, {"task_type": 7},
    {"task_type": "cooking"}, {"task_type": "testing", "languages": ["COBOL"]},
    {"task_type": "testing", "languages": ["Go", 3]}, {"task_type": ["testing"]},
])
def test_task_parse_of_a_type_and_languages_matches_the_general_path(raw):
    """A task of only a type and languages (kept per spelling) parses, or is refused, exactly as
    the same task with another field given as null (which takes every check in turn)."""
    def outcome(task_raw: dict[str, Any]) -> Any:
        try:
            return Task.parse(task_raw, REGISTRY, GENERATED)
        except InvalidInput as error:
            return (error.field, error.rule, str(error))

    for _ in range(2):  # the second time from the kept spelling
        plain = outcome(raw)
        assert plain == outcome({**raw, "priority": None})
    if isinstance(plain, Task):
        assert plain.task_id == GENERATED and plain.metadata == {} and plain.priority == 5
        assert plain.specializations == () and plain.prefer == ()


def test_task_parse_of_a_plain_task_follows_the_registry_policy():
    """What is kept per spelling is kept per policy too: another policy's allowed values apply."""
    narrow = RegistryPolicy(task_types=("testing",), languages=("Go",))
    raw = {"task_type": "TESTING", "languages": ["go"]}
    assert Task.parse(raw, REGISTRY, GENERATED).languages == ("Go",)
    assert Task.parse(raw, narrow, GENERATED) == Task(task_id=GENERATED, task_type="testing",
                                                      languages=("Go",))
    error = invalid(Task.parse, {"task_type": "code-review"}, narrow, GENERATED)
    assert (error.field, error.rule) == ("task_type", "allowed")
    error = invalid(Task.parse, {"task_type": "testing", "languages": ["Python"]}, narrow,
                    GENERATED)
    assert (error.field, error.rule) == ("languages", "allowed")


def test_task_parse_keeps_nothing_of_a_long_language_list():
    """A request's languages list can be as long as its body allows (serve.max_body, 10 MiB):
    what Task.parse keeps per spelling must not hold on to it (the plain path kept each
    distinct list, up to 256 of them, for the life of the server)."""
    import gc
    import json
    import tracemalloc

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for extra in range(4):
            raw = json.loads(json.dumps({"task_type": "testing",
                                         "languages": ["Python"] * (20_000 + extra)}))
            assert Task.parse(raw, REGISTRY, GENERATED).languages == ("Python",)
            del raw
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 200_000, f"{kept} bytes kept after parsing four long language lists"


def test_task_parse_rejects_an_unknown_language():
    """A language outside registry.languages is rule allowed."""
    error = invalid(Task.parse, {"task_type": "testing", "languages": ["COBOL"]}, REGISTRY, GENERATED)
    assert (error.field, error.rule) == ("languages", "allowed")


def test_task_parse_deduplicates_specializations_ignoring_case():
    """Specializations keep the first spelling and sort case-insensitively."""
    task = Task.parse({"task_type": "testing", "specializations": ["Django", "django", "api"]},
                      REGISTRY, GENERATED)
    assert task.specializations == ("api", "Django")


@pytest.mark.parametrize("key", ["prefer", "prefer_specializations"])
def test_task_parse_reads_preferred_specializations_under_either_name(key):
    """Preferred specializations come from prefer or prefer_specializations."""
    task = Task.parse({"task_type": "testing", key: ["security", "Perf"]}, REGISTRY, GENERATED)
    assert task.prefer == ("Perf", "security")
    assert task.requirements()["prefer_specializations"] == ["Perf", "security"]


@pytest.mark.parametrize(("given_priority", "expected"), [
    (None, 5), (1, 1), (10, 10), ("7", 7)])
def test_task_parse_accepts_priorities_from_one_to_ten(given_priority, expected):
    """priority defaults to 5 and accepts 1..10 inclusive."""
    raw = {"task_type": "testing", "priority": given_priority}
    assert Task.parse(raw, REGISTRY, GENERATED).priority == expected


@pytest.mark.parametrize(("given_priority", "rule"), [
    (0, "range"), (11, "range"), (-1, "range"), (True, "type"), (5.5, "type"), ("high", "type")])
def test_task_parse_rejects_priorities_outside_one_to_ten(given_priority, rule):
    """A priority outside 1..10, or not an integer, is rejected on field priority."""
    error = invalid(Task.parse, {"task_type": "testing", "priority": given_priority}, REGISTRY, GENERATED)
    assert (error.field, error.rule) == ("priority", rule)


def test_task_parse_rejects_unknown_fields_naming_the_first_in_order():
    """Unknown fields are rejected (the alphabetically first is named)."""
    error = invalid(Task.parse, {"task_type": "testing", "zeta": 1, "colour": "red"}, REGISTRY, GENERATED)
    assert (error.field, error.rule) == ("colour", "unknown_field")


def test_task_parse_ignores_unknown_fields_that_are_null():
    """An unknown field set to null is treated as absent."""
    assert Task.parse({"task_type": "testing", "colour": None}, REGISTRY, GENERATED).task_type == "testing"


def test_task_parse_accepts_metadata_as_an_object_or_json_text():
    """Metadata is a JSON object, given as a mapping or as JSON text."""
    for given_metadata, parsed in (({"k": 1}, {"k": 1}), ('{"k": 2}', {"k": 2})):
        raw = {"task_type": "testing", "metadata": given_metadata}
        assert Task.parse(raw, REGISTRY, GENERATED).metadata == parsed
    error = invalid(Task.parse, {"task_type": "testing", "metadata": "[1]"}, REGISTRY, GENERATED)
    assert (error.field, error.rule) == ("metadata", "object")


def test_strategies_are_the_five_documented_ones():
    """Five strategies; all but `weighted` are bandits (the stationary baseline last, so the
    simulator's per-strategy seeds of the older four stay as they were)."""
    assert STRATEGIES == ("thompson", "ucb", "epsilon-greedy", "weighted", "thompson-stationary")
    assert frozenset({"thompson", "ucb", "epsilon-greedy", "thompson-stationary"}) == BANDITS


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_parse_strategy_accepts_each_strategy(strategy):
    """Every documented strategy parses to itself, whatever the default."""
    assert parse_strategy(strategy, "weighted") == strategy


@pytest.mark.parametrize("value", [None, ""])
def test_parse_strategy_falls_back_to_the_default(value):
    """No strategy given means the configured default."""
    assert parse_strategy(value, "ucb") == "ucb"


@pytest.mark.parametrize(("value", "default"), [("greedy", "thompson"), ("Thompson", "ucb"),
                                                (None, "bogus")])
def test_parse_strategy_rejects_unknown_strategies(value, default):
    """An unknown strategy (given or defaulted) is field strategy, rule allowed."""
    error = invalid(parse_strategy, value, default)
    assert (error.field, error.rule) == ("strategy", "allowed")


@pytest.mark.parametrize(("value", "expected"), [(0, 0), (2**63 - 1, 2**63 - 1), ("42", 42)])
def test_parse_seed_accepts_zero_to_two_to_the_63_minus_one(value, expected):
    """Seeds are integers in [0, 2^63 − 1]."""
    assert SEED_LIMIT == 2**63 - 1
    assert parse_seed(value) == expected


@pytest.mark.parametrize(("value", "rule"), [(-1, "range"), (2**63, "range"), (True, "type"),
                                             (1.5, "type"), ("seed", "type")])
def test_parse_seed_rejects_values_outside_the_range(value, rule):
    """Negative, too large or non-integer seeds are rejected on field seed."""
    error = invalid(parse_seed, value)
    assert (error.field, error.rule) == ("seed", rule)


# ---------------------------------------------------------------------------- arms


def test_a_new_arm_has_no_evidence():
    """An arm starts at α = β = 0 with no outcomes."""
    assert (Arm().alpha, Arm().beta, Arm().outcomes) == (0.0, 0.0, 0)


@pytest.mark.parametrize(("success", "quality", "expected"), [
    (True, 0.3, 0.3), (True, 1.0, 1.0), (False, 0.9, 0.0), (False, 0.0, 0.0)])
def test_reward_is_quality_on_success_and_zero_on_failure(success, quality, expected):
    """r = quality on success, 0 on failure."""
    assert reward(success, quality) == expected


def test_update_arm_counts_since_the_change_decays_the_recent_and_keeps_the_total():
    """α, β add r and 1 − r; recent_α ← γ·recent_α + r; the totals add; outcomes + 1."""
    arm = Arm(alpha=2.0, beta=3.0, outcomes=4, recent_alpha=1.0, recent_beta=2.0,
              total_alpha=7.0, total_beta=9.0, changes=1)
    assert update_arm(arm, 0.25, 0.5) == Arm(
        alpha=2.25, beta=3.75, outcomes=5, recent_alpha=0.75, recent_beta=1.75,
        total_alpha=7.25, total_beta=9.75, changes=1)
    assert arm.alpha == 2.0


def test_update_arm_with_gamma_one_counts_plainly():
    """Without decay, a success adds 1 to α and a failure adds 1 to β, in every memory."""
    arm = update_arm(update_arm(Arm(), 1.0, 1.0), 0.0, 1.0)
    assert arm == Arm(alpha=1.0, beta=1.0, outcomes=2, recent_alpha=1.0, recent_beta=1.0,
                      total_alpha=1.0, total_beta=1.0)


def feed(arm: Arm, rewards: list[float], gamma: float) -> Arm:
    for r in rewards:
        arm = update_arm(arm, r, gamma)
    return arm


def test_a_steady_arm_keeps_its_evidence():
    """400 outcomes at a steady 0.9 rate (9 successes per 10): no change is detected."""
    arm = feed(Arm(), ([1.0] * 9 + [0.0]) * 40, 2 ** (-1 / 200))
    assert (arm.changes, arm.alpha, arm.beta) == (0, 360.0, 40.0)


def test_a_drop_in_success_resets_the_arm_but_not_its_total():
    """After 1000 outcomes at 0.9, the arm fails steadily: within 60 outcomes the detector fires,
    the evidence since the change restarts, and the total keeps everything."""
    gamma = 2 ** (-1 / 200)
    arm = feed(Arm(), ([1.0] * 9 + [0.0]) * 100, gamma)
    after = [feed(arm, [0.0] * k, gamma) for k in range(1, 61)]
    fired = next(k for k, later in enumerate(after, 1) if later.changes == 1)
    assert 5 <= fired <= 60
    reset = after[fired - 1]
    assert reset.alpha + reset.beta == 0.0 and reset.recent_alpha + reset.recent_beta == 0.0
    assert (reset.total_alpha, reset.total_beta) == (900.0, 100.0 + fired)
    assert reset.outcomes == 1000 + fired


def test_shifted_is_a_two_sided_z_test_with_a_conservative_variance():
    """|recent − since-change| > z·sqrt(p(1 − p)(1/W − 1/n)), nothing when W ≥ n."""
    assert not shifted(50.0, 50.0, 50.0, 50.0, 5.0)  # W = n: no separate evidence
    assert not shifted(0.0, 0.0, 0.0, 0.0, 5.0)
    # n = 1000, p ≈ 0.5; W = 100: sd = sqrt(0.25·(0.01 − 0.001)) ≈ 0.0474
    assert shifted(500.0, 500.0, 25.0, 75.0, 5.0)  # gap 0.25 > 5·0.0474
    assert not shifted(500.0, 500.0, 70.0, 30.0, 5.0)  # gap 0.20 < 0.237
    assert shifted(500.0, 500.0, 75.0, 25.0, 5.0)  # either direction


def test_arms_are_immutable():
    """An Arm is a frozen value."""
    with pytest.raises(FrozenInstanceError):
        Arm().alpha = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(("mean", "expected"), [(0.0, (1.0, 3.0)), (1.0, (3.0, 1.0)),
                                                (0.7, (2.4, 1.6)), (0.5, (2.0, 2.0))])
def test_prior_is_beta_one_one_plus_two_pseudo_outcomes(mean, expected):
    """prior(m) = (1 + 2m, 1 + 2(1 − m))."""
    assert PRIOR_WEIGHT == 2.0
    assert prior(mean) == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------------------- eligibility


def test_the_reason_constants_are_in_the_documented_order():
    """Capability reasons first, then status, then capacity; three examples per reason."""
    assert CAPABILITY_REASONS == ("task_type", "language", "specialization")
    assert REASONS == ("task_type", "language", "specialization", "status", "capacity")
    assert EXAMPLES_PER_REASON == 3


def test_an_empty_pool_raises_no_capable_agent_with_the_capability_counts():
    """No capable agent: exit 8 with details.excluded holding the non-zero counts."""
    pool = make_pool(0, excluded={"task_type": 2, "language": 1, "specialization": 0})
    for strategy in STRATEGIES:
        with pytest.raises(NoCapableAgent) as caught:
            pick(pool, strategy)
        assert (caught.value.exit_code, caught.value.code) == (8, "no_capable_agent")
        assert caught.value.details == {"excluded": {"task_type": 2, "language": 1}}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_capable_agents_none_eligible_raise_at_capacity_with_counts(strategy):
    """Capable but unavailable or full: exit 9; status is counted before capacity."""
    pool = make_pool(4, available=[False, True, False, True], active=[0, 10, 10, 11],
                     excluded={"task_type": 3})
    with pytest.raises(AtCapacity) as caught:
        pick(pool, strategy)
    assert (caught.value.exit_code, caught.value.code) == (9, "at_capacity")
    assert caught.value.details == {"excluded": {"task_type": 3, "status": 2, "capacity": 2}}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_choice_counts_exclusions_in_reason_order_with_examples(strategy):
    """Exclusions keep the reason order; an unavailable full agent counts only under status."""
    pool = make_pool(5, available=[True, False, False, True, True], active=[0, 0, 10, 10, 12],
                     excluded={"task_type": 3, "language": 0, "specialization": 1},
                     examples={"task_type": ["x1", "x2", "x3"], "specialization": ["s1"]})
    choice = pick(pool, strategy)
    assert choice.order == [0]
    assert choice.excluded == {"task_type": 3, "specialization": 1, "status": 2, "capacity": 2}
    assert list(choice.excluded) == ["task_type", "specialization", "status", "capacity"]
    assert choice.examples == {"task_type": ["x1", "x2", "x3"], "specialization": ["s1"],
                               "status": ["a01", "a02"], "capacity": ["a03", "a04"]}


def test_choice_keeps_at_most_three_examples_per_reason():
    """Examples are the first three ids per reason; counts stay exact."""
    pool = make_pool(9, available=[True] + [False] * 5 + [True] * 3, active=[0] * 6 + [10] * 3)
    choice = pick(pool, "weighted")
    assert choice.excluded == {"status": 5, "capacity": 3}
    assert choice.examples == {"status": ["a01", "a02", "a03"], "capacity": ["a06", "a07", "a08"]}


def test_examples_already_in_the_pool_count_towards_the_three():
    """Examples given by the pool and found by choose share the cap of three per reason."""
    pool = make_pool(4, available=[True, False, False, False],
                     examples={"status": ["p1", "p2"]})
    assert pick(pool, "weighted").examples == {"status": ["p1", "p2", "a01"]}


def test_an_agent_below_capacity_by_one_is_eligible():
    """active_tasks < capacity is the boundary: capacity − 1 is eligible, capacity is not."""
    pool = make_pool(2, active=[10, 9], capacity=[10, 10])
    choice = pick(pool, "weighted")
    assert choice.order == [1]
    assert choice.excluded == {"capacity": 1}


@st.composite
def pools(draw: Any) -> tuple[Pool, list[bool]]:
    n = draw(st.integers(1, 6))
    rows = draw(st.lists(st.tuples(
        st.integers(0, 12), st.integers(1, 10), st.booleans(), st.integers(0, 400),
        st.floats(0, 30), st.floats(0, 30), st.floats(0, 1), st.floats(0, 20_000), st.floats(0, 1),
    ), min_size=n, max_size=n))
    columns = map(list, zip(*rows, strict=True))
    active, capacity, available, outcomes, alpha, beta, mean, latency, fit = columns
    pool = make_pool(n, active=active, capacity=capacity, available=available,
                     arm_outcomes=outcomes, arm_alpha=alpha, arm_beta=beta, mean_reward=mean,
                     latency_ms=latency, fit=fit)
    eligible = [available[i] and active[i] < capacity[i] for i in range(n)]
    return pool, eligible


def greedy_top(pool: Pool, eligible: list[bool]) -> int:
    """The eligible row with the best score by posterior mean (default weights)."""
    a = 1.0 + 2.0 * pool.mean_reward + pool.arm_alpha
    b = 1.0 + 2.0 * (1.0 - pool.mean_reward) + pool.arm_beta
    utilization = pool.active / pool.capacity
    score = np.round(0.6 * (a / (a + b)) + 0.2 * (1.0 - np.minimum(utilization, 1.0))
                     + 0.1 * pool.fit + 0.1 * (1.0 / (1.0 + pool.latency_ms / 5000.0)), 6)
    rows = [r for r in range(pool.size) if eligible[r]]
    return min(rows, key=lambda r: (-score[r], utilization[r], r))


@settings(max_examples=150, derandomize=True, deadline=None)
@given(drawn=pools(), strategy=st.sampled_from(STRATEGIES), seed=st.integers(0, 2**32),
       record=st.integers(1, 4), attempts=st.integers(1, 4))
def test_choose_always_picks_an_eligible_agent(drawn, strategy, seed, record, attempts):
    """Property (a): every strategy picks an eligible agent, or raises 9 when there is none."""
    pool, eligible = drawn
    policy = RoutingPolicy(record_candidates=record, max_claim_attempts=attempts)
    status = sum(not a for a in pool.available.tolist())
    capacity = sum(a and not e for a, e in zip(pool.available.tolist(), eligible, strict=True))
    expected_excluded = {k: n for k, n in (("status", status), ("capacity", capacity)) if n}
    if not any(eligible):
        with pytest.raises(AtCapacity) as caught:
            pick(pool, strategy, seed, policy)
        assert caught.value.details == {"excluded": expected_excluded}
        return
    choice = pick(pool, strategy, seed, policy)
    assert eligible[choice.order[0]]
    assert all(eligible[row] for row in choice.order)
    assert len(set(choice.order)) == len(choice.order) == min(sum(eligible), max(record, attempts))
    assert set(choice.scores) == set(choice.components) == set(choice.order)
    assert choice.excluded == expected_excluded
    assert (choice.confidence is None) == (strategy != "thompson")
    untried = [r for r in range(pool.size) if eligible[r] and pool.arm_outcomes[r] == 0]
    if strategy in BANDITS and untried:
        assert choice.order[0] in untried
    assert choice.explored == (choice.order[0] != greedy_top(pool, eligible))
    if strategy == "weighted":  # re-evaluated arms first, then score, load, id
        utilization = (pool.active / pool.capacity).tolist()
        outcomes = sum(int(pool.arm_outcomes[r]) for r in range(pool.size) if eligible[r])
        bar = REEVALUATE * math.log1p(outcomes)
        starved = [bool(pool.arm_alpha[r] + pool.arm_beta[r] < bar) for r in range(pool.size)]
        assert choice.order == sorted(choice.order, key=lambda r: (
            not starved[r], -choice.scores[r], utilization[r], r))


# ---------------------------------------------------------------------------- forced exploration


def strong_pair_and_newcomer() -> Pool:
    """Two well-tried strong arms and one untried arm with a poor prior."""
    return make_pool(3, mean_reward=[0.95, 0.95, 0.1], arm_alpha=[40.0, 40.0, 0.0],
                     arm_beta=[0.0, 0.0, 0.0], arm_outcomes=[40, 40, 0])


@pytest.mark.parametrize("strategy", sorted(BANDITS))
def test_bandits_try_an_untried_eligible_arm_first(strategy):
    """Forced exploration: under every bandit an arm with 0 outcomes comes before exploitation."""
    pool = strong_pair_and_newcomer()
    for seed in range(20):
        choice = pick(pool, strategy, seed)
        assert choice.order[0] == 2
        assert choice.explored is True


def test_weighted_re_evaluates_an_arm_with_too_little_evidence_first():
    """Weighted tries an arm whose evidence is below 3·ln(1 + N) first (here 0 < 3·ln 81)."""
    choice = pick(strong_pair_and_newcomer(), "weighted")
    assert REEVALUATE == 3.0
    assert choice.order == [2, 0, 1]
    assert choice.explored is True


def test_weighted_is_greedy_once_every_arm_has_enough_evidence():
    """Evidence 14 ≥ 3·ln(1 + 42) ≈ 11.3 everywhere: the posterior mean alone decides."""
    pool = make_pool(3, mean_reward=[0.5, 0.5, 0.5], arm_alpha=[2.0, 10.0, 6.0],
                     arm_beta=[12.0, 4.0, 8.0], arm_outcomes=[14, 14, 14])
    choice = pick(pool, "weighted")
    assert choice.order == [1, 2, 0]
    assert choice.explored is False


def test_weighted_counts_evidence_since_the_last_change_not_all_outcomes():
    """An arm reset by a detected change (evidence 0, 500 outcomes) is re-evaluated first."""
    pool = make_pool(2, mean_reward=[0.5, 0.5], arm_alpha=[400.0, 0.0], arm_beta=[100.0, 0.0],
                     arm_outcomes=[500, 500])
    assert pick(pool, "weighted").order == [1, 0]


@pytest.mark.parametrize("strategy", ["ucb", "epsilon-greedy"])
def test_untried_arms_are_ranked_among_themselves_by_score(strategy):
    """Several untried arms come first, the better posterior mean first."""
    pool = make_pool(3, mean_reward=[0.2, 0.8, 0.99], arm_alpha=[0.0, 0.0, 30.0],
                     arm_outcomes=[0, 0, 30])
    assert pick(pool, strategy, 3).order == [1, 0, 2]


def test_thompson_puts_all_untried_arms_before_tried_ones():
    """Under thompson every untried arm precedes every tried arm."""
    pool = make_pool(3, mean_reward=[0.2, 0.8, 0.99], arm_alpha=[0.0, 0.0, 30.0],
                     arm_outcomes=[0, 0, 30])
    for seed in range(10):
        assert set(pick(pool, "thompson", seed).order[:2]) == {0, 1}


def test_an_ineligible_untried_arm_is_not_forced():
    """Only an eligible untried arm is forced first."""
    pool = make_pool(2, mean_reward=[0.9, 0.1], arm_alpha=[20.0, 0.0], arm_outcomes=[20, 0],
                     available=[True, False])
    assert pick(pool, "ucb").order == [0]


@pytest.mark.parametrize("others", [1000, 10**6])
def test_ucb_tries_an_untried_arm_before_a_rarely_tried_one(others):
    """Under UCB the untried arm still comes first when another arm has a huge bonus."""
    pool = make_pool(3, mean_reward=[0.7, 0.7, 0.7], arm_alpha=[0.0, 1.0, 0.8 * others],
                     arm_beta=[0.0, 0.0, 0.2 * others], arm_outcomes=[0, 1, others])
    choice = pick(pool, "ucb")
    assert choice.order == [0, 1, 2]
    assert choice.components[1]["value"] > 3.0


# ---------------------------------------------------------------------------- scoring


def test_score_is_the_weighted_sum_of_its_components():
    """score = w_p·value + w_l·(1 − util) + w_f·fit + w_lat/(1 + latency/ref), per component."""
    policy = RoutingPolicy(weights={"performance": 0.5, "load": 0.25, "fit": 0.15, "latency": 0.1},
                           latency_ref_ms=10_000.0)
    pool = make_pool(2, available=[False, True], active=[0, 2], capacity=[10, 8],
                     latency_ms=[0.0, 2500.0], mean_reward=[0.1, 0.7], fit=[0.0, 0.5],
                     arm_alpha=[0.0, 3.0], arm_beta=[0.0, 1.0], arm_outcomes=[0, 4])
    choice = pick(pool, "weighted", policy=policy)
    # posterior: a = 1 + 2·0.7 + 3 = 5.4, b = 1 + 2·0.3 + 1 = 2.6, mean = 0.675
    assert choice.order == [1]
    assert choice.components[1] == pytest.approx({
        "value": 0.675, "posterior_mean": 0.675, "performance": 0.3375, "load": 0.1875,
        "fit": 0.075, "latency": 0.08, "outcomes": 4}, abs=1e-9)
    assert choice.scores[1] == pytest.approx(0.68, abs=1e-9)


def test_score_with_default_weights_and_the_prior_only():
    """Default weights: 0.6·0.6 + 0.2·1 + 0.1·1 + 0.1·0.5 = 0.71 for an idle agent at the prior."""
    choice = pick(make_pool(1), "weighted")
    assert choice.components[0] == pytest.approx({
        "value": 0.6, "posterior_mean": 0.6, "performance": 0.36, "load": 0.2, "fit": 0.1,
        "latency": 0.05, "outcomes": 0}, abs=1e-9)
    assert choice.scores[0] == pytest.approx(0.71, abs=1e-9)


@pytest.mark.parametrize(("latency", "expected"), [(0.0, 0.1), (5000.0, 0.05), (15000.0, 0.025)])
def test_latency_score_is_one_over_one_plus_latency_over_reference(latency, expected):
    """latency component = w_lat · 1/(1 + latency/5000)."""
    choice = pick(make_pool(1, latency_ms=[latency]), "weighted")
    assert choice.components[0]["latency"] == pytest.approx(expected, abs=1e-9)


def test_load_component_uses_utilization():
    """load = w_l · (1 − active/capacity)."""
    choice = pick(make_pool(1, active=[3], capacity=[4]), "weighted")
    assert choice.components[0]["load"] == pytest.approx(0.05, abs=1e-9)


def test_ucb_value_is_the_mean_plus_the_ucb1_bonus():
    """UCB value = posterior mean + sqrt(2 ln N / n) for tried arms."""
    pool = make_pool(2, mean_reward=[0.5, 0.5], arm_alpha=[2.0, 1.0], arm_beta=[1.0, 0.0],
                     arm_outcomes=[3, 1])
    choice = pick(pool, "ucb")
    mean0, mean1 = 4.0 / 7.0, 3.0 / 5.0
    value0 = mean0 + math.sqrt(2.0 * math.log(4) / 3)
    value1 = mean1 + math.sqrt(2.0 * math.log(4) / 1)
    assert choice.order == [1, 0]
    assert choice.components[0]["posterior_mean"] == pytest.approx(mean0, abs=1e-6)
    assert choice.components[0]["value"] == pytest.approx(value0, abs=1e-6)
    assert choice.components[1]["value"] == pytest.approx(value1, abs=1e-6)
    assert choice.components[1]["performance"] == pytest.approx(0.6 * value1, abs=1e-6)
    assert choice.scores[1] == pytest.approx(0.6 * value1 + 0.35, abs=1e-6)


def test_ucb_value_of_an_untried_arm_is_its_posterior_mean():
    """An untried arm has no bonus; with one outcome in total, ln 1 = 0 gives no bonus either."""
    pool = make_pool(2, mean_reward=[0.5, 0.5], arm_alpha=[1.0, 0.0], arm_outcomes=[1, 0])
    choice = pick(pool, "ucb")
    assert choice.components[0]["value"] == pytest.approx(3.0 / 5.0, abs=1e-9)
    assert choice.components[1]["value"] == pytest.approx(0.5, abs=1e-9)


def test_ucb_prefers_the_less_tried_of_two_equal_arms():
    """With equal means, the arm with fewer outcomes has the larger index; that is exploration."""
    pool = make_pool(2, mean_reward=[0.5, 0.5], arm_alpha=[50.0, 1.0], arm_beta=[50.0, 1.0],
                     arm_outcomes=[100, 2])
    choice = pick(pool, "ucb")
    assert choice.order == [1, 0]
    assert choice.explored is True


def test_thompson_value_is_a_posterior_sample_in_the_unit_interval():
    """Thompson's value is a draw, not the mean, and lies in [0, 1]."""
    choice = pick(tried_pool([0.5, 0.5, 0.5]), "thompson", 11)
    values = [choice.components[r]["value"] for r in choice.order]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert values != [choice.components[r]["posterior_mean"] for r in choice.order]


# ---------------------------------------------------------------------------- weighted ordering


def test_weighted_orders_by_score_descending():
    """Higher score first."""
    assert pick(make_pool(3, mean_reward=[0.2, 0.9, 0.5]), "weighted").order == [1, 2, 0]


def test_weighted_breaks_score_ties_by_lower_utilization():
    """Equal scores: the less utilized agent first, even with the larger id."""
    pool = make_pool(2, active=[5, 0], fit=[1.0, 0.0])  # 0.2·0.5 + 0.1·1 = 0.2·1 + 0.1·0
    choice = pick(pool, "weighted")
    assert choice.scores[0] == choice.scores[1]
    assert choice.order == [1, 0]


def test_weighted_breaks_full_ties_by_id():
    """Equal score and utilization: ascending id (rows are in id order)."""
    assert pick(make_pool(3), "weighted").order == [0, 1, 2]


def test_scores_are_rounded_to_six_decimals_before_ranking():
    """A difference below 1e-6 is a tie, so the id decides."""
    pool = make_pool(2, fit=[1.0 - 1e-6, 1.0])
    choice = pick(pool, "weighted")
    assert choice.scores == {0: 0.71, 1: 0.71}
    assert choice.order == [0, 1]


def test_weighted_ignores_the_generator():
    """Weighted is deterministic: any seed gives the same choice."""
    pool = tried_pool([0.4, 0.6, 0.5], active=[1, 2, 0])
    assert all(pick(pool, "weighted", seed) == pick(pool, "weighted", 0) for seed in range(1, 6))


# ---------------------------------------------------------------------------- determinism & reporting


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_same_pool_seed_and_strategy_give_the_same_choice(strategy):
    """Determinism: identical order, scores, components and confidence."""
    pool = make_pool(6, mean_reward=[0.3, 0.9, 0.6, 0.5, 0.7, 0.4], active=[0, 1, 2, 3, 0, 9],
                     arm_alpha=[3.0, 8.0, 5.0, 4.0, 6.0, 1.0], arm_beta=[6.0, 1.0, 4.0, 5.0, 3.0, 2.0],
                     arm_outcomes=[9, 9, 9, 9, 9, 3])
    first, second = pick(pool, strategy, 1234), pick(pool, strategy, 1234)
    assert first == second
    assert (first.order, first.scores, first.confidence) == (second.order, second.scores,
                                                             second.confidence)


def test_thompson_depends_on_the_seed():
    """Different seeds give different draws, so equal arms are not always chosen the same."""
    pool = tried_pool([0.5, 0.5, 0.5])
    assert len({pick(pool, "thompson", seed).order[0] for seed in range(30)}) > 1


def test_confidence_is_a_share_for_thompson_and_none_otherwise():
    """SPEC §3.4: confidence ∈ [0, 1] for thompson, null for the others (the stationary
    baseline included)."""
    pool = tried_pool([0.5, 0.6, 0.4])
    assert CONFIDENCE_TOP == 10
    assert frozenset({"thompson", "thompson-stationary"}) == THOMPSONS
    confidence = pick(pool, "thompson", 5).confidence
    assert isinstance(confidence, float) and 0.0 < confidence < 1.0
    assert confidence == round(confidence, 4)
    for strategy in ("thompson-stationary", "ucb", "epsilon-greedy", "weighted"):
        assert pick(pool, strategy, 5).confidence is None


def test_confidence_is_one_for_a_dominant_arm_and_a_single_candidate():
    """The chosen arm wins every draw when it dominates, or when it is alone."""
    dominant = tried_pool([1.0, 0.0], outcomes=500)
    choice = pick(dominant, "thompson", 2)
    assert (choice.order[0], choice.confidence, choice.explored) == (0, 1.0, False)
    assert pick(tried_pool([0.5]), "thompson", 2).confidence == 1.0


def test_confidence_of_equal_arms_is_near_even():
    """Two equal arms: the chosen one wins about half of the posterior draws."""
    confidence = pick(tried_pool([0.5, 0.5], outcomes=10), "thompson", 9).confidence
    assert confidence is not None and 0.3 < confidence < 0.7


def test_confidence_compares_the_top_ten_candidates_only():
    """Twelve equal arms: the chosen one wins about a tenth of the draws among the top 10."""
    confidence = pick(tried_pool([0.5] * 12, outcomes=10), "thompson", 3).confidence
    assert confidence is not None and 0.03 < confidence < 0.2


def test_confidence_counts_load_fit_and_latency_not_only_the_draw():
    """Draws are scored like candidates: a clear fit advantage wins every draw of equal arms."""
    pool = tried_pool([0.5, 0.5], outcomes=1000, fit=[1.0, 0.0])
    choice = pick(pool, "thompson", 6)
    assert (choice.order[0], choice.confidence) == (0, 1.0)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_explored_is_false_when_the_choice_is_the_posterior_mean_top(strategy):
    """Not explored when the pick equals the best posterior mean (here a clear winner)."""
    choice = pick(tried_pool([0.05, 0.99, 0.05], outcomes=400), strategy, 4,
                  RoutingPolicy(epsilon_initial=0.0, epsilon_min=0.0))
    assert choice.order[0] == 1
    assert choice.explored is False


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(("record", "attempts", "kept"), [(20, 5, 20), (3, 7, 7), (8, 2, 8),
                                                           (40, 5, 30)])
def test_candidates_are_truncated_to_the_larger_of_record_and_claim_attempts(
        strategy, record, attempts, kept):
    """Choice keeps max(record_candidates, max_claim_attempts) candidates, at most all eligible."""
    policy = RoutingPolicy(record_candidates=record, max_claim_attempts=attempts)
    choice = pick(tried_pool([0.5 + i / 100 for i in range(30)]), strategy, 1, policy)
    assert len(choice.order) == kept
    assert len(choice.scores) == len(choice.components) == kept


def test_choice_candidates_lists_ids_scores_and_components_in_order():
    """candidates(pool, k) gives the first k rows as agent_id, score and components."""
    pool = make_pool(3, mean_reward=[0.2, 0.9, 0.5])
    choice = pick(pool, "weighted")
    candidates = choice.candidates(pool, 2)
    assert [c["agent_id"] for c in candidates] == ["a01", "a02"]
    assert candidates[0] == {"agent_id": "a01", "score": choice.scores[1],
                             "components": choice.components[1]}
    assert len(choice.candidates(pool, 10)) == 3


# ---------------------------------------------------------------------------- epsilon-greedy


def test_epsilon_greedy_explores_at_about_epsilon_over_many_seeds():
    """With ε = 0.5 and 4 tried arms, a uniform pick leaves the greedy arm 0.5·3/4 of the time."""
    policy = RoutingPolicy(epsilon_initial=0.5, epsilon_decay=1.0, epsilon_min=0.0)
    pool = tried_pool([0.9, 0.5, 0.4, 0.3])
    picks = [pick(pool, "epsilon-greedy", seed, policy) for seed in range(2000)]
    non_greedy = [c.order[0] != 0 for c in picks]
    assert all(c.explored == moved for c, moved in zip(picks, non_greedy, strict=True))
    assert abs(sum(non_greedy) / 2000 - 0.375) < 0.05
    for row in (1, 2, 3):  # the exploring pick is uniform over the arms
        assert abs(sum(c.order[0] == row for c in picks) / 2000 - 0.125) < 0.04


def test_epsilon_greedy_keeps_the_greedy_order_behind_an_exploring_pick():
    """After an exploring pick, the rest follow in greedy order."""
    policy = RoutingPolicy(epsilon_initial=1.0, epsilon_decay=1.0, epsilon_min=0.0)
    pool = tried_pool([0.9, 0.5, 0.4, 0.3])
    for seed in range(20):
        order = pick(pool, "epsilon-greedy", seed, policy).order
        assert order[1:] == [r for r in [0, 1, 2, 3] if r != order[0]]


def test_epsilon_greedy_without_exploration_is_greedy():
    """With ε = 0, epsilon-greedy orders exactly like weighted."""
    policy = RoutingPolicy(epsilon_initial=0.0, epsilon_min=0.0)
    pool = tried_pool([0.4, 0.9, 0.5, 0.6])
    for seed in range(20):
        choice = pick(pool, "epsilon-greedy", seed, policy)
        assert choice.order == pick(pool, "weighted", seed, policy).order == [1, 3, 2, 0]
        assert choice.explored is False


def test_epsilon_decays_with_the_outcomes_of_the_pool():
    """ε uses the pool's total outcomes: after 40 outcomes at decay 0.9, it nearly never explores."""
    policy = RoutingPolicy(epsilon_initial=0.5, epsilon_decay=0.9, epsilon_min=0.0)
    pool = tried_pool([0.9, 0.5, 0.4, 0.3])  # 4 × 10 outcomes: ε = 0.5·0.9^40 ≈ 0.007
    moved = sum(pick(pool, "epsilon-greedy", seed, policy).order[0] != 0 for seed in range(400))
    assert moved <= 12


# ---------------------------------------------------------------------------- outcomes


def test_outcome_quality_defaults_to_one_on_success_and_zero_on_failure():
    """--success means quality 1.0 and --failure 0.0 unless given."""
    assert Outcome.parse(success=True) == Outcome(success=True, quality=1.0)
    assert Outcome.parse(success=False) == Outcome(success=False, quality=0.0)
    assert Outcome.parse(success=False, quality=0.4).quality == 0.4


def test_outcome_accepts_zero_tokens_and_zero_quality():
    """The lower bounds are inclusive: 0 tokens and quality 0.0 on success."""
    outcome = Outcome.parse(success=True, quality=0, tokens=0)
    assert (outcome.quality, outcome.tokens) == (0.0, 0)


def test_outcome_parse_keeps_every_field():
    """Latency, tokens and error are kept as given."""
    outcome = Outcome.parse(success=True, quality="0.5", latency_ms=0, tokens=2**62, error="x" * 2000)
    assert outcome.to_dict() == {"success": True, "quality": 0.5, "latency_ms": 0.0,
                                 "tokens": 2**62, "error": "x" * 2000}


@pytest.mark.parametrize("success", [None, 1, "yes"])
def test_outcome_requires_success_or_failure(success):
    """success must be a bool: field success, rule required."""
    error = invalid(Outcome.parse, success=success)
    assert (error.field, error.rule) == ("success", "required")


@pytest.mark.parametrize(("field", "value", "rule"), [
    ("quality", 1.01, "range"), ("quality", -0.01, "range"), ("quality", float("nan"), "finite"),
    ("latency_ms", -0.5, "range"), ("latency_ms", float("inf"), "finite"),
    ("tokens", -1, "range"), ("tokens", 2**62 + 1, "range"), ("error", "x" * 2001, "length"),
    ("error", "", "length")])
def test_outcome_rejects_invalid_fields(field, value, rule):
    """Quality in [0, 1], latency ≥ 0 and finite, tokens 0..2^62, error 1..2000 characters."""
    error = invalid(Outcome.parse, success=True, **{field: value})
    assert (error.field, error.rule) == (field, rule)


# ---------------------------------------------------------------------------- decisions


def make_decision(**fields: Any) -> Decision:
    values: dict[str, Any] = {
        "decision_id": "d-1", "tenant": "default", "task_id": "T-1", "task_type": "testing",
        "requirements": {"task_type": "testing"}, "metadata": {"k": "v"}, "priority": 7,
        "agent_id": "a1", "agent_uid": "uid-a1", "strategy": "ucb", "seed": 99,
        "explored": True, "confidence": None,
        "candidates": [{"agent_id": "a1", "score": 0.5, "components": {}}],
        "excluded": {"status": 1}, "examples": {"status": ["a2"]}, "config_hash": "h",
        "latency_us": 12, "created_at": T0, "correlation_id": "c-1",
    }
    values.update(fields)
    return Decision(**values)


def test_decision_status_names_are_the_documented_ones():
    """open, succeeded, failed, expired."""
    assert (OPEN, SUCCEEDED, FAILED, EXPIRED) == ("open", "succeeded", "failed", "expired")
    assert make_decision().status == OPEN


@pytest.mark.parametrize(("success", "status"), [(True, "succeeded"), (False, "failed")])
def test_closing_a_decision_records_the_outcome_and_time(success, status):
    """close() sets the status from success, stores the outcome, and stamps closed_at."""
    decision = make_decision()
    outcome = Outcome(success=success, quality=0.3, latency_ms=5.0)
    closed = decision.close(outcome, T0 + timedelta(seconds=9))
    assert (closed.status, closed.outcome, closed.closed_at) == (
        status, outcome.to_dict(), T0 + timedelta(seconds=9))
    assert (decision.status, decision.outcome, decision.closed_at) == (OPEN, None, None)


def test_expiring_a_decision_sets_expired_without_an_outcome():
    """expire() marks it expired at now, with no outcome."""
    expired = make_decision().expire(T0 + timedelta(hours=3))
    assert (expired.status, expired.outcome, expired.closed_at) == (
        "expired", None, T0 + timedelta(hours=3))


def test_decision_to_dict_is_the_documented_document():
    """to_dict gives the JSON shape of SPEC §3.4 with RFC 3339 millisecond timestamps, plus
    ``agent_unavailable`` (issue 17, F6)."""
    closed = make_decision().close(Outcome(success=True, quality=1.0), T0 + timedelta(seconds=1))
    assert closed.to_dict() == {
        "decision_id": "d-1", "task_id": "T-1", "task_type": "testing",
        "requirements": {"task_type": "testing"}, "agent_id": "a1", "strategy": "ucb",
        "seed": 99, "explored": True, "confidence": None,
        "candidates": [{"agent_id": "a1", "score": 0.5, "components": {}}],
        "excluded": {"status": 1}, "excluded_examples": {"status": ["a2"]},
        "config_hash": "h", "latency_us": 12, "created_at": "2025-01-02T03:04:05.678Z",
        "status": "succeeded", "priority": 7, "metadata": {"k": "v"}, "correlation_id": "c-1",
        "closed_at": "2025-01-02T03:04:06.678Z",
        "outcome": {"success": True, "quality": 1.0, "latency_ms": None, "tokens": None,
                    "error": None},
        "over_capacity": False,
        "agent_unavailable": False,
    }


def test_an_open_decision_has_no_closing_time_or_outcome_in_its_document():
    """closed_at and outcome are null while open."""
    document = make_decision(decision_id=None).to_dict()
    assert (document["decision_id"], document["closed_at"], document["outcome"]) == (None, None, None)
    assert document["status"] == "open"


def test_the_two_thompson_samplers_agree_while_no_change_was_detected():
    """Evidence since the last change equal to the total: same draws, same choice."""
    pool = tried_pool([0.5, 0.6, 0.4])
    pool.arm_total_alpha, pool.arm_total_beta = pool.arm_alpha.copy(), pool.arm_beta.copy()
    same, stationary = pick(pool, "thompson", 9), pick(pool, "thompson-stationary", 9)
    assert stationary.confidence is None  # SPEC §3.4: the confidence is thompson's only
    assert same == dataclasses.replace(stationary, confidence=same.confidence)
    pool.arm_total_alpha = pool.arm_total_alpha + np.array([0.0, 0.0, 90.0])
    assert pick(pool, "thompson", 9) != pick(pool, "thompson-stationary", 9)


# ---------------------------------------------------------------------------- shared pools


def _shared(pool: Pool) -> Pool:
    """``pool`` as the memory store hands it out again and again: read-only and shared."""
    for name in ("active", "capacity", "available", "latency_ms", "mean_reward", "fit",
                 "arm_alpha", "arm_beta", "arm_outcomes"):
        getattr(pool, name).flags.writeable = False
    return dataclasses.replace(pool, shared=True, prepared={})


def _same(first: Choice, second: Choice) -> None:
    assert repr((first.order, first.scores, first.components, first.explored, first.confidence,
                 first.excluded, first.examples)) == repr(
        (second.order, second.scores, second.components, second.explored, second.confidence,
         second.excluded, second.examples))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_shared_pool_decides_as_a_fresh_one_decision_after_decision(strategy):
    """What choose keeps with a shared pool gives every later decision on it (other seeds,
    other strategies, another policy) exactly the fresh pool's choice, random stream included."""
    rng = np.random.default_rng(11)
    n = 30
    columns = dict(
        active=rng.integers(0, 4, n), capacity=np.full(n, 3), available=rng.random(n) < 0.9,
        latency_ms=rng.uniform(100, 9000, n), mean_reward=rng.uniform(0.2, 0.9, n),
        fit=rng.uniform(0, 1, n), arm_alpha=rng.uniform(0, 20, n) * (rng.random(n) < 0.8),
        arm_beta=rng.uniform(0, 20, n), arm_outcomes=rng.integers(0, 40, n) * (rng.random(n) < 0.8),
        excluded={"language": 2}, examples={"language": ["x1", "x2"]})
    shared = _shared(make_pool(n, **columns))
    other = RoutingPolicy(weights={"performance": 0.3, "load": 0.3, "fit": 0.2, "latency": 0.2},
                          record_candidates=7, epsilon_initial=0.9)
    for seed in range(12):
        for policy in (RoutingPolicy(), other) if seed % 3 == 0 else (other,):
            for each in (strategy, "thompson"):
                fresh_rng, shared_rng = np.random.default_rng(seed), np.random.default_rng(seed)
                _same(choose(make_pool(n, **columns), policy, each, fresh_rng),
                      choose(shared, policy, each, shared_rng))
                assert fresh_rng.random() == shared_rng.random()
    assert {strategy, "thompson"} <= set(shared.prepared)
    kept = shared.prepared[strategy][1]
    assert shared.prepared[strategy][0] is other  # kept for the policy that asked last
    assert not any(column.flags.writeable for column in (kept.a, kept.b, kept.matrix,
                                                            kept.base, kept.tail))
    choice = choose(shared, other, strategy, np.random.default_rng(0))
    choice.excluded["language"] = 99  # a decision's own copies: the next one is untouched
    choice.examples["status"].append("y")
    _same(choose(make_pool(n, **columns), other, strategy, np.random.default_rng(1)),
          choose(shared, other, strategy, np.random.default_rng(1)))


def test_an_unshared_pool_keeps_nothing_and_stays_writable():
    """A pool built per call (SQL stores) is not written to: choose keeps nothing with it."""
    pool = tried_pool([0.5, 0.6, 0.7])
    pick(pool, "thompson")
    assert pool.prepared == {}
    assert all(getattr(pool, name).flags.writeable for name in ("active", "arm_outcomes"))
    _same(pick(pool, "thompson", seed=3), pick(tried_pool([0.5, 0.6, 0.7]), "thompson", seed=3))


def test_a_shared_pool_with_nobody_eligible_refuses_every_time():
    pool = _shared(make_pool(2, available=[False, True], active=[0, 10]))
    for _ in range(2):
        with pytest.raises(AtCapacity):
            pick(pool, "thompson")
    assert pool.prepared == {}
