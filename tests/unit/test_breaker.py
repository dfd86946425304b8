"""The shared circuit breaker: consecutive-count semantics, one probe per host under a lease.

Scenarios follow the reference suites (RELIABILITY.md §1.2: resilience4j, Hystrix, pybreaker)
that apply to a consecutive-count breaker, driven by a fake clock, never by sleeping.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arbiter_cli.config import Settings
from arbiter_cli.errors import StorageUnavailable
from arbiter_cli.resilience.breaker import (
    CLOSED,
    BreakerConfig,
    BreakerOpen,
    BreakerState,
    FileBreaker,
    Permit,
    Refusal,
    admit,
    breaker_for,
    breaker_path,
    decode,
    on_failure,
    on_release,
    on_success,
    url_without_password,
)

CONFIG = BreakerConfig(fail_max=5, reset_timeout_s=10.0, probe_lease_s=5.0)
T0 = 1_800_000_000.0


class Ticker:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Ticker:
    return Ticker()


@pytest.fixture
def breaker(tmp_path: Path, clock: Ticker) -> FileBreaker:
    return FileBreaker(tmp_path / "breaker" / "b.json", CONFIG, clock)


def fail_times(breaker: FileBreaker, n: int) -> None:
    for _ in range(n):
        breaker.failure(breaker.allow())


def trip(breaker: FileBreaker) -> None:
    fail_times(breaker, CONFIG.fail_max)
    assert breaker.snapshot().state == "open"


# ---------------------------------------------------------------------------- closed


def test_closed_breaker_permits_ordinary_calls(breaker: FileBreaker) -> None:
    """A fresh breaker is closed and gives ordinary (non-probe) permits."""
    permit = breaker.allow()
    assert permit == Permit() and not permit.probe
    assert breaker.snapshot() == CLOSED


def test_one_failure_is_counted_but_does_not_open(breaker: FileBreaker) -> None:
    fail_times(breaker, 1)
    assert breaker.snapshot() == BreakerState("closed", 1)


def test_opens_exactly_at_fail_max_consecutive_failures(breaker: FileBreaker,
                                                        clock: Ticker) -> None:
    """fail_max - 1 failures keep it closed; the fail_max-th opens it, stamped with now."""
    fail_times(breaker, CONFIG.fail_max - 1)
    assert breaker.snapshot() == BreakerState("closed", CONFIG.fail_max - 1)
    clock.advance(1)
    fail_times(breaker, 1)
    assert breaker.snapshot() == BreakerState("open", CONFIG.fail_max, opened_at=T0 + 1)


def test_fail_max_of_one_opens_on_the_first_failure(tmp_path: Path, clock: Ticker) -> None:
    single = FileBreaker(tmp_path / "one.json", BreakerConfig(1, 10, 5), clock)
    fail_times(single, 1)
    assert single.snapshot().state == "open"


def test_success_resets_the_consecutive_count(breaker: FileBreaker) -> None:
    fail_times(breaker, CONFIG.fail_max - 1)
    breaker.success(breaker.allow())
    assert breaker.snapshot() == CLOSED
    fail_times(breaker, CONFIG.fail_max - 1)
    assert breaker.snapshot().state == "closed"


def test_caller_errors_neither_count_nor_reset(breaker: FileBreaker) -> None:
    """A released permit (integrity error, bad input) leaves the count where it was."""
    fail_times(breaker, CONFIG.fail_max - 1)
    for _ in range(10):
        breaker.release(breaker.allow())
    assert breaker.snapshot() == BreakerState("closed", CONFIG.fail_max - 1)
    fail_times(breaker, 1)
    assert breaker.snapshot().state == "open"


# ---------------------------------------------------------------------------- open


def test_open_breaker_refuses_without_calling(breaker: FileBreaker, clock: Ticker) -> None:
    trip(breaker)
    clock.advance(4)
    with pytest.raises(BreakerOpen) as refused:
        breaker.allow()
    assert refused.value.exit_code == 10
    assert isinstance(refused.value, StorageUnavailable)
    assert refused.value.retry_after_s == pytest.approx(6.0)
    assert refused.value.details["breaker"]["opened_at"] == "2027-01-15T08:00:00.000Z"


def test_open_breaker_refuses_until_just_before_reset_timeout(breaker: FileBreaker,
                                                              clock: Ticker) -> None:
    trip(breaker)
    with pytest.raises(BreakerOpen) as at_once:
        breaker.allow()
    assert at_once.value.retry_after_s == pytest.approx(CONFIG.reset_timeout_s)
    clock.advance(CONFIG.reset_timeout_s - 0.001)
    with pytest.raises(BreakerOpen):
        breaker.allow()


def test_reset_timeout_lets_exactly_one_probe_through(breaker: FileBreaker,
                                                      clock: Ticker) -> None:
    """After reset_timeout the first caller probes (half-open); the others are refused."""
    trip(breaker)
    clock.advance(CONFIG.reset_timeout_s)
    probe = breaker.allow()
    assert probe.probe and probe.probe_until == clock.now + CONFIG.probe_lease_s
    assert breaker.snapshot().state == "half_open"
    for _ in range(5):
        with pytest.raises(BreakerOpen) as refused:
            breaker.allow()
        assert refused.value.retry_after_s == pytest.approx(CONFIG.probe_lease_s)
        assert "probe is in flight" in refused.value.message


def test_probe_success_closes_and_clears_failures(breaker: FileBreaker, clock: Ticker) -> None:
    trip(breaker)
    clock.advance(CONFIG.reset_timeout_s)
    breaker.success(breaker.allow())
    assert breaker.snapshot() == CLOSED
    assert not breaker.allow().probe


def test_probe_failure_reopens_with_a_fresh_opened_at(breaker: FileBreaker,
                                                      clock: Ticker) -> None:
    trip(breaker)
    clock.advance(CONFIG.reset_timeout_s + 2)
    breaker.failure(breaker.allow())
    state = breaker.snapshot()
    assert state.state == "open" and state.opened_at == clock.now and state.probe_until is None
    clock.advance(CONFIG.reset_timeout_s - 1)
    with pytest.raises(BreakerOpen):
        breaker.allow()
    clock.advance(1)
    assert breaker.allow().probe


def test_several_sleep_windows_with_failed_probes_stay_open(breaker: FileBreaker,
                                                            clock: Ticker) -> None:
    """Hystrix: each failed single test keeps the circuit open for another window."""
    trip(breaker)
    for _ in range(3):
        clock.advance(CONFIG.reset_timeout_s)
        breaker.failure(breaker.allow())
        assert breaker.snapshot().state == "open"
    clock.advance(CONFIG.reset_timeout_s)
    breaker.success(breaker.allow())
    assert breaker.snapshot() == CLOSED


def test_expired_lease_lets_another_probe_go(breaker: FileBreaker, clock: Ticker) -> None:
    """The prober died: once its lease runs out, the next caller probes."""
    trip(breaker)
    clock.advance(CONFIG.reset_timeout_s)
    first = breaker.allow()
    clock.advance(CONFIG.probe_lease_s - 0.001)
    with pytest.raises(BreakerOpen):
        breaker.allow()
    clock.advance(0.001)
    second = breaker.allow()
    assert second.probe and second.probe_until != first.probe_until


def test_outcome_of_a_probe_whose_lease_was_taken_over_changes_nothing(
        breaker: FileBreaker, clock: Ticker) -> None:
    """Only the current lease holder decides: the late first prober neither closes nor opens."""
    trip(breaker)
    clock.advance(CONFIG.reset_timeout_s)
    first = breaker.allow()
    clock.advance(CONFIG.probe_lease_s)
    second = breaker.allow()
    before = breaker.snapshot()
    breaker.success(first)
    breaker.failure(first)
    breaker.release(first)
    assert breaker.snapshot() == before
    breaker.success(second)
    assert breaker.snapshot() == CLOSED


def test_released_probe_frees_the_lease(breaker: FileBreaker, clock: Ticker) -> None:
    """A caller error during the probe decides nothing; another caller may probe at once."""
    trip(breaker)
    clock.advance(CONFIG.reset_timeout_s)
    breaker.release(breaker.allow())
    state = breaker.snapshot()
    assert state.state == "half_open" and state.probe_until is None
    assert state.failures == CONFIG.fail_max
    assert breaker.allow().probe


def test_late_failure_of_an_ordinary_call_does_not_extend_the_break(
        breaker: FileBreaker, clock: Ticker) -> None:
    """Polly: failures arriving while open never re-trip or extend the break."""
    slow = breaker.allow()
    trip(breaker)
    opened = breaker.snapshot()
    clock.advance(3)
    breaker.failure(slow)
    breaker.success(slow)
    assert breaker.snapshot() == opened


def test_late_success_of_an_ordinary_call_does_not_close_a_half_open_breaker(
        breaker: FileBreaker, clock: Ticker) -> None:
    slow = breaker.allow()
    trip(breaker)
    clock.advance(CONFIG.reset_timeout_s)
    probe = breaker.allow()
    breaker.success(slow)
    assert breaker.snapshot().state == "half_open"
    breaker.failure(probe)
    assert breaker.snapshot().state == "open"


def test_clock_set_back_does_not_keep_the_breaker_open_forever(breaker: FileBreaker,
                                                                clock: Ticker) -> None:
    trip(breaker)
    clock.advance(-3600)
    assert breaker.allow().probe


def test_clock_set_back_does_not_make_a_lease_last_forever(breaker: FileBreaker,
                                                           clock: Ticker) -> None:
    trip(breaker)
    clock.advance(CONFIG.reset_timeout_s)
    breaker.allow()
    clock.advance(-3600)
    assert breaker.allow().probe


# ---------------------------------------------------------------------------- pure functions


def test_admit_is_pure_and_reports_the_wait() -> None:
    opened = BreakerState("open", 5, opened_at=T0)
    state, decision = admit(opened, CONFIG, T0 + 7.5)
    assert state == opened
    assert decision == Refusal(opened, 2.5)


def test_probe_lease_starts_at_the_moment_of_admission() -> None:
    state, decision = admit(BreakerState("open", 5, opened_at=T0), CONFIG, T0 + 12)
    assert decision == Permit(probe_until=T0 + 17)
    assert state == BreakerState("half_open", 5, opened_at=T0, probe_until=T0 + 17)


def test_open_state_without_opened_at_lets_a_probe_go() -> None:
    _, decision = admit(BreakerState("open", 5), CONFIG, T0)
    assert isinstance(decision, Permit) and decision.probe


def test_a_probe_permit_outcome_in_a_closed_breaker_changes_nothing() -> None:
    state = BreakerState("closed", 2)
    stale = Permit(probe_until=T0)
    assert on_success(state, stale) == state
    assert on_failure(state, stale, CONFIG, T0) == state
    assert on_release(state, stale) == state


def test_failure_of_the_lease_holder_counts_one_more() -> None:
    half = BreakerState("half_open", 5, opened_at=T0, probe_until=T0 + 15)
    assert on_failure(half, Permit(probe_until=T0 + 15), CONFIG, T0 + 11) == BreakerState(
        "open", 6, opened_at=T0 + 11)


# ---------------------------------------------------------------------------- the shared file


def test_two_breakers_on_one_file_share_the_state(tmp_path: Path, clock: Ticker) -> None:
    """Processes on one host each build their own FileBreaker on the same file."""
    path = tmp_path / "shared.json"
    first, second = FileBreaker(path, CONFIG, clock), FileBreaker(path, CONFIG, clock)
    fail_times(first, 3)
    fail_times(second, 2)
    with pytest.raises(BreakerOpen):
        first.allow()
    clock.advance(CONFIG.reset_timeout_s)
    assert second.allow().probe
    with pytest.raises(BreakerOpen):
        first.allow()


def test_state_file_is_json_with_no_password(tmp_path: Path, clock: Ticker) -> None:
    path = tmp_path / "b.json"
    b = FileBreaker(path, CONFIG, clock, label=url_without_password(
        "postgresql+psycopg2://arb:s3cret-pw@db.example:5432/arbiter"))
    fail_times(b, 1)
    text = path.read_text()
    assert "s3cret-pw" not in text
    assert json.loads(text) == {"state": "closed", "failures": 1, "opened_at": None,
                                "probe_until": None,
                                "database": "postgresql://arb@db.example:5432/arbiter"}
    assert (tmp_path / "b.lock").exists()
    assert not (tmp_path / "b.tmp").exists()


def test_unchanged_state_is_not_rewritten(tmp_path: Path, clock: Ticker) -> None:
    """The healthy path (closed, no failures) only reads: no file is written."""
    b = FileBreaker(tmp_path / "b.json", CONFIG, clock)
    b.success(b.allow())
    assert not (tmp_path / "b.json").exists()


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b'{"state": "melted", "failures": 1}',
                                 b'{"state": "open"}', b'{"state": "open", "failures": "x"}'])
def test_unreadable_state_file_counts_as_closed(raw: bytes) -> None:
    assert decode(raw) == CLOSED


def test_decode_reads_back_what_was_written(tmp_path: Path, clock: Ticker) -> None:
    b = FileBreaker(tmp_path / "b.json", CONFIG, clock)
    trip(b)
    assert decode((tmp_path / "b.json").read_bytes()) == BreakerState("open", 5, opened_at=T0)


def test_unusable_directory_is_storage_unavailable(tmp_path: Path, clock: Ticker) -> None:
    (tmp_path / "file").write_text("not a directory")
    b = FileBreaker(tmp_path / "file" / "breaker" / "b.json", CONFIG, clock)
    with pytest.raises(StorageUnavailable) as unusable:
        b.allow()
    assert "ARBITER_DATA_DIR" in unusable.value.message
    assert unusable.value.exit_code == 10


# ---------------------------------------------------------------------------- per database


def test_breaker_file_name_ignores_the_password(tmp_path: Path) -> None:
    one = breaker_path(tmp_path, "postgresql+psycopg2://arb:one@db:5432/arbiter")
    two = breaker_path(tmp_path, "postgresql://arb:two@db:5432/arbiter")
    bare = breaker_path(tmp_path, "postgresql://arb@db:5432/arbiter")
    assert one == two == bare
    assert one.parent == tmp_path / "breaker"
    assert len(one.stem) == 16 and int(one.stem, 16) >= 0 and one.suffix == ".json"


def test_different_databases_get_different_breakers(tmp_path: Path) -> None:
    assert breaker_path(tmp_path, "postgresql://arb@db1/arbiter") != breaker_path(
        tmp_path, "postgresql://arb@db2/arbiter")
    assert breaker_path(tmp_path, "postgresql://arb@db1/a") != breaker_path(
        tmp_path, "postgresql://arb@db1/b")


def test_breaker_for_uses_the_settings(test_settings: Settings) -> None:
    from dataclasses import replace

    values = {**test_settings.values, "database.url": "postgresql://arb@db/arbiter",
              "database.password": "pw-secret", "breaker.fail_max": 3,
              "breaker.reset_timeout": "30s", "database.command_timeout": "7s"}
    settings = replace(test_settings, values=values)
    b = breaker_for(settings)
    assert b.config == BreakerConfig(fail_max=3, reset_timeout_s=30.0, probe_lease_s=7.0)
    assert b.path.parent == settings.paths.data_dir / "breaker"
    assert b.path == breaker_path(settings.paths.data_dir, "postgresql://arb@db/arbiter")
    assert "pw-secret" not in b.label
