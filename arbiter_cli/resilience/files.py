"""Private files of the resilience layer: 0600 files in 0700 folders, and the journal key.

The journal, the snapshot and the journal key hold a copy of the fleet's state and the means to
vouch for journaled writes: only their owner may read them (SPEC §4.1 "Files"). Folders are
created 0700 and files 0600 *before* anything is written to them (SQLite gives a database's
``-wal`` and ``-shm`` files the mode of the database file), and ones an older arbiter created
more openly are tightened when they are opened again.

The journal key is 32 bytes from ``secrets``, hex-encoded in ``<data_dir>/resilience/journal.key``:
one per host, shared by the journals of every database this host uses. It is written to a
temporary file and *linked* into place, so two processes creating it at once end up with one key
and a reader never sees half of one.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from arbiter_cli.errors import StorageUnavailable

DIR_MODE = 0o700
FILE_MODE = 0o600
KEY_FILE = "journal.key"
KEY_BYTES = 32


def private_dir(path: Path, *, top: Path | None = None) -> Path:
    """``path`` with every missing parent created 0700; ``path``, and its parents up to ``top``
    (ours: ``<data_dir>/resilience``), tightened to 0700 if an older arbiter made them looser.

    Tightening never leaves that tree: without ``top``, or with a ``top`` that is not above
    ``path``, only ``path`` is tightened, and a shared folder (sticky bit, like ``/tmp``) never
    is, so no mistake in a caller can close ``/tmp`` or ``/`` to other users.
    """
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for folder in reversed(missing):
        folder.mkdir(mode=DIR_MODE, exist_ok=True)
    for folder in (path, *path.parents):
        _tighten(folder, DIR_MODE)
        if top is None or folder == top or top not in folder.parents:
            break
    return path


def private_file(path: Path) -> Path:
    """``path`` created empty with mode 0600 if missing, else tightened to 0600 (no data moved)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        _tighten(path, FILE_MODE)
    else:
        os.close(fd)
    return path


def private_sqlite(path: Path, *, top: Path | None = None) -> Path:
    """A SQLite database file (and its ``-wal``/``-shm`` if present) at 0600 in a 0700 folder
    (``top`` as for :func:`private_dir`)."""
    private_dir(path.parent, top=top)
    private_file(path)
    for suffix in ("-wal", "-shm"):
        companion = Path(f"{path}{suffix}")
        if companion.exists():
            _tighten(companion, FILE_MODE)
    return path


def _tighten(path: Path, mode: int) -> None:
    """Remove group and other bits beyond ``mode``; only the owner can, so others' files stay."""
    try:
        current = stat.S_IMODE(os.stat(path).st_mode)
        if current & stat.S_ISVTX:
            return  # a shared folder such as /tmp: never ours to close
        if current & ~mode:
            os.chmod(path, current & mode)
    except PermissionError:
        pass  # not ours: the open that follows tells the operator what is wrong


def key_path(data_dir: Path) -> Path:
    return data_dir / "resilience" / KEY_FILE


def journal_key(path: Path) -> bytes:
    """The host's journal key at ``path``, created on first use; ``StorageUnavailable`` if it
    cannot be read or made (no journal can be trusted without it)."""
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise _unusable(path, exc) from None
    try:
        private_dir(path.parent)
        tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            os.write(fd, secrets.token_hex(KEY_BYTES).encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # atomic, and refuses to replace a key another process made
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        return _read_key(path)
    except OSError as exc:
        raise _unusable(path, exc) from None


def _read_key(path: Path) -> bytes:
    text = path.read_text(encoding="ascii", errors="replace").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise StorageUnavailable(
            f"the journal key {path} is damaged (expected {KEY_BYTES * 2} hex digits): move it "
            "away to start a new one; entries signed with the old key then become conflicts")
    return key


def _unusable(path: Path, exc: OSError) -> StorageUnavailable:
    return StorageUnavailable(f"cannot use the journal key {path}: {exc.strerror or exc}; "
                              "set ARBITER_DATA_DIR to a directory only you can write")
