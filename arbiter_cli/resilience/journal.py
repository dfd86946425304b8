"""The durable local journal of writes made while the primary is unavailable (SPEC §7).

One SQLite file per primary, in ``<data_dir>/resilience/<key>/journal.db``, with
``synchronous=FULL``: an entry is on disk before the write is acknowledged. Entries replay in
``seq`` order; an applied entry is deleted, a conflicting one stays as ``conflict`` until an
operator resolves it (``arbiter journal list --conflicts``, ``arbiter journal resolve``). The
stdlib ``sqlite3`` is enough here and keeps the degraded path free of SQLAlchemy's
per-statement overhead.

Every entry carries an HMAC-SHA256, under the host's journal key (``resilience/files.py``), of
a canonical encoding of every field replay uses: seq, op id, tenant, kind, principal, arguments,
correlation id and time. Replay applies only entries whose HMAC verifies (SPEC §4.1), so a row
written into the file by anything but arbiter, or copied from another host, is a conflict.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arbiter_cli.errors import StorageUnavailable
from arbiter_cli.resilience.files import KEY_FILE, journal_key, key_path, private_dir, private_sqlite
from arbiter_cli.resilience.identity import store_key, stranded_journals

PENDING = "pending"
CONFLICT = "conflict"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    op_id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    kind TEXT NOT NULL,
    principal TEXT NOT NULL,
    args TEXT NOT NULL,
    correlation_id TEXT,
    created_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    mac TEXT
);
CREATE INDEX IF NOT EXISTS ix_entries_state_tenant ON entries (state, tenant, seq);
"""
_SELECT = ("SELECT seq, op_id, tenant, kind, principal, args, correlation_id, created_at, "
           "state, error, attempts, mac FROM entries ")
MAC_VERSION = "arbiter-journal-v1"
#: A pending entry that fails this many replays for a non-transient reason becomes a conflict.
MAX_ATTEMPTS = 3


def resilience_dir(data_dir: Path, url: str) -> Path:
    return data_dir / "resilience" / store_key(url)


def private_resilience_dir(data_dir: Path, url: str) -> Path:
    """``resilience_dir`` created (with ``resilience/``) 0700, as SPEC §4.1 asks."""
    return private_dir(resilience_dir(data_dir, url), top=data_dir / "resilience")


class JournalFull(StorageUnavailable):
    code = "storage_unavailable"


def damaged(path: Path, exc: sqlite3.Error) -> StorageUnavailable:
    """A journal file SQLite cannot open as one (damaged, truncated, not a journal): exit 10,
    with what to do. It may hold acknowledged writes, so it is never replaced in place."""
    return StorageUnavailable(
        f"the journal {path} cannot be read ({exc}): it may hold acknowledged writes; move it "
        "(with its -wal and -shm files) aside to keep them for recovery, and arbiter starts "
        "a new journal")


@dataclass(frozen=True)
class Entry:
    seq: int
    op_id: str
    tenant: str
    kind: str
    principal: dict[str, Any]
    args: dict[str, Any]
    correlation_id: str | None
    created_at: float
    state: str
    error: str | None
    attempts: int
    mac: str | None = None
    stored: tuple[str, str] | None = field(default=None, compare=False, repr=False)

    def signed_fields(self) -> tuple[Any, ...]:
        """What the HMAC covers: every field replay reads, as stored (principal and arguments
        as their stored JSON text)."""
        principal, args = self.stored or (_dumps(self.principal), _dumps(self.args))
        return (self.seq, self.op_id, self.tenant, self.kind, principal, args,
                self.correlation_id, self.created_at)

    def to_dict(self, now: float) -> dict[str, Any]:
        return {"seq": self.seq, "op_id": self.op_id, "tenant": self.tenant, "kind": self.kind,
                "state": self.state, "error": self.error, "attempts": self.attempts,
                "age_s": _age(now, self.created_at),
                "correlation_id": self.correlation_id}


