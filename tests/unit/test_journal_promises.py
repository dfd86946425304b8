"""What the journal promises beyond the happy path (SPEC §4.1, §7): a file that is not a
journal is one exit-10 line that keeps it, the HMAC is of a canonical versioned encoding a
reader can recompute, stamps never go back, damaged rows read without raising, failed replays
and resolutions do exactly what they say, and the status tells an unreadable journal from an
empty one. First written to kill the mutants of docs/mutation.md that survived the file-trust
and damaged-journal work.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from arbiter_cli.config import load_settings
from arbiter_cli.errors import StorageUnavailable
from arbiter_cli.resilience.identity import store_key
from arbiter_cli.resilience.journal import (
    CONFLICT,
    MAX_ATTEMPTS,
    PENDING,
    Entry,
    Journal,
    entry_mac,
    open_for,
    open_journal,
    private_resilience_dir,
    resilience_dir,
    resilience_status,
)
from tests.helpers import Ticks

PRINCIPAL = {"role": "admin", "tenant": "default", "token_id": None}
PG_URL = "postgresql+psycopg2://u:pw@127.0.0.1:1/none"


def add(journal: Journal, n: int, *, tenant: str = "default", kind: str = "agents.heartbeat",
        args: dict[str, Any] | None = None) -> int:
    return journal.append(op_id=f"op-{n}", tenant=tenant, kind=kind, principal=PRINCIPAL,
                          args={"agent_id": f"a{n}"} if args is None else args,
                          correlation_id=f"c-{n}")


def raw(journal: Journal, sql: str, *params: Any) -> None:
    """Edit journal.db behind arbiter's back."""
    db = sqlite3.connect(journal.path)
    try:
        with db:
            db.execute(sql, params)
    finally:
        db.close()


def entry(**fields: Any) -> Entry:
    base: dict[str, Any] = {
        "seq": 1, "op_id": "op-1", "tenant": "default", "kind": "agents.heartbeat",
        "principal": PRINCIPAL, "args": {"agent_id": "a1"}, "correlation_id": "c-1",
        "created_at": 1_000.0, "state": PENDING, "error": None, "attempts": 0}
    base.update(fields)
    return Entry(**base)


# ---------------------------------------------------------------------------- damaged files


def test_a_file_that_is_not_a_journal_is_one_exit_10_line_and_is_kept(tmp_path: Path) -> None:
    """A damaged journal may hold acknowledged writes: arbiter says what to do, and leaves it."""
    path = tmp_path / "journal.db"
    junk = b"this is not a SQLite database, " * 200
    path.write_bytes(junk)
    with pytest.raises(StorageUnavailable) as caught:
        Journal(path)
    assert caught.value.exit_code == 10
    assert caught.value.message == (
        f"the journal {path} cannot be read (file is not a database): it may hold "
        "acknowledged writes; move it (with its -wal and -shm files) aside to keep them for "
        "recovery, and arbiter starts a new journal")
    assert caught.value.__suppress_context__ is True  # no sqlite3 traceback chained on
    assert path.read_bytes() == junk


# ---------------------------------------------------------------------------- HMAC


def test_the_hmac_is_of_a_versioned_canonical_json_array_a_reader_can_recompute(
        journal: Journal) -> None:
    """SPEC §4.1: HMAC-SHA256 under the host key of
    ``["arbiter-journal-v1", seq, op_id, tenant, kind, principal, args, correlation, time]``
    in compact JSON, principal and arguments as their stored (sorted, compact) text."""
    seq = add(journal, 1, args={"z": 1, "agent_id": "é"})
    (stored,) = journal.entries()
    body = json.dumps(["arbiter-journal-v1", seq, "op-1", "default", "agents.heartbeat",
                       '{"role":"admin","tenant":"default","token_id":null}',
                       '{"agent_id":"\\u00e9","z":1}', "c-1", 1_000.0],
                      separators=(",", ":"))
    expected = hmac.new(journal.key, body.encode(), hashlib.sha256).hexdigest()
    assert stored.mac == expected
    assert journal.mac(stored) == expected
    assert entry_mac(journal.key, stored.signed_fields()) == expected


