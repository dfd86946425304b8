"""The primary's time told on a snapshot: this host's clock plus the measured offset (F5)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from sqlalchemy import create_engine

from arbiter_cli.adapters.sql.clock import EstimatedClock, measure_offset


def test_estimated_clock_is_the_host_clock_plus_the_offset_read_once() -> None:
    calls: list[int] = []

    def wall() -> float:
        calls.append(1)
        return 1_800_000_000.0 + len(calls)

    clock = EstimatedClock(-10800.0, wall)
    assert clock() == datetime.fromtimestamp(1_800_000_001.0 - 10800.0, UTC)
    assert clock() == datetime.fromtimestamp(1_800_000_001.0 - 10800.0, UTC)  # once per unit
    assert len(calls) == 1


def test_a_local_statement_time_is_not_remembered() -> None:
    clock = EstimatedClock(0.0, lambda: 1_800_000_000.0)
    clock.remember(datetime(2099, 1, 1, tzinfo=UTC))  # SQLite's 'now': this host's clock
    assert clock() == datetime.fromtimestamp(1_800_000_000.0, UTC)


def test_measure_offset_is_the_database_clock_minus_the_host_s() -> None:
    engine = create_engine("sqlite://")
    try:
        with engine.connect() as conn:
            ahead = measure_offset(conn, wall=lambda: time.time() + 3600.0)
            true = measure_offset(conn)
    finally:
        engine.dispose()
    assert abs(ahead + 3600.0) < 1.0  # a host 1 h ahead: the database is 1 h behind it
    assert abs(true) < 1.0


def test_only_a_finite_recorded_offset_is_used() -> None:
    from arbiter_cli.resilience.snapshot import clock_offset

    assert clock_offset({"db_clock_offset_s": -10800.25}) == -10800.25
    assert clock_offset({"db_clock_offset_s": 3}) == 3.0
    for damaged in (float("nan"), float("inf"), "12", True, None):
        assert clock_offset({"db_clock_offset_s": damaged}) is None
    assert clock_offset({}) is None  # a snapshot of an older arbiter
