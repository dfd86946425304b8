"""The breaker's state file under contention from several real processes on one host.

Each worker is a separate Python process (``subprocess``) with its own ``FileBreaker`` on the
same file. They wait for a start file so that they race for real, then report what they saw.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from arbiter_cli.resilience.breaker import BreakerConfig, BreakerState, FileBreaker

WORKER = r"""
import json, os, sys, time
from pathlib import Path
from arbiter_cli.resilience.breaker import BreakerConfig, BreakerOpen, FileBreaker

path, go, mode, n, fail_max, reset, lease, offset = sys.argv[1:9]
config = BreakerConfig(int(fail_max), float(reset), float(lease))
breaker = FileBreaker(Path(path), config, clock=lambda: time.time() + float(offset))
deadline = time.monotonic() + 30
while not os.path.exists(go):
    if time.monotonic() > deadline:
        sys.exit("no start signal")
    time.sleep(0.001)
seen = {"permits": 0, "probes": 0, "refused": 0}
for _ in range(int(n)):
    try:
        permit = breaker.allow()
    except BreakerOpen:
        seen["refused"] += 1
        continue
    seen["permits"] += 1
    seen["probes"] += permit.probe
    if mode == "fail":
        breaker.failure(permit)
    elif mode == "hold":
        pass  # take the permit and die without an outcome (a prober that was killed)
print(json.dumps(seen))
"""


def run_workers(tmp_path: Path, count: int, *, mode: str, n: int, config: BreakerConfig,
                offset: float = 0.0, go_name: str = "go") -> list[dict[str, int]]:
    path, go = tmp_path / "breaker" / "db.json", tmp_path / go_name
    args = [str(path), str(go), mode, str(n), str(config.fail_max), str(config.reset_timeout_s),
            str(config.probe_lease_s), str(offset)]
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(count)]
    time.sleep(0.3)  # let every interpreter start and wait at the line, not a measurement
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    go.unlink()
    return results


def shared(tmp_path: Path, config: BreakerConfig) -> FileBreaker:
    return FileBreaker(tmp_path / "breaker" / "db.json", config)


def test_no_failure_is_lost_under_contention(tmp_path: Path) -> None:
    """3 processes × 200 counted failures with fail_max out of reach: the count is exactly 600."""
    config = BreakerConfig(fail_max=1_000_000, reset_timeout_s=10, probe_lease_s=5)
    results = run_workers(tmp_path, 3, mode="fail", n=200, config=config)
    assert [r["permits"] for r in results] == [200, 200, 200]
    state = shared(tmp_path, config).snapshot()
    print(f"failures counted by 3 processes x 200: {state.failures}")
    assert state == BreakerState("closed", 600)


def test_count_stops_exactly_at_fail_max_under_racing_failures(tmp_path: Path) -> None:
    """pybreaker's race: 4 processes fail as fast as they can; it opens once, at fail_max."""
    config = BreakerConfig(fail_max=5, reset_timeout_s=600, probe_lease_s=5)
    results = run_workers(tmp_path, 4, mode="fail", n=100, config=config)
    state = shared(tmp_path, config).snapshot()
    assert state.state == "open" and state.failures == 5
    assert sum(r["refused"] for r in results) >= 400 - 5 - 4  # at most one in flight each
    assert sum(r["probes"] for r in results) == 0


def test_exactly_one_process_gets_the_probe_after_reset_timeout(tmp_path: Path) -> None:
    """5 processes race when the open breaker's timeout has passed: one probes, 4 are refused.

    Repeated for 10 rounds, each from a freshly opened breaker.
    """
    config = BreakerConfig(fail_max=5, reset_timeout_s=10, probe_lease_s=600)
    for round_no in range(10):
        opened = shared(tmp_path, config)
        opened._apply(lambda _: BreakerState("open", 5, opened_at=time.time() - 11))
        results = run_workers(tmp_path, 5, mode="hold", n=3, config=config,
                              go_name=f"go{round_no}")
        probes = [r["probes"] for r in results]
        assert sorted(probes) == [0, 0, 0, 0, 1], (round_no, results)
        assert sum(r["refused"] for r in results) == 5 * 3 - 1
        assert shared(tmp_path, config).snapshot().state == "half_open"


def test_a_dead_probers_lease_expires_and_another_process_probes(tmp_path: Path) -> None:
    """The prober exits without an outcome; after the lease, exactly one other process probes."""
    config = BreakerConfig(fail_max=5, reset_timeout_s=10, probe_lease_s=30)
    opened = shared(tmp_path, config)
    opened._apply(lambda _: BreakerState("open", 5, opened_at=time.time() - 11))
    first = run_workers(tmp_path, 1, mode="hold", n=1, config=config, go_name="go-a")
    assert first[0]["probes"] == 1
    still = run_workers(tmp_path, 3, mode="hold", n=1, config=config, go_name="go-b")
    assert sum(r["probes"] for r in still) == 0
    # Seen from 31 s later (a clock offset, not a sleep): the lease has run out.
    later = run_workers(tmp_path, 3, mode="hold", n=1, config=config, offset=31,
                        go_name="go-c")
    assert sorted(r["probes"] for r in later) == [0, 0, 1]