def test_the_hmac_encodes_text_fields_as_ascii_escapes(journal: Journal) -> None:
    """Non-ASCII in a tenant, op id or correlation id is signed as its \\u escape, so the
    bytes signed do not depend on an encoder's defaults."""
    seq = journal.append(op_id="op-é", tenant="équipe", kind="agents.heartbeat",
                         principal=PRINCIPAL, args={}, correlation_id="c-é")
    body = ('["arbiter-journal-v1",' + str(seq) + ',"op-\\u00e9","\\u00e9quipe",'
            '"agents.heartbeat","{\\"role\\":\\"admin\\",\\"tenant\\":\\"default\\",'
            '\\"token_id\\":null}","{}","c-\\u00e9",1000.0]')
    (stored,) = journal.entries()
    assert stored.mac == hmac.new(journal.key, body.encode(), hashlib.sha256).hexdigest()


@pytest.mark.parametrize("created_at", [math.nan, math.inf, -math.inf])
def test_entry_mac_refuses_a_time_that_is_not_a_finite_number(created_at: float) -> None:
    with pytest.raises(ValueError):
        entry_mac(b"k" * 32, (1, "op", "t", "k", "{}", "{}", None, created_at))


def test_signed_fields_use_the_stored_text_and_fall_back_to_canonical_json() -> None:
    built = entry(principal={"tenant": "t", "role": "admin"}, args={"b": 2, "a": 1})
    assert built.signed_fields() == (1, "op-1", "default", "agents.heartbeat",
                                     '{"role":"admin","tenant":"t"}', '{"a":1,"b":2}', "c-1",
                                     1_000.0)
    read = entry(stored=("P", "A"))
    assert read.signed_fields()[4:6] == ("P", "A")


def test_verify_is_false_for_a_mac_that_is_not_text_or_fields_no_append_writes(
        journal: Journal) -> None:
    add(journal, 1)
    (good,) = journal.entries()
    assert journal.verify(good) is True
    for mac in (None, 123, good.mac.encode()):  # type: ignore[union-attr]
        assert journal.verify(entry(seq=good.seq, mac=mac, stored=good.stored)) is False
    # a time that is not a finite number cannot be encoded: not verified, never raised
    assert journal.verify(entry(created_at=math.nan, mac=good.mac)) is False
    assert journal.verify(entry(created_at=math.inf, mac=good.mac)) is False


def test_the_key_defaults_to_journal_key_beside_the_file(tmp_path: Path) -> None:
    opened = Journal(tmp_path / "k" / "journal.db")
    try:
        assert not (tmp_path / "k" / "journal.key").exists()  # made on first use only
        key = opened.key
        assert (tmp_path / "k" / "journal.key").is_file()
        assert opened.key is key
    finally:
        opened.close()


def test_open_journal_uses_the_data_dirs_key_and_the_primarys_folder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    url = "postgresql+psycopg2://u:pw@db.example:5432/one"
    opened = open_journal(data, url, max_entries=7, clock=lambda: 42.0)
    try:
        assert opened.path == data / "resilience" / store_key(url) / "journal.db"
        assert opened.path.parent == resilience_dir(data, url)
        assert opened.max_entries == 7
        seq = add(opened, 1)
        assert opened.by_seq(seq).created_at == 42.0  # type: ignore[union-attr]
        key = opened.key
    finally:
        opened.close()
    other = open_journal(data, "postgresql+psycopg2://u:pw@db.example:5432/two", max_entries=1)
    try:
        assert other.key == key  # one key per host (data_dir), not per primary
        assert other.path.parent != opened.path.parent
    finally:
        other.close()


def test_private_resilience_dir_makes_the_folder_0700(tmp_path: Path) -> None:
    folder = private_resilience_dir(tmp_path / "data", PG_URL)
    assert folder == resilience_dir(tmp_path / "data", PG_URL)
    assert folder.is_dir() and folder.stat().st_mode & 0o777 == 0o700
    assert folder.parent.stat().st_mode & 0o777 == 0o700


