"""The resilience layer's pure parts (SPEC §7): journal, records, journal args, fault
classification and retries.

Nothing here touches a database server: the journal is a SQLite file in ``tmp_path``, services
run on the in-memory store, driver errors are constructed (``psycopg2.errors.lookup(code)``
classes and plain ``OperationalError``s), and ``guarded`` gets a fake breaker, a fake clock
and a recording ``sleep``, so no test waits for a backoff.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg2
import psycopg2.errors
import pytest
import sqlalchemy.exc
from hypothesis import given
from hypothesis import strategies as st

from arbiter_cli.adapters.memory import MemoryUnitOfWorkFactory
from arbiter_cli.adapters.sql import deadline as deadline_module
from arbiter_cli.adapters.sql.deadline import Deadline
from arbiter_cli.adapters.sql.faults import Fault, classify, driver_error
from arbiter_cli.config import DEFAULT_LANGUAGES, DEFAULT_TASK_TYPES, load_settings
from arbiter_cli.domain.agents import RegistryPolicy, TaskResult
from arbiter_cli.domain.principal import Principal
from arbiter_cli.domain.routing import Decision, Outcome, RoutingPolicy
from arbiter_cli.errors import (
    ArbiterError,
    ConfigInvalid,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    StorageUnavailable,
    Unauthenticated,
)
from arbiter_cli.resilience.breaker import BreakerOpen
from arbiter_cli.resilience.gateway import Done, Durability
from arbiter_cli.resilience.journal import (
    CONFLICT,
    PENDING,
    Journal,
    JournalFull,
    open_for,
    resilience_dir,
    resilience_status,
    store_key,
)
from arbiter_cli.resilience.records import (
    Kind,
    decision_from,
    decision_record,
    outcome_from,
    principal_from,
    principal_record,
    task_result_from,
    task_result_record,
)
from arbiter_cli.resilience.retry import MAX_ATTEMPTS, guarded, unavailable_from
from arbiter_cli.resilience.services import (
    ResilientAgents,
    ResilientRouting,
    Sides,
    journal_args,
)
from arbiter_cli.services.agents import AgentService
from arbiter_cli.services.routing import Recorded, Routed, RoutingService
from arbiter_cli.tools.setup import initialize
from tests.helpers import FakeClock, Ticks

T0 = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
ADMIN = Principal.local_admin()
ORCH = Principal(tenant="team-b", role="orchestrator", token_id="tok-1")
PG_URL = "postgresql+psycopg2://arbiter:s3cret@db.example:5432/arbiter"


def append(journal: Journal, n: int, tenant: str = "default", kind: str = "agents.heartbeat",
           **args: Any) -> int:
    return journal.append(op_id=f"op-{n}", tenant=tenant, kind=kind,
                          principal=principal_record(Principal.local_admin(tenant)),
                          args={"agent_id": f"a{n}", **args}, correlation_id=f"c-{n}")


# ============================================================================ journal


def test_append_returns_increasing_sequence_numbers_and_counts_pending(journal: Journal) -> None:
    """Each append is one pending entry with the next seq."""
    seqs = [append(journal, n) for n in range(3)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    assert journal.pending() == 3
    assert journal.conflicts() == 0


def test_pending_counts_per_tenant(journal: Journal) -> None:
    """pending(tenant) counts only that tenant's entries; pending() counts all of them."""
    append(journal, 1, tenant="default")
    append(journal, 2, tenant="team-b")
    append(journal, 3, tenant="team-b")
    assert journal.pending("default") == 1
    assert journal.pending("team-b") == 2
    assert journal.pending("nobody") == 0
    assert journal.pending() == 3


def test_next_pending_walks_in_append_order(journal: Journal) -> None:
    """Replay order is append order, whatever the tenant."""
    for n, tenant in enumerate(["b", "a", "b", "c"]):
        append(journal, n, tenant=tenant)
    seen: list[str] = []
    after = 0
    while (entry := journal.next_pending(after)) is not None:
        seen.append(entry.op_id)
        after = entry.seq
    assert seen == ["op-0", "op-1", "op-2", "op-3"]


def test_an_entry_keeps_its_principal_args_and_correlation_id(journal: Journal) -> None:
    """What replay needs comes back exactly as appended (JSON round trip)."""
    principal = Principal(tenant="team-b", role="orchestrator", token_id="tok-9")
    journal.append(op_id="op-x", tenant="team-b", kind="agents.update",
                   principal=principal_record(principal),
                   args={"agent_id": "a1", "raw": {"capacity": 3, "languages": ["Go", "Python"],
                                                   "name": None}},
                   correlation_id="corr-1")
    entry = journal.next_pending()
    assert entry is not None
    assert (entry.op_id, entry.tenant, entry.kind) == ("op-x", "team-b", "agents.update")
    assert principal_from(entry.principal) == principal
    assert entry.args == {"agent_id": "a1", "raw": {"capacity": 3, "languages": ["Go", "Python"],
                                                    "name": None}}
    assert entry.correlation_id == "corr-1"
    assert (entry.state, entry.error, entry.attempts) == (PENDING, None, 0)
    assert entry.created_at == 1_000.0


def test_applied_removes_the_entry(journal: Journal) -> None:
    """An applied entry is gone: neither pending nor listed."""
    first = append(journal, 1)
    append(journal, 2)
    journal.applied(first)
    assert journal.pending() == 1
    assert [e.op_id for e in journal.entries()] == ["op-2"]
    assert journal.has_op("op-1") is False
    assert journal.has_op("op-2") is True


def test_a_conflict_stays_listed_but_no_longer_pends(journal: Journal) -> None:
    """A conflict is kept with its error, skipped by replay and counted apart."""
    first = append(journal, 1)
    second = append(journal, 2)
    journal.conflict(first, "conflict: agent 'a1' already exists")
    assert journal.pending() == 1
    assert journal.conflicts() == 1
    entry = journal.next_pending()
    assert entry is not None and entry.seq == second
    kept = journal.entries(conflicts_only=True)
    assert [(e.seq, e.state, e.error, e.attempts) for e in kept] == [
        (first, CONFLICT, "conflict: agent 'a1' already exists", 1)]


def test_a_conflict_error_is_truncated_to_1000_characters(journal: Journal) -> None:
    seq = append(journal, 1)
    journal.conflict(seq, "x" * 5000)
    (entry,) = journal.entries(conflicts_only=True)
    assert entry.error == "x" * 1000


def test_attempted_counts_an_attempt_and_keeps_the_entry_pending(journal: Journal) -> None:
    """A failed attempt is remembered (attempts, last error); the entry still pends."""
    seq = append(journal, 1)
    journal.attempted(seq, "database unavailable")
    journal.attempted(seq, "database unavailable again")
    (entry,) = journal.entries()
    assert (entry.state, entry.attempts, entry.error) == (PENDING, 2,
                                                          "database unavailable again")
    assert journal.pending() == 1


def test_the_cap_refuses_with_exit_10_and_writes_nothing(journal: Journal) -> None:
    """Past resilience.journal.max_entries an append is JournalFull (exit 10), nothing stored."""
    for n in range(5):
        append(journal, n)
    with pytest.raises(JournalFull) as caught:
        append(journal, 99)
    assert isinstance(caught.value, StorageUnavailable)
    assert caught.value.exit_code == 10
    assert caught.value.code == "storage_unavailable"
    assert "max_entries" in caught.value.message
    assert journal.pending() == 5
    assert journal.has_op("op-99") is False


def test_check_room_refuses_at_the_cap_without_writing(journal: Journal) -> None:
    """Asked before a degraded write runs: room for one more, or JournalFull (exit 10)."""
    for n in range(4):
        append(journal, n)
    journal.check_room()  # the fifth still fits
    append(journal, 4)
    with pytest.raises(JournalFull) as caught:
        journal.check_room()
    assert caught.value.exit_code == 10
    assert journal.pending() == 5


def test_conflicts_count_against_the_cap(journal: Journal) -> None:
    """Kept conflicts still occupy the journal: nothing is dropped to make room."""
    seqs = [append(journal, n) for n in range(5)]
    journal.conflict(seqs[0], "conflict")
    with pytest.raises(JournalFull):
        append(journal, 99)
    journal.applied(seqs[1])
    assert append(journal, 100) > seqs[-1]


def test_a_cap_of_one_holds_exactly_one_entry(tmp_path: Path) -> None:
    """The boundary: max_entries entries fit, one more does not."""
    small = Journal(tmp_path / "one.db", max_entries=1)
    try:
        append(small, 1)
        with pytest.raises(JournalFull):
            append(small, 2)
    finally:
        small.close()


def test_an_unencodable_value_is_refused_before_anything_is_written(journal: Journal) -> None:
    """NaN is not JSON: the append fails and leaves no half entry."""
    with pytest.raises(ValueError):
        journal.append(op_id="op-nan", tenant="default", kind="agents.record",
                       principal=principal_record(ADMIN), args={"quality": math.nan})
    assert journal.pending() == 0
    assert journal.has_op("op-nan") is False
    append(journal, 1)  # the connection is usable afterwards (the transaction was rolled back)
    assert journal.pending() == 1


def test_oldest_age_uses_the_injected_clock_and_only_pending_entries(journal: Journal,
                                                                    ticks: Ticks) -> None:
    """The age of the oldest *pending* entry; None when nothing pends."""
    assert journal.oldest_age_s() is None
    first = append(journal, 1)
    ticks.now += 5
    second = append(journal, 2)
    ticks.now += 7.25
    assert journal.oldest_age_s() == 12.25
    journal.applied(first)
    assert journal.oldest_age_s() == 7.25
    journal.conflict(second, "conflict")
    assert journal.oldest_age_s() is None


def test_oldest_age_is_never_negative(journal: Journal, ticks: Ticks) -> None:
    """A clock that stepped back reports 0, not a negative age."""
    append(journal, 1)
    ticks.now -= 30
    assert journal.oldest_age_s() == 0.0


def test_entries_lists_newest_first_with_limit_cursor_and_filter(journal: Journal,
                                                                  ticks: Ticks) -> None:
    """entries(): newest first (SPEC §0); limit 0 means all; before pages; conflicts_only filters."""
    seqs = []
    for n in range(4):
        seqs.append(append(journal, n, tenant="default" if n % 2 else "team-b"))
        ticks.now += 1
    journal.conflict(seqs[2], "conflict: boom")
    newest_first = seqs[::-1]
    assert [e.seq for e in journal.entries()] == newest_first
    assert [e.seq for e in journal.entries(limit=2)] == newest_first[:2]
    assert [e.seq for e in journal.entries(limit=2, before=newest_first[1])] == newest_first[2:]
    assert [e.seq for e in journal.entries(limit=0)] == newest_first
    assert [e.seq for e in journal.entries(conflicts_only=True)] == [seqs[2]]
    assert journal.entries(conflicts_only=True, limit=1)[0].seq == seqs[2]


