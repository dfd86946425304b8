"""A latency histogram of bounded size: 8 log-spaced buckets per doubling (±4.5 %).

A soak runs for a day; keeping every latency would itself be the leak we look for.
"""

from __future__ import annotations

import math

STEPS = 8  # buckets per power of two
BUCKETS = STEPS * 48  # up to 2**48 ns, about 78 hours


class Histogram:
    def __init__(self) -> None:
        self.counts = [0] * BUCKETS
        self.count = 0
        self.total_ns = 0
        self.max_ns = 0

    def add(self, ns: int) -> None:
        index = 0 if ns < 1 else min(BUCKETS - 1, int(math.log2(ns) * STEPS))
        self.counts[index] += 1
        self.count += 1
        self.total_ns += ns
        self.max_ns = max(self.max_ns, ns)

    def merge(self, other: Histogram) -> None:
        for i, n in enumerate(other.counts):
            self.counts[i] += n
        self.count += other.count
        self.total_ns += other.total_ns
        self.max_ns = max(self.max_ns, other.max_ns)

    def percentile(self, q: float) -> float:
        """The q-th percentile (0-100) in nanoseconds: the geometric middle of its bucket."""
        if self.count == 0:
            return 0.0
        rank = max(1, math.ceil(self.count * q / 100))
        seen = 0
        for i, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                return min(float(self.max_ns), 2 ** ((i + 0.5) / STEPS))
        return float(self.max_ns)  # pragma: no cover - rank never exceeds count

    def summary_ms(self) -> dict[str, float]:
        if self.count == 0:
            return {"count": 0, "p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}
        return {
            "count": self.count,
            "p50": round(self.percentile(50) / 1e6, 3),
            "p95": round(self.percentile(95) / 1e6, 3),
            "p99": round(self.percentile(99) / 1e6, 3),
            "max": round(self.max_ns / 1e6, 3),
            "mean": round(self.total_ns / self.count / 1e6, 3),
        }