# ---------------------------------------------------------------------------- stamps


def test_an_entry_is_never_stamped_before_the_one_before_it(journal: Journal,
                                                           ticks: Ticks) -> None:
    """A9: a clock stepping back stamps the newest entry's time; forward, the clock's."""
    first = add(journal, 1)
    ticks.now = 900.0
    second = add(journal, 2)
    ticks.now = 1_200.5
    third = add(journal, 3)
    stamps = [journal.by_seq(s).created_at for s in (first, second, third)]  # type: ignore[union-attr]
    assert stamps == [1_000.0, 1_000.0, 1_200.5]
    assert all(journal.verify(e) for e in journal.entries())


def test_the_first_stamp_is_the_clocks_and_a_forged_time_is_not_a_floor(journal: Journal,
                                                                        ticks: Ticks) -> None:
    """Rows whose time is not a number (damaged or forged) do not hold new stamps back."""
    raw(journal, "INSERT INTO entries (op_id, tenant, kind, principal, args, created_at) "
        "VALUES ('forged', 'default', 'agents.heartbeat', '{}', '{}', 'zzz')")
    ticks.now = 5.0
    seq = add(journal, 1)
    assert journal.by_seq(seq).created_at == 5.0  # type: ignore[union-attr]
    raw(journal, "DELETE FROM entries")
    ticks.now = -3.0
    seq = add(journal, 2)
    assert journal.by_seq(seq).created_at == -3.0  # type: ignore[union-attr]


def test_an_integer_time_in_the_file_is_a_floor_too(journal: Journal, ticks: Ticks) -> None:
    raw(journal, "INSERT INTO entries (op_id, tenant, kind, principal, args, created_at) "
        "VALUES ('old', 'default', 'agents.heartbeat', '{}', '{}', 2000)")
    seq = add(journal, 1)
    stamped = journal.by_seq(seq).created_at  # type: ignore[union-attr]
    assert stamped == 2000.0 and isinstance(stamped, float)


# ---------------------------------------------------------------------------- ages and rows


@pytest.mark.parametrize(("created_at", "age"), [
    (1_000.0, 0.0), (990, 10.0), (998.76543, 1.235), (1_500.0, 0.0),
    (True, None), (False, None), ("990", None), (None, None),
    (math.nan, None), (math.inf, None), (-math.inf, None),
])
def test_an_age_is_seconds_rounded_never_negative_and_none_for_a_non_number(
        created_at: Any, age: float | None) -> None:
    assert entry(created_at=created_at).to_dict(1_000.0)["age_s"] == age


def test_to_dict_lists_what_an_operator_needs() -> None:
    assert entry(state=CONFLICT, error="boom", attempts=2).to_dict(1_002.0) == {
        "seq": 1, "op_id": "op-1", "tenant": "default", "kind": "agents.heartbeat",
        "state": CONFLICT, "error": "boom", "attempts": 2, "age_s": 2.0,
        "correlation_id": "c-1"}


def test_oldest_age_skips_conflicts_and_times_that_are_not_numbers(journal: Journal,
                                                                   ticks: Ticks) -> None:
    assert journal.oldest_age_s() is None
    raw(journal, "INSERT INTO entries (op_id, tenant, kind, principal, args, created_at) "
        "VALUES ('forged', 'default', 'agents.heartbeat', '{}', '{}', 'aaa')")
    assert journal.oldest_age_s() is None
    ticks.now = 100.0
    old = add(journal, 1)
    ticks.now = 400.0
    add(journal, 2)
    ticks.now = 1_000.0
    assert journal.oldest_age_s() == 900.0
    journal.conflict(old, "conflict")
    assert journal.oldest_age_s() == 600.0