def test_entry_to_dict_shape_and_age(journal: Journal, ticks: Ticks) -> None:
    """The listing row: seq, op id, kind, tenant, state, error, attempts, age and correlation."""
    append(journal, 1, tenant="team-b", kind="agents.remove")
    (entry,) = journal.entries()
    row = entry.to_dict(now=ticks.now + 3.14159)
    assert row == {"seq": entry.seq, "op_id": "op-1", "tenant": "team-b",
                   "kind": "agents.remove", "state": PENDING, "error": None, "attempts": 0,
                   "age_s": 3.142, "correlation_id": "c-1"}
    assert entry.to_dict(now=ticks.now - 10)["age_s"] == 0.0


def test_entries_survive_reopening_the_file(tmp_path: Path) -> None:
    """Durable: a new Journal on the same file sees what an earlier one appended."""
    path = tmp_path / "journal.db"
    first = Journal(path)
    append(first, 1)
    first.close()
    again = Journal(path)
    try:
        assert [e.op_id for e in again.entries()] == ["op-1"]
    finally:
        again.close()


def test_the_journal_file_is_synchronous_full(journal: Journal) -> None:
    """synchronous=FULL (2): an acknowledged entry is on disk (SPEC §7)."""
    level = journal._db.execute("PRAGMA synchronous").fetchone()[0]
    assert level == 2


def test_an_op_id_is_stored_once(journal: Journal) -> None:
    """op_id is unique: a second append of the same op fails and adds nothing."""
    append(journal, 1)
    with pytest.raises(sqlite3.IntegrityError):
        append(journal, 1)
    assert journal.pending() == 1


def test_entries_are_stored_as_canonical_json(journal: Journal) -> None:
    """Sorted keys, no spaces: the same op always reads back as the same text."""
    journal.append(op_id="op-1", tenant="default", kind="agents.update",
                   principal={"tenant": "default", "role": "admin", "token_id": None},
                   args={"raw": {"b": [1, 2], "a": None}, "agent_id": "a1"})
    raw = sqlite3.connect(journal.path)
    try:
        principal, args = raw.execute("SELECT principal, args FROM entries").fetchone()
    finally:
        raw.close()
    assert args == '{"agent_id":"a1","raw":{"a":null,"b":[1,2]}}'
    assert principal == '{"role":"admin","tenant":"default","token_id":null}'


def test_journal_defaults(tmp_path: Path) -> None:
    """SPEC §7: a cap of 100 000 entries by default; a listing shows 100 unless asked."""
    opened = Journal(tmp_path / "d.db")
    try:
        assert opened.path == tmp_path / "d.db"
        assert opened.max_entries == 100_000
        for n in range(101):
            append(opened, n)
        assert len(opened.entries()) == 100
        assert len(opened.entries(limit=0)) == 101
    finally:
        opened.close()


def test_a_journal_serves_a_background_thread(journal: Journal) -> None:
    """`arbiter serve` replays from a background thread on the journal the process opened."""
    import threading

    failures: list[BaseException] = []

    def work() -> None:
        try:
            journal.applied(append(journal, 1))
            append(journal, 2)
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread below
            failures.append(exc)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join(timeout=10)
    assert failures == []
    assert [e.op_id for e in journal.entries()] == ["op-2"]


def test_journal_full_says_how_full_and_what_to_do(journal: Journal) -> None:
    for n in range(5):
        append(journal, n)
    for refuse in (lambda: append(journal, 9), journal.check_room):
        with pytest.raises(JournalFull) as caught:
            refuse()
        assert "journal full (5 entries" in caught.value.message
        assert caught.value.message.endswith("run `arbiter journal replay`")


def test_an_attempt_error_is_truncated_to_1000_characters(journal: Journal) -> None:
    seq = append(journal, 1)
    journal.attempted(seq, "y" * 1500)
    (entry,) = journal.entries()
    assert entry.error == "y" * 1000


def test_oldest_age_is_rounded_to_milliseconds(journal: Journal, ticks: Ticks) -> None:
    append(journal, 1)
    ticks.now += 12.34567
    assert journal.oldest_age_s() == 12.346


def test_open_for_opens_the_journal_of_the_primary(tmp_path: Path) -> None:
    """The journal status reads is the one degraded writes append to."""
    url = "postgresql+psycopg2://u:pw@127.0.0.1:1/none"
    settings = settings_for(tmp_path, url)
    journal = open_for(settings)
    assert journal is not None
    try:
        assert journal.path == resilience_dir(settings.paths.data_dir, url) / "journal.db"
    finally:
        journal.close()


def test_store_key_ignores_the_password_and_tells_databases_apart() -> None:
    """One key per primary: a 16-hex name that never depends on (or shows) the password."""
    key = store_key(PG_URL)
    assert len(key) == 16 and int(key, 16) >= 0
    assert store_key(PG_URL.replace("s3cret", "other")) == key
    assert store_key(PG_URL.replace("/arbiter", "/other")) != key
    assert store_key(PG_URL.replace("db.example", "db2.example")) != key
    assert "s3cret" not in str(resilience_dir(Path("/data"), PG_URL))
    assert resilience_dir(Path("/data"), PG_URL) == Path("/data") / "resilience" / key


# ---------------------------------------------------------------------------- status


def settings_for(tmp_path: Path, url: str, **extra: str) -> Any:
    environ = {"ARBITER_DATA_DIR": str(tmp_path / "data"),
               "ARBITER_CONFIG_DIR": str(tmp_path / "config"),
               "ARBITER_DATABASE__URL": url, "HOME": str(tmp_path / "home"), **extra}
    return load_settings(environ=environ)


def test_a_sqlite_primary_has_no_journal(tmp_path: Path) -> None:
    """SPEC §7: a local SQLite primary has no journal and reports zeros."""
    settings = settings_for(tmp_path, f"sqlite:///{tmp_path / 'a.db'}")
    assert open_for(settings) is None
    assert resilience_status(settings) == {
        "backlog": 0, "conflicts": 0, "oldest_age_s": None, "journal_writable": False,
        "journal_problem": None, "journal_readable": True, "snapshot": False,
        "degraded": False, "breaker": {"state": "closed", "opened_at": None}, "stranded": []}


def with_snapshot(settings: Any) -> None:
    """Something at the snapshot's path (the status only asks whether one exists)."""
    folder = resilience_dir(settings.paths.data_dir, settings.database_url)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "snapshot.db").write_bytes(b"")


def test_status_of_an_empty_journal_on_a_network_primary(tmp_path: Path) -> None:
    """No entries, breaker closed, a snapshot: writable, not degraded, no database I/O."""
    settings = settings_for(tmp_path, "postgresql+psycopg2://u:pw@127.0.0.1:1/none")
    with_snapshot(settings)
    status = resilience_status(settings)
    assert status == {"backlog": 0, "conflicts": 0, "oldest_age_s": None,
                      "journal_writable": True, "journal_problem": None,
                      "journal_readable": True, "snapshot": True, "degraded": False,
                      "breaker": {"state": "closed", "opened_at": None},
                      "stranded": []}


def test_without_a_snapshot_the_journal_cannot_take_writes(tmp_path: Path) -> None:
    """SPEC §7.1 "Health tells the truth": a degraded write needs the snapshot first."""
    settings = settings_for(tmp_path, "postgresql+psycopg2://u:pw@127.0.0.1:1/none")
    status = resilience_status(settings)
    assert (status["journal_writable"], status["snapshot"]) == (False, False)
    assert "no local snapshot" in status["journal_problem"]
    with_snapshot(settings)
    assert resilience_status(settings)["journal_writable"] is True


def test_status_counts_backlog_and_conflicts_and_reports_degraded(tmp_path: Path) -> None:
    """A backlog makes the primary degraded; at the cap the journal is no longer writable."""
    settings = settings_for(tmp_path, "postgresql+psycopg2://u:pw@127.0.0.1:1/none",
                            ARBITER_RESILIENCE__JOURNAL__MAX_ENTRIES="3")
    with_snapshot(settings)
    journal = open_for(settings)
    assert journal is not None
    try:
        assert journal.max_entries == 3
        append(journal, 1)
        seq = append(journal, 2)
        journal.conflict(seq, "conflict")
        status = resilience_status(settings)
        assert (status["backlog"], status["conflicts"]) == (1, 1)
        assert status["oldest_age_s"] is not None and status["oldest_age_s"] >= 0
        assert status["degraded"] is True and status["journal_writable"] is True
        append(journal, 3)
        full = resilience_status(settings)
        assert full["journal_writable"] is False and "full" in full["journal_problem"]
    finally:
        journal.close()


def test_only_conflicts_do_not_make_the_primary_degraded(tmp_path: Path) -> None:
    """Conflicts wait for an operator; they do not mean the primary is unavailable."""
    settings = settings_for(tmp_path, "postgresql+psycopg2://u:pw@127.0.0.1:1/none")
    journal = open_for(settings)
    assert journal is not None
    try:
        journal.conflict(append(journal, 1), "conflict")
    finally:
        journal.close()
    status = resilience_status(settings)
    assert (status["backlog"], status["conflicts"], status["degraded"]) == (0, 1, False)


# ============================================================================ HMAC, key, files


def raw_update(journal: Journal, sql: str, *params: Any) -> None:
    """Edit journal.db behind arbiter's back, as anything with write access to it could."""
    db = sqlite3.connect(journal.path)
    try:
        with db:
            db.execute(sql, params)
    finally:
        db.close()


def only(journal: Journal) -> Any:
    (entry,) = journal.entries()
    return entry


def test_every_appended_entry_is_signed_and_verifies(journal: Journal) -> None:
    """SPEC §4.1: each entry carries an HMAC under the host's key."""
    append(journal, 1)
    entry = only(journal)
    assert isinstance(entry.mac, str) and len(entry.mac) == 64
    assert journal.verify(entry) is True


@pytest.mark.parametrize(("column", "value"), [
    ("seq", 99), ("op_id", "op-other"), ("tenant", "team-b"), ("kind", "agents.remove"),
    ("principal", '{"role":"viewer","tenant":"default","token_id":"ghost0000000"}'),
    ("args", '{"agent_id":"someone-else"}'), ("correlation_id", "c-other"),
    ("created_at", 1.5),
])
def test_changing_any_field_replay_uses_breaks_the_hmac(journal: Journal, column: str,
                                                        value: Any) -> None:
    """The HMAC covers seq, op id, tenant, kind, principal, arguments, correlation id and time."""
    append(journal, 1)
    raw_update(journal, f"UPDATE entries SET {column} = ?", value)
    assert journal.verify(only(journal)) is False


def test_a_row_inserted_by_hand_does_not_verify(journal: Journal) -> None:
    """The H1 attack: a forged agents.remove claiming a viewer token that never existed."""
    raw_update(journal, "INSERT INTO entries (op_id, tenant, kind, principal, args, created_at) "
               "VALUES ('forged', 'default', 'agents.remove', "
               "'{\"role\":\"viewer\",\"tenant\":\"default\",\"token_id\":\"ghost0000000\"}', "
               "'{\"agent_id\":\"a1\"}', 1000.0)")
    forged = only(journal)
    assert forged.mac is None and journal.verify(forged) is False
    raw_update(journal, "UPDATE entries SET mac = ?", "0" * 64)
    assert journal.verify(only(journal)) is False
    raw_update(journal, "UPDATE entries SET mac = ?", "é" * 64)  # not even hex
    assert journal.verify(only(journal)) is False


