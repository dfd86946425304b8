"""Same state, seed and strategy, same choice (SPEC §3.3 "Randomness") across rewrites of
``choose`` for speed (issue 13): the order, ``explored``, ``confidence`` and the top scores of 40
decisions, pinned as main gave them before the rewrite (2026-12-07, numpy 2.4).

The pools take uniform draws only, which are the same on every platform; the Beta draws go
through libm, so scores are compared to 10⁻⁶ (their rounding) and the confidence to 10⁻⁴.
"""

from __future__ import annotations

import numpy as np
import pytest

from arbiter_cli.domain.routing import Pool, RoutingPolicy, choose

SHAPES = ("tried-100", "cold-100", "mixed-30", "mixed-300")


def golden_pool(shape: str) -> Pool:
    """tried-100: 100 eligible tried agents; cold-100: 100 untried ones at one prior; mixed-n:
    n agents, some untried, unavailable or full, fractional evidence and fits."""
    r = np.random.default_rng(SHAPES.index(shape) + 7)
    n = int(shape.rsplit("-", 1)[1])
    means = r.uniform(0.2, 0.95, n)
    outcomes = r.integers(1, 60, n)
    if shape == "cold-100":
        means, outcomes = np.full(n, 0.7), np.zeros(n, np.int64)
    elif shape.startswith("mixed"):
        outcomes[r.random(n) < 0.2] = 0
    alpha = np.where(outcomes > 0, means * outcomes, 0.0)
    capacity = r.integers(1, 6, n) if shape.startswith("mixed") else np.full(n, 10)
    active = r.integers(0, 6, n) if shape.startswith("mixed") else r.integers(0, 4, n)
    return Pool(
        ids=[f"agent-{i:04d}" for i in range(n)], uids=[f"uid-{i}" for i in range(n)],
        active=np.minimum(active, capacity + 1).astype(np.int64),
        capacity=capacity.astype(np.int64),
        available=r.random(n) < (0.85 if shape.startswith("mixed") else 1.0),
        latency_ms=r.uniform(500, 12_000, n), mean_reward=means,
        fit=r.uniform(0.0, 1.0, n) if shape == "mixed-300" else np.ones(n),
        arm_alpha=alpha, arm_beta=np.where(outcomes > 0, outcomes - alpha, 0.0),
        arm_outcomes=outcomes.astype(np.int64),
        arm_total_alpha=alpha + r.uniform(0, 40, n),
        arm_total_beta=r.uniform(0, 40, n) + outcomes - alpha,
    )


