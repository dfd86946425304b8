"""``--workload leaky`` keeps a fixed amount per second of run, whatever the operation rate
(issue 12 leftover): the leak verdict no longer depends on how fast the machine is."""

from __future__ import annotations

import pytest

from arbiter_cli.tools.soak import workload as wl
from arbiter_cli.tools.soak.workload import LEAK_BYTES, LEAK_BYTES_PER_S, Counters, Workload


class Seconds:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def leaky(test_settings):  # type: ignore[no-untyped-def]
    from arbiter_cli.bootstrap import build_memory, utc_now
    from arbiter_cli.tools.setup import initialize

    clock = Seconds()
    app = build_memory(test_settings)
    initialize(app.uow, lambda: None, utc_now)
    work = Workload(app, agents=20, mix={"query": 1.0, "route": 1.0, "outcome": 1.0},
                    leaky=True, counters=Counters(), clock=clock)
    work.setup()
    work.prime()
    wl.LEAKED.clear()
    yield work, clock
    wl.LEAKED.clear()


def kept() -> int:
    return sum(len(piece) for piece in wl.LEAKED)


def test_operations_without_time_passing_leak_nothing(leaky) -> None:  # type: ignore[no-untyped-def]
    work, _clock = leaky
    work.start_measuring()
    for _ in range(300):
        work.step()
    assert kept() == 0


@pytest.mark.parametrize("operations", [1, 10, 500])
def test_the_leak_is_seconds_times_the_rate_at_any_operation_count(  # type: ignore[no-untyped-def]
        leaky, operations: int) -> None:
    work, clock = leaky
    work.start_measuring()
    for second in range(1, 11):
        for _ in range(operations if second == 1 else 1):
            work.step()
        clock.now += 1.0
    work.step()
    assert kept() == 10 * LEAK_BYTES_PER_S
    assert all(len(piece) == LEAK_BYTES for piece in wl.LEAKED)


def test_the_driver_s_waits_keep_the_leak_going(leaky) -> None:  # type: ignore[no-untyped-def]
    """At a very low --rate the leak still follows the clock, not the operations."""
    work, clock = leaky
    work.start_measuring()
    clock.now += 4.0
    work.tick()  # what the driver calls while it waits for the next operation
    assert kept() == 4 * LEAK_BYTES_PER_S


def test_the_normal_workload_keeps_nothing(test_settings) -> None:  # type: ignore[no-untyped-def]
    from arbiter_cli.bootstrap import build_memory

    work = Workload(build_memory(test_settings), agents=5, mix={"query": 1.0}, leaky=False,
                    counters=Counters(), clock=Seconds())
    work.start_measuring()
    work.tick()
    assert work.leak is None and kept() == 0