def test_a_row_with_undecodable_fields_reads_and_does_not_verify(journal: Journal) -> None:
    append(journal, 1)
    raw_update(journal, "UPDATE entries SET principal = 'not json', args = '[1, 2]'")
    entry = only(journal)
    assert (entry.principal, entry.args) == ({}, {})
    assert journal.verify(entry) is False


def test_an_entry_signed_on_another_host_does_not_verify(tmp_path: Path) -> None:
    """Each host has its own key: a journal copied from elsewhere is not trusted here."""
    here = Journal(tmp_path / "here" / "journal.db")
    there = Journal(tmp_path / "there" / "journal.db")
    try:
        append(there, 1)
        (entry,) = there.entries()
        assert there.verify(entry) is True
        assert here.verify(entry) is False
        assert here.key != there.key
    finally:
        here.close()
        there.close()


def test_the_key_is_made_once_from_secrets_0600_in_a_0700_folder(tmp_path: Path) -> None:
    from arbiter_cli.resilience.files import journal_key, key_path

    path = key_path(tmp_path / "data")
    first = journal_key(path)
    assert len(first) == 32
    assert journal_key(path) == first  # read back, not made again
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["journal.key"]  # no temporary left


def test_processes_making_the_key_at_once_share_one(tmp_path: Path) -> None:
    """Two journals created at the same moment on one host must sign with the same key."""
    import multiprocessing

    from arbiter_cli.resilience.files import key_path

    path = key_path(tmp_path)
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        keys = pool.map(_make_key, [str(path)] * 8)
    assert len(set(keys)) == 1


def _make_key(path: str) -> str:
    from arbiter_cli.resilience.files import journal_key

    return journal_key(Path(path)).hex()


def test_a_damaged_key_refuses_with_exit_10_and_says_what_to_do(tmp_path: Path) -> None:
    from arbiter_cli.resilience.files import journal_key

    path = tmp_path / "journal.key"
    path.write_text("not a key\n")
    with pytest.raises(StorageUnavailable) as caught:
        journal_key(path)
    assert "damaged" in caught.value.message and "conflicts" in caught.value.message


def test_journal_files_are_0600_in_0700_folders_even_under_a_lax_umask(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SPEC §4.1 "Files": the journal, its -wal/-shm, the key and their folders."""
    import os

    from arbiter_cli.resilience.journal import open_journal

    old = os.umask(0o000)
    try:
        opened = open_journal(tmp_path / "data", PG_URL, max_entries=10)
        try:
            append(opened, 1)
        finally:
            opened.close()
    finally:
        os.umask(old)
    root = tmp_path / "data" / "resilience"
    for path in [root, *root.rglob("*")]:
        expected = 0o700 if path.is_dir() else 0o600
        assert path.stat().st_mode & 0o777 == expected, path


def test_an_older_journal_folder_and_file_are_tightened_on_open(tmp_path: Path) -> None:
    import os

    from arbiter_cli.resilience.journal import open_journal

    folder = resilience_dir(tmp_path, PG_URL)
    folder.mkdir(parents=True, mode=0o755)
    os.chmod(folder, 0o755)
    os.chmod(folder.parent, 0o755)
    db = sqlite3.connect(folder / "journal.db")
    db.close()
    os.chmod(folder / "journal.db", 0o644)
    open_journal(tmp_path, PG_URL, max_entries=10).close()
    assert (folder / "journal.db").stat().st_mode & 0o777 == 0o600
    assert folder.stat().st_mode & 0o777 == 0o700
    assert folder.parent.stat().st_mode & 0o777 == 0o700


def test_opening_a_journal_never_tightens_the_data_dir_or_above(tmp_path: Path) -> None:
    """Only ``resilience/`` and below are arbiter's to close: the data dir (it may be a shared
    folder an operator chose) and everything above it keep their modes."""
    import os

    from arbiter_cli.resilience.journal import open_journal

    data = tmp_path / "shared" / "data"
    data.mkdir(parents=True)
    for folder in (data, data.parent):
        os.chmod(folder, 0o755)
    open_journal(data, PG_URL, max_entries=10).close()
    assert data.stat().st_mode & 0o777 == 0o755
    assert data.parent.stat().st_mode & 0o777 == 0o755
    assert (data / "resilience").stat().st_mode & 0o777 == 0o700


def test_a_journal_from_before_hmacs_opens_and_its_entries_do_not_verify(tmp_path: Path) -> None:
    """An older arbiter's journal gains the column; its unsigned entries are not trusted."""
    path = tmp_path / "journal.db"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE entries (seq INTEGER PRIMARY KEY AUTOINCREMENT, op_id TEXT NOT NULL UNIQUE,
            tenant TEXT NOT NULL, kind TEXT NOT NULL, principal TEXT NOT NULL, args TEXT NOT NULL,
            correlation_id TEXT, created_at REAL NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending', error TEXT,
            attempts INTEGER NOT NULL DEFAULT 0);
        INSERT INTO entries (op_id, tenant, kind, principal, args, created_at) VALUES
            ('old', 'default', 'agents.heartbeat',
             '{"role":"admin","tenant":"default","token_id":null}', '{"agent_id":"a1"}', 1.0);
    """)
    db.close()
    opened = Journal(path)
    try:
        (entry,) = opened.entries()
        assert entry.mac is None and opened.verify(entry) is False
        append(opened, 2)
        assert opened.verify(opened.entries()[0]) is True
    finally:
        opened.close()


def test_applied_many_deletes_a_batch_at_once(journal: Journal) -> None:
    seqs = [append(journal, n) for n in range(4)]
    journal.applied_many(seqs[:3])
    journal.applied_many([])
    assert [e.seq for e in journal.entries()] == [seqs[3]]


def test_three_failed_replays_make_a_pending_entry_a_conflict(journal: Journal) -> None:
    """SPEC §7.1: an entry failing three replays for a non-transient reason is a conflict."""
    seq = append(journal, 1)
    assert journal.failed(seq, "too slow") is False
    assert journal.failed(seq, "too slow") is False
    assert journal.pending() == 1
    assert journal.failed(seq, "too slow") is True
    entry = only(journal)
    assert (entry.state, entry.attempts) == (CONFLICT, 3)
    assert entry.error.startswith("too slow") and "3 replays" in entry.error
    assert journal.failed(seq, "again") is False  # a conflict is not counted any more
    assert only(journal).attempts == 3


def test_drop_removes_a_conflict_and_never_a_pending_entry(journal: Journal) -> None:
    pending, conflicting = append(journal, 1), append(journal, 2)
    journal.conflict(conflicting, "conflict: boom")
    journal.drop(pending)
    journal.drop(conflicting)
    assert [e.seq for e in journal.entries()] == [pending]


def test_retry_puts_a_conflict_back_to_pending_signed_with_attempts_reset(
        journal: Journal) -> None:
    """`journal resolve --retry`: pending again, attempts 0, error cleared, a valid HMAC (the
    operator vouches for it; replay still re-admits its token)."""
    seq = append(journal, 1)
    raw_update(journal, "UPDATE entries SET mac = NULL, state = 'conflict', attempts = 3, "
               "error = 'unsigned'")
    journal.retry(seq)
    entry = only(journal)
    assert (entry.state, entry.attempts, entry.error) == (PENDING, 0, None)
    assert journal.verify(entry) is True
    assert journal.by_op("op-1") == entry and journal.by_seq(seq) == entry
    assert journal.by_op("nope") is None


# ============================================================================ re-admission


class Readmission:
    """A primary (the memory store) with tenants default and team-b and their tokens."""

    def __init__(self) -> None:
        from arbiter_cli.services.security import RatePolicy, SecurityService

        self.clock = FakeClock(T0)
        self.store = MemoryUnitOfWorkFactory(clock=self.clock)  # the primary's clock
        initialize(self.store, lambda: None, self.clock)
        self.security = SecurityService(self.store, RatePolicy(), self.clock)
        self.admin = self.security.bootstrap()
        self.team_b = self.security.create_tenant("team-b")

    def issue(self, role: str, tenant: str = "default", **kwargs: Any) -> str:
        issued = self.security.issue(Principal(tenant, "admin"), role=role, name=role,
                                     expires_in_s=kwargs.get("expires_in_s"))
        return issued.record.id


@pytest.fixture
def primary_tokens() -> Readmission:
    return Readmission()


def test_readmit_takes_the_role_from_the_primarys_token_row(primary_tokens: Readmission) -> None:
    """SPEC §4.1: the journal's role is never trusted; the primary's token row decides."""
    viewer = primary_tokens.issue("viewer")
    manager = primary_tokens.issue("manager")
    admitted = primary_tokens.security.readmit("default", manager, "agents remove", T0)
    assert admitted == Principal("default", "manager", manager)
    with pytest.raises(Forbidden):
        primary_tokens.security.readmit("default", viewer, "agents remove", T0)
    assert primary_tokens.security.readmit("default", viewer, "agents list", T0).role == "viewer"


def test_readmit_refuses_a_token_that_does_not_exist_or_is_another_tenants(
        primary_tokens: Readmission) -> None:
    other = primary_tokens.team_b.record.id
    for tenant, token in (("default", "ghost0000000"), ("default", other)):
        with pytest.raises(Unauthenticated, match="does not exist in tenant 'default'"):
            primary_tokens.security.readmit(tenant, token, "agents heartbeat", T0)


def test_readmit_refuses_a_token_revoked_before_the_write_and_not_after(
        primary_tokens: Readmission) -> None:
    """Revoked before the write's time: refused; revoked after it: the write stands."""
    token = primary_tokens.issue("manager")
    primary_tokens.clock.advance(seconds=10)
    primary_tokens.security.revoke(Principal("default", "admin"), token)
    revoked_at = primary_tokens.clock.now
    with pytest.raises(Unauthenticated, match="revoked before the write"):
        primary_tokens.security.readmit("default", token, "agents update", revoked_at)
    with pytest.raises(Unauthenticated, match="revoked"):
        primary_tokens.security.readmit("default", token, "agents update",
                                        revoked_at + timedelta(seconds=5))
    before = primary_tokens.security.readmit("default", token, "agents update",
                                             revoked_at - timedelta(milliseconds=1))
    assert before.token_id == token


def test_readmit_refuses_a_token_expired_before_the_write(primary_tokens: Readmission) -> None:
    token = primary_tokens.issue("orchestrator", expires_in_s=60)
    expires = T0 + timedelta(seconds=60)
    with pytest.raises(Unauthenticated, match="expired"):
        primary_tokens.security.readmit("default", token, "route task", expires)
    assert primary_tokens.security.readmit(
        "default", token, "route task", expires - timedelta(seconds=1)).token_id == token


