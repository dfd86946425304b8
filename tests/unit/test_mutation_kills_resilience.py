"""Breaker, journal and journal-record behaviour the mutation run showed untested
(docs/mutation.md): refusal messages, private file modes, unusable state paths reported
cleanly, UTC times, and plain JSON from read-only decision fields."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

import pytest

from arbiter_cli.config import Settings
from arbiter_cli.domain.routing import Decision
from arbiter_cli.errors import StorageUnavailable
from arbiter_cli.resilience.breaker import (
    BreakerConfig,
    BreakerOpen,
    FileBreaker,
    breaker_for,
    rfc3339,
)
from arbiter_cli.resilience.journal import Journal
from arbiter_cli.resilience.records import decision_from, decision_record

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
    assert caught.value.message.startswith(f"cannot use the circuit breaker state {path}: File "
                                           "exists;")


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


# ---------------------------------------------------------------------------- journal


def test_the_journal_lists_entries_beyond_the_first_hundred_and_twenty_four(tmp_path: Path):
    """Without ``before``, the listing starts above every possible seq, not at a small one."""
    journal = Journal(tmp_path / "journal.db", clock=Ticker())
    try:
        for n in range(130):
            journal.append(op_id=f"op-{n}", tenant="default", kind="agents.heartbeat",
                           principal={"tenant": "default", "role": "admin", "token_id": None},
                           args={"agent_id": f"a{n}"})
        listed = journal.entries(limit=0)
        assert len(listed) == 130
        assert listed[0].op_id == "op-129"
    finally:
        journal.close()


def register(journal: Journal, n: int, tenant: str, ids: object,
             kind: str = "agents.register") -> int:
    return journal.append(op_id=f"op-{n}", tenant=tenant, kind=kind,
                          principal={"tenant": tenant, "role": "admin", "token_id": None},
                          args={"raws": ids})


def test_conflicting_registrations_name_the_agent_ids_later_ops_must_not_touch(tmp_path: Path):
    """Only conflicted registrations of this tenant, earlier than the given seq, count; an
    entry without documents, or one another version wrote differently, is passed over."""
    journal = Journal(tmp_path / "journal.db", clock=Ticker())
    with sqlite3.connect(tmp_path / "journal.db") as other:  # a corrupt entry comes first
        other.execute("INSERT INTO entries (op_id, tenant, kind, principal, args, created_at, "
                      "state) VALUES ('op-0', 'acme', 'agents.register', '{}', '[1, 2]', 0, "
                      "'conflict')")
    other.close()
    try:
        conflicted = [
            journal.append(op_id="op-00", tenant="acme", kind="agents.register",
                           principal={}, args={}),                       # no documents at all
            register(journal, 1, "acme", [{"id": "a1"}, {"id": "a2"}, {"no": "id"}, "a9"]),
            register(journal, 2, "other", [{"id": "b1"}]),                # another tenant
            register(journal, 3, "acme", [{"id": "u1"}], "agents.update"),  # not a register
            register(journal, 4, "acme", "not a list of documents"),
        ]
        register(journal, 5, "acme", [{"id": "p1"}])                      # pending, no conflict
        before = register(journal, 6, "acme", [{"id": "x1"}])
        late = register(journal, 7, "acme", [{"id": "l1"}])                # after before_seq
        for seq in [*conflicted, before, late]:
            journal.conflict(seq, "exists")
        assert journal.conflicting_agent_ids("acme", before) == {"a1", "a2"}
        assert journal.conflicting_agent_ids("acme", late + 1) == {"a1", "a2", "x1", "l1"}
        assert journal.conflicting_agent_ids("other", late + 1) == {"b1"}
        assert journal.conflicting_agent_ids("nobody", late + 1) == set()
    finally:
        journal.close()


# ---------------------------------------------------------------------------- records


def test_a_decision_with_read_only_fields_becomes_plain_json():
    """Decision fields are Mappings and sequences; a backend may hand over read-only ones.
    The journal record must still be plain JSON that decodes back to an equal decision."""
    at = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)
    decision = Decision(
        decision_id="d-1", tenant="default", task_id="T-1", task_type="testing",
        requirements=MappingProxyType({"task_type": "testing"}),
        metadata=MappingProxyType({"team": "infra"}), priority=5, agent_id="a1",
        agent_uid="u1", strategy="thompson", seed=7, explored=False, confidence=0.5,
        candidates=[], excluded=MappingProxyType({"capacity": 1}),
        examples=MappingProxyType({"capacity": ("a2", "a3")}), config_hash="h",
        latency_us=10, created_at=at, outcome=MappingProxyType({"success": True}))
    record = json.loads(json.dumps(decision_record(decision)))
    assert record["requirements"] == {"task_type": "testing"}
    assert record["metadata"] == {"team": "infra"}
    assert record["excluded"] == {"capacity": 1}
    assert record["outcome"] == {"success": True}
    assert record["examples"] == {"capacity": ["a2", "a3"]}
    back = decision_from(record)
    assert (back.task_id, back.created_at, dict(back.excluded)) == ("T-1", at, {"capacity": 1})