# (shape, strategy, seed, first five rows, explored, confidence, top three scores)
GOLDEN: list[tuple[str, str, int, list[int], bool, float | None, list[float]]] = [
    ("tried-100", "thompson", 11, [41, 81, 84, 76, 58], True, 0.0673,
     [0.910834, 0.90965, 0.878228]),
    ("tried-100", "thompson", 1099511627779, [27, 8, 84, 76, 17], True, 0.0268,
     [0.891967, 0.883478, 0.876134]),
    ("tried-100", "ucb", 11, [41, 29, 12, 93, 68], True, None,
     [3.178487, 3.07098, 1.780281]),
    ("tried-100", "ucb", 1099511627779, [41, 29, 12, 93, 68], True, None,
     [3.178487, 3.07098, 1.780281]),
    ("tried-100", "epsilon-greedy", 11, [19, 81, 76, 84, 1], False, None,
     [0.884989, 0.882445, 0.880559]),
    ("tried-100", "epsilon-greedy", 1099511627779, [19, 81, 76, 84, 1], False, None,
     [0.884989, 0.882445, 0.880559]),
    ("tried-100", "weighted", 11, [58, 72, 17, 68, 41], True, None,
     [0.847515, 0.816491, 0.812786]),
    ("tried-100", "weighted", 1099511627779, [58, 72, 17, 68, 41], True, None,
     [0.847515, 0.816491, 0.812786]),
    ("tried-100", "thompson-stationary", 11, [84, 75, 16, 58, 49], False, None,
     [0.885346, 0.853117, 0.843225]),
    ("tried-100", "thompson-stationary", 1099511627779, [84, 49, 16, 75, 8], False, None,
     [0.883862, 0.86065, 0.835984]),
    ("cold-100", "thompson", 11, [32, 14, 41, 28, 11], True, 0.1423,
     [0.935449, 0.922612, 0.903646]),
    ("cold-100", "thompson", 1099511627779, [99, 41, 42, 65, 27], True, 0.1681,
     [0.940235, 0.907625, 0.900557]),
    ("cold-100", "ucb", 11, [9, 59, 99, 32, 56], False, None,
     [0.739493, 0.731912, 0.72197]),
    ("cold-100", "ucb", 1099511627779, [9, 59, 99, 32, 56], False, None,
     [0.739493, 0.731912, 0.72197]),
    ("cold-100", "epsilon-greedy", 11, [9, 59, 99, 32, 56], False, None,
     [0.739493, 0.731912, 0.72197]),
    ("cold-100", "epsilon-greedy", 1099511627779, [9, 59, 99, 32, 56], False, None,
     [0.739493, 0.731912, 0.72197]),
    ("cold-100", "weighted", 11, [9, 59, 99, 32, 56], False, None,
     [0.739493, 0.731912, 0.72197]),
    ("cold-100", "weighted", 1099511627779, [9, 59, 99, 32, 56], False, None,
     [0.739493, 0.731912, 0.72197]),
    ("cold-100", "thompson-stationary", 11, [82, 28, 36, 91, 97], False, None,
     [0.911892, 0.91157, 0.865095]),
    ("cold-100", "thompson-stationary", 1099511627779, [82, 27, 28, 42, 91], False, None,
     [0.899713, 0.887917, 0.879673]),
    ("mixed-30", "thompson", 11, [25, 22, 6, 3, 23], True, 0.3244,
     [0.916747, 0.692874, 0.646168]),
    ("mixed-30", "thompson", 1099511627779, [25, 6, 22, 19, 3], True, 0.3246,
     [0.887731, 0.630423, 0.61039]),
    ("mixed-30", "ucb", 11, [25, 6, 22, 20, 11], True, None,
     [0.752128, 0.74082, 0.614419]),
    ("mixed-30", "ucb", 1099511627779, [25, 6, 22, 20, 11], True, None,
     [0.752128, 0.74082, 0.614419]),
    ("mixed-30", "epsilon-greedy", 11, [25, 6, 22, 3, 23], True, None,
     [0.752128, 0.74082, 0.614419]),
    ("mixed-30", "epsilon-greedy", 1099511627779, [25, 6, 22, 3, 23], True, None,
     [0.752128, 0.74082, 0.614419]),
    ("mixed-30", "weighted", 11, [25, 6, 19, 17, 22], True, None,
     [0.752128, 0.74082, 0.735241]),
    ("mixed-30", "weighted", 1099511627779, [25, 6, 19, 17, 22], True, None,
     [0.752128, 0.74082, 0.735241]),
    ("mixed-30", "thompson-stationary", 11, [25, 22, 6, 19, 3], True, None,
     [0.737755, 0.732536, 0.546976]),
    ("mixed-30", "thompson-stationary", 1099511627779, [25, 22, 6, 19, 17], True, None,
     [0.739521, 0.709261, 0.520559]),
    ("mixed-300", "thompson", 11, [96, 199, 108, 192, 57], True, 0.2887,
     [0.734756, 0.692363, 0.688656]),
    ("mixed-300", "thompson", 1099511627779, [45, 57, 96, 219, 156], True, 0.0954,
     [0.887929, 0.851451, 0.809774]),
    ("mixed-300", "ucb", 11, [96, 57, 121, 23, 133], True, None,
     [0.716537, 0.704768, 0.673693]),
    ("mixed-300", "ucb", 1099511627779, [96, 57, 121, 23, 133], True, None,
     [0.716537, 0.704768, 0.673693]),
    ("mixed-300", "epsilon-greedy", 11, [96, 57, 121, 23, 133], True, None,
     [0.716537, 0.704768, 0.673693]),
    ("mixed-300", "epsilon-greedy", 1099511627779, [96, 57, 121, 23, 133], True, None,
     [0.716537, 0.704768, 0.673693]),
    ("mixed-300", "weighted", 11, [170, 236, 138, 259, 75], True, None,
     [0.874164, 0.774595, 0.766385]),
    ("mixed-300", "weighted", 1099511627779, [170, 236, 138, 259, 75], True, None,
     [0.874164, 0.774595, 0.766385]),
    ("mixed-300", "thompson-stationary", 11, [45, 96, 199, 156, 57], True, None,
     [0.752873, 0.690118, 0.642878]),
    ("mixed-300", "thompson-stationary", 1099511627779, [45, 96, 199, 216, 57], True, None,
     [0.845292, 0.700272, 0.681396]),
]


@pytest.mark.parametrize(("shape", "strategy", "seed", "rows", "explored", "confidence",
                          "scores"), GOLDEN)
def test_the_same_seed_gives_the_same_decision_as_before(
        shape: str, strategy: str, seed: int, rows: list[int], explored: bool,
        confidence: float | None, scores: list[float]) -> None:
    pool = golden_pool(shape)
    choice = choose(pool, RoutingPolicy(), strategy, np.random.default_rng(seed))
    assert choice.order[:5] == rows
    assert choice.explored is explored
    if confidence is None:
        assert choice.confidence is None
    else:
        assert choice.confidence == pytest.approx(confidence, abs=1e-4)
    assert [choice.scores[row] for row in choice.order[:3]] == pytest.approx(scores, abs=1e-6)


def test_the_golden_pools_have_what_they_are_named_for() -> None:
    """Each shape exercises its path: every row eligible, none tried, some excluded."""
    tried, cold, mixed = golden_pool("tried-100"), golden_pool("cold-100"), golden_pool("mixed-300")
    assert bool((tried.active < tried.capacity).all() and tried.available.all())
    assert int(cold.arm_outcomes.sum()) == 0
    eligible = mixed.available & (mixed.active < mixed.capacity)
    assert 0 < int(eligible.sum()) < mixed.size and bool((mixed.arm_outcomes == 0).any())