def test_a_write_made_without_a_token_is_admitted_only_on_a_database_without_tokens() -> None:
    """security.enabled = false wrote it: admitted as admin of its tenant while the primary
    holds no token at all (a throwaway database), refused once any token exists."""
    from arbiter_cli.services.security import RatePolicy, SecurityService

    clock = FakeClock(T0)
    store = MemoryUnitOfWorkFactory()
    initialize(store, lambda: None, clock)
    security = SecurityService(store, RatePolicy(), clock)
    assert security.readmit("default", None, "agents remove", T0) == Principal(
        "default", "admin", None)
    security.bootstrap()
    with pytest.raises(Unauthenticated, match="without a token"):
        security.readmit("default", None, "agents register", T0)


def test_readmit_reads_each_token_once_per_replay_and_decides_the_same(
        primary_tokens: Readmission) -> None:
    """``seen`` spares a transaction per entry; a revocation after the rows were read is later
    than every entry of that replay, so the decisions are the ones a fresh read gives."""
    token = primary_tokens.issue("manager")
    seen: dict[str | None, Any] = {}
    first = primary_tokens.security.readmit("default", token, "agents update", T0, seen=seen)
    assert set(seen) == {token}
    primary_tokens.clock.advance(seconds=5)
    primary_tokens.security.revoke(Principal("default", "admin"), token)  # after T0
    again = primary_tokens.security.readmit("default", token, "agents update", T0, seen=seen)
    fresh = primary_tokens.security.readmit("default", token, "agents update", T0)
    assert first == again == fresh
    with pytest.raises(Forbidden):
        primary_tokens.security.readmit("default", token, "tokens create", T0, seen=seen)


def test_applied_entries_are_deleted_in_batches_and_on_flush(journal: Journal) -> None:
    from types import SimpleNamespace

    from arbiter_cli.resilience.replay import AppliedBatch

    seqs = [append(journal, n) for n in range(5)]
    batch = AppliedBatch(SimpleNamespace(journal=journal))  # type: ignore[arg-type]
    batch.SIZE = 3  # type: ignore[misc]
    for seq in seqs[:2]:
        batch.add(seq)
    assert journal.pending() == 5  # not yet: an applied entry is harmless to replay again
    batch.add(seqs[2])
    assert journal.pending() == 2
    batch.add(seqs[3])
    batch.flush()
    assert [e.seq for e in journal.entries()] == [seqs[4]]


def test_every_journaled_kind_needs_the_permission_of_its_command() -> None:
    """Re-admission asks the permission table: each kind names a command that has an entry."""
    from arbiter_cli.domain.security import PERMISSIONS
    from arbiter_cli.resilience.records import KIND_COMMANDS

    assert set(KIND_COMMANDS) == set(Kind)
    assert all(command in PERMISSIONS for command in KIND_COMMANDS.values())


# ============================================================================ records


tenants = st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True)
texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
finite = st.floats(allow_nan=False, allow_infinity=False, width=32)
moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                       timezones=st.just(UTC))
json_scalars = st.none() | st.booleans() | st.integers(-2**53, 2**53) | finite | texts
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(texts, inner, max_size=3), max_leaves=8)


def through_json(record: dict[str, Any]) -> dict[str, Any]:
    """What a journal entry stores and gives back (sorted keys, no NaN)."""
    loaded: dict[str, Any] = json.loads(json.dumps(record, sort_keys=True, allow_nan=False))
    return loaded


@given(tenant=tenants, role=st.sampled_from(["viewer", "orchestrator", "manager", "admin"]),
       token_id=st.none() | texts)
def test_a_principal_round_trips(tenant: str, role: str, token_id: str | None) -> None:
    principal = Principal(tenant=tenant, role=role, token_id=token_id)
    assert principal_from(through_json(principal_record(principal))) == principal


def test_a_principal_record_without_token_id_is_a_local_principal() -> None:
    assert principal_from({"tenant": "t", "role": "admin"}) == Principal("t", "admin", None)


decisions = st.builds(
    Decision,
    decision_id=st.none() | texts, tenant=tenants, task_id=texts, task_type=texts,
    requirements=st.dictionaries(texts, json_values, max_size=4),
    metadata=st.dictionaries(texts, json_values, max_size=4),
    priority=st.integers(1, 10), agent_id=texts, agent_uid=texts, strategy=texts,
    seed=st.integers(0, 2**63 - 1), explored=st.booleans(), confidence=st.none() | finite,
    candidates=st.lists(st.dictionaries(texts, json_values, max_size=3), max_size=3),
    excluded=st.dictionaries(texts, st.integers(0, 1000), max_size=3),
    examples=st.dictionaries(texts, st.lists(texts, max_size=3), max_size=3),
    config_hash=texts, latency_us=st.integers(0, 10**9), created_at=moments,
    status=st.sampled_from(["open", "succeeded", "failed", "expired"]),
    correlation_id=st.none() | texts, closed_at=st.none() | moments,
    outcome=st.none() | st.fixed_dictionaries({"success": st.booleans(), "quality": finite}),
    over_capacity=st.booleans(),
)


@given(decisions)
def test_a_decision_round_trips_through_a_journal_entry(decision: Decision) -> None:
    """decision_record → JSON → decision_from gives back an equal decision."""
    back = decision_from(through_json(decision_record(decision)))
    assert back == decision
    assert back.created_at.tzinfo is not None


def test_a_decision_record_holds_plain_json_values() -> None:
    """Datetimes become ISO strings, mappings plain dicts, example tuples lists."""
    decision = Decision(
        decision_id="d-1", tenant="default", task_id="T-1", task_type="testing",
        requirements={"task_type": "testing"}, metadata={}, priority=5, agent_id="a1",
        agent_uid="u1", strategy="thompson", seed=7, explored=False, confidence=0.5,
        candidates=[], excluded={"capacity": 1}, examples={"capacity": ["a2"]},
        config_hash="h", latency_us=10, created_at=T0, closed_at=T0 + timedelta(seconds=1),
        outcome={"success": True, "quality": 1.0})
    record = decision_record(decision)
    assert record["created_at"] == T0.isoformat()
    assert record["closed_at"] == (T0 + timedelta(seconds=1)).isoformat()
    assert record["examples"] == {"capacity": ["a2"]}
    assert record["over_capacity"] is False
    json.dumps(record, allow_nan=False)  # no datetime or tuple left


def test_decision_from_ignores_fields_it_does_not_know() -> None:
    """An entry written by a newer arbiter with an extra field still replays."""
    decision = Decision(
        decision_id="d-1", tenant="default", task_id="T-1", task_type="testing",
        requirements={}, metadata={}, priority=5, agent_id="a1", agent_uid="u1",
        strategy="thompson", seed=7, explored=False, confidence=None, candidates=[],
        excluded={}, examples={}, config_hash="h", latency_us=10, created_at=T0)
    record = {**decision_record(decision), "from_the_future": 1}
    assert decision_from(record) == decision


@given(success=st.booleans(), quality=st.floats(0, 1),
       latency_ms=st.none() | st.floats(0, 1e9), task_type=st.none() | texts)
def test_a_task_result_round_trips(success: bool, quality: float, latency_ms: float | None,
                                   task_type: str | None) -> None:
    result = TaskResult(success=success, quality=quality, latency_ms=latency_ms,
                        task_type=task_type)
    assert task_result_from(through_json(task_result_record(result))) == result


@given(success=st.booleans(), quality=st.floats(0, 1), latency_ms=st.none() | st.floats(0, 1e9),
       tokens=st.none() | st.integers(0, 2**62), error=st.none() | texts)
def test_an_outcome_round_trips(success: bool, quality: float, latency_ms: float | None,
                                tokens: int | None, error: str | None) -> None:
    outcome = Outcome(success=success, quality=quality, latency_ms=latency_ms, tokens=tokens,
                      error=error)
    assert outcome_from(through_json(outcome.to_dict())) == outcome


# ============================================================================ journal_args


def _decision(**fields: Any) -> Decision:
    values: dict[str, Any] = {
        "decision_id": "d-1", "tenant": "default", "task_id": "T-1", "task_type": "testing",
        "requirements": {"task_type": "testing"}, "metadata": {}, "priority": 5,
        "agent_id": "a1", "agent_uid": "u1", "strategy": "thompson", "seed": 3,
        "explored": False, "confidence": None, "candidates": [], "excluded": {},
        "examples": {}, "config_hash": "h", "latency_us": 1, "created_at": T0}
    values.update(fields)
    return Decision(**values)


def test_journal_args_of_a_route_carry_the_decision_made() -> None:
    """routing.route replays the stored decision, not a new routing."""
    decision = _decision()
    args = journal_args("routing.route", {"raw": {"task_type": "testing"}}, Routed(decision))
    assert args == {"decision": decision_record(decision)}


def test_journal_args_of_an_idempotent_repeat_are_none() -> None:
    """already_routed / already_recorded changed nothing: nothing to replay."""
    decision = _decision()
    assert journal_args("routing.route", {}, Routed(decision, already_routed=True)) is None
    closed = decision.close(Outcome(success=True, quality=1.0), T0)
    assert journal_args("routing.outcome", {"outcome": Outcome(True, 1.0)},
                        Recorded(closed, already_recorded=True)) is None


def test_journal_args_of_an_outcome_name_the_decision_even_when_given_a_task_id() -> None:
    """An outcome given by --task-id replays by decision id (the id cannot be reused)."""
    outcome = Outcome(success=False, quality=0.25, latency_ms=12.0, tokens=99, error="boom")
    closed = _decision(decision_id="d-9").close(outcome, T0)
    args = journal_args("routing.outcome",
                        {"outcome": outcome, "decision_id": None, "task_id": "T-1"},
                        Recorded(closed))
    assert args == {"outcome": outcome.to_dict(), "decision_id": "d-9"}


@pytest.mark.parametrize(("kind", "arguments", "expected"), [
    ("agents.register", {"raws": ({"id": "a1", "task_types": ("testing",)},)},
     {"raws": [{"id": "a1", "task_types": ["testing"]}], "uids": ["u-1"]}),
    ("agents.update", {"agent_id": "a1", "raw": {"capacity": 3, "languages": ["Go"]}},
     {"agent_id": "a1", "raw": {"capacity": 3, "languages": ["Go"]}}),
    ("agents.set_status", {"agent_id": "a1", "status": "draining", "reason": "deploy"},
     {"agent_id": "a1", "status": "draining", "reason": "deploy"}),
    ("agents.heartbeat", {"agent_id": "a1"}, {"agent_id": "a1"}),
    ("agents.record", {"agent_id": "a1", "result": TaskResult(True, 0.5, 10.0, "testing")},
     {"agent_id": "a1", "result": {"success": True, "quality": 0.5, "latency_ms": 10.0,
                                   "task_type": "testing"}}),
    ("agents.remove", {"agent_id": "a1"}, {"agent_id": "a1"}),
])
def test_journal_args_of_agent_writes_are_their_plain_arguments(
        kind: str, arguments: dict[str, Any], expected: dict[str, Any]) -> None:
    """Dataclasses become dicts, tuples lists: every value is JSON. A registration also
    carries the uids its agents got (its result), for the decisions that name them."""
    result = [SimpleNamespace(uid="u-1")] if kind == "agents.register" else object()
    args = journal_args(kind, arguments, result=result)
    assert args == expected
    assert through_json(args or {}) == expected


