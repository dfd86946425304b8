"""Tightening folders stays inside arbiter's own tree (resilience/files.private_dir).

A run as root once closed /tmp to every other user (mode 1777 → 0700), which broke every
throwaway PostgreSQL cluster on the machine: tightening must never walk past ``top``, and a
shared folder (sticky bit) is never tightened at all.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from arbiter_cli.resilience.files import private_dir, private_sqlite


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def tree(tmp_path: Path) -> tuple[Path, Path, Path]:
    data = tmp_path / "data"
    top = data / "resilience"
    leaf = top / "0123456789abcdef"
    leaf.mkdir(parents=True)
    for folder in (data, top, leaf):
        os.chmod(folder, 0o755)
    return data, top, leaf


def test_tightening_goes_up_to_top_and_no_further(tmp_path: Path) -> None:
    data, top, leaf = tree(tmp_path)
    assert private_dir(leaf, top=top) == leaf
    assert (mode(leaf), mode(top), mode(data)) == (0o700, 0o700, 0o755)


def test_without_top_only_the_folder_itself_is_tightened(tmp_path: Path) -> None:
    data, top, leaf = tree(tmp_path)
    private_dir(leaf)
    assert (mode(leaf), mode(top), mode(data)) == (0o700, 0o755, 0o755)


def test_a_top_that_is_not_above_the_folder_tightens_only_the_folder(tmp_path: Path) -> None:
    data, top, leaf = tree(tmp_path)
    private_dir(leaf, top=tmp_path / "elsewhere")
    assert (mode(leaf), mode(top), mode(data)) == (0o700, 0o755, 0o755)


def test_a_shared_sticky_folder_is_never_tightened(tmp_path: Path) -> None:
    shared = tmp_path / "tmp"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    private_dir(shared)
    private_dir(shared / "mine", top=shared)
    private_sqlite(shared / "mine" / "x.db", top=shared)
    assert mode(shared) == 0o1777
    assert mode(shared / "mine") == 0o700
    assert mode(shared / "mine" / "x.db") == 0o600


def test_missing_folders_are_created_private(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    leaf = tmp_path / "a" / "b"
    private_dir(leaf)
    assert (mode(tmp_path / "a"), mode(leaf), mode(tmp_path)) == (0o700, 0o700, 0o755)


def test_a_companion_that_vanishes_while_tightened_is_no_error(tmp_path: Path,
                                                                monkeypatch) -> None:
    """The last connection to a WAL database deletes its ``-wal`` and ``-shm`` as it closes.
    ``arbiter serve`` opens the journal once per request, so one request's close raced another's
    open: ``-wal`` existed when looked for and was gone when its mode was read, and the
    FileNotFoundError answered 503 storage_unavailable ("cannot open the journal") under
    ordinary load (bench --workload api, one request in ~800). A companion that is gone needs
    no tightening: SQLite creates the next one with the database file's mode (0600)."""
    from arbiter_cli.resilience import files

    _, top, leaf = tree(tmp_path)
    db = leaf / "journal.db"
    db.write_bytes(b"")
    os.chmod(db, 0o600)
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").write_bytes(b"")
    real = files.ours

    def closed_meanwhile(path: Path, **kwargs: bool) -> os.stat_result:
        if str(path).endswith(("-wal", "-shm")):
            Path(path).unlink()  # the other connection's close, between exists() and lstat
        return real(path, **kwargs)

    monkeypatch.setattr(files, "ours", closed_meanwhile)
    assert private_sqlite(db, top=top) == db
    assert mode(db) == 0o600
    assert not Path(f"{db}-wal").exists() and not Path(f"{db}-shm").exists()
