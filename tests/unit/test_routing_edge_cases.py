"""Routing rules at their edges: input messages, how ``explored`` and ``confidence`` are judged,
rounding, and the packed ranking key of ``_ranked`` (first written to kill the mutants of
docs/mutation.md).

Pools are built by hand (rows in id order); every draw comes from a seeded generator.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from arbiter_cli.config import DEFAULT_LANGUAGES, DEFAULT_TASK_TYPES
from arbiter_cli.domain.agents import RegistryPolicy
from arbiter_cli.domain.routing import (
    Choice,
    Outcome,
    Pool,
    RoutingPolicy,
    Task,
    _ranked,
    choose,
    parse_strategy,
)
from arbiter_cli.errors import AtCapacity, InvalidInput, NoCapableAgent

REGISTRY = RegistryPolicy(task_types=tuple(DEFAULT_TASK_TYPES), languages=tuple(DEFAULT_LANGUAGES))
TASK_TYPE = DEFAULT_TASK_TYPES[0]


def pool(n: int, **columns: Any) -> Pool:
    """``n`` available idle agents a00…, each tried 10 times at mean 0.5; keywords replace."""
    defaults: dict[str, tuple[Any, Any]] = {
        "active": (0, np.int64), "capacity": (10, np.int64), "available": (True, np.bool_),
        "latency_ms": (5000.0, np.float64), "mean_reward": (0.5, np.float64),
        "fit": (1.0, np.float64), "arm_alpha": (5.0, np.float64), "arm_beta": (5.0, np.float64),
        "arm_outcomes": (10, np.int64),
    }
    excluded = columns.pop("excluded", {})
    arrays = {name: np.array(columns.pop(name, [default] * n), dtype=dtype)
              for name, (default, dtype) in defaults.items()}
    assert not columns, sorted(columns)
    ids = [f"a{i:02d}" for i in range(n)]
    return Pool(ids=ids, uids=[f"uid-{i}" for i in ids], excluded=excluded, **arrays)


def pick(p: Pool, strategy: str, seed: int = 0, policy: RoutingPolicy | None = None) -> Choice:
    return choose(p, policy or RoutingPolicy(), strategy, np.random.default_rng(seed))


def rejection(call: Any, *args: Any, **kwargs: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        call(*args, **kwargs)
    return caught.value


# ---------------------------------------------------------------------------- input messages


@pytest.mark.parametrize(("raw", "field", "rule", "message"), [
    ({"task_type": TASK_TYPE, "zeta": 1, "bogus": 2}, "bogus", "unknown_field",
     "is not a task field"),
    ({}, "task_type", "required", "is required"),
    ({"task_type": TASK_TYPE, "task_id": "a b"}, "task_id", "pattern",
     "'a b' is not a valid task id (^[A-Za-z0-9._:-]{1,128}$)"),
    ({"task_type": TASK_TYPE, "languages": 5}, "languages", "type",
     "must be a list of strings"),
    ({"task_type": TASK_TYPE, "specializations": 5}, "specializations", "type",
     "must be a list of strings"),
    ({"task_type": TASK_TYPE, "specializations": ["ok", "b\nad"]}, "specializations",
     "no_control_characters", "must not contain control characters or lone surrogates"),
    ({"task_type": TASK_TYPE, "prefer": 5}, "prefer_specializations", "type",
     "must be a list of strings"),
    ({"task_type": TASK_TYPE, "prefer": ["b\nad"]}, "prefer_specializations",
     "no_control_characters", "must not contain control characters or lone surrogates"),
], ids=["unknown", "task_type", "task_id", "languages", "specializations", "label",
        "prefer", "prefer-label"])
def test_task_input_errors_name_the_field_the_rule_and_what_is_expected(raw, field, rule,
                                                                        message):
    error = rejection(Task.parse, raw, REGISTRY, "generated")
    assert (error.field, error.rule) == (field, rule)
    assert error.message == f"{field}: {message}"


def test_an_unknown_strategy_lists_the_five_strategies():
    error = rejection(parse_strategy, "greedy", "thompson")
    assert error.message == ("strategy: must be one of thompson, ucb, epsilon-greedy, weighted, "
                             "thompson-stationary")


def test_an_outcome_without_success_says_which_flags_to_give():
    error = rejection(Outcome.parse, success=None)
    assert (error.field, error.message) == ("success", "success: give --success or --failure")


def test_no_capable_agent_and_at_capacity_say_what_happened():
    with pytest.raises(NoCapableAgent) as nobody:
        pick(pool(0), "weighted")
    assert nobody.value.message == "no capable agent for this task"
    with pytest.raises(AtCapacity) as full:
        pick(pool(2, active=[10, 3], capacity=[10, 3]), "weighted")
    assert full.value.message == ("capable agents exist, but none is available with a free "
                                  "slot")


def test_exclusions_add_to_the_counts_the_pool_already_carries():
    """The backend may count exclusions before the pool; choose adds its own to them."""
    p = pool(2, available=[True, False], excluded={"status": 2, "language": 1})
    assert pick(p, "weighted").excluded == {"status": 3, "language": 1}
    with pytest.raises(AtCapacity) as full:
        pick(pool(1, active=[10], excluded={"capacity": 4}), "weighted")
    assert full.value.details["excluded"] == {"capacity": 5}


# ---------------------------------------------------------------------------- explored


@pytest.mark.parametrize("column", [
    {"latency_ms": [0.0, 50_000.0]},
    {"fit": [1.0, 0.0]},
    {"active": [0, 5]},
], ids=["latency", "fit", "load"])
def test_weighted_never_explores_whatever_part_of_the_score_decides(column):
    """``explored`` compares the pick with the best expected score, built from the same parts as
    the ranking: an agent ahead on latency, fit or load alone is not an exploration."""
    choice = pick(pool(2, **column), "weighted")
    assert choice.order[0] == 0
    assert choice.explored is False


def test_explored_compares_scores_at_their_six_decimal_precision():
    """a01's score is higher by 3·10⁻⁷, below the precision of scores: a tie, broken by id in
    the ranking and in the greedy reference alike, so nothing was explored."""
    choice = pick(pool(2, latency_ms=[5000.0, 4999.94]), "weighted")
    assert choice.scores[0] == choice.scores[1]
    assert (choice.order[0], choice.explored) == (0, False)


# ---------------------------------------------------------------------------- values, rounding


def test_ucb_gives_an_untried_arm_no_bonus_among_tried_ones():
    """UCB's bonus needs n > 0; an untried arm is valued at its posterior mean (it is tried
    first anyway), not at mean + sqrt(2 ln N)."""
    p = pool(3, arm_alpha=[5.0, 5.0, 0.0], arm_beta=[5.0, 5.0, 0.0], arm_outcomes=[10, 10, 0])
    choice = pick(p, "ucb")
    assert choice.order[0] == 2
    assert choice.components[2]["value"] == choice.components[2]["posterior_mean"] == 0.5


def test_every_component_is_rounded_to_six_decimals():
    """latency part 0.1 / (1 + 1234 / 5000) = 0.08020532…, kept as 0.080205."""
    choice = pick(pool(1, latency_ms=[1234.0]), "weighted")
    components = choice.components[0]
    assert components["latency"] == 0.080205
    assert all(round(float(value), 6) == value for value in components.values())


def test_an_exploring_epsilon_greedy_pick_keeps_the_candidate_count():
    """The exploring pick goes first and the rest follow, still max(record, attempts) long."""
    policy = RoutingPolicy(epsilon_initial=1.0, epsilon_min=1.0, record_candidates=5,
                           max_claim_attempts=4)
    p = pool(12, mean_reward=[0.1 + i / 20 for i in range(12)])
    for seed in range(10):
        choice = pick(p, "epsilon-greedy", seed, policy)
        assert len(choice.order) == len(set(choice.order)) == 5


def test_confidence_counts_latency_like_the_ranking_does():
    """Equal tight posteriors: a00's 0.1 latency advantage wins every posterior draw."""
    p = pool(2, latency_ms=[0.0, 1e9], arm_alpha=[1000.0, 1000.0], arm_beta=[1000.0, 1000.0],
             arm_outcomes=[2000, 2000])
    choice = pick(p, "thompson", 5)
    assert (choice.order[0], choice.confidence) == (0, 1.0)


