"""What the shared circuit breaker costs a database call (docs/resilience.md quotes it).

    .venv/bin/python scripts/bench_breaker.py [--calls 20000] [--dir DIR]

Measures, on the state file in DIR (default: a temporary directory on the data disk's
file system is better than tmpfs, since a state change is fsync'd):

* closed, healthy path: ``allow()`` + ``success()`` (two flocks, one read, no write);
* open, refused path: ``allow()`` raising ``BreakerOpen`` (one flock, one read);
* a counted failure: ``allow()`` + ``failure()`` (a write: tmp, fsync, rename, dir fsync).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from arbiter_cli.resilience.breaker import BreakerConfig, BreakerOpen, FileBreaker


def timed(n: int, step: Callable[[], None]) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        step()
        samples.append((time.perf_counter() - started) * 1e6)
    return samples


def report(label: str, samples: list[float]) -> None:
    ordered = sorted(samples)
    p99 = ordered[int(len(ordered) * 0.99) - 1]
    print(f"{label:<34} n={len(samples):>6}  median {statistics.median(samples):8.1f} us  "
          f"p99 {p99:8.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "breaker" / "bench.json"
        healthy = FileBreaker(path, BreakerConfig(10**9, 600, 5))

        def closed_call() -> None:
            healthy.success(healthy.allow())

        report("closed: allow + success", timed(args.calls, closed_call))

        def counted_failure() -> None:
            healthy.failure(healthy.allow())

        report("closed: allow + failure (fsync)", timed(min(args.calls, 2000), counted_failure))
        tripped = FileBreaker(path, BreakerConfig(1, 600, 5))
        tripped.failure(tripped.allow())

        def refused() -> None:
            try:
                tripped.allow()
            except BreakerOpen:
                return
            raise AssertionError("the breaker should be open")

        report("open: allow refused", timed(args.calls, refused))


if __name__ == "__main__":
    main()
