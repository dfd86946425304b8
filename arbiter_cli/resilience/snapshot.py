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

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

SNAPSHOT = "snapshot.db"
GENERATIONS = "generations"
KEEP_GENERATIONS = 3
KEEP_OLD_FOR_S = 600.0  # a generation replaced this long ago has no process starting on it


class LocalStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / SNAPSHOT

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
        from arbiter_cli.resilience.files import FILE_MODE, private_dir

        private_dir(self.directory, levels=2)
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

        from arbiter_cli.adapters.sql import tables as t
        from arbiter_cli.adapters.sql.schema_version import HEAD
        from arbiter_cli.resilience.files import private_dir, private_sqlite

        private_dir(self.directory, levels=2)  # resilience/<key>/: 0700 (SPEC §4.1 "Files")
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
            with local.begin() as dst, primary.connect() as src:
                dst.exec_driver_sql("CREATE TABLE IF NOT EXISTS arbiter_snapshot_meta "
                                    "(name TEXT PRIMARY KEY, value TEXT NOT NULL)")
                arms_since = _sync(src, dst, meta.get("arms_watermark"))
                record = {"refreshed_at": now, "arms_watermark": arms_since,
                          "primary_dialect": primary.dialect.name, "schema": HEAD,
                          "took_s": round(time.perf_counter() - started, 4)}
                dst.exec_driver_sql("INSERT OR REPLACE INTO arbiter_snapshot_meta VALUES ('meta', ?)",
                                    (json.dumps(record),))
        finally:
            local.dispose()
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        _fsync_dir(generations)
        link = self.directory / (SNAPSHOT + ".link")
        link.unlink(missing_ok=True)
        os.symlink(Path(GENERATIONS) / tmp.name, link)
        os.replace(link, self.path)  # atomic: openers see the old generation or the new one
        _fsync_dir(self.directory)
        _prune(generations, keep=tmp.name, now=now)


def _sync(src: Connection, dst: Connection, arms_watermark: str | None) -> str | None:
    from sqlalchemy import delete, insert, select

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
def file_lock(path: Path, *, blocking: bool) -> Iterator[bool]:
    """An exclusive ``flock`` on ``path``; yields False at once if busy and not ``blocking``.

    The kernel releases it when the holder dies, so a SIGKILLed replay or refresh never
    leaves a stale lock behind.
    """
    from arbiter_cli.resilience.files import FILE_MODE, private_dir

    private_dir(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        try:
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