# ---------------------------------------------------------------------------- the ranking key


def ranked(scores: list[float], utilization: list[float], keep: int = 10,
           first: list[bool] | None = None) -> list[int]:
    return _ranked(np.array(scores), np.array(utilization), np.arange(len(scores)), keep,
                   None if first is None else np.array(first))


def test_a_score_higher_by_one_millionth_beats_any_utilization():
    assert ranked([0.500000, 0.500001], [0.1, 0.9]) == [1, 0]
    assert ranked([0.250000, 0.250001], [0.0, 0.999]) == [1, 0]


def test_utilizations_one_millionth_apart_are_told_apart_before_the_id():
    """a01 is less loaded by 10⁻⁶: it goes first although a00 has the lower id."""
    assert ranked([0.5, 0.5], [0.100001, 0.100000]) == [1, 0]
    assert ranked([0.5, 0.5], [0.200000, 0.200001]) == [0, 1]


def test_keeping_more_than_a_large_pool_holds_returns_every_row_in_order():
    """routing.record_candidates goes up to 1 000: above 256 rows the ranking partitions, and
    a pool smaller than what is kept still comes back whole, best first."""
    rng = np.random.default_rng(4)
    scores, utilization = rng.random(300).round(6).tolist(), (rng.random(300) / 2).tolist()
    everyone = ranked(scores, utilization, keep=1000)
    assert sorted(everyone) == list(range(300))
    assert everyone == sorted(range(300), key=lambda r: (-scores[r], utilization[r], r))
    assert ranked(scores, utilization, keep=20) == everyone[:20]


def test_scores_keep_their_order_up_to_the_cap_of_4_194303():
    assert ranked([4.194302, 4.194303], [0.1, 0.5]) == [1, 0]


def test_scores_above_the_cap_tie_and_fall_back_to_utilization_then_id():
    """Only UCB indexes reach the cap (4.194303); there, the less loaded agent goes first."""
    assert ranked([4.5, 4.3], [0.5, 0.1]) == [1, 0]
    assert ranked([9.0, 4.2, 4.3], [0.5, 0.5, 0.5]) == [0, 1, 2]


def test_a_capped_score_never_outranks_a_row_that_must_go_first():
    assert ranked([4.5, 0.0], [0.0, 0.9], first=[False, True]) == [1, 0]


def test_ucb_indexes_above_the_cap_rank_by_load_in_a_real_pool():
    """With all weight on performance and 5000 outcomes elsewhere, two arms tried once have
    UCB indexes above 4.19: the less loaded one is chosen although its mean is lower."""
    policy = RoutingPolicy(strategy="ucb", weights={"performance": 1.0, "load": 0.0,
                                                    "fit": 0.0, "latency": 0.0})
    p = pool(3, arm_alpha=[1.0, 0.0, 2500.0], arm_beta=[0.0, 1.0, 2500.0],
             arm_outcomes=[1, 1, 5000], active=[3, 1, 0])
    choice = pick(p, "ucb", policy=policy)
    assert min(choice.components[0]["value"], choice.components[1]["value"]) > 4.2
    assert choice.order[:2] == [1, 0]