def test_every_journaled_kind_is_covered_here() -> None:
    """A new kind must get a journal_args case above and a dispatch in replay."""
    assert set(Kind) == {"agents.register", "agents.update", "agents.set_status",
                         "agents.heartbeat", "agents.record", "agents.remove",
                         "routing.route", "routing.outcome"}


# ---------------------------------------------------------------------------- proxy and replay


@dataclass
class Side:
    """Services on one in-memory store: the snapshot (local) or the primary."""

    uow: MemoryUnitOfWorkFactory
    agents: AgentService
    routing: RoutingService


class Uids:
    def __init__(self, prefix: str) -> None:
        self.prefix, self.count = prefix, 0

    def __call__(self) -> str:
        self.count += 1
        return f"{self.prefix}-{self.count:04d}"


def side(clock: FakeClock, prefix: str) -> Side:
    uow = MemoryUnitOfWorkFactory(clock=clock)
    registry = RegistryPolicy(task_types=tuple(DEFAULT_TASK_TYPES),
                              languages=tuple(DEFAULT_LANGUAGES))
    initialize(uow, lambda: None, clock)
    return Side(uow, AgentService(uow, registry, {"fit": 0.3, "success": 0.3, "quality": 0.2,
                                                  "load": 0.2}, Uids(prefix)),
                RoutingService(uow, registry, RoutingPolicy()))


@dataclass
class Journaling:
    """A stand-in for ``Resilience`` that journals every write (the primary is "down")."""

    entries: list[tuple[str, Principal, dict[str, Any]]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    items: list[int] = field(default_factory=list)

    def write(self, kind: Kind, principal: Principal, primary: Callable[[Any], Any],
              local: Callable[[], Any], args_of: Callable[[Any], dict[str, Any] | None],
              items: int = 0) -> Done[Any]:
        self.calls.append(f"write {kind}")
        self.items.append(items)
        result = local()
        args = args_of(result)
        if args is None:
            return Done(result, Durability("committed"))
        self.entries.append((str(kind), principal, through_json(args)))
        return Done(result, Durability("journaled", {"host": "h", "path": "p"}))

    def read(self, primary: Callable[[], Any], local: Callable[[], Any]) -> Any:
        self.calls.append("read")
        return local()

    def guarded(self, fn: Callable[[], Any]) -> Any:
        self.calls.append("guarded")
        return fn()


def proxied(journaling: Journaling, on: Side) -> tuple[ResilientAgents, ResilientRouting]:
    res: Any = journaling
    wrote: list[Durability] = []
    agents = ResilientAgents(res, Sides(on.agents, lambda op: on.agents, lambda: on.agents),
                             wrote.append)
    routing = ResilientRouting(res, Sides(on.routing, lambda op: on.routing,
                                          lambda: on.routing), wrote.append)
    return agents, routing


def state_of(on: Side) -> dict[str, Any]:
    """Everything the journaled writes change, without the store-specific uids."""
    agents = on.agents.list(ADMIN, limit=0).items
    decisions, _ = on.routing.history(ADMIN, limit=0)
    arms = {}
    with on.uow() as uow:
        for a in agents:
            for task_type in a.task_types:
                arm = uow.routing.arm(ADMIN.tenant, a.uid, task_type)
                arms[(a.id, task_type)] = None if arm is None else repr(arm)
    return {"agents": [a.to_dict() for a in agents],
            "decisions": sorted((d.to_dict() for d in decisions), key=lambda d: d["task_id"]),
            "arms": arms}


def test_journaled_writes_replay_to_the_same_state() -> None:
    """Every kind, journaled through the service proxy, replays on another store to the same
    agents, decisions and arms (SPEC §7: the journal carries what replay needs)."""
    from arbiter_cli.resilience.journal import Entry
    from arbiter_cli.resilience.replay import dispatch

    clock = FakeClock(T0)
    local, primary = side(clock, "local"), side(clock, "primary")
    journaling = Journaling()
    agents, routing = proxied(journaling, local)
    reg = {"name": "A", "model_family": "claude", "task_types": ["testing", "code-review"],
           "languages": ["Python"]}
    agents.register(ADMIN, [{"id": "a1", **reg, "capacity": 2}, {"id": "a2", **reg}])
    agents.register(ADMIN, [{"id": "a3", **reg}], progress=lambda n: None)
    agents.update(ADMIN, "a2", {"capacity": 1, "languages": ["Python", "Go"]})
    agents.set_status(ADMIN, "a3", "maintenance", "patching")
    clock.advance(seconds=5)
    agents.heartbeat(ADMIN, "a1")
    agents.record(ADMIN, "a1", TaskResult(True, 0.75, 120.0, "testing"))
    first = routing.route(ADMIN, {"task_type": "testing", "task_id": "T-1"}, seed=1).decision
    again = routing.route(ADMIN, {"task_type": "testing", "task_id": "T-1"}, seed=1)
    assert again.already_routed  # an idempotent repeat is not journaled
    second = routing.route(ADMIN, {"task_type": "testing", "task_id": "T-2"}, seed=2).decision
    clock.advance(seconds=5)
    routing.outcome(ADMIN, Outcome(True, 0.9, 300.0, 10, None), decision_id=first.decision_id)
    routing.outcome(ADMIN, Outcome(False, 0.1), task_id="T-2")
    repeat = routing.outcome(ADMIN, Outcome(False, 0.1), task_id="T-2")
    assert repeat.already_recorded
    agents.remove(ADMIN, "a3")

    kinds = [kind for kind, _, _ in journaling.entries]
    assert kinds == ["agents.register", "agents.register", "agents.update", "agents.set_status",
                     "agents.heartbeat", "agents.record", "routing.route", "routing.route",
                     "routing.outcome", "routing.outcome", "agents.remove"]
    assert {second.decision_id, first.decision_id} == {
        args["decision"]["decision_id"] for kind, _, args in journaling.entries
        if kind == "routing.route"}

    # Replay at the same moments, each entry stamped when it was acknowledged (an outcome
    # closes its decision then): the effect, not the clock, is compared.
    clock.now = T0
    for seq, (kind, principal, args) in enumerate(journaling.entries, start=1):
        if kind in ("agents.heartbeat", "agents.record"):
            clock.now = T0 + timedelta(seconds=5)
        if kind == "routing.outcome":
            clock.now = T0 + timedelta(seconds=10)
        dispatch(primary, Entry(seq=seq, op_id=f"op-{seq}", tenant=principal.tenant,  # type: ignore[arg-type]
                                kind=kind, principal=principal_record(principal), args=args,
                                correlation_id=None, created_at=clock.now.timestamp(),
                                state=PENDING, error=None, attempts=0), principal)
    assert state_of(primary) == state_of(local)


def test_a_journaled_registration_keeps_its_uids_and_a_re_registered_agent_conflicts() -> None:
    """The host's journaled decisions name the uids its snapshot gave: a journaled registration
    replays under them, so the host's own decision still matches; the same decision for an
    agent removed and registered again (another uid) conflicts (issue 17, F3)."""
    from arbiter_cli.resilience.journal import Entry
    from arbiter_cli.resilience.replay import dispatch

    clock = FakeClock(T0)
    local, primary, other = side(clock, "local"), side(clock, "primary"), side(clock, "other")
    journaling = Journaling()
    agents, routing = proxied(journaling, local)
    reg = {"name": "A", "model_family": "claude", "task_types": ["testing"]}
    (made,) = agents.register(ADMIN, [{"id": "a1", **reg}])
    routed = routing.route(ADMIN, {"task_type": "testing", "task_id": "T-1"}, seed=1).decision
    assert routed.agent_uid == made.uid

    def replay_on(target: Side, entries: list[tuple[str, Principal, dict[str, Any]]]) -> None:
        for seq, (kind, principal, args) in enumerate(entries, start=1):
            dispatch(target, Entry(seq=seq, op_id=f"op-{seq}", tenant=principal.tenant,  # type: ignore[arg-type]
                                   kind=kind, principal=principal_record(principal),
                                   args=args, correlation_id=None, created_at=0.0,
                                   state=PENDING, error=None, attempts=0), principal)

    replay_on(primary, journaling.entries)
    assert primary.agents.show(ADMIN, "a1").uid == made.uid
    (decision,) = primary.routing.history(ADMIN, limit=0)[0]
    assert decision.agent_uid == made.uid

    other.agents.register(ADMIN, [{"id": "a1", **reg}])  # the same id, another agent
    with pytest.raises(Conflict, match="registered again"):
        replay_on(other, journaling.entries[1:])
    assert other.routing.history(ADMIN, limit=0)[0] == []
    for bad in (["not a uid!"], [], [made.uid, made.uid], "abc"):
        with pytest.raises(InvalidInput):
            other.agents.register(ADMIN, [{"id": "a2", **reg}], uids=bad)  # type: ignore[arg-type]


def test_the_proxy_sends_reads_writes_and_the_rest_their_own_way() -> None:
    """Reads fall back, journaled kinds journal, dry runs read, anything else is only
    guarded."""
    clock = FakeClock(T0)
    local = side(clock, "local")
    journaling = Journaling()
    agents, routing = proxied(journaling, local)
    agents.register(ADMIN, [{"id": "a1", "name": "A", "model_family": "claude",
                             "task_types": ["testing"]}])
    agents.list(ADMIN, limit=0)
    agents.show(ADMIN, "a1")
    routing.route(ADMIN, {"task_type": "testing"}, dry_run=True)
    agents.cleanup(ADMIN, 3600.0, dry_run=True)
    assert journaling.calls == ["write agents.register", "read", "read", "read", "guarded"]
    assert agents.policy is local.agents.policy  # attributes pass through untouched
    assert [kind for kind, _, _ in journaling.entries] == ["agents.register"]


def test_the_proxy_journals_the_callers_principal_without_progress() -> None:
    """principal and progress are not arguments to replay; the principal is kept apart."""
    clock = FakeClock(T0)
    local = side(clock, "local")
    initialize(local.uow, lambda: None, clock, tenant="team-b")
    journaling = Journaling()
    agents, _ = proxied(journaling, local)
    agents.register(ORCH, [{"id": "a1", "name": "A", "model_family": "claude",
                            "task_types": ["testing"]}], progress=lambda n: None)
    ((kind, principal, args),) = journaling.entries
    assert (kind, principal) == ("agents.register", ORCH)
    assert set(args) == {"raws", "uids"}


def test_a_batch_register_tells_the_gateway_its_size_and_other_writes_none() -> None:
    """SPEC §7.1: the budget of `agents register --file` grows with the batch."""
    from arbiter_cli.resilience.services import batch_size

    clock = FakeClock(T0)
    local = side(clock, "local")
    initialize(local.uow, lambda: None, clock, tenant="team-b")
    journaling = Journaling()
    agents, _ = proxied(journaling, local)
    agents.register(ORCH, [{"id": f"a{n}", "name": "A", "model_family": "claude",
                            "task_types": ["testing"]} for n in range(3)])
    agents.heartbeat(ORCH, "a1")
    assert journaling.items == [3, 0]
    assert batch_size(({"id": "a1"}, {"id": "a2"})) == 2


def test_a_batch_entry_gets_the_budget_its_command_had() -> None:
    from arbiter_cli.resilience.journal import Entry
    from arbiter_cli.resilience.replay import entry_budget

    settings = load_settings(environ={"ARBITER_DATABASE__COMMAND_TIMEOUT": "5s",
                                      "ARBITER_DATABASE__PER_ITEM_TIMEOUT": "2ms",
                                      "ARBITER_DATA_DIR": "/nonexistent"})

    def entry(kind: str, args: dict[str, Any]) -> Entry:
        return Entry(seq=1, op_id="o", tenant="t", kind=kind, principal={}, args=args,
                     correlation_id=None, created_at=0.0, state=PENDING, error=None, attempts=0)

    assert entry_budget(settings, entry("agents.register", {"raws": [{}] * 9000})) == 23.0
    assert entry_budget(settings, entry("agents.register", {"raws": "junk"})) == 5.0
    assert entry_budget(settings, entry("agents.heartbeat", {"raws": [{}] * 10})) == 5.0


def test_a_deadline_can_be_extended_from_where_it_ends(ticks: Ticks) -> None:
    base = Deadline(5.0, clock=ticks)
    ticks.now += 4.0
    longer = base.extended(2.0)
    assert (base.remaining(), longer.remaining()) == (1.0, 3.0)
    assert longer.budget_s == 7.0


def test_dispatch_refuses_an_unknown_kind() -> None:
    """A corrupt or foreign entry is an error, never a call of an arbitrary method."""
    from arbiter_cli.resilience.journal import Entry
    from arbiter_cli.resilience.replay import dispatch

    primary = side(FakeClock(T0), "p")
    for kind in ("agents.cleanup", "tokens.create", "agents.__init__"):
        entry = Entry(seq=1, op_id="op", tenant="default", kind=kind,
                      principal=principal_record(ADMIN), args={}, correlation_id=None,
                      created_at=0.0, state=PENDING, error=None, attempts=0)
        with pytest.raises(ArbiterError, match="unknown kind"):
            dispatch(primary, entry, ADMIN)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kind", "args"), [
    ("agents.heartbeat", {"agent": "a1"}),
    ("agents.heartbeat", {}),
    ("agents.record", {"agent_id": "a1", "result": {"success": True}}),
    ("agents.record", {"agent_id": "a1"}),
    ("agents.update", {"agent_id": "a1", "raw": {}, "extra": 1}),
    ("routing.route", {}),
    ("routing.route", {"decision": {"decision_id": "d-1"}}),
    ("routing.route", {"decision": {**decision_record(_decision()), "created_at": "never"}}),
    ("routing.outcome", {"outcome": {"success": True, "quality": 1.0}}),
    ("routing.outcome", {"outcome": {"success": True}, "decision_id": "d-1"}),
])
def test_dispatch_refuses_a_malformed_entry_as_invalid_input(kind: str,
                                                             args: dict[str, Any]) -> None:
    """An entry that does not fit its kind is InvalidInput (replay keeps it as a conflict),
    never a TypeError or KeyError that would fail every command replaying first."""
    from arbiter_cli.resilience.journal import Entry
    from arbiter_cli.resilience.replay import dispatch

    primary = side(FakeClock(T0), "p")
    entry = Entry(seq=7, op_id="op", tenant="default", kind=kind,
                  principal=principal_record(ADMIN), args=args, correlation_id=None,
                  created_at=0.0, state=PENDING, error=None, attempts=0)
    with pytest.raises(InvalidInput, match="journal entry 7 .* is malformed"):
        dispatch(primary, entry, ADMIN)  # type: ignore[arg-type]


