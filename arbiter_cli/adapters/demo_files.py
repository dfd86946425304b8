"""The demo's own SQLite files: ``demo`` touches nothing else (SPEC §16).

A database ``arbiter demo`` creates is marked in its SQLite header: ``application_id``
(offset 68, the field SQLite reserves for "which application owns this file") is set to
:data:`DEMO_APPLICATION_ID` before anything else is written, while the file is still in
rollback-journal mode, so the mark is in the main file even if a later WAL was never
checkpointed. A file is the demo's when its first 100 bytes carry the SQLite magic and the mark.

``prepare`` refuses (exit 2) the live database, a path that is not a regular file, an existing
file without the mark, and ``-wal``/``-shm``/``-journal`` files lying next to a missing
database; only then does it replace the demo's previous database with a new, marked one.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import NoReturn

from arbiter_cli.adapters.files import create_private_file, private_dir
from arbiter_cli.errors import InvalidInput

DEMO_APPLICATION_ID = 0x61726244  # "arbD"
SIDECARS = ("-wal", "-shm", "-journal")
_MAGIC = b"SQLite format 3\x00"


def is_demo_database(path: Path) -> bool:
    """True when ``path`` is a regular file whose SQLite header carries the demo's mark."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        with path.open("rb") as handle:
            header = handle.read(100)
    except OSError:
        return False
    return (len(header) == 100 and header.startswith(_MAGIC)
            and int.from_bytes(header[68:72], "big") == DEMO_APPLICATION_ID)


def prepare(path: Path, live: Path | None) -> None:
    """Make ``path`` a fresh, marked, empty demo database (0600), or refuse with exit 2."""
    if live is not None and _same_file(path, live):
        _refuse(f"{path} is the database of database.url: the demo never touches it "
                "(choose another --database)")
    if _exists(path):
        if not stat.S_ISREG(os.lstat(path).st_mode):
            _refuse(f"{path} is not a regular file: the demo only replaces its own databases")
        if not is_demo_database(path):
            _refuse(f"{path} exists and was not created by `arbiter demo`: the demo never "
                    "replaces other files (delete it yourself, or choose another --database)")
        discard(path)
    else:
        stray = [f"{path}{s}" for s in SIDECARS if _exists(Path(f"{path}{s}"))]
        if stray:
            _refuse(f"{stray[0]} exists next to no database: it is not the demo's to delete "
                    "(choose another --database)")
    try:
        private_dir(path.parent)
        if not create_private_file(path):
            _refuse(f"{path} appeared while the demo was preparing it: not touching it")
        _mark(path)
    except OSError as exc:
        _refuse(f"cannot create {exc.filename or path}: {exc.strerror}")


def discard(path: Path) -> None:
    """Delete a demo database and its sidecar files; anything not the demo's stays."""
    if not is_demo_database(path):
        return
    for suffix in (*SIDECARS, ""):  # the sidecars first: the mark is checked on the main file
        candidate = Path(f"{path}{suffix}")
        if _exists(candidate) and not stat.S_ISDIR(os.lstat(candidate).st_mode):
            candidate.unlink()


def _mark(path: Path) -> None:
    import sqlite3

    connection = sqlite3.connect(path)
    try:
        connection.execute(f"PRAGMA application_id = {DEMO_APPLICATION_ID}")
        connection.commit()
    finally:
        connection.close()


def _same_file(path: Path, live: Path) -> bool:
    if path.resolve() == live.resolve():
        return True
    try:
        return os.path.samefile(path, live)  # hard links, bind mounts
    except OSError:
        return False


def _exists(path: Path) -> bool:
    return os.path.lexists(path)


def _refuse(message: str) -> NoReturn:
    raise InvalidInput(f"demo: {message}", field="database", rule="demo_own_file")
