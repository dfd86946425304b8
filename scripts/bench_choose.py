#!/usr/bin/env python3
"""CPU time of one `thompson` decision in the domain (`routing.choose`), 100 tried agents.

    .venv/bin/python scripts/bench_choose.py [ROUNDS]     # median and min of ROUNDS × 100 calls

Timed with time.process_time, so load from other work on a shared machine counts less than in
wall time; alternate it between two builds to compare them.
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np

from arbiter_cli.domain.routing import Pool, RoutingPolicy, choose


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    n, outcomes = 100, 10
    r = np.random.default_rng(0)
    means = r.uniform(0.3, 0.9, n)
    pool = Pool(ids=[f"a{i:03d}" for i in range(n)], uids=[f"u{i}" for i in range(n)],
                excluded={}, examples={}, active=r.integers(0, 3, n), capacity=np.full(n, 10),
                available=np.ones(n, bool), latency_ms=r.uniform(1000, 9000, n),
                mean_reward=means, fit=np.ones(n), arm_alpha=means * outcomes,
                arm_beta=(1 - means) * outcomes, arm_outcomes=np.full(n, outcomes))
    policy, rng = RoutingPolicy(), np.random.default_rng(1)
    for _ in range(200):
        choose(pool, policy, "thompson", rng)
    per = []
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(100):
            choose(pool, policy, "thompson", rng)
        per.append((time.process_time() - start) / 100 * 1e6)
    print(f"choose CPU per decision: median {statistics.median(per):.1f} µs, "
          f"min {min(per):.1f} µs ({rounds} × 100)")


if __name__ == "__main__":
    main()