# ============================================================================ classify


RETRIED = ["40001", "40P01", "53300", "57P01", "57P02", "57P03", "08006", "08001", "08000"]
COUNTED = ["57014", "53100", "53200", "55P03", "58030", "XX000", "53400"]
CALLER = ["23505", "23503", "23502", "22001", "22P02", "42P01", "42501", "42601", "P0001"]


def driver(code: str) -> BaseException:
    """A psycopg2 error of the class the server's SQLSTATE maps to (pgcode is read-only)."""
    cls = psycopg2.errors.lookup(code)
    return cls(f"fault {code}")  # type: ignore[no-any-return]


@pytest.mark.parametrize("code", RETRIED)
def test_transient_sqlstates_are_retried(code: str) -> None:
    assert classify(driver(code)) is Fault.TRANSIENT


@pytest.mark.parametrize("code", COUNTED)
def test_timeout_and_resource_sqlstates_are_counted_not_retried(code: str) -> None:
    assert classify(driver(code)) is Fault.COUNTED


@pytest.mark.parametrize("code", CALLER)
def test_caller_sqlstates_are_neither_retried_nor_counted(code: str) -> None:
    assert classify(driver(code)) is Fault.CALLER


@pytest.mark.parametrize(("exc", "fault"), [
    (psycopg2.OperationalError("server closed the connection unexpectedly"), Fault.TRANSIENT),
    (psycopg2.OperationalError(), Fault.TRANSIENT),
    (psycopg2.InterfaceError("connection already closed"), Fault.TRANSIENT),
    (psycopg2.DatabaseError("?"), Fault.COUNTED),
    (psycopg2.InternalError("?"), Fault.COUNTED),
    (psycopg2.IntegrityError("dup"), Fault.CALLER),
    (psycopg2.DataError("bad"), Fault.CALLER),
    (psycopg2.ProgrammingError("syntax"), Fault.CALLER),
    (psycopg2.NotSupportedError("no"), Fault.CALLER),
    (ConnectionRefusedError(), Fault.TRANSIENT),
    (ConnectionResetError(), Fault.TRANSIENT),
    (TimeoutError(), Fault.TRANSIENT),
    (ValueError("ours"), Fault.CALLER),
    (KeyError("ours"), Fault.CALLER),
])
def test_driver_errors_without_a_pgcode_are_classified_by_class(exc: BaseException,
                                                                fault: Fault) -> None:
    """Connect-phase errors carry no pgcode (RELIABILITY.md §3.2): the class decides."""
    assert classify(exc) is fault


CONFIG_CODES = ["28000", "28P01", "3D000"]

# What psycopg2 raises at connect time (pgcode None), measured against PostgreSQL 15 / libpq 17;
# tests/faults/test_trust.py produces the real ones.
CONNECT_TIME_CONFIG = [
    'connection to server at "127.0.0.1", port 5432 failed: FATAL:  password authentication '
    'failed for user "pw"\n',
    'FATAL:  password authentication failed for user "pw"\n',  # through our wait callback
    'connection to server at "127.0.0.1", port 5432 failed: fe_sendauth: no password supplied\n',
    'connection to server at "127.0.0.1", port 5432 failed: FATAL:  role "nobody" does not '
    'exist\n',
    'connection to server at "127.0.0.1", port 5432 failed: FATAL:  database "nosuchdb" does '
    'not exist\n',
    'could not translate host name "db.invalid" to address: Name or service not known\n',
    'could not translate host name "db.invalid" to address: No address associated with '
    'hostname\n',
    'connection to server at "10.0.0.1", port 5432 failed: FATAL:  no pg_hba.conf entry for '
    'host "10.0.0.2", user "arbiter", database "arbiter", no encryption\n',
    'FATAL:  Ident authentication failed for user "arbiter"\n',
]
CONNECT_TIME_OUTAGE = [
    'connection to server at "127.0.0.1", port 1 failed: Connection refused\n\tIs the server '
    "running on that host and accepting TCP/IP connections?\n",
    'could not translate host name "db.example" to address: Temporary failure in name '
    "resolution\n",
    "FATAL:  the database system is starting up\n",
    "FATAL:  sorry, too many clients already\n",
    "server closed the connection unexpectedly\n",
]


@pytest.mark.parametrize("code", CONFIG_CODES)
def test_authentication_and_unknown_database_sqlstates_are_configuration(code: str) -> None:
    """SPEC §7.1: class 28 and 3D000 are configuration errors, not outages."""
    assert classify(driver(code)) is Fault.CONFIG


@pytest.mark.parametrize("message", CONNECT_TIME_CONFIG)
def test_connect_time_configuration_errors_are_told_by_their_message(message: str) -> None:
    """At connect time psycopg2 gives no pgcode: the message is all there is."""
    err = psycopg2.OperationalError(message)
    assert classify(err) is Fault.CONFIG
    wrapped = sqlalchemy.exc.OperationalError("connect", {}, err)
    assert classify(StorageUnavailable("x", driver=wrapped)) is Fault.CONFIG


@pytest.mark.parametrize("message", CONNECT_TIME_OUTAGE)
def test_connect_time_outages_stay_transient(message: str) -> None:
    """A refused connection, a resolver that is down, a server starting up: outages."""
    assert classify(psycopg2.OperationalError(message)) is Fault.TRANSIENT


def test_a_configuration_message_from_another_layer_is_not_a_configuration_error() -> None:
    """Only the driver's connect failures are read by message; our own errors never are."""
    assert classify(InvalidInput('role "x" does not exist')) is Fault.CALLER
    assert classify(ValueError("password authentication failed for user")) is Fault.CALLER


def test_sqlalchemys_wrapper_class_does_not_decide() -> None:
    """The same SQLAlchemy class wraps a lost connection and a unique violation."""
    lost = sqlalchemy.exc.OperationalError("SELECT 1", {}, psycopg2.OperationalError("lost"))
    dup = sqlalchemy.exc.OperationalError("INSERT", {}, driver("23505"))
    busy = sqlalchemy.exc.IntegrityError("UPDATE", {}, driver("40001"))
    full = sqlalchemy.exc.DBAPIError("INSERT", {}, driver("53100"))
    assert classify(lost) is Fault.TRANSIENT
    assert classify(dup) is Fault.CALLER
    assert classify(busy) is Fault.TRANSIENT
    assert classify(full) is Fault.COUNTED


def test_sqlalchemys_pool_timeout_is_counted() -> None:
    """Waiting for a pooled connection in vain says the database is in trouble."""
    assert classify(sqlalchemy.exc.TimeoutError("QueuePool limit")) is Fault.COUNTED


def test_our_storage_unavailable_is_classified_by_its_driver_error() -> None:
    """StorageUnavailable(driver=…) from the unit of work is judged by the driver error."""
    assert classify(StorageUnavailable("x", driver=psycopg2.OperationalError())) is Fault.TRANSIENT
    assert classify(StorageUnavailable("x", driver=driver("57014"))) is Fault.COUNTED
    assert classify(StorageUnavailable("x", driver=driver("23505"))) is Fault.CALLER
    assert classify(StorageUnavailable("no driver")) is Fault.CALLER


