"""Private files and folders (SPEC §4.1 "Files"): created 0600, in folders created 0700.

Only what arbiter creates is made private: an existing folder (say ``~/.config``) keeps its
mode. The modes are set with ``chmod`` after creation, so a permissive or unusual umask
changes nothing. On Windows the modes are what ``os.chmod`` can express (read-only or not).
"""

from __future__ import annotations

import os
from pathlib import Path

FILE_MODE = 0o600
FOLDER_MODE = 0o700


def private_dir(path: Path) -> None:
    """Create ``path`` and every missing parent with mode 0700; existing folders stay as is."""
    missing: list[Path] = []
    current = path
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=FOLDER_MODE)
        except FileExistsError:
            continue  # another process made it first: it is not ours to change
        os.chmod(folder, FOLDER_MODE)


def create_private_file(path: Path) -> bool:
    """Create ``path`` empty with mode 0600 unless it exists; True when this call created it."""
    try:
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return False
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(handle, FILE_MODE)
    finally:
        os.close(handle)
    return True


def others_may_access(mode: int) -> bool:
    """True when group or others may read, write or execute (what ssh refuses for a key)."""
    return os.name != "nt" and bool(mode & 0o077)
