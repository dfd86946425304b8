"""The stale-routing window after PostgreSQL returns (issue 17, F9; by design).

While the breaker is open, a host serves from its snapshot and journals its writes even after
PostgreSQL is back, until ``breaker.reset_timeout`` has passed and one call probes. This test
measures that window: PostgreSQL is stopped, a host writes until its breaker is open, keeps
writing (one command every 0.1 s, so the breaker re-probes and re-opens as in a real outage),
PostgreSQL comes back at a random moment of the breaker's cycle, and the time from "PostgreSQL
accepts connections" to the first write that answers ``durability: committed`` is taken.

Each window must stay within ``reset_timeout`` + one command's budget + the command cadence;
the figures are printed (docs/resilience.md, "The stale window after an outage").
``ARBITER_FAULTS_STALE_TRIALS`` sets the trials per reset timeout (default 2).
"""

from __future__ import annotations

import os
import random
import statistics
import time
import uuid
from pathlib import Path

import pytest

from tests.faults.cluster import PgCluster
from tests.faults.conftest import arbiter_env
from tests.faults.harness import Arbiter, Driver

pytestmark = [pytest.mark.faults, pytest.mark.slow]

CADENCE_S = 0.1
COMMAND_TIMEOUT_S = 2.0


def write(driver: Driver, n: int) -> str | None:
    """One journaled-or-committed write; its durability (None when it was refused)."""
    agent = f"sw-{n}"
    run = driver.ask(["--json", "agents", "register", "--id", agent, "--name", agent,
                      "--model-family", "stale", "--task-type", "testing"], watchdog_s=30)
    if run.exit != 0:
        return None
    return run.meta().get("durability")  # type: ignore[no-any-return]


def window(cluster: PgCluster, driver: Driver, reset_s: float, rng: random.Random,
           counter: list[int]) -> float:
    """Seconds from PostgreSQL's return to the first committed write."""
    cluster.stop("immediate")
    opened = time.monotonic() + 60
    while True:  # until the breaker is open: the writes are journaled at once
        counter[0] += 1
        durability = write(driver, counter[0])
        started = time.monotonic()
        counter[0] += 1
        if durability == "journaled" and write(driver, counter[0]) == "journaled" and \
                time.monotonic() - started < COMMAND_TIMEOUT_S / 2:
            break
        assert time.monotonic() < opened, "the breaker never opened"
    until = time.monotonic() + rng.uniform(0, reset_s) + reset_s  # a random phase
    while time.monotonic() < until:
        counter[0] += 1
        assert write(driver, counter[0]) == "journaled"
        time.sleep(CADENCE_S)
    cluster.start()
    back = time.monotonic()
    while True:
        counter[0] += 1
        if write(driver, counter[0]) == "committed":
            return time.monotonic() - back
        assert time.monotonic() - back < reset_s + 30, "never served by the primary again"
        time.sleep(CADENCE_S)


@pytest.mark.parametrize("reset_timeout", ["10s", "1s"])
def test_stale_window_after_postgresql_returns_is_at_most_the_reset_timeout(
    tmp_path: Path, pg_cluster: PgCluster, reset_timeout: str,
) -> None:
    reset_s = float(reset_timeout.rstrip("s"))
    trials = int(os.environ.get("ARBITER_FAULTS_STALE_TRIALS", "2"))
    rng = random.Random(int(os.environ.get("ARBITER_FAULTS_SEED", "17")))
    dbname = f"stale_{uuid.uuid4().hex[:10]}"
    pg_cluster.create_database(dbname)
    env = arbiter_env(tmp_path, pg_cluster.url(dbname),
                      ARBITER_DATABASE__COMMAND_TIMEOUT=f"{COMMAND_TIMEOUT_S:g}s",
                      ARBITER_BREAKER__RESET_TIMEOUT=reset_timeout)
    arbiter = Arbiter(env)
    assert arbiter("--json", "init").exit == 0
    assert arbiter("--json", "agents", "list").exit == 0  # the snapshot
    driver = Driver(env)
    counter = [0]
    try:
        windows = [window(pg_cluster, driver, reset_s, rng, counter) for _ in range(trials)]
    finally:
        driver.close()
        if not pg_cluster.running():
            pg_cluster.start()
    print(f"\nstale window, breaker.reset_timeout {reset_timeout}: "
          + ", ".join(f"{w:.2f}s" for w in windows)
          + f" (median {statistics.median(windows):.2f}s, max {max(windows):.2f}s; "
          f"{trials} trials, a write every {CADENCE_S:g}s)")
    bound = reset_s + COMMAND_TIMEOUT_S + 1.0
    assert max(windows) <= bound, f"a stale window of {max(windows):.2f}s > {bound:.1f}s"
