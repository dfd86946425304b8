"""The computed confidence of a Thompson decision (domain/confidence.py, SPEC §3.4 and §13.1).

§13.1 allows any method within ±0.02 of a 10 000-draw estimate. The estimate's own standard
deviation is at most 0.005, so a method that is right passes by 4 of them; one that is off by
more than 0.02 anywhere among these posteriors fails. tests/quality/test_confidence_accuracy.py
runs the same comparison on 600 more posteriors (slow).
"""

from __future__ import annotations

import numpy as np
import pytest

from arbiter_cli.domain import confidence
from arbiter_cli.domain.confidence import win_probability

DRAWS = 10_000
BOUND = 0.02


def sampled(a: np.ndarray, b: np.ndarray, base: np.ndarray, weight: float,
            rng: np.random.Generator) -> float:
    """The share of DRAWS posterior draws in which candidate 0 scores highest."""
    scores = weight * rng.beta(a, b, size=(DRAWS, a.size)) + base
    return float((scores.argmax(axis=1) == 0).mean())


def posteriors(rng: np.random.Generator, case: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Beta(a, b) of 1 to 10 candidates as routing builds them (a, b ≥ 1: the Beta(1, 1) prior
    plus a weak prior plus evidence), over small, large, lopsided and fractional counts, with
    fixed score parts (load, fit, latency) that are equal, close or far apart."""
    k = int(rng.integers(1, 11))
    kind = case % 6
    if kind == 0:  # fresh arms: a handful of outcomes or none
        counts = rng.integers(0, 4, size=(2, k)).astype(float)
    elif kind == 1:
        counts = rng.integers(0, 60, size=(2, k)).astype(float)
    elif kind == 2:  # long-lived arms: tight posteriors
        counts = rng.integers(0, 20_000, size=(2, k)).astype(float)
    elif kind == 3:  # decayed, fractional pseudo-counts
        counts = rng.exponential(30.0, size=(2, k))
    elif kind == 4:  # lopsided: almost never succeeds, or almost always
        counts = np.vstack([rng.integers(0, 3, k), rng.integers(500, 5_000, k)]).astype(float)
        if rng.random() < 0.5:
            counts = counts[::-1]
    else:  # near-equal arms, where the draws decide
        counts = np.full((2, k), float(rng.integers(1, 400))) + rng.random((2, k))
    prior = 2.0 * rng.random(k)
    a, b = 1.0 + prior + counts[0], 1.0 + (2.0 - prior) + counts[1]
    spread = (0.0, 0.002, 0.05, 0.4)[case % 4]
    return a, b, spread * rng.random(k)


@pytest.mark.parametrize("seed", range(4))
def test_within_two_hundredths_of_ten_thousand_draws(seed: int):
    """60 random posteriors per seed (240 in all), each against its own 10 000 draws."""
    rng = np.random.default_rng(seed)
    worst = 0.0
    for case in range(60):
        a, b, base = posteriors(rng, case)
        weight = float(rng.choice([0.6, 0.6, 0.2, 1.0]))
        computed = win_probability(a, b, base, weight)
        assert 0.0 <= computed <= 1.0
        error = abs(computed - sampled(a, b, base, weight, rng))
        assert error <= BOUND, (case, a, b, base, weight, computed)
        worst = max(worst, error)
    assert worst < 0.015  # a method right on average but off in the tails would show here


def test_uniform_arms_against_the_closed_form():
    """Two Beta(1, 1) arms, the chosen one ahead by d/w: P = 1 − (1 − d)² / 2."""
    ones = np.ones(2)
    for d in (0.0, 0.1, 0.25, 0.5, 0.9):
        computed = win_probability(ones, ones, np.array([d * 0.6, 0.0]), 0.6)
        assert computed == pytest.approx(1.0 - (1.0 - d) ** 2 / 2.0, abs=2e-3), d
    assert win_probability(ones, ones, np.array([0.0, 0.6]), 0.6) == pytest.approx(0.0, abs=1e-9)


def test_a_skewed_arm_against_the_closed_form():
    """Beta(2, 1) against Beta(1, 1): P(X > Y) = ∫ 2x · x dx = 2/3; and 1/3 the other way."""
    a, b, base = np.array([2.0, 1.0]), np.array([1.0, 1.0]), np.zeros(2)
    assert win_probability(a, b, base, 0.6) == pytest.approx(2.0 / 3.0, abs=2e-3)
    assert win_probability(a[::-1], b, base, 0.6) == pytest.approx(1.0 / 3.0, abs=2e-3)


@pytest.mark.parametrize("k", [2, 3, 10])
def test_equal_candidates_share_the_wins(k: int):
    a, b = np.full(k, 40.0), np.full(k, 60.0)
    assert win_probability(a, b, np.zeros(k), 0.6) == pytest.approx(1.0 / k, abs=2e-3)


def test_one_candidate_always_wins_and_a_dominated_one_never():
    assert win_probability(np.array([3.0]), np.array([9.0]), np.zeros(1), 0.6) == 1.0
    tight = np.array([5000.0, 5000.0])
    assert win_probability(tight, tight, np.array([0.0, 0.1]), 0.6) == 0.0
    assert win_probability(tight, tight, np.array([0.1, 0.0]), 0.6) == pytest.approx(1.0, abs=1e-12)


def test_without_a_performance_weight_the_fixed_parts_decide():
    """weights.performance = 0: no draw moves a score; ties go to the chosen (first) one."""
    a, b = np.array([1.0, 50.0]), np.array([50.0, 1.0])
    assert win_probability(a, b, np.array([0.3, 0.3]), 0.0) == 1.0
    assert win_probability(a, b, np.array([0.3, 0.31]), 0.0) == 0.0


def test_deterministic_and_draw_free():
    """The same posteriors give the same figure, and no generator is involved."""
    rng = np.random.default_rng(3)
    a, b, base = posteriors(rng, 1)
    assert win_probability(a, b, base, 0.6) == win_probability(a.copy(), b.copy(), base, 0.6)


def test_kept_grids_give_the_figures_of_fresh_ones():
    """A decision whose candidates' grids are kept, all or some, gets the very same figure as
    one that computes them all (the grids depend on (a, b) only)."""
    rng = np.random.default_rng(8)
    cases = [posteriors(rng, case) for case in range(40)]
    confidence._grids.clear()
    fresh = []
    for a, b, base in cases:
        fresh.append(win_probability(a, b, base, 0.6))
        confidence._grids.clear()
    for a, b, base in cases[::2]:  # some grids kept before the rest are asked for
        win_probability(a[::2], b[::2], base[::2], 0.6)
    assert [win_probability(a, b, base, 0.6) for a, b, base in cases] == fresh
    assert [win_probability(a, b, base, 0.6) for a, b, base in cases] == fresh  # all kept


def test_at_most_grids_posteriors_are_kept_the_oldest_dropped_first():
    confidence._grids.clear()
    a = 1.0 + np.arange(confidence.GRIDS + 30, dtype=np.float64)
    for k in range(0, a.size, 10):
        win_probability(a[k:k + 10], a[k:k + 10] + 0.5, np.zeros(a[k:k + 10].size), 0.6)
    assert len(confidence._grids) == confidence.GRIDS
    assert (a[-1], a[-1] + 0.5) in confidence._grids
    assert (a[0], a[0] + 0.5) not in confidence._grids
    assert all(not row.flags.writeable for row in confidence._grids.values())


def test_a_kept_grid_holds_its_cdf_from_zero_to_one_with_a_cell_past_the_end():
    """The other candidates' side of a grid: the share of the mass left of each cell rises from
    0 to 1, each cell's share is what it adds, and the cell past the end adds nothing."""
    rng = np.random.default_rng(5)
    a, b, _ = posteriors(rng, 1)
    confidence._grids.clear()
    for row in confidence._make(a, b):
        below = row[confidence.BELOW:confidence.SHARE]
        share = row[confidence.SHARE:confidence.STRIDE]
        assert below.size == share.size == confidence.CELLS + 1
        assert (below[0], below[-1], share[-1]) == (0.0, 1.0, 0.0)
        assert np.all(np.diff(below) >= 0.0)
        assert np.allclose(below[1:], np.cumsum(share[:-1]), atol=1e-12)
        mass = row[confidence.MASS:confidence.BELOW]
        assert np.allclose(share[:-1], mass / row[confidence.TOTAL], atol=1e-15)
