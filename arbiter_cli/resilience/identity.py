"""Which database a resilience folder belongs to, and journals a URL change left behind.

A host keeps one folder per primary, ``<data_dir>/resilience/<key>/``, where ``<key>`` is a
hash of the password-free URL (``journal.store_key``). The same database reached under another
URL string (``localhost`` for ``127.0.0.1``, a new host name after a failover) gets another
folder, so a journal written under the old URL is *stranded*: nothing replays it (issue 17, F1).

So every folder records which database it belongs to, in ``database.json`` (0600):

- ``identity``: the random UUID the database holds in its ``database_identity`` table
  (migration 0003, written at ``init`` or at the upgrade of an existing database);
- ``url``: the password-free URL the folder was first used under.

It is written once, the first time a command reaches the primary through the folder's URL
(a journaled write needs a snapshot, and a snapshot is only taken after such a command, so a
folder that holds entries has its record unless an older arbiter made it). It is never
rewritten: what the folder's entries were journaled for does not change.

:func:`stranded_journals` finds the *other* folders whose journal holds pending entries: a
directory scan and one read-only SQLite count per folder, no database I/O, so every command
can afford it. ``arbiter journal replay --from KEY`` drains one of them into the current
primary only when the recorded identity equals the current database's.

:func:`volatile_filesystem` tells whether ``data_dir`` is on a file system that does not
survive a reboot or a container's replacement (tmpfs, ramfs, overlay): the journal holds
acknowledged writes, so ``data_dir`` must be persistent (issue 17, F7).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from arbiter_cli.errors import Conflict, InvalidInput, NotFound, SchemaOutdated
from arbiter_cli.observability.logging import get_logger
from arbiter_cli.resilience.files import FILE_MODE, private_dir

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Engine

RECORD_FILE = "database.json"
JOURNAL_FILE = "journal.db"
KEY_RE = re.compile(r"[0-9a-f]{16}")
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
MOUNTINFO = Path("/proc/self/mountinfo")
#: File systems whose content is gone after a reboot (tmpfs, ramfs) or with the container that
#: wrote it (overlay: a container's writable layer).
VOLATILE_FS = frozenset({"tmpfs", "ramfs", "overlay", "aufs", "fuse.overlayfs"})
_RECORD_MAX_BYTES = 4096
T = TypeVar("T")


class Guarded(Protocol):
    """What checking a foreign journal needs of the resilience gateway."""

    primary: Engine

    def guarded(self, fn: Callable[[], T]) -> T: ...


def store_key(url: str) -> str:
    """A stable, password-free name for the primary at ``url`` (the breaker's key too)."""
    # deferred: a SQLite command checks for stranded journals without loading the breaker
    from arbiter_cli.resilience.breaker import url_without_password

    return hashlib.sha256(url_without_password(url).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- the record


@dataclass(frozen=True)
class FolderRecord:
    """What ``database.json`` says; ``identity`` None when missing, damaged or foreign.

    ``damaged``: a record is there but names no identity we can read (not JSON, no UUID, not
    a regular file): unlike a missing one, it may have named another database."""

    identity: str | None
    url: str | None
    recorded_at: str | None = None
    damaged: bool = False


def read_record(directory: Path) -> FolderRecord:
    """The folder's record; unknown (all None) when there is none or it cannot be read.

    Never follows a link and never waits: a FIFO or a device in its place reads as damaged
    (every command reads the records of stranded journals)."""
    try:
        raw = _read_regular(directory / RECORD_FILE, _RECORD_MAX_BYTES + 1)
    except FileNotFoundError:
        return FolderRecord(None, None)
    except OSError:
        return FolderRecord(None, None, damaged=True)
    try:
        doc = json.loads(raw) if len(raw) <= _RECORD_MAX_BYTES else None
    except ValueError:
        doc = None
    identity = doc.get("identity") if isinstance(doc, dict) else None
    if not (isinstance(doc, dict) and isinstance(identity, str) and UUID_RE.fullmatch(identity)):
        url = doc.get("url") if isinstance(doc, dict) else None
        return FolderRecord(None, _printable(url, 500), damaged=True)
    return FolderRecord(identity, _printable(doc.get("url"), 500),
                        _printable(doc.get("recorded_at"), 40))


def _printable(value: Any, limit: int) -> str | None:
    return value[:limit] if isinstance(value, str) and value.isprintable() else None


def _read_regular(path: Path, limit: int) -> bytes:
    """Up to ``limit`` bytes of ``path`` if it is a regular file (no link followed, no wait
    on a FIFO); ``OSError`` otherwise."""
    import errno
    import stat

    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        return os.read(fd, limit)
    finally:
        os.close(fd)


def write_record(directory: Path, identity: str, url: str) -> bool:
    """Write the folder's record unless it has one (True if this call wrote it).

    ``url`` must already be password-free. The file is written 0600 to a temporary name and
    *linked* into place, so two processes recording at once leave one complete record.
    """
    target = directory / RECORD_FILE
    if target.exists():
        return False
    private_dir(directory, top=directory.parent)  # resilience/<key>/ and resilience/
    body = json.dumps({"identity": identity, "url": url,
                       "recorded_at": datetime.now(UTC).isoformat(timespec="seconds")},
                      sort_keys=True).encode() + b"\n"
    tmp = directory / f".{RECORD_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        os.write(fd, body)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, target)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


def database_identity(engine: Engine) -> str | None:
    """The identity the database at ``engine`` holds (None before migration 0003 ran)."""
    from sqlalchemy import select

    # deferred: sqlalchemy, unloaded on a memory store (cli/state loads this module)
    from arbiter_cli.adapters.sql import tables as t

    with engine.connect() as conn:
        value = conn.execute(select(t.database_identity.c.identity)
                             .where(t.database_identity.c.id == 1)).scalar_one_or_none()
    return value if isinstance(value, str) and UUID_RE.fullmatch(value) else None


# ---------------------------------------------------------------------------- stranded journals


@dataclass(frozen=True)
class Stranded:
    """Another folder's journal that holds entries."""

    key: str
    path: Path
    pending: int
    conflicts: int
    identity: str | None
    url: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "path": str(self.path), "pending": self.pending,
                "conflicts": self.conflicts, "identity": self.identity, "url": self.url}

    def warning(self) -> str:
        named = f"database {self.url}" if self.url else "an unrecorded database"
        holds = (f"holds {self.pending} pending write(s)" if self.pending >= 0 else
                 "cannot be read (it may hold pending writes)")
        return (f"the journal {self.path} {holds} journaled for "
                f"{named}, which is not database.url: if it is the same database, drain it "
                f"with `arbiter journal replay --from {self.key}`; else point database.url "
                "back at that database and run `arbiter journal replay`")


def stranded_journals(data_dir: Path, current_key: str | None) -> list[Stranded]:
    """Every folder of ``data_dir/resilience`` but ``current_key`` whose journal holds pending
    entries (those with conflicts only are listed too, with ``pending`` 0), by key.

    No database I/O: a directory scan and a read-only count per journal file. A journal that
    cannot be read is reported with ``pending`` -1 (it may hold entries).
    """
    root = data_dir / "resilience"
    try:
        folders = sorted(p for p in root.iterdir() if KEY_RE.fullmatch(p.name))
    except OSError:
        return []
    found = []
    for folder in folders:
        if folder.name == current_key:
            continue
        journal = folder / JOURNAL_FILE
        if not journal.is_file():
            continue
        pending, conflicts = _count(journal)
        if pending == 0 and conflicts == 0:
            continue
        record = read_record(folder)
        found.append(Stranded(folder.name, folder, pending, conflicts, record.identity,
                              record.url))
    return found


def _count(journal: Path) -> tuple[int, int]:
    """(pending, conflicts) of a journal file, read-only; (-1, 0) if it cannot be read."""
    try:
        db = sqlite3.connect(f"{journal.as_uri()}?mode=ro", uri=True, timeout=2)
    except sqlite3.Error:
        return -1, 0
    try:
        rows = dict(db.execute("SELECT state, count(*) FROM entries GROUP BY state").fetchall())
    except sqlite3.Error as exc:
        if "no such table" in str(exc):
            return 0, 0  # created, never written
        return -1, 0
    finally:
        db.close()
    return int(rows.get("pending", 0)), int(rows.get("conflict", 0))


def stranded_warnings(settings: Any) -> list[str]:
    """One warning per other journal with pending entries (every command prints them)."""
    url = settings.database_url
    current = None if url.startswith("sqlite") else store_key(url)
    return [s.warning() for s in stranded_journals(settings.paths.data_dir, current)
            if s.pending != 0]


# ---------------------------------------------------------------------------- journal replay --from


def stranded_folder(settings: Any, key: str) -> Path:
    """The folder of ``journal replay --from KEY``: another journal of this data_dir (exit 2
    when ``key`` is not one, 4 when there is no such journal)."""

    if not KEY_RE.fullmatch(key):
        raise InvalidInput("--from: a journal key is 16 lowercase hex digits (see `arbiter "
                           "journal status`)", field="from", rule="journal_key")
    url = settings.database_url
    if url.startswith("sqlite"):
        raise InvalidInput("--from: database.url is a SQLite file, which takes no replay; "
                           "point it at the PostgreSQL database", field="from", rule="postgres")
    if key == store_key(url):
        raise InvalidInput("--from: that is the journal of database.url itself; run `arbiter "
                           "journal replay` without --from", field="from", rule="other_journal")
    folder: Path = settings.paths.data_dir / "resilience" / key
    if not (folder / JOURNAL_FILE).is_file():
        raise NotFound(f"no journal {key!r} in {folder.parent}")
    return folder


def check_foreign_journal(res: Guarded, folder: Path, *, accept_unrecorded: bool) -> None:
    """The stranded journal in ``folder`` may be drained into ``res.primary`` only when its
    recorded database identity is the identity the primary holds (exit 5 if not; exit 10
    when the primary is down or its schema is not at head)."""
    # deferred: sqlalchemy, unloaded on a memory store (cli/state loads this module)
    from arbiter_cli.adapters.sql.engine import check_revision

    record = read_record(folder)
    res.guarded(lambda: check_revision(res.primary))  # behind or ahead: exit 10
    current = res.guarded(lambda: database_identity(res.primary))  # down: exit 10
    if current is None:
        raise SchemaOutdated("database.url has no database identity yet: run `arbiter db "
                             "upgrade`, then replay --from again")
    named = f"{record.url} " if record.url else ""
    if record.damaged:
        raise Conflict(f"the record {folder / 'database.json'} of the journal {folder.name} "
                       "cannot be read, so it may name another database: nothing was applied; "
                       "only if you know the journal was written for this database, move the "
                       "record away and pass --accept-unrecorded")
    if record.identity is None:
        if not accept_unrecorded:
            raise Conflict(f"the journal {folder.name} does not record which database it "
                           "belongs to (an older arbiter made it): nothing was applied; pass "
                           "--accept-unrecorded only if you know it was written for this database "
                           "(each entry is still checked and re-admitted)")
        get_logger().warning(f"replaying the journal {folder.name}, which records no database, "
                             "into database.url on the operator's word (--accept-unrecorded)")
    elif record.identity != current:
        raise Conflict(f"the journal {folder.name} belongs to database {named}"
                       f"(identity {record.identity}), not to the database database.url reaches "
                       f"(identity {current}): nothing was applied; point database.url at "
                       "that database and run `arbiter journal replay`")


# ---------------------------------------------------------------------------- data_dir


@dataclass(frozen=True)
class Mount:
    point: str
    fstype: str


def mount_of(path: Path, mountinfo: Path = MOUNTINFO) -> Mount | None:
    """The mount holding ``path`` (absolute, symlinks resolved; it need not exist yet): the
    longest mount point that is a prefix of it in ``mountinfo``; None when unreadable."""
    resolved = str(path.resolve())
    try:
        lines = mountinfo.read_text(errors="replace").splitlines()
    except OSError:
        return None
    best: Mount | None = None
    for line in lines:
        mount = _parse_mountinfo(line)
        if mount is None or not _under(resolved, mount.point):
            continue
        if best is None or len(mount.point) >= len(best.point):
            best = mount  # a later line of the same length is a mount on top: it wins
    return best


def _parse_mountinfo(line: str) -> Mount | None:
    """``36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw`` → (/mnt2, ext3)."""
    fields = line.split()
    try:
        separator = fields.index("-", 6)
        point, fstype = fields[4], fields[separator + 1]
    except (ValueError, IndexError):
        return None
    return Mount(_unescape(point), fstype)


def _unescape(text: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (``\\040``)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def _under(path: str, point: str) -> bool:
    return point == "/" or path == point or path.startswith(point.rstrip("/") + "/")


def volatile_filesystem(data_dir: Path, mountinfo: Path = MOUNTINFO) -> Mount | None:
    """The mount of ``data_dir`` when its file system does not persist, else None."""
    mount = mount_of(data_dir, mountinfo)
    if mount is None:
        return None
    return mount if mount.fstype in VOLATILE_FS else None