def test_our_own_errors_are_caller_errors() -> None:
    for exc in (Conflict("exists"), NotFound("gone"), InvalidInput("bad"),
                BreakerOpen("open", retry_after_s=1.0, opened_at=None)):
        assert classify(exc) is Fault.CALLER


def test_a_spent_deadline_is_counted_not_retried() -> None:
    """Retrying cannot help once the budget is spent; the breaker must hear of it."""
    exceeded = deadline_module.exceeded_type()("budget spent")
    assert isinstance(exceeded, psycopg2.OperationalError)
    assert classify(exceeded) is Fault.COUNTED
    wrapped = sqlalchemy.exc.OperationalError("SELECT 1", {}, exceeded)
    assert classify(StorageUnavailable("x", driver=wrapped)) is Fault.COUNTED


def test_driver_error_unwraps_orig_and_driver_chains() -> None:
    inner = psycopg2.OperationalError("lost")
    wrapped = sqlalchemy.exc.OperationalError("SELECT 1", {}, inner)
    assert driver_error(wrapped) is inner
    assert driver_error(StorageUnavailable("x", driver=wrapped)) is inner
    assert driver_error(inner) is inner
    plain = ValueError("x")
    assert driver_error(plain) is plain


def test_driver_error_stops_on_a_cycle() -> None:
    """A self-referencing chain cannot loop forever."""
    a = StorageUnavailable("a")
    b = StorageUnavailable("b", driver=a)
    a.driver = b
    assert driver_error(a) in (a, b)


# ============================================================================ guarded


@dataclass
class FakeBreaker:
    """Records what guarded() tells the breaker; refuses when ``open``."""

    open: bool = False
    events: list[str] = field(default_factory=list)

    def allow(self) -> object:
        if self.open:
            self.events.append("refused")
            raise BreakerOpen("circuit open", retry_after_s=3.0, opened_at=None)
        self.events.append("allow")
        return object()

    def success(self, permit: object) -> None:
        self.events.append("success")

    def failure(self, permit: object) -> None:
        self.events.append("failure")

    def release(self, permit: object) -> None:
        self.events.append("release")


class Calls:
    """``fn`` for guarded(): raises the given errors in turn, then returns ``value``."""

    def __init__(self, *errors: BaseException, value: Any = "ok",
                 clock: Ticks | None = None, each_s: float = 0.0) -> None:
        self.errors = list(errors)
        self.value = value
        self.count = 0
        self.clock = clock
        self.each_s = each_s
        self.deadlines: list[Deadline | None] = []

    def __call__(self) -> Any:
        self.count += 1
        self.deadlines.append(deadline_module.current())
        if self.clock is not None:
            self.clock.now += self.each_s
        if self.errors:
            raise self.errors.pop(0)
        return self.value


@pytest.fixture
def breaker() -> FakeBreaker:
    return FakeBreaker()


@pytest.fixture
def naps() -> list[float]:
    return []


def run(fn: Callable[[], Any], breaker: FakeBreaker | None, naps: list[float], *,
        budget_s: float = 5.0, clock: Ticks | None = None, **kwargs: Any) -> Any:
    deadline = Deadline(budget_s, clock=clock or Ticks())
    return guarded(fn, breaker=breaker, deadline=deadline,  # type: ignore[arg-type]
                   sleep=naps.append, **kwargs)


def lost() -> psycopg2.OperationalError:
    return psycopg2.OperationalError("server closed the connection unexpectedly")


def test_success_takes_one_attempt_and_tells_the_breaker(breaker: FakeBreaker,
                                                         naps: list[float]) -> None:
    fn = Calls(value=42)
    assert run(fn, breaker, naps) == 42
    assert fn.count == 1
    assert breaker.events == ["allow", "success"]
    assert naps == []


def test_every_attempt_runs_under_the_commands_deadline(breaker: FakeBreaker,
                                                        naps: list[float]) -> None:
    """The deadline is active inside fn (psycopg2's wait callback reads it), and not after."""
    fn = Calls(lost())
    run(fn, breaker, naps)
    assert len(fn.deadlines) == 2 and all(d is not None for d in fn.deadlines)
    assert deadline_module.current() is None


def test_a_transient_failure_is_retried_up_to_four_attempts(breaker: FakeBreaker,
                                                            naps: list[float]) -> None:
    """Four attempts, each counted; then StorageUnavailable (exit 10) chained to the error."""
    errors = [lost() for _ in range(10)]
    fn = Calls(*errors)
    with pytest.raises(StorageUnavailable) as caught:
        run(fn, breaker, naps)
    assert fn.count == MAX_ATTEMPTS == 4
    assert breaker.events == ["allow", "failure"] * 4
    assert len(naps) == 3
    assert all(0 <= s <= 2 for s in naps)
    assert caught.value.exit_code == 10
    assert caught.value.__cause__ is errors[3]
    assert caught.value.driver is errors[3]
    assert "server closed the connection unexpectedly" in caught.value.message


def test_a_transient_failure_then_success_returns_the_value(breaker: FakeBreaker,
                                                            naps: list[float]) -> None:
    fn = Calls(lost(), driver("40001"), value="done")
    assert run(fn, breaker, naps) == "done"
    assert fn.count == 3
    assert breaker.events == ["allow", "failure", "allow", "failure", "allow", "success"]
    assert len(naps) == 2


def test_attempts_can_be_lowered(breaker: FakeBreaker, naps: list[float]) -> None:
    fn = Calls(*[lost() for _ in range(5)])
    with pytest.raises(StorageUnavailable):
        run(fn, breaker, naps, attempts=2)
    assert fn.count == 2


@pytest.mark.parametrize("code", ["57014", "53100"])
def test_a_counted_failure_is_attempted_once_and_counted(breaker: FakeBreaker,
                                                         naps: list[float], code: str) -> None:
    """Statement timeout and disk full: no retry, one breaker failure, exit 10."""
    error = driver(code)
    fn = Calls(error)
    with pytest.raises(StorageUnavailable) as caught:
        run(fn, breaker, naps)
    assert fn.count == 1
    assert breaker.events == ["allow", "failure"]
    assert naps == []
    assert caught.value.__cause__ is error


@pytest.mark.parametrize("error", [
    driver("23505"), driver("22001"), psycopg2.ProgrammingError("syntax"),
    Conflict("agent 'a1' already exists"), NotFound("gone"), ValueError("a bug"),
], ids=["unique", "data", "programming", "conflict", "not-found", "bug"])
def test_a_caller_error_is_attempted_once_released_and_raised_unchanged(
        breaker: FakeBreaker, naps: list[float], error: BaseException) -> None:
    """Caller errors neither count nor reset the breaker, and leave as they came."""
    fn = Calls(error)
    with pytest.raises(type(error)) as caught:
        run(fn, breaker, naps)
    assert caught.value is error
    assert fn.count == 1
    assert breaker.events == ["allow", "release"]
    assert naps == []


@pytest.mark.parametrize("error", [
    psycopg2.OperationalError(CONNECT_TIME_CONFIG[0]), driver("28P01"), driver("3D000"),
    StorageUnavailable("database x unavailable", driver=psycopg2.OperationalError(
        CONNECT_TIME_CONFIG[5])),
], ids=["password", "28P01", "3D000", "dns"])
def test_a_configuration_error_is_exit_3_attempted_once_and_never_counted(
        breaker: FakeBreaker, naps: list[float], error: BaseException) -> None:
    """SPEC §7.1: never retried, never counted by the breaker (one mistyped password cannot
    open the host's breaker for everyone), and reported as ConfigInvalid (exit 3)."""
    fn = Calls(error)
    with pytest.raises(ConfigInvalid) as caught:
        run(fn, breaker, naps)
    assert fn.count == 1
    assert breaker.events == ["allow", "release"]
    assert naps == []
    assert caught.value.exit_code == 3
    assert "\n" not in caught.value.message and "configuration error" in caught.value.message


def test_a_configuration_error_names_the_database_without_its_password(naps: list[float]
                                                                       ) -> None:
    class Labelled(FakeBreaker):
        label = "postgresql://arbiter@db.example:5432/arbiter?password=hunter2&sslmode=require"

    with pytest.raises(ConfigInvalid) as caught:
        run(Calls(driver("28P01")), Labelled(), naps)
    assert "postgresql://arbiter@db.example:5432/arbiter:" in caught.value.message
    assert "hunter2" not in caught.value.message


def cut(*, connecting: bool) -> BaseException:
    """Our deadline's error, as psycopg2's wait callback raises it."""
    error = deadline_module.exceeded_type()("database call exceeded the command's budget")
    error.connecting = connecting  # type: ignore[attr-defined]
    return error


class Probe:
    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.asked = 0

    def __call__(self) -> bool:
        self.asked += 1
        return self.answer


@pytest.mark.parametrize("wrapped", [False, True], ids=["driver", "unit-of-work"])
def test_a_statement_cut_on_a_primary_that_answers_is_slow_not_an_outage(
        breaker: FakeBreaker, naps: list[float], wrapped: bool) -> None:
    """SPEC §7.1: the deadline cut a statement, a liveness probe finds the primary answering:
    PrimarySlow (exit 10, a hint), the permit released (neither counted nor reset)."""
    from arbiter_cli.resilience.retry import PrimarySlow

    error: BaseException = cut(connecting=False)
    if wrapped:
        error = StorageUnavailable("database x unavailable", driver=sqlalchemy.exc.OperationalError(
            "INSERT", {}, error))
    probe = Probe(True)
    with pytest.raises(PrimarySlow) as caught:
        run(Calls(error), breaker, naps, alive=probe)
    assert probe.asked == 1
    assert breaker.events == ["allow", "release"]
    assert caught.value.exit_code == 10 and "did not finish within" in caught.value.message
    assert "per_item_timeout" in caught.value.message and "rolled back" in caught.value.message


def test_a_statement_cut_on_a_primary_that_does_not_answer_is_an_outage(
        breaker: FakeBreaker, naps: list[float]) -> None:
    from arbiter_cli.resilience.retry import PrimarySlow

    probe = Probe(False)
    with pytest.raises(StorageUnavailable) as caught:
        run(Calls(cut(connecting=False)), breaker, naps, alive=probe)
    assert not isinstance(caught.value, PrimarySlow)
    assert probe.asked == 1
    assert breaker.events == ["allow", "failure"]


def test_a_handshake_cut_by_the_deadline_is_an_outage_without_a_probe(
        breaker: FakeBreaker, naps: list[float]) -> None:
    """The server never answered the handshake: unreachable, nothing to probe."""
    probe = Probe(True)
    with pytest.raises(StorageUnavailable):
        run(Calls(cut(connecting=True)), breaker, naps, alive=probe)
    assert probe.asked == 0
    assert breaker.events == ["allow", "failure"]


