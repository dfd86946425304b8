"""The durable local journal of writes made while the primary is unavailable (SPEC §7).

One SQLite file per primary, in ``<data_dir>/resilience/<key>/journal.db``, with
``synchronous=FULL``: an entry is on disk before the write is acknowledged. Entries replay in
``seq`` order; an applied entry is deleted, a conflicting one stays as ``conflict`` until an
operator looks at it (``arbiter journal list --conflicts``). The stdlib ``sqlite3`` is enough
here and keeps the degraded path free of SQLAlchemy's per-statement overhead.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arbiter_cli.errors import StorageUnavailable

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
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS ix_entries_state_tenant ON entries (state, tenant, seq);
"""


def store_key(url: str) -> str:
    """A stable, password-free name for the primary at ``url`` (the breaker's key too)."""
    from arbiter_cli.resilience.breaker import url_without_password

    return hashlib.sha256(url_without_password(url).encode()).hexdigest()[:16]


def resilience_dir(data_dir: Path, url: str) -> Path:
    return data_dir / "resilience" / store_key(url)


class JournalFull(StorageUnavailable):
    code = "storage_unavailable"


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

    def to_dict(self, now: float) -> dict[str, Any]:
        return {"seq": self.seq, "op_id": self.op_id, "tenant": self.tenant, "kind": self.kind,
                "state": self.state, "error": self.error, "attempts": self.attempts,
                "age_s": round(max(0.0, now - self.created_at), 3),
                "correlation_id": self.correlation_id}


class Journal:
    """Append, read in order, mark applied or conflicting. Safe across processes (SQLite locks)."""

    def __init__(self, path: Path, *, max_entries: int = 100_000,
                 clock: Any = time.time) -> None:
        self.path = path
        self.max_entries = max_entries
        self._clock = clock
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

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
        """Store one op durably (fsync'd at COMMIT) and return its sequence number."""
        with self._write() as db:
            (count,) = db.execute("SELECT count(*) FROM entries").fetchone()
            if count >= self.max_entries:
                raise self._full(count)
            cursor = db.execute(
                "INSERT INTO entries (op_id, tenant, kind, principal, args, correlation_id, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (op_id, tenant, kind, _dumps(principal), _dumps(args), correlation_id,
                 self._clock()))
            return int(cursor.lastrowid or 0)

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
        with self._write() as db:
            db.execute("DELETE FROM entries WHERE seq = ?", (seq,))

    def conflict(self, seq: int, error: str) -> None:
        with self._write() as db:
            db.execute("UPDATE entries SET state = ?, error = ?, attempts = attempts + 1 "
                       "WHERE seq = ?", (CONFLICT, error[:1000], seq))

    def attempted(self, seq: int, error: str) -> None:
        with self._write() as db:
            db.execute("UPDATE entries SET attempts = attempts + 1, error = ? WHERE seq = ?",
                       (error[:1000], seq))

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
        row = self._db.execute("SELECT min(created_at) FROM entries WHERE state = ?", (PENDING,))
        oldest = row.fetchone()[0]
        return None if oldest is None else round(max(0.0, self._clock() - oldest), 3)

    def next_pending(self, after: int = 0) -> Entry | None:
        row = self._db.execute(
            "SELECT seq, op_id, tenant, kind, principal, args, correlation_id, created_at, "
            "state, error, attempts FROM entries WHERE state = ? AND seq > ? ORDER BY seq "
            "LIMIT 1", (PENDING, after)).fetchone()
        return None if row is None else _entry(row)

    def entries(self, *, conflicts_only: bool = False, limit: int = 100,
                before: int | None = None) -> list[Entry]:
        """Newest first (SPEC §0 lists); ``before`` is the last seq of the previous page."""
        sql = ("SELECT seq, op_id, tenant, kind, principal, args, correlation_id, created_at, "
               "state, error, attempts FROM entries WHERE seq < ?")
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

    def has_op(self, op_id: str) -> bool:
        row = self._db.execute("SELECT 1 FROM entries WHERE op_id = ?", (op_id,)).fetchone()
        return row is not None


def _dumps(value: Mapping[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _entry(row: tuple[Any, ...]) -> Entry:
    return Entry(seq=row[0], op_id=row[1], tenant=row[2], kind=row[3],
                 principal=json.loads(row[4]), args=json.loads(row[5]), correlation_id=row[6],
                 created_at=row[7], state=row[8], error=row[9], attempts=row[10])


def open_for(settings: Any) -> Journal | None:
    """The journal of ``database.url``, or None for a SQLite primary (it has none, SPEC §7)."""
    url = settings.database_url
    if url.startswith("sqlite"):
        return None
    return Journal(resilience_dir(settings.paths.data_dir, url) / "journal.db",
                   max_entries=int(settings["resilience.journal.max_entries"]))


def resilience_status(settings: Any) -> dict[str, Any]:
    """Backlog, conflicts and breaker of ``database.url``, without touching the database."""
    status: dict[str, Any] = {"backlog": 0, "conflicts": 0, "oldest_age_s": None,
                              "journal_writable": False, "degraded": False,
                              "breaker": {"state": "closed", "opened_at": None}}
    url = settings.database_url
    if url.startswith("sqlite"):
        return status
    from arbiter_cli.resilience.breaker import breaker_for

    breaker = breaker_for(settings, url).snapshot()
    status["breaker"] = {"state": breaker.state, "opened_at": breaker.opened_at_rfc3339()}
    try:
        journal = open_for(settings)
    except (OSError, sqlite3.Error):
        return status
    assert journal is not None
    try:
        backlog = journal.pending()
        status.update(backlog=backlog, conflicts=journal.conflicts(),
                      oldest_age_s=journal.oldest_age_s(),
                      journal_writable=backlog + journal.conflicts() < journal.max_entries)
    except sqlite3.Error:
        pass
    finally:
        journal.close()
    status["degraded"] = status["breaker"]["state"] != "closed" or status["backlog"] > 0
    return status
