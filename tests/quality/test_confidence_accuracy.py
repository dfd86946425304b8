"""The computed confidence against 10 000 draws on 600 more random posteriors (slow).

tests/unit/test_confidence.py holds the same comparison on 240 posteriors and the closed forms.
"""

from __future__ import annotations

import numpy as np
import pytest

from arbiter_cli.domain.confidence import win_probability
from tests.unit.test_confidence import BOUND, posteriors, sampled


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 110))
def test_within_two_hundredths_of_ten_thousand_draws_on_600_more(seed: int):
    rng = np.random.default_rng(seed)
    for case in range(60):
        a, b, base = posteriors(rng, case)
        weight = float(rng.uniform(0.05, 1.0))
        computed = win_probability(a, b, base, weight)
        assert abs(computed - sampled(a, b, base, weight, rng)) <= BOUND, (case, a, b, base)