def test_a_row_with_odd_column_types_reads_as_text_and_no_correlation(journal: Journal) -> None:
    add(journal, 1)
    raw(journal, "UPDATE entries SET op_id = x'6f70', tenant = x'74', kind = x'6b', "
        "correlation_id = x'63'")  # blobs: TEXT affinity leaves them bytes
    (read,) = journal.entries()
    assert (read.op_id, read.tenant, read.kind) == ("b'op'", "b't'", "b'k'")
    assert read.correlation_id is None
    assert read.stored == ('{"role":"admin","tenant":"default","token_id":null}',
                           '{"agent_id":"a1"}')
    assert journal.verify(read) is False


# ---------------------------------------------------------------------------- replay outcomes


def test_failed_counts_up_to_its_limit_and_says_why_it_gave_up(journal: Journal) -> None:
    assert MAX_ATTEMPTS == 3
    seq = add(journal, 1)
    assert journal.failed(seq, "slow", limit=2) is False
    (read,) = journal.entries()
    assert (read.state, read.attempts, read.error) == (PENDING, 1, "slow")
    assert journal.failed(seq, "slower", limit=2) is True
    (read,) = journal.entries()
    assert (read.state, read.attempts, read.error) == (
        CONFLICT, 2, "slower (failed 2 replays; kept as a conflict)")
    assert journal.failed(999, "none") is False


def test_a_failure_note_is_truncated_to_1000_characters(journal: Journal) -> None:
    seq = add(journal, 1)
    assert journal.failed(seq, "x" * 2_000) is False
    assert journal.entries()[0].error == "x" * 1_000
    assert journal.failed(seq, "y" * 2_000, limit=2) is True
    assert journal.entries()[0].error == "y" * 1_000


def test_conflict_counts_the_attempt_and_attempted_keeps_the_state(journal: Journal) -> None:
    seq = add(journal, 1)
    journal.attempted(seq, "once")
    journal.conflict(seq, "then a conflict")
    (read,) = journal.entries()
    assert (read.state, read.attempts, read.error) == (CONFLICT, 2, "then a conflict")
    journal.attempted(seq, "again")
    assert (journal.entries()[0].state, journal.entries()[0].attempts) == (CONFLICT, 3)


def test_applied_deletes_only_its_entry(journal: Journal) -> None:
    first, second = add(journal, 1), add(journal, 2)
    journal.applied(first)
    assert [e.seq for e in journal.entries()] == [second]


def test_retry_leaves_a_pending_entry_and_a_missing_seq_alone(journal: Journal) -> None:
    seq = add(journal, 1)
    raw(journal, "UPDATE entries SET mac = 'unsigned', attempts = 2, error = 'slow'")
    journal.retry(seq)
    journal.retry(seq + 1)
    (read,) = journal.entries()
    assert (read.state, read.attempts, read.error, read.mac) == (PENDING, 2, "slow", "unsigned")


def test_conflicting_decision_ids_are_the_routes_that_conflicted_before_a_seq(
        journal: Journal) -> None:
    """Outcomes of a decision whose journaled route conflicted are about nothing the
    database holds."""
    big = Journal(journal.path, max_entries=100)
    try:
        def route(n: int, args: Any, *, tenant: str = "acme", kind: str = "routing.route",
                  conflict: bool = True) -> int:
            seq = big.append(op_id=f"r-{n}", tenant=tenant, kind=kind, principal=PRINCIPAL,
                             args={} if not isinstance(args, dict) else args)
            if not isinstance(args, dict):
                raw(big, "UPDATE entries SET args = ? WHERE seq = ?", args, seq)
            if conflict:
                big.conflict(seq, "conflict")
            return seq

        route(1, {"decision": {"decision_id": "d1"}})
        route(2, {"decision": {"decision_id": "d-pending"}}, conflict=False)
        route(3, {"decision": {"decision_id": "d-other"}}, tenant="other")
        route(4, {"decision": {"decision_id": "d-kind"}}, kind="routing.outcome")
        route(5, "not json")
        route(6, "[1, 2]")
        route(7, {"decision": "not an object"})
        route(8, {"decision": {"decision_id": 17}})
        route(9, {"nothing": True})
        later = route(10, {"decision": {"decision_id": "d10"}})
        assert big.conflicting_decision_ids("acme", later) == {"d1"}
        assert big.conflicting_decision_ids("acme", later + 1) == {"d1", "d10"}
        assert big.conflicting_decision_ids("other", later + 1) == {"d-other"}
        assert big.conflicting_decision_ids("acme", 1) == set()
    finally:
        big.close()


