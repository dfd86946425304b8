"""The local snapshot of a network primary (SPEC §7): reads, token checks and degraded writes.

``<data_dir>/resilience/<key>/snapshot.db`` is a SQLite database with arbiter's own schema,
holding a copy of every tenant's agents (with capabilities), arms, open decisions, tokens
(hashes only) and tenants. While the primary is unavailable the real services run against it,
so a degraded command validates, ranks, routes and checks tokens exactly as usual; its writes
are then journaled for replay.

A refresh is incremental (agents whose version changed, arms updated since the last refresh,
rows gone from the primary deleted), is taken under a file lock, and is published by an atomic
rename, so a reader never sees half a snapshot. What is renamed is a *symlink*:
``snapshot.db`` points at a generation ``generations/<n>.db``. Renaming a new SQLite file over
one that other processes hold open in WAL mode corrupts it (the old ``-wal`` and ``-shm`` files
are named after the path, and a new opener would pair them with the new file); with
generations, every file keeps its own WAL, a process that opened the old generation finishes on
it, and old generations are removed once nobody can still be starting on them.

A refresh also records ``db_clock_offset_s``, the primary's clock minus this host's (one
``SELECT`` of the primary's time, taken again when the last one is ``CLOCK_EVERY_S`` old or
more, by this host's clock either way): the snapshot's units of work tell time with it
(``adapters/sql/clock.EstimatedClock``), so a host with a wrong clock reaps and stamps on its
snapshot by the primary's time, as it does on the primary (SPEC §4.1).

Between refreshes, what this host's own commands commit on the primary is *written through*
(:meth:`LocalStore.write_through`): the agent rows a claim, a release or an update left (read
back from the primary, with its ``version``), the decisions opened and closed. A host that goes
degraded right after a commit therefore knows that the agent it just filled is full (issue 17,
F2). A write-through and the publishing of a new generation exclude each other
(``snapshot.publish.lock``, held only for a few milliseconds by either), and a refresh carries
into its new generation whatever was written to the old one after it copied it: agent rows
whose ``version`` is newer, and decisions closed meanwhile.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from arbiter_cli.resilience.files import FILE_MODE, private_dir, private_sqlite

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from arbiter_cli.adapters.sql.written import Written

SNAPSHOT = "snapshot.db"
PUBLISH_LOCK = "snapshot.publish.lock"
CLOSED = "arbiter_snapshot_closed"  # decisions closed by a write-through (merged on publish)
CREATE_CLOSED = "CREATE TABLE IF NOT EXISTS arbiter_snapshot_closed (decision_id TEXT PRIMARY KEY)"
GENERATIONS = "generations"
KEEP_GENERATIONS = 3
#: The primary's clock offset is measured again by a refresh this long after the last time
#: (one round trip; clocks drift slowly, and a host whose clock steps is caught within it).
CLOCK_EVERY_S = 60.0
KEEP_OLD_FOR_S = 600.0  # a generation replaced this long ago has no process starting on it


class LocalStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / SNAPSHOT
        self._held: tuple[Path, sqlite3.Connection] | None = None  # see write_through

    def close(self) -> None:
        """Close the connection write-throughs keep (its WAL checkpoint happens here)."""
        if self._held is not None:
            self._held[1].close()
            self._held = None

    def exists(self) -> bool:
        return self.path.exists()

    def current(self) -> Path:
        """The generation ``snapshot.db`` points at now (resolved once per opener)."""
        return self.path.resolve()

    def url(self) -> str:
        return f"sqlite:///{self.current()}"

    def meta(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        try:
            db = sqlite3.connect(f"file:{self.current()}?mode=ro", uri=True, timeout=5)
            try:
                row = db.execute("SELECT value FROM arbiter_snapshot_meta WHERE name = 'meta'").fetchone()
            finally:
                db.close()
        except sqlite3.Error:
            return {}
        return {} if row is None else dict(json.loads(row[0]))

    def due(self, interval_s: float, now: float | None = None) -> bool:
        """Whether the snapshot is missing or older than ``interval_s`` (a cheap local read)."""
        # deferred: sqlalchemy; `journal status` loads this module without it
        from arbiter_cli.adapters.sql.schema_version import HEAD

        meta = self.meta()
        refreshed = meta.get("refreshed_at")
        if refreshed is None or meta.get("schema") != HEAD:  # made by another arbiter version
            return True
        return (time.time() if now is None else now) - float(refreshed) >= interval_s

    def last_took_s(self) -> float | None:
        """How long the last refresh took to build (None before the first, or if unknown)."""
        took = self.meta().get("took_s")
        return None if took is None else float(took)

    def try_lock(self) -> int | None:
        """The refresh lock taken now on a new descriptor (handed to a background refresh,
        which keeps it while it runs), or None while someone else refreshes."""
        private_dir(self.directory, top=self.directory.parent)
        fd = os.open(self.directory / "snapshot.lock", os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def age_s(self, now: float | None = None) -> float | None:
        refreshed = self.meta().get("refreshed_at")
        if refreshed is None:
            return None
        return round(max(0.0, (time.time() if now is None else now) - float(refreshed)), 3)

    def write_through(self, written: Written, *, wait_s: float) -> bool:
        """Write what a command committed on the primary into the current generation; True if
        it was written (False: no snapshot yet, one of another schema, or the publish lock
        stayed busy for ``wait_s``; the next refresh brings it then).

        An agent row is written only if it is newer (a higher ``version``) than the
        snapshot's, so two commands writing through in the other order never move a row
        back. An agent the snapshot does not hold yet is left to the refresh (with its
        capabilities). A decision is written as open only together with its agent's row;
        a closed one is deleted and remembered until the next refresh has published.
        """
        if not written or not self.path.exists():
            return False
        with file_lock(self.directory / PUBLISH_LOCK, blocking=True, wait_s=wait_s) as locked:
            if not locked:
                return False
            return _write_rows(self._connection(self.current(), max(wait_s, 0.05)), written)

    def _connection(self, generation: Path, busy_timeout_s: float) -> sqlite3.Connection:
        """A connection to ``generation``, kept open until :meth:`close`, after the command
        answered: the fsyncs happen there, not before the answer.

        WAL mode. A write-through commits with ``synchronous=OFF`` (even ``NORMAL`` syncs a new
        WAL file's header and directory, ~6 ms here, and the WAL is new in nearly every command
        since the last connection to close deletes it), and the connection is back at
        ``NORMAL`` right after, so the checkpoint the last connection makes on close, whenever
        that is, syncs the WAL before writing the database file and the file after. A power cut
        before that checkpoint can lose the last write-throughs, never damage the file (WAL
        frames are checksummed), and the next refresh brings back what the primary holds."""
        if self._held is not None and self._held[0] == generation:
            return self._held[1]
        db = sqlite3.connect(generation, timeout=busy_timeout_s, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")  # as every engine on it sets (a no-op then)
        db.execute("PRAGMA synchronous=NORMAL")
        self.close()  # another generation's, closed after the new one opened
        self._held = (generation, db)
        return db

    def refresh(self, primary: Engine, *, interval_s: float, force: bool = False,
                blocking: bool = False, lock_held: bool = False) -> bool:
        """Bring the snapshot up to date if it is older than ``interval_s``; True if it ran.

        ``lock_held``: the caller already holds the refresh lock (``try_lock``)."""
        if lock_held:
            return self._refresh_locked(primary, interval_s, force)
        with file_lock(self.directory / "snapshot.lock", blocking=blocking) as locked:
            if not locked:
                return False  # another process is refreshing right now
            return self._refresh_locked(primary, interval_s, force)

    def _refresh_locked(self, primary: Engine, interval_s: float, force: bool) -> bool:
        meta = self.meta()
        now = time.time()
        if not force and meta and now - float(meta.get("refreshed_at", 0)) < interval_s:
            return False
        self._rebuild(primary, meta, now)
        return True

    def _rebuild(self, primary: Engine, meta: dict[str, Any], now: float) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        # deferred: sqlalchemy; `journal status` loads this module without it
        from arbiter_cli.adapters.sql import tables as t
        from arbiter_cli.adapters.sql.clock import measure_offset
        from arbiter_cli.adapters.sql.schema_version import HEAD

        private_dir(self.directory, top=self.directory.parent)  # resilience/<key>/: 0700 (SPEC §4.1 "Files")
        generations = private_dir(self.directory / GENERATIONS)
        tmp = private_sqlite(generations / f"{time.time_ns()}.db")  # 0600 before any byte
        if self.path.exists() and meta and meta.get("schema") == HEAD:
            _copy(self.current(), tmp)
        else:  # none yet, or made by an arbiter with another schema: a full copy
            meta = {}
        started = time.perf_counter()
        local = create_engine(f"sqlite:///{tmp}", poolclass=NullPool)
        try:
            t.metadata.create_all(local)
            with local.begin() as dst, primary.connect() as conn:
                # One consistent view of the primary: agents and open decisions agree.
                src = (conn.execution_options(isolation_level="REPEATABLE READ")
                       if primary.dialect.name == "postgresql" else conn)
                dst.exec_driver_sql("CREATE TABLE IF NOT EXISTS arbiter_snapshot_meta "
                                    "(name TEXT PRIMARY KEY, value TEXT NOT NULL)")
                dst.exec_driver_sql(CREATE_CLOSED)
                arms_since = _sync(src, dst, meta.get("arms_watermark"))
                offset, measured = clock_offset(meta), meta.get("db_clock_measured_at")
                if offset is None or not isinstance(measured, int | float) \
                        or abs(now - measured) >= CLOCK_EVERY_S:
                    offset, measured = round(measure_offset(src), 3), now
                record = {"refreshed_at": now, "arms_watermark": arms_since,
                          "db_clock_offset_s": offset, "db_clock_measured_at": measured,
                          "primary_dialect": primary.dialect.name, "schema": HEAD,
                          "took_s": round(time.perf_counter() - started, 4)}
                dst.exec_driver_sql("INSERT OR REPLACE INTO arbiter_snapshot_meta VALUES ('meta', ?)",
                                    (json.dumps(record),))
        finally:
            local.dispose()
        with file_lock(self.directory / PUBLISH_LOCK, blocking=True):
            if self.path.exists() and meta:  # written to the old one since it was copied
                _merge_newer(self.current(), tmp)
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            _fsync_dir(generations)
            link = self.directory / (SNAPSHOT + ".link")
            link.unlink(missing_ok=True)
            os.symlink(Path(GENERATIONS) / tmp.name, link)
            os.replace(link, self.path)  # atomic: openers see the old generation or the new one
            _fsync_dir(self.directory)
        _prune(generations, keep=tmp.name, now=now)


def clock_offset(meta: dict[str, Any]) -> float | None:
    """The ``db_clock_offset_s`` a refresh recorded: a finite number of seconds, else None
    (a snapshot of an older arbiter, or a damaged one)."""
    import math

    offset = meta.get("db_clock_offset_s")
    if isinstance(offset, bool) or not isinstance(offset, int | float):
        return None
    return float(offset) if math.isfinite(offset) else None


def _sync(src: Connection, dst: Connection, arms_watermark: str | None) -> str | None:
    from sqlalchemy import delete, insert, select

    # deferred: sqlalchemy; `journal status` loads this module without it
    from arbiter_cli.adapters.sql import tables as t

    # Small tables: replaced whole.
    for table in (t.tenants, t.tokens):
        rows = [dict(r._mapping) for r in src.execute(select(table))]
        dst.execute(delete(table))
        if rows:
            dst.execute(insert(table), rows)
    # Agents: only those whose version changed; those gone from the primary are deleted
    # (their capabilities and arms go with them).
    a = t.agents.c
    remote = {r.uid: r.version for r in src.execute(select(a.uid, a.version))}
    local = {r.uid: r.version for r in dst.execute(select(a.uid, a.version))}
    gone = [uid for uid in local if remote.get(uid) != local[uid]]
    changed = [uid for uid, version in remote.items() if local.get(uid) != version]
    for chunk in _chunks(gone, 500):
        for child in (t.task_types, t.languages, t.specializations, t.arms):
            dst.execute(delete(child).where(child.c.agent_uid.in_(chunk)))
        dst.execute(delete(t.agents).where(a.uid.in_(chunk)))
    for chunk in _chunks(changed, 500):
        rows = [dict(r._mapping) for r in src.execute(select(t.agents).where(a.uid.in_(chunk)))]
        if rows:
            dst.execute(insert(t.agents), rows)
        for child in (t.task_types, t.languages, t.specializations):
            kids = [dict(r._mapping) for r in
                    src.execute(select(child).where(child.c.agent_uid.in_(chunk)))]
            if kids:
                dst.execute(insert(child), kids)
    # Arms: those updated since the last refresh, plus every arm of a re-copied agent.
    arms = select(t.arms)
    if arms_watermark is not None:
        since = datetime.fromisoformat(arms_watermark)
        arms = arms.where(t.arms.c.updated_at >= since)
    newest: datetime | None = None if arms_watermark is None else datetime.fromisoformat(
        arms_watermark)
    arm_rows = [dict(r._mapping) for r in src.execute(arms)]
    if changed and arms_watermark is not None:
        seen = {(r["agent_uid"], r["task_type"]) for r in arm_rows}
        for chunk in _chunks(changed, 500):
            for r in src.execute(select(t.arms).where(t.arms.c.agent_uid.in_(chunk))):
                if (r.agent_uid, r.task_type) not in seen:
                    arm_rows.append(dict(r._mapping))
    present = set(remote)
    arm_rows = [r for r in arm_rows if r["agent_uid"] in present]
    for chunk in _chunks(arm_rows, 500):
        for arm in chunk:
            dst.execute(delete(t.arms).where(t.arms.c.agent_uid == arm["agent_uid"],
                                             t.arms.c.task_type == arm["task_type"]))
        dst.execute(insert(t.arms), chunk)
    for arm in arm_rows:
        stamp = arm["updated_at"]
        if newest is None or stamp > newest:
            newest = stamp
    # Open decisions: an outcome during an outage can be checked against them.
    d = t.decisions.c
    dst.execute(delete(t.decisions))
    open_rows = [dict(r._mapping) for r in src.execute(select(t.decisions).where(d.status == "open"))]
    for chunk in _chunks(open_rows, 500):
        dst.execute(insert(t.decisions), chunk)
    if newest is None:
        return None
    return (newest if newest.tzinfo else newest.replace(tzinfo=UTC)).isoformat()


def _write_rows(db: sqlite3.Connection, written: Written) -> bool:
    """One SQLite transaction on a generation (see ``LocalStore.write_through``); False if
    the generation is of another schema (the next refresh rebuilds it).

    Plain ``sqlite3`` with the columns' own bind processors (what SQLAlchemy would store),
    since an engine and compiled statements per command cost more than the write itself."""
    # deferred: sqlalchemy; `journal status` loads this module without it
    from arbiter_cli.adapters.sql.schema_version import HEAD

    agents, decisions = _processors()
    db.execute("PRAGMA synchronous=OFF")  # this commit only (see LocalStore._connection)
    db.execute("BEGIN IMMEDIATE")
    try:
        row = db.execute("SELECT value FROM arbiter_snapshot_meta WHERE name = 'meta'").fetchone()
        if row is None or json.loads(row[0]).get("schema") != HEAD:
            return False
        accepted: set[str] = set()
        if written.agents:
            uids = list(written.agents)
            marks = ", ".join("?" * len(uids))
            held = dict(db.execute(f"SELECT uid, version FROM agents WHERE uid IN ({marks})",  # noqa: S608 - placeholders only
                                   uids).fetchall())
            names = [name for name in agents if name != "uid"]
            assign = ", ".join(f'"{name}" = ?' for name in names)
            for uid, values in written.agents.items():
                if uid in held and int(values["version"]) > int(held[uid]):
                    db.execute(f"UPDATE agents SET {assign} WHERE uid = ?",  # noqa: S608 - our columns
                               [agents[name](values[name]) for name in names] + [uid])
                    accepted.add(uid)
        if written.closed:
            db.execute(CREATE_CLOSED)
            for decision_id in sorted(written.closed):
                db.execute("DELETE FROM decisions WHERE decision_id = ?", (decision_id,))
                db.execute("INSERT OR IGNORE INTO arbiter_snapshot_closed VALUES (?)",
                           (decision_id,))
        names = list(decisions)
        columns = ", ".join(f'"{name}"' for name in names)
        marks = ", ".join("?" * len(names))
        for values in written.opened.values():
            if values["agent_uid"] in accepted:
                db.execute(f"INSERT OR IGNORE INTO decisions ({columns}) VALUES ({marks})",  # noqa: S608 - our columns
                           [decisions[name](values.get(name)) for name in names])
        db.execute("COMMIT")
        return True
    finally:
        if db.in_transaction:
            db.execute("ROLLBACK")
        db.execute("PRAGMA synchronous=NORMAL")


_PROCESSORS: tuple[dict[str, Any], dict[str, Any]] | None = None


def _processors() -> tuple[dict[str, Any], dict[str, Any]]:
    """Per column of ``agents`` and ``decisions``: value -> what SQLAlchemy stores in SQLite."""
    global _PROCESSORS
    if _PROCESSORS is None:
        from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite

        # deferred: sqlalchemy; `journal status` loads this module without it
        from arbiter_cli.adapters.sql import tables as t

        dialect = SQLiteDialect_pysqlite()

        def of(table: Any) -> dict[str, Any]:
            out = {}
            for column in table.c:
                process = column.type._cached_bind_processor(dialect)  # noqa: SLF001
                out[column.name] = process or _same
            return out

        _PROCESSORS = (of(t.agents), of(t.decisions))
    return _PROCESSORS


def _same(value: Any) -> Any:
    return value


def _merge_newer(old: Path, new: Path) -> None:
    """Carry into the new generation what reached the old one after it was copied: agent rows
    with a higher ``version`` (write-throughs, and this host's degraded claims), and the
    decisions write-throughs closed."""
    # deferred: sqlalchemy; `journal status` loads this module without it
    from arbiter_cli.adapters.sql import tables as t

    columns = [c.name for c in t.agents.c if c.name != "uid"]
    db = sqlite3.connect(new, timeout=30, isolation_level=None)
    try:
        db.execute("ATTACH DATABASE ? AS old", (str(old),))
        db.execute("BEGIN IMMEDIATE")
        targets = ", ".join(f'"{name}"' for name in columns)
        sources = ", ".join(f'o."{name}"' for name in columns)
        db.execute(f"UPDATE main.agents SET ({targets}) = ({sources}) FROM old.agents AS o "  # noqa: S608 - column names from our own schema
                   "WHERE o.uid = main.agents.uid AND o.version > main.agents.version")
        has_closed = db.execute("SELECT 1 FROM old.sqlite_master WHERE type = 'table' AND "
                                "name = ?", (CLOSED,)).fetchone()
        if has_closed:
            db.execute("DELETE FROM main.decisions WHERE decision_id IN "
                       "(SELECT decision_id FROM old.arbiter_snapshot_closed)")
        db.execute("DELETE FROM main.arbiter_snapshot_closed")
        db.execute("COMMIT")
        db.execute("DETACH DATABASE old")
    finally:
        db.close()


def _prune(generations: Path, *, keep: str, now: float) -> None:
    """Remove old generations: beyond the newest few, and only once long replaced."""
    files = sorted((p for p in generations.glob("*.db") if p.name != keep),
                   key=lambda p: p.name, reverse=True)
    for old in files[KEEP_GENERATIONS - 1:]:
        try:
            if now - old.stat().st_mtime < KEEP_OLD_FOR_S:
                continue
            for suffix in ("", "-wal", "-shm"):
                Path(str(old) + suffix).unlink(missing_ok=True)
        except OSError:
            continue


@contextmanager
def file_lock(path: Path, *, blocking: bool, wait_s: float | None = None) -> Iterator[bool]:
    """An exclusive ``flock`` on ``path``; yields False at once if busy and not ``blocking``
    (or, ``blocking`` with ``wait_s``, if it is still busy after ``wait_s``).

    The kernel releases it when the holder dies, so a SIGKILLed replay or refresh never
    leaves a stale lock behind.
    """
    private_dir(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        try:
            if blocking and wait_s is not None:
                _flock_within(fd, wait_s)
            else:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _flock_within(fd: int, wait_s: float) -> None:
    """``flock`` has no timeout: poll it every millisecond or two until ``wait_s``."""
    ends = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= ends:
                raise
            time.sleep(0.002)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _copy(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite file (WAL included), via SQLite's backup API."""
    src = sqlite3.connect(source, timeout=30)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
