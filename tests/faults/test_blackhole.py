"""No command hangs on a database that accepts and never answers (issue 8, Done-when 2).

The fault proxy sits between arbiter and the throwaway cluster. In ``blackhole`` mode it
accepts connections, reads, and never answers: psycopg2 would wait forever without the
command's deadline (RELIABILITY.md §3.2). 50 consecutive commands must each return within
``database.command_timeout`` + 1 s, either degraded (exit 0 with ``durability: journaled`` or
``stale: true``) or with exit 10.

Most commands run through one driver process that calls ``main()`` per command, its time
measured around ``main()``; the driver runs one command before the fault, so the bound is not
charged with first-time imports. Every fifth command is a whole ``arbiter`` process: a hang
there (also at interpreter exit) trips the subprocess timeout; its in-process time comes from
``--metrics-file`` and must stay within the bound plus what the same cold command costs with a
healthy network (lazy imports of sqlalchemy, psycopg2, rich: ~1 s on a loaded 2-core box).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from tests.faults.cluster import PgCluster
from tests.faults.conftest import arbiter_env
from tests.faults.harness import Arbiter, Driver, Run, initialize, replay_until_empty
from tests.faults.proxy import FaultProxy

pytestmark = [pytest.mark.faults, pytest.mark.slow]

COMMAND_TIMEOUT_S = 2
BOUND_S = COMMAND_TIMEOUT_S + 1  # SPEC §7: every command returns within its budget + 1 s
WATCHDOG_S = BOUND_S + 7  # past this a command is declared hung (start-up of a whole process)
COMMANDS = 50


Setup = tuple[Arbiter, dict[str, str], FaultProxy]


@pytest.fixture
def setup(tmp_path: Path, pg_cluster: PgCluster, fault_proxy: FaultProxy) -> Setup:
    name = f"bh_{uuid.uuid4().hex[:10]}"
    pg_cluster.create_database(name)
    url = pg_cluster.url(name, port=fault_proxy.port)
    env = arbiter_env(tmp_path, url, ARBITER_DATABASE__COMMAND_TIMEOUT=f"{COMMAND_TIMEOUT_S}s")
    (tmp_path / "metrics").mkdir()
    arbiter = Arbiter(env, metrics_dir=tmp_path / "metrics")
    initialize(arbiter)
    return arbiter, env, fault_proxy


def healed(env: dict[str, str]) -> Arbiter:
    """The same host after the fault, with a 1 s breaker reset so the probe comes soon."""
    return Arbiter({**env, "ARBITER_BREAKER__RESET_TIMEOUT": "1s"})


def command(i: int) -> list[str]:
    if i % 2:
        return ["--json", "agents", "list"]
    return ["--json", "agents", "register", "--id", f"bh-{i}", "--name", f"bh {i}",
            "--model-family", "fault-test", "--task-type", "testing", "--capacity", "1"]


def outcome_of(run: Run) -> str:
    """How one command fared under the fault: journaled, stale, exit 10, or a problem."""
    if run.exit == 10:
        return "exit 10"
    if run.exit != 0:
        return f"PROBLEM: exit {run.exit}"
    meta = run.meta()
    if "register" in run.argv:
        if meta.get("durability") != "journaled":
            return f"PROBLEM: durability {meta.get('durability')!r}, not 'journaled'"
        if "journaled as op" not in run.stderr:
            return "PROBLEM: journaled without a warning on stderr"
        return "journaled"
    if meta.get("stale") is not True or not isinstance(meta.get("stale_age_s"), int | float):
        return f"PROBLEM: a degraded read without stale/stale_age_s: {meta}"
    return "stale"


def degraded_or_unavailable(run: Run) -> str:
    outcome = outcome_of(run)
    assert not outcome.startswith("PROBLEM"), f"{outcome}: {run!r}"
    return outcome


def warm_driver(env: dict[str, str]) -> Driver:
    """A driver that already ran one command (imports done) while the network was healthy."""
    driver = Driver(env)
    run = driver.ask(["--json", "agents", "list"], watchdog_s=60)
    assert run.exit == 0, run
    return driver


def test_fifty_commands_through_a_blackhole_each_return_within_budget(setup: Setup) -> None:
    arbiter, env, proxy = setup
    cold = [arbiter(*command(i), timeout=60, metrics=True) for i in (1001, 1002)]
    assert all(run.exit == 0 for run in cold), cold
    cold_cost = max(run.duration_s or 0.0 for run in cold)  # a cold process, healthy network
    driver = warm_driver(env)
    proxy.set_mode("blackhole")
    results: list[tuple[int, str, Run]] = []
    accepted_before = proxy.accepted
    started = time.monotonic()
    try:
        for i in range(COMMANDS):
            argv = command(i)
            if i % 5 == 0:
                run = arbiter(*argv, timeout=WATCHDOG_S, metrics=True)
                how = "process"
            else:
                run = driver.ask(argv, watchdog_s=WATCHDOG_S)
                how = "main()"
            results.append((i, how, run))
    finally:
        driver.close()
    total = time.monotonic() - started

    outcomes = [outcome_of(run) for _, _, run in results]
    assert all(run.duration_s is not None for _, _, run in results), "a run without duration"
    warm = [(i, run.duration_s or 0.0) for i, how, run in results if how == "main()"]
    whole = [(i, run.duration_s or 0.0, run.wall_s) for i, how, run in results
             if how == "process"]
    print(f"\nblackhole: {COMMANDS} commands in {total:.1f}s; outcomes "
          f"{ {o: outcomes.count(o) for o in sorted(set(outcomes))} }; main() slowest "
          f"{max(d for _, d in warm):.2f}s; whole processes slowest {max(d for _, d, _ in whole):.2f}s "
          f"in-process (cold cost with a healthy network {cold_cost:.2f}s), "
          f"{max(w for _, _, w in whole):.2f}s wall; connections into the blackhole: "
          f"{proxy.accepted - accepted_before}")
    late = [(i, round(d, 2)) for i, d in warm if d > BOUND_S]
    assert not late, f"commands over database.command_timeout + 1 s ({BOUND_S}s): {late}"
    late = [(i, round(d, 2)) for i, d, _ in whole if d > BOUND_S + cold_cost]
    assert not late, (f"whole processes over the bound ({BOUND_S}s) + their cold cost "
                      f"({cold_cost:.2f}s): {late}")
    assert proxy.accepted > accepted_before, "nothing reached the blackhole: nothing proved"
    problems = [(i, o, run) for (i, _, run), o in zip(results, outcomes, strict=True)
                if o.startswith("PROBLEM")]
    assert not problems, f"{len(problems)} commands neither degraded nor exit 10, first: " \
                         f"{problems[0]}"


def test_acknowledged_blackhole_writes_reach_the_database_after_healing(
    setup: Setup, pg_cluster: PgCluster,
) -> None:
    """What was journaled under the blackhole is replayed once the network heals."""
    arbiter, env, proxy = setup
    driver = warm_driver(env)
    proxy.set_mode("blackhole")
    acknowledged: list[str] = []
    try:
        for i in range(0, 12, 2):
            run = driver.ask(command(i), watchdog_s=WATCHDOG_S)
            if degraded_or_unavailable(run) == "journaled":
                acknowledged.append(f"bh-{i}")
    finally:
        driver.close()
    assert acknowledged, "no write was journaled under the blackhole"
    proxy.set_mode("pass")
    drained = replay_until_empty(healed(env), within_s=60.0)
    assert drained.exit == 0, drained
    name = env["ARBITER_DATABASE__URL"].rsplit("/", 1)[1]
    present = set(pg_cluster.psql("SELECT id FROM agents WHERE id LIKE 'bh-%'",
                                  dbname=name).split())
    assert set(acknowledged) <= present, f"lost: {sorted(set(acknowledged) - present)}"


@pytest.mark.parametrize("latency_ms", [150])
def test_commands_through_a_slow_network_return_within_budget(setup: Setup, latency_ms: int) -> None:
    """With latency on every packet a command commits or degrades, within budget + 1 s."""
    arbiter, env, proxy = setup
    driver = warm_driver(env)
    proxy.set_mode("latency", latency_ms=latency_ms)
    try:
        runs = [driver.ask(command(i), watchdog_s=WATCHDOG_S) for i in range(100, 106)]
    finally:
        driver.close()
    for run in runs:
        assert run.exit in (0, 10), run
        assert (run.duration_s or 0.0) <= BOUND_S, run
    print(f"\nlatency {latency_ms} ms: slowest {max(r.duration_s or 0 for r in runs):.2f}s; "
          f"durability {[r.meta().get('durability') for r in runs if 'register' in r.argv]}")