# ---------------------------------------------------------------------------- status


def settings_for(tmp_path: Path, url: str = PG_URL, **extra: str) -> Any:
    environ = {"ARBITER_DATA_DIR": str(tmp_path / "data"),
               "ARBITER_CONFIG_DIR": str(tmp_path / "config"),
               "ARBITER_DATABASE__URL": url, "HOME": str(tmp_path / "home"), **extra}
    return load_settings(environ=environ)


def with_snapshot(settings: Any) -> None:
    folder = resilience_dir(settings.paths.data_dir, settings.database_url)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "snapshot.db").write_bytes(b"")


def test_a_journal_that_cannot_be_opened_is_unreadable_not_empty(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    with_snapshot(settings)
    path = resilience_dir(settings.paths.data_dir, settings.database_url) / "journal.db"
    path.write_bytes(b"not a database " * 100)
    status = resilience_status(settings)
    assert status["journal_readable"] is False
    assert status["journal_problem"].startswith("the journal cannot be opened: the journal ")
    assert "cannot be read (file is not a database)" in status["journal_problem"]
    assert (status["backlog"], status["journal_writable"], status["snapshot"]) == (0, False, True)


def test_a_journal_that_cannot_be_read_says_so(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    with_snapshot(settings)
    journal = open_for(settings)
    assert journal is not None
    add(journal, 1)
    journal.close()
    db = sqlite3.connect(journal.path)
    db.execute("ALTER TABLE entries RENAME COLUMN state TO status")
    db.close()
    status = resilience_status(settings)
    assert status["journal_readable"] is False
    assert status["journal_problem"] == "the journal cannot be read: no such column: state"
    assert (status["backlog"], status["journal_writable"], status["degraded"]) == (0, False, False)


def test_the_status_reports_the_oldest_pending_age_and_full_wins_over_no_snapshot(
        tmp_path: Path) -> None:
    settings = settings_for(tmp_path, ARBITER_RESILIENCE__JOURNAL__MAX_ENTRIES="1")
    journal = open_for(settings)
    assert journal is not None
    try:
        add(journal, 1)
    finally:
        journal.close()
    status = resilience_status(settings)
    assert (status["backlog"], status["conflicts"], status["degraded"]) == (1, 0, True)
    assert isinstance(status["oldest_age_s"], float) and status["oldest_age_s"] >= 0
    assert status["journal_writable"] is False and status["journal_readable"] is True
    assert status["journal_problem"] == "the journal is full (resilience.journal.max_entries)"


def test_the_status_says_why_writes_need_a_snapshot(tmp_path: Path) -> None:
    status = resilience_status(settings_for(tmp_path))
    assert status["journal_problem"] == (
        "no local snapshot yet (it is taken after the first command that reaches the "
        "database), so writes would exit 10")
    assert status["journal_writable"] is False


def test_the_status_lists_other_primaries_journals_that_hold_entries(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    data = settings.paths.data_dir
    other_url = "postgresql+psycopg2://u:pw@127.0.0.1:1/other"
    other = open_journal(data, other_url, max_entries=10)
    try:
        add(other, 1)
    finally:
        other.close()
    mine = open_for(settings)
    assert mine is not None
    try:
        add(mine, 1)
    finally:
        mine.close()
    stranded = resilience_status(settings)["stranded"]
    assert [s["key"] for s in stranded] == [store_key(other_url)]
    assert stranded[0]["pending"] == 1
    sqlite_status = resilience_status(settings_for(tmp_path, f"sqlite:///{tmp_path / 'a.db'}"))
    assert {s["key"] for s in sqlite_status["stranded"]} == {store_key(other_url),
                                                            store_key(PG_URL)}