@pytest.mark.parametrize("code", ["57014", "55P03"])
def test_a_timeout_the_server_answered_is_slow_without_a_probe(
        breaker: FakeBreaker, naps: list[float], code: str) -> None:
    """A statement or lock timeout comes from a server that is alive."""
    from arbiter_cli.resilience.retry import PrimarySlow

    probe = Probe(False)
    with pytest.raises(PrimarySlow):
        run(Calls(driver(code)), breaker, naps, alive=probe)
    assert probe.asked == 0
    assert breaker.events == ["allow", "release"]


def test_without_a_probe_running_out_of_time_still_counts(breaker: FakeBreaker,
                                                          naps: list[float]) -> None:
    """Callers that cannot probe (health's own check) keep the counted behaviour."""
    with pytest.raises(StorageUnavailable):
        run(Calls(cut(connecting=False)), breaker, naps)
    assert breaker.events == ["allow", "failure"]


def test_slowness_tells_a_cut_statement_from_a_cut_handshake() -> None:
    from arbiter_cli.adapters.sql.faults import slowness

    assert slowness(cut(connecting=False)) == "cut"
    assert slowness(cut(connecting=True)) is None
    assert slowness(deadline_module.exceeded_type()("no attribute")) is None
    assert slowness(driver("57014")) == slowness(driver("55P03")) == "timeout"
    assert slowness(lost()) is None and slowness(driver("23505")) is None


def test_a_wrapped_unit_of_work_failure_is_retried_and_re_raised_as_is(
        breaker: FakeBreaker, naps: list[float]) -> None:
    """The unit of work raises StorageUnavailable(driver=…): judged by the driver error,
    and the last one leaves unchanged (its message already names the database)."""
    errors = [StorageUnavailable(f"database x unavailable: {n}", driver=lost())
              for n in range(4)]
    fn = Calls(*errors)
    with pytest.raises(StorageUnavailable) as caught:
        run(fn, breaker, naps)
    assert fn.count == 4
    assert caught.value is errors[3]


def test_may_retry_vetoes_a_retry(breaker: FakeBreaker, naps: list[float]) -> None:
    """An op whose commit may have happened is never re-run."""
    fn = Calls(lost(), lost())
    with pytest.raises(StorageUnavailable):
        run(fn, breaker, naps, may_retry=lambda: False)
    assert fn.count == 1
    assert breaker.events == ["allow", "failure"]


def test_may_retry_is_asked_after_each_failure(breaker: FakeBreaker, naps: list[float]) -> None:
    answers = iter([True, False])
    fn = Calls(lost(), lost(), lost())
    with pytest.raises(StorageUnavailable):
        run(fn, breaker, naps, may_retry=lambda: next(answers))
    assert fn.count == 2


def test_the_deadline_stops_retries(breaker: FakeBreaker, naps: list[float]) -> None:
    """Past the command's budget, no further attempt is made, even if attempts remain."""
    clock = Ticks()
    fn = Calls(*[lost() for _ in range(4)], clock=clock, each_s=3.0)
    with pytest.raises(StorageUnavailable):
        run(fn, breaker, naps, budget_s=5.0, clock=clock)
    assert fn.count == 2  # 3 s, then 6 s > 5 s: stop
    assert len(naps) == 1


def test_a_nap_never_outlasts_the_budget(breaker: FakeBreaker, naps: list[float]) -> None:
    """The backoff is cut to what remains of the budget."""
    clock = Ticks()
    fn = Calls(lost(), clock=clock, each_s=4.99)
    run(fn, breaker, naps, budget_s=5.0, clock=clock)
    assert len(naps) == 1
    assert naps[0] <= 0.01 + 1e-9


def test_an_expired_deadline_before_the_first_attempt_still_tries_once(
        breaker: FakeBreaker, naps: list[float]) -> None:
    """One attempt always happens (its own calls then fail fast on the spent deadline)."""
    fn = Calls(lost(), lost())
    with pytest.raises(StorageUnavailable):
        run(fn, breaker, naps, budget_s=0.0)
    assert fn.count == 1


def test_an_open_breaker_is_not_retried_and_nothing_runs(naps: list[float]) -> None:
    """BreakerOpen (exit 10) leaves at once: fn is never called, nothing sleeps."""
    breaker = FakeBreaker(open=True)
    fn = Calls()
    with pytest.raises(BreakerOpen) as caught:
        run(fn, breaker, naps)
    assert fn.count == 0
    assert breaker.events == ["refused"]
    assert caught.value.exit_code == 10
    assert caught.value.details["retry_after_s"] == 3.0
    assert naps == []


def test_a_breaker_opening_between_attempts_stops_the_retries(naps: list[float]) -> None:
    """The second attempt asks the breaker again, and its refusal ends the call."""
    breaker = FakeBreaker()

    class Opening(Calls):
        def __call__(self) -> Any:
            breaker.open = True
            return super().__call__()

    fn = Opening(lost(), lost())
    with pytest.raises(BreakerOpen):
        run(fn, breaker, naps)
    assert fn.count == 1
    assert breaker.events == ["allow", "failure", "refused"]


def test_without_a_breaker_retries_still_happen(naps: list[float]) -> None:
    fn = Calls(lost(), value=1)
    assert run(fn, None, naps) == 1
    assert fn.count == 2


def test_an_interrupt_is_released_and_not_retried(breaker: FakeBreaker, naps: list[float]) -> None:
    """Ctrl-C is not a database failure: not counted, not retried, not converted."""
    fn = Calls(KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        run(fn, breaker, naps)
    assert fn.count == 1
    assert breaker.events == ["allow", "release"]


def test_unavailable_from_is_one_line_and_keeps_the_driver() -> None:
    err = psycopg2.OperationalError("connection refused\n\tIs the server running?")
    found = unavailable_from(sqlalchemy.exc.OperationalError("SELECT", {}, err))
    assert found.message == "database unavailable: connection refused"
    assert found.driver is err
    assert unavailable_from(psycopg2.OperationalError()).message == (
        "database unavailable: OperationalError")
    assert len(unavailable_from(psycopg2.OperationalError("x" * 1000)).message) < 330


# ============================================================================ snapshot refresh


class Took:
    def __init__(self, took: float | None) -> None:
        self.took = took

    def last_took_s(self) -> float | None:
        return self.took


@pytest.mark.parametrize(("mode", "took", "agents", "background"), [
    ("inline", 5.0, 10**6, False),
    ("background", 0.001, 1, True),
    ("auto", 0.049, 10**6, False),  # the last refresh was cheap: inline
    ("auto", 0.051, 0, True),  # the last one cost more than 50 ms: off the critical path
    ("auto", None, 999, False),  # the first refresh of a small fleet: inline
    ("auto", None, 1000, True),  # the first of a large one: in the background
    ("auto", None, None, False),  # cannot tell: inline, which reports what is wrong
])
def test_where_a_due_refresh_runs(tmp_path: Path, mode: str, took: float | None,
                                  agents: int | None, background: bool) -> None:
    from arbiter_cli.resilience.refresher import in_background

    settings = settings_for(tmp_path, PG_URL, ARBITER_RESILIENCE__SNAPSHOT_REFRESH=mode)

    def count() -> int:
        if agents is None:
            raise StorageUnavailable("down")
        return agents

    assert in_background(settings, Took(took), count) is background  # type: ignore[arg-type]


# ============================================================================ a clock set back (A9)


def test_an_entry_is_never_stamped_before_the_one_before_it(journal: Journal,
                                                            ticks: Ticks) -> None:
    """A9: entries are in order, so a host clock set back a day stamps the next entry at the
    previous entry's time, not a day in the past."""
    append(journal, 1)
    ticks.now -= 86_400.0
    append(journal, 2)
    first, second = sorted(journal.entries(), key=lambda e: e.seq)
    assert second.created_at == first.created_at == 1_000.0
    assert journal.verify(second)  # the raised time is the one signed
    ticks.now = 5_000.0
    append(journal, 3)
    assert journal.entries(limit=1)[0].created_at == 5_000.0  # a clock ahead is its own


class SetBack:
    """This host's clock, a day behind the one that refreshed the snapshot."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.fixture
def set_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, SetBack]]:
    """A resilience layer whose snapshot was refreshed at 100 000 (host clock) with the
    primary 2 s ahead, on a host whose clock now reads a day before that."""
    from sqlalchemy import create_engine

    from arbiter_cli.resilience import gateway

    wall = SetBack(100_000.0 - 86_400.0)
    monkeypatch.setattr(gateway, "time", wall)
    engine = create_engine(PG_URL)
    res = gateway.Resilience(settings=settings_for(tmp_path, PG_URL), url=PG_URL,
                             primary=engine, clock=lambda: datetime.now(UTC))
    meta = {"refreshed_at": 100_000.0, "db_clock_offset_s": 2.0}
    monkeypatch.setattr(res.local, "meta", lambda: meta)
    yield res, wall
    res.close()
    engine.dispose()


def test_a_host_clock_set_back_does_not_back_date_journaled_times(
        set_back: tuple[Any, SetBack]) -> None:
    """A9: the primary's time at the snapshot's last refresh bounds what this host stamps:
    the journal entry and the snapshot's units of work (a degraded decision's created_at)."""
    from arbiter_cli.adapters.sql.clock import EstimatedClock

    res, wall = set_back
    floor = 100_002.0  # refreshed_at plus the offset measured then
    assert res.primary_time() == floor
    offset = res.local_clock_offset_s()
    assert EstimatedClock(offset, wall=wall.time)().timestamp() == floor
    wall.now += 30.0  # the time since still counts
    assert res.primary_time() == floor + 30.0
    assert EstimatedClock(offset, wall=wall.time)().timestamp() == floor + 30.0
    seq = res.journal.append(op_id="op-1", tenant="default", kind="agents.heartbeat",
                             principal=principal_record(Principal.local_admin("default")),
                             args={"agent_id": "a1"})
    stamped = res.journal.by_seq(seq)
    assert stamped is not None and stamped.created_at == floor + 30.0
    assert any("clock is 86400s behind" in w for w in res.warnings)


def test_a_correct_host_clock_is_neither_raised_nor_warned(
        set_back: tuple[Any, SetBack]) -> None:
    """Only a clock behind the last refresh is raised: a correct one keeps the measured
    offset, silently."""
    res, wall = set_back
    wall.now = 100_060.0
    assert res.local_clock_offset_s() == 2.0
    assert res.primary_time() == 100_062.0
    assert res.warnings == []


def test_the_newest_journal_entry_bounds_a_later_process(
        set_back: tuple[Any, SetBack]) -> None:
    """A9: a host clock set back after this journal's newest entry (later than the snapshot)
    stamps no earlier than that entry, in the journal and on the snapshot."""
    from arbiter_cli.resilience.journal import open_journal

    res, wall = set_back
    journal = open_journal(res.settings.paths.data_dir, PG_URL, max_entries=5,
                           clock=lambda: 200_000.0)
    try:
        append(journal, 1)
    finally:
        journal.close()
    assert res.primary_time() == 200_000.0
    assert wall.now + res.local_clock_offset_s() == 200_000.0