class Journal:
    """Append, read in order, mark applied or conflicting. Safe across processes (SQLite locks)."""

    def __init__(self, path: Path, *, max_entries: int = 100_000, clock: Any = time.time,
                 key_file: Path | None = None) -> None:
        self.path = path
        self.max_entries = max_entries
        self._clock = clock
        self._key_file = key_file or path.with_name(KEY_FILE)
        self._key: bytes | None = None
        private_sqlite(path)
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(entries)")}
            if "mac" not in columns:  # an arbiter's before HMACs: its entries have none
                self._db.execute("ALTER TABLE entries ADD COLUMN mac TEXT")
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise damaged(path, exc) from None

    def use_clock(self, clock: Any) -> None:
        """Stamp the next entries with ``clock`` (a journal kept open between commands gets
        each command's, ``gateway._OpenJournals``)."""
        self._clock = clock

    @property
    def key(self) -> bytes:
        """The host's journal key, read (or created) on first use."""
        if self._key is None:
            self._key = journal_key(self._key_file)
        return self._key

    def mac(self, entry: Entry) -> str:
        return entry_mac(self.key, entry.signed_fields())

    def verify(self, entry: Entry) -> bool:
        """Whether the entry's HMAC is the one this host's key gives its fields."""
        if not isinstance(entry.mac, str):
            return False
        try:
            return hmac.compare_digest(entry.mac, self.mac(entry))
        except (TypeError, ValueError):  # a field (or MAC) no append could have written
            return False

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # ------------------------------------------------------------------ writes

    def append(self, *, op_id: str, tenant: str, kind: str, principal: Mapping[str, Any],
               args: Mapping[str, Any], correlation_id: str | None = None) -> int:
        """Store one signed op durably (fsync'd at COMMIT) and return its sequence number."""
        key = self.key  # before the transaction: a missing key is made outside it
        principal_text, args_text = _dumps(principal), _dumps(args)
        with self._write() as db:
            # Entries are in order: one is never stamped before the one before it (A9).
            (count, last) = db.execute(
                "SELECT count(*), max(CASE WHEN typeof(created_at) IN ('integer', 'real') "
                "THEN created_at END) FROM entries").fetchone()
            if count >= self.max_entries:
                raise self._full(count)
            created_at = max(float(self._clock()), -math.inf if last is None else float(last))
            cursor = db.execute(
                "INSERT INTO entries (op_id, tenant, kind, principal, args, correlation_id, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (op_id, tenant, kind, principal_text, args_text, correlation_id, created_at))
            seq = int(cursor.lastrowid or 0)
            signed = (seq, op_id, tenant, kind, principal_text, args_text, correlation_id,
                      created_at)
            db.execute("UPDATE entries SET mac = ? WHERE seq = ?",
                       (entry_mac(key, signed), seq))
            return seq

    def check_room(self) -> None:
        """JournalFull unless one more entry fits: asked *before* a degraded write runs on the
        snapshot, so a refused write leaves nothing behind (``append`` checks again)."""
        (count,) = self._db.execute("SELECT count(*) FROM entries").fetchone()
        if count >= self.max_entries:
            raise self._full(count)

    def _full(self, count: int) -> JournalFull:
        return JournalFull(
            f"journal full ({count} entries, resilience.journal.max_entries): the write "
            "was not accepted; restore the database and run `arbiter journal replay`")

    def applied(self, seq: int) -> None:
        self.applied_many([seq])

    def applied_many(self, seqs: list[int]) -> None:
        """Delete applied entries in one fsync'd transaction (replay batches them)."""
        if not seqs:
            return
        with self._write() as db:
            db.executemany("DELETE FROM entries WHERE seq = ?", [(seq,) for seq in seqs])

    def conflict(self, seq: int, error: str) -> None:
        with self._write() as db:
            db.execute("UPDATE entries SET state = ?, error = ?, attempts = attempts + 1 "
                       "WHERE seq = ?", (CONFLICT, error[:1000], seq))

    def attempted(self, seq: int, error: str) -> None:
        with self._write() as db:
            db.execute("UPDATE entries SET attempts = attempts + 1, error = ? WHERE seq = ?",
                       (error[:1000], seq))

    def failed(self, seq: int, error: str, *, limit: int = MAX_ATTEMPTS) -> bool:
        """Count a failed replay of a pending entry; at ``limit`` failures it becomes a
        conflict (True), so one entry cannot hold its tenant's writes back for ever."""
        with self._write() as db:
            row = db.execute("SELECT attempts FROM entries WHERE seq = ? AND state = ?",
                             (seq, PENDING)).fetchone()
            if row is None:
                return False
            attempts = int(row[0]) + 1
            give_up = attempts >= limit
            note = f"{error} (failed {attempts} replays; kept as a conflict)" if give_up else error
            db.execute("UPDATE entries SET attempts = ?, error = ?, state = ? WHERE seq = ?",
                       (attempts, note[:1000], CONFLICT if give_up else PENDING, seq))
            return give_up

    def drop(self, seq: int) -> None:
        """Delete one conflict (``journal resolve --drop``)."""
        with self._write() as db:
            db.execute("DELETE FROM entries WHERE seq = ? AND state = ?", (seq, CONFLICT))

    def retry(self, seq: int) -> None:
        """Put one conflict back to pending, attempts reset, signed again with this host's key
        (``journal resolve --retry``: the operator vouches for it; replay re-admits its token)."""
        found = self.by_seq(seq)
        if found is None or found.state != CONFLICT:
            return
        with self._write() as db:
            db.execute("UPDATE entries SET state = ?, attempts = 0, error = NULL, mac = ? "
                       "WHERE seq = ? AND state = ?", (PENDING, self.mac(found), seq, CONFLICT))

    # ------------------------------------------------------------------ reads

    def pending(self, tenant: str | None = None) -> int:
        if tenant is None:
            row = self._db.execute("SELECT count(*) FROM entries WHERE state = ?", (PENDING,))
        else:
            row = self._db.execute("SELECT count(*) FROM entries WHERE state = ? AND tenant = ?",
                                   (PENDING, tenant))
        return int(row.fetchone()[0])

    def conflicts(self) -> int:
        row = self._db.execute("SELECT count(*) FROM entries WHERE state = ?", (CONFLICT,))
        return int(row.fetchone()[0])

    def oldest_age_s(self) -> float | None:
        row = self._db.execute("SELECT min(created_at) FROM entries WHERE state = ? AND "
                               "typeof(created_at) IN ('integer', 'real')", (PENDING,))
        oldest = row.fetchone()[0]
        return None if oldest is None else _age(self._clock(), oldest)

    def next_pending(self, after: int = 0) -> Entry | None:
        row = self._db.execute(
            _SELECT + "WHERE state = ? AND seq > ? ORDER BY seq LIMIT 1",
            (PENDING, after)).fetchone()
        return None if row is None else _entry(row)

    def by_seq(self, seq: int) -> Entry | None:
        row = self._db.execute(_SELECT + "WHERE seq = ?",
                               (seq,)).fetchone()
        return None if row is None else _entry(row)

    def by_op(self, op_id: str) -> Entry | None:
        row = self._db.execute(_SELECT + "WHERE op_id = ?",
                               (op_id,)).fetchone()
        return None if row is None else _entry(row)

    def entries(self, *, conflicts_only: bool = False, limit: int = 100,
                before: int | None = None) -> list[Entry]:
        """Newest first (SPEC §0 lists); ``before`` is the last seq of the previous page."""
        sql = _SELECT + "WHERE seq < ?"
        params: list[Any] = [2**62 if before is None else before]
        if conflicts_only:
            sql += " AND state = ?"
            params.append(CONFLICT)
        sql += " ORDER BY seq DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [_entry(row) for row in self._db.execute(sql, params).fetchall()]

    def conflicting_agent_ids(self, tenant: str, before_seq: int) -> set[str]:
        """Agent ids whose journaled registration conflicted (earlier than ``before_seq``).

        Later journaled ops on those ids were made to *our* agent, not to the primary's agent
        of the same id: applying them would overwrite someone else's agent.
        """
        rows = self._db.execute(
            "SELECT args FROM entries WHERE state = ? AND tenant = ? AND kind = ? AND seq < ?",
            (CONFLICT, tenant, "agents.register", before_seq)).fetchall()
        ids: set[str] = set()
        for (raw,) in rows:
            try:
                for doc in json.loads(raw).get("raws", []):
                    if isinstance(doc, dict) and isinstance(doc.get("id"), str):
                        ids.add(doc["id"])
            except (ValueError, AttributeError):
                continue
        return ids

    def conflicting_decision_ids(self, tenant: str, before_seq: int) -> set[str]:
        """Decision ids whose journaled route conflicted (earlier than ``before_seq``): their
        outcomes are about a decision the database does not hold."""
        rows = self._db.execute(
            "SELECT args FROM entries WHERE state = ? AND tenant = ? AND kind = ? AND seq < ?",
            (CONFLICT, tenant, "routing.route", before_seq)).fetchall()
        ids: set[str] = set()
        for (raw,) in rows:
            try:
                found = json.loads(raw).get("decision", {}).get("decision_id")
            except (ValueError, AttributeError):
                continue
            if isinstance(found, str):
                ids.add(found)
        return ids

    def has_op(self, op_id: str) -> bool:
        row = self._db.execute("SELECT 1 FROM entries WHERE op_id = ?", (op_id,)).fetchone()
        return row is not None


def _age(now: float, created_at: Any) -> float | None:
    """Seconds since ``created_at``, never negative; None for a time that is not a finite
    number (a damaged or forged row: listed all the same, so it can be resolved)."""
    if isinstance(created_at, bool) or not isinstance(created_at, int | float) \
            or not math.isfinite(created_at):
        return None
    return round(max(0.0, now - created_at), 3)


def _dumps(value: Mapping[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def entry_mac(key: bytes, signed: tuple[Any, ...]) -> str:
    """HMAC-SHA256 of a JSON array of the signed fields: unambiguous, and what is stored."""
    body = json.dumps([MAC_VERSION, *signed], separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


def _entry(row: tuple[Any, ...]) -> Entry:
    return Entry(seq=row[0], op_id=str(row[1]), tenant=str(row[2]), kind=str(row[3]),
                 principal=_loads(row[4]), args=_loads(row[5]),
                 correlation_id=row[6] if isinstance(row[6], str) else None,
                 created_at=row[7], state=row[8], error=row[9], attempts=row[10], mac=row[11],
                 stored=(str(row[4]), str(row[5])))


def _loads(text: Any) -> dict[str, Any]:
    """A stored JSON object; anything else (a damaged or forged row) reads as an empty one,
    which no HMAC covers and no kind accepts."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


class PendingProbe:
    """How many entries of a tenant wait in the journal of ``url`` on this host, for every
    thread of one process (``arbiter serve``): one connection, kept open, used under a lock.

    A write asks this before it runs (``Resilience.write``); opening the journal for it on every
    request cost more CPU than the rest of the request's wiring together. The count is what a
    fresh connection would read (autocommit: each statement sees what other connections and
    processes committed). ``None`` when the journal cannot be opened or read here: the caller
    then opens its own, which reports why."""

    def __init__(self, data_dir: Path, url: str, *, max_entries: int) -> None:
        self._data_dir, self._url, self._max_entries = data_dir, url, max_entries
        self._journal: Journal | None = None
        self._lock = threading.Lock()

    def __call__(self, tenant: str) -> int | None:
        with self._lock:
            try:
                if self._journal is None:
                    self._journal = open_journal(self._data_dir, self._url,
                                                 max_entries=self._max_entries)
                return self._journal.pending(tenant)
            except (OSError, sqlite3.Error, StorageUnavailable):
                self._close()
                return None

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._journal is not None:
            with suppress(sqlite3.Error):
                self._journal.close()
            self._journal = None


def open_for(settings: Any) -> Journal | None:
    """The journal of ``database.url``, or None for a SQLite primary (it has none, SPEC §7)."""
    url = settings.database_url
    if url.startswith("sqlite"):
        return None
    return open_journal(settings.paths.data_dir, url,
                        max_entries=settings.resilience.journal.max_entries)


def open_journal(data_dir: Path, url: str, *, max_entries: int,
                 clock: Any = time.time) -> Journal:
    """The journal of the primary at ``url`` on this host, in its private folder; ``clock``
    stamps its entries (a resilience layer passes the primary's time as the snapshot knows it)."""
    directory = private_resilience_dir(data_dir, url)
    return Journal(directory / "journal.db", max_entries=max_entries, clock=clock,
                   key_file=key_path(data_dir))


def resilience_status(settings: Any) -> dict[str, Any]:
    """Backlog, conflicts and breaker of ``database.url``, without touching the database.

    ``stranded``: the *other* journals of data_dir that hold entries (identity.py), each with
    its key, path, pending and conflict counts, and the database it recorded.

    ``journal_readable`` is False when the journal file cannot be opened or read (damaged,
    another user's, a link): its backlog is then unknown, not 0.

    ``journal_writable`` says whether a write could be journaled now: the journal has room
    *and* the local snapshot exists (a degraded write runs on it first; without one it exits
    10, SPEC §7.1 "Health tells the truth"). ``journal_problem`` says why not.
    """
    status: dict[str, Any] = {"backlog": 0, "conflicts": 0, "oldest_age_s": None,
                              "journal_writable": False, "journal_problem": None,
                              "journal_readable": True,
                              "snapshot": False, "degraded": False,
                              "breaker": {"state": "closed", "opened_at": None},
                              "stranded": []}
    url = settings.database_url
    current = None if url.startswith("sqlite") else store_key(url)
    status["stranded"] = [s.to_dict() for s in
                          stranded_journals(settings.paths.data_dir, current)]
    if url.startswith("sqlite"):
        return status
    from arbiter_cli.resilience.breaker import breaker_for
    from arbiter_cli.resilience.snapshot import LocalStore

    breaker = breaker_for(settings, url).snapshot()
    status["breaker"] = {"state": breaker.state, "opened_at": breaker.opened_at_rfc3339()}
    status["snapshot"] = LocalStore(resilience_dir(settings.paths.data_dir, url)).exists()
    try:
        journal = open_for(settings)
    except (OSError, sqlite3.Error, StorageUnavailable) as exc:
        status["journal_problem"] = f"the journal cannot be opened: {exc}"
        status["journal_readable"] = False
        return status
    assert journal is not None
    try:
        backlog, conflicts = journal.pending(), journal.conflicts()
        room = backlog + conflicts < journal.max_entries
        status.update(backlog=backlog, conflicts=conflicts,
                      oldest_age_s=journal.oldest_age_s(),
                      journal_writable=room and status["snapshot"])
        if not room:
            status["journal_problem"] = "the journal is full (resilience.journal.max_entries)"
        elif not status["snapshot"]:
            status["journal_problem"] = (
                "no local snapshot yet (it is taken after the first command that reaches the "
                "database), so writes would exit 10")
    except sqlite3.Error as exc:
        status["journal_problem"] = f"the journal cannot be read: {exc}"
        status["journal_readable"] = False
    finally:
        journal.close()
    status["degraded"] = status["breaker"]["state"] != "closed" or status["backlog"] > 0
    return status
