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

Only what belongs to the user running arbiter is used: a folder or file of the resilience layer
that is a symbolic link, is not a regular file, or is owned by another user is refused (exit 10,
one line), never followed nor chmod'ed, and so is a ``data_dir`` that another user can write to
(they could swap ``resilience/`` for a folder of their own, with a journal key they chose and
entries signed with it). ``OpenSSH``'s ``StrictModes`` makes the same check.
"""

from __future__ import annotations

import contextlib
import errno
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
    tree = [path]  # path, and its parents up to top when top is above it
    if top is not None and top in path.parents:
        tree += list(path.parents)[:list(path.parents).index(top) + 1]
    above = tree[-1].parent
    for folder in reversed([p for p in (above, *above.parents) if not os.path.lexists(p)]):
        folder.mkdir(mode=DIR_MODE, exist_ok=True)
    if top is not None and top in tree:
        trusted_parent(top.parent)
    for folder in reversed(tree):  # from the top down: nothing is made through a link
        if not os.path.lexists(folder):
            folder.mkdir(mode=DIR_MODE, exist_ok=True)
        _tighten(folder, DIR_MODE)
    return path


def trusted_parent(data_dir: Path) -> None:
    """Refuse a ``data_dir`` another user could rearrange: owned by someone else (but root), or
    writable by others without the sticky bit. Its mode is never changed (it may be a folder
    the operator shares on purpose); links to it are fine."""
    try:
        found = os.stat(data_dir)
    except OSError:
        return  # created just above, or not there: the next open says what is wrong
    mode = stat.S_IMODE(found.st_mode)
    if found.st_uid not in (os.geteuid(), 0):
        raise _not_private(data_dir, f"belongs to uid {found.st_uid}")
    if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
        raise _not_private(data_dir, f"can be written by every user (mode {mode:o})")


def private_file(path: Path) -> Path:
    """``path`` created empty with mode 0600 if missing, else tightened to 0600 (no data moved)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        ours(path, regular=True)  # never a link, a FIFO or another user's file
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
        # The last connection to close deletes its companions: one that is gone by the time
        # it is looked at needs nothing (SQLite makes the next with the database's own mode).
        with contextlib.suppress(FileNotFoundError):
            _tighten(companion, FILE_MODE)
    return path


def _tighten(path: Path, mode: int) -> None:
    """Remove group and other bits beyond ``mode`` of a folder or file of ours (:func:`ours`)."""
    current = stat.S_IMODE(ours(path).st_mode)
    if current & stat.S_ISVTX:
        return  # a shared folder such as /tmp: never ours to close
    if current & ~mode:
        os.chmod(path, current & mode, follow_symlinks=False)


def ours(path: Path, *, regular: bool = False) -> os.stat_result:
    """``path``'s own status (a link is not followed), if it belongs to the user running
    arbiter and is not a symbolic link (with ``regular``: is a regular file); else
    ``StorageUnavailable`` naming it. Nothing is done through someone else's file or a link."""
    found = os.lstat(path)
    if stat.S_ISLNK(found.st_mode):
        raise _not_private(path, "is a symbolic link")
    if regular and not stat.S_ISREG(found.st_mode):
        raise _not_private(path, "is not a regular file")
    if found.st_uid != os.geteuid():
        raise _not_private(path, f"belongs to uid {found.st_uid}, not to uid {os.geteuid()}")
    return found


def _not_private(path: Path, why: str) -> StorageUnavailable:
    return StorageUnavailable(
        f"refusing {path}: it {why}, and arbiter keeps its journal, snapshot and journal key "
        "only in folders and files of the user running it (a link or another user's file "
        "could redirect or forge them); move it away, or set ARBITER_DATA_DIR to a directory "
        "only you can write")


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
        private_dir(path.parent, top=path.parent)
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
    """The key in ``path``: a regular file of ours in folders of ours (never a link, a FIFO or
    another user's key, which would let them sign entries), tightened to 0600."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _not_private(path, "is a symbolic link") from None
        raise
    try:
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode) or found.st_uid != os.geteuid():
            raise _not_private(path, "is not a regular file of the user running arbiter")
        ours(path.parent)
        trusted_parent(path.parent.parent)
        if stat.S_IMODE(found.st_mode) & ~FILE_MODE:
            os.fchmod(fd, FILE_MODE)
        text = os.read(fd, 4096).decode("ascii", errors="replace").strip()
    finally:
        os.close(fd)
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
