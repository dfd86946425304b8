"""The breaker's refusals and state files: what an open breaker tells the caller, its private
file modes, unusable state paths reported cleanly, and UTC times (first written to kill the
mutants of docs/mutation.md)."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from arbiter_cli.config import Settings
from arbiter_cli.errors import StorageUnavailable
from arbiter_cli.resilience.breaker import (
    BreakerConfig,
    BreakerOpen,
    FileBreaker,
    breaker_for,
    rfc3339,
)

CONFIG = BreakerConfig(fail_max=1, reset_timeout_s=10.0, probe_lease_s=5.0)
T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z
LABEL = "postgresql://arbiter@db.example/arbiter"


class Ticker:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def opened(path: Path, clock: Ticker, label: str = "") -> FileBreaker:
    """A breaker opened at T0 by one counted failure (fail_max = 1)."""
    breaker = FileBreaker(path, CONFIG, clock, label=label)
    breaker.failure(breaker.allow())
    return breaker


def refusal(breaker: FileBreaker) -> BreakerOpen:
    with pytest.raises(BreakerOpen) as caught:
        breaker.allow()
    return caught.value


# ---------------------------------------------------------------------------- refusals


def test_an_open_breaker_names_the_database_when_it_opened_and_when_to_retry(tmp_path: Path):
    clock = Ticker()
    breaker = opened(tmp_path / "b.json", clock, LABEL)
    clock.now = T0 + 1.23456
    error = refusal(breaker)
    assert error.message == (
        f"database circuit breaker for {LABEL} is open (opened 2027-01-15T08:00:00.000Z): "
        "not connecting; retry in 8.8s")
    assert error.details == {"retry_after_s": 8.765,
                             "breaker": {"opened_at": "2027-01-15T08:00:00.000Z"}}
    assert error.retry_after_s == pytest.approx(8.76544)


def test_a_breaker_without_a_label_does_not_name_a_database(tmp_path: Path):
    clock = Ticker()
    breaker = FileBreaker(tmp_path / "b.json", CONFIG, clock)
    breaker.failure(breaker.allow())
    clock.now = T0 + 5
    assert refusal(breaker).message.startswith("database circuit breaker is open (opened ")


def test_during_a_probe_others_are_told_a_probe_is_in_flight(tmp_path: Path):
    clock = Ticker()
    breaker = opened(tmp_path / "b.json", clock, LABEL)
    clock.now = T0 + 10
    breaker.allow()  # the probe permit
    clock.now = T0 + 11
    error = refusal(breaker)
    state, _, rest = error.message.partition(" (opened ")
    assert state.endswith(" a probe is in flight") and " is open" not in state
    assert rest == "2027-01-15T08:00:00.000Z): not connecting; retry in 4.0s"


def test_a_state_without_an_opening_time_says_it_opened_earlier(tmp_path: Path):
    """A state file written by another version may lack opened_at; the message still reads."""
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"state": "half_open", "failures": 3, "opened_at": None,
                                "probe_until": T0 + 5}))
    error = refusal(FileBreaker(path, CONFIG, Ticker()))
    assert "(opened earlier)" in error.message
    assert error.details["breaker"] == {"opened_at": None}


def test_the_breaker_of_a_url_names_it_without_password_and_uses_the_given_clock(
    test_settings: Settings,
):
    clock = Ticker(T0 + 42)
    breaker = breaker_for(test_settings, "postgresql+psycopg2://arb:pw@db.example/arbiter",
                          clock)
    assert breaker.label == "postgresql://arb@db.example/arbiter"
    assert breaker.clock() == T0 + 42


# ---------------------------------------------------------------------------- the state files


def test_the_breaker_keeps_its_state_private(tmp_path: Path):
    """The directory it creates is 0700, the state and lock files 0600, whatever the umask."""
    previous = os.umask(0o002)
    try:
        opened(tmp_path / "data" / "breaker" / "b.json", Ticker())
    finally:
        os.umask(previous)
    mode = {name: stat.S_IMODE((tmp_path / "data" / "breaker" / name).stat().st_mode)
            for name in ("b.json", "b.lock")}
    assert mode == {"b.json": 0o600, "b.lock": 0o600}
    assert stat.S_IMODE((tmp_path / "data" / "breaker").stat().st_mode) == 0o700


def test_a_data_dir_that_is_a_file_is_reported_with_what_to_do(tmp_path: Path):
    (tmp_path / "data").write_text("not a directory")
    path = tmp_path / "data" / "breaker" / "b.json"
    with pytest.raises(StorageUnavailable) as caught:
        FileBreaker(path, CONFIG, Ticker()).allow()
    assert caught.value.message == (
        f"cannot use the circuit breaker state {path}: Not a directory; "
        "set ARBITER_DATA_DIR to a writable directory")


def test_a_breaker_directory_that_cannot_be_created_is_reported(tmp_path: Path):
    """A dangling symlink where the directory should be: creating it fails, cleanly."""
    (tmp_path / "breaker").symlink_to(tmp_path / "gone")
    path = tmp_path / "breaker" / "b.json"
    with pytest.raises(StorageUnavailable) as caught:
        FileBreaker(path, CONFIG, Ticker()).allow()
    # the link is refused whether the folder code sees it as existing or as missing
    assert caught.value.message in (
        f"cannot use the circuit breaker state {path}: {reason}; set ARBITER_DATA_DIR to a "
        "writable directory" for reason in ("File exists", "No such file or directory"))


def test_a_state_path_that_is_a_directory_is_reported_on_read(tmp_path: Path):
    path = tmp_path / "b.json"
    path.mkdir()
    with pytest.raises(StorageUnavailable) as caught:
        FileBreaker(path, CONFIG, Ticker()).snapshot()
    assert caught.value.message == (
        f"cannot use the circuit breaker state {path}: Is a directory; "
        "set ARBITER_DATA_DIR to a writable directory")


def test_a_state_that_cannot_be_written_is_reported(tmp_path: Path):
    (tmp_path / "b.tmp").mkdir()  # where the new state is written before the rename
    breaker = FileBreaker(tmp_path / "b.json", CONFIG, Ticker())
    permit = breaker.allow()
    with pytest.raises(StorageUnavailable) as caught:
        breaker.failure(permit)
    assert ": Is a directory; set ARBITER_DATA_DIR" in caught.value.message


# ---------------------------------------------------------------------------- times


@pytest.fixture
def tokyo(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time zone set to UTC+9 for one test."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_breaker_times_are_utc_whatever_the_local_time_zone(tokyo: None):
    assert time.localtime(T0).tm_hour == 17  # the zone really is in effect
    assert rfc3339(T0) == "2027-01-15T08:00:00.000Z"
