"""The resilience layer uses only folders and files of the user running arbiter (attack-17).

A1: with ``data_dir`` on a path another user prepared, arbiter used *their* ``resilience/``
folder and *their* journal key, so they could sign entries that replay applied as any token id.
A2: links were followed, and ``journal replay --from`` chmod'ed (and wrote SQLite into) their
targets. A5: a FIFO in place of the key blocked the command for ever. Each is now refused with
``StorageUnavailable`` (exit 10) naming the path, and nothing outside is touched.

"Another user" is simulated by changing the effective uid arbiter compares with, so the tests
run without root.
"""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from arbiter_cli.errors import StorageUnavailable
from arbiter_cli.resilience.files import journal_key, key_path, private_dir
from arbiter_cli.resilience.journal import Journal, open_journal, resilience_dir

PG_URL = "postgresql+psycopg2://arb@127.0.0.1:1/arbiter"


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def as_another_user(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """From here on, what the test made belongs to "someone else"."""
    monkeypatch.setattr(os, "geteuid", lambda: os.getuid() + 4242)
    yield


class Blocked(Exception):
    """Not an ``OSError``, so no ``except OSError`` under test can swallow it."""


@pytest.fixture
def no_hang() -> Iterator[None]:
    """Fail (instead of hanging the suite) if the code under test blocks on a FIFO."""
    def stuck(*_: object) -> None:
        raise Blocked("blocked on a FIFO")

    previous = signal.signal(signal.SIGALRM, stuck)
    signal.alarm(5)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_a_resilience_folder_of_another_user_is_refused(tmp_path: Path,
                                                       request: pytest.FixtureRequest) -> None:
    """A1: their folder (and the key in it) would let them forge entries replay applies."""
    open_journal(tmp_path, PG_URL, max_entries=10).close()
    request.getfixturevalue("as_another_user")
    with pytest.raises(StorageUnavailable) as caught:
        open_journal(tmp_path, PG_URL, max_entries=10)
    assert "belongs to uid" in caught.value.message
    assert "ARBITER_DATA_DIR" in caught.value.message


def test_a_journal_key_of_another_user_is_never_used(tmp_path: Path,
                                                    request: pytest.FixtureRequest) -> None:
    path = key_path(tmp_path / "data")
    journal_key(path)
    request.getfixturevalue("as_another_user")
    with pytest.raises(StorageUnavailable) as caught:
        journal_key(path)
    assert str(path) in caught.value.message


def test_a_data_dir_every_user_can_write_is_refused_unless_sticky(tmp_path: Path) -> None:
    """Anyone could rename ``resilience/`` away and put their own in its place; a sticky
    folder (``/tmp``-like) lets them remove only their own entries, so it is accepted."""
    data = tmp_path / "data"
    data.mkdir()
    os.chmod(data, 0o777)
    with pytest.raises(StorageUnavailable) as caught:
        open_journal(data, PG_URL, max_entries=10)
    assert "can be written by every user" in caught.value.message
    assert mode(data) == 0o777  # refused, never changed
    os.chmod(data, 0o1777)
    open_journal(data, PG_URL, max_entries=10).close()


def test_a_linked_journal_file_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    """A2: ``resilience/KEY/journal.db -> victim`` once made the victim 0600 and a journal."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"")
    os.chmod(victim, 0o644)
    folder = resilience_dir(tmp_path / "data", PG_URL)
    private_dir(folder, top=folder.parent)
    (folder / "journal.db").symlink_to(victim)
    with pytest.raises(StorageUnavailable) as caught:
        Journal(folder / "journal.db", max_entries=10, key_file=key_path(tmp_path / "data"))
    assert "is a symbolic link" in caught.value.message
    assert (mode(victim), victim.stat().st_size) == (0o644, 0)


def test_a_linked_folder_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    """A2: ``journal replay --from KEY`` of a folder linked elsewhere once closed the target
    to 0700 (as root, ``/etc`` would do) and left a lock file in it."""
    victim = tmp_path / "victimdir"
    victim.mkdir()
    (victim / "journal.db").write_bytes(b"")
    os.chmod(victim, 0o755)
    data = tmp_path / "data"
    private_dir(data / "resilience", top=data / "resilience")
    linked = data / "resilience" / "00000000000000bb"
    linked.symlink_to(victim)
    with pytest.raises(StorageUnavailable):
        Journal(linked / "journal.db", max_entries=10, key_file=key_path(data))
    assert mode(victim) == 0o755
    assert sorted(p.name for p in victim.iterdir()) == ["journal.db"]


def test_a_dangling_link_in_place_of_a_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "resilience"
    folder.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(StorageUnavailable):
        private_dir(folder / "0123456789abcdef", top=folder)
    assert not (tmp_path / "elsewhere").exists()


def test_a_journal_key_that_is_a_link_is_refused(tmp_path: Path) -> None:
    real = key_path(tmp_path / "real")
    journal_key(real)
    path = key_path(tmp_path / "data")
    private_dir(path.parent)
    path.symlink_to(real)
    with pytest.raises(StorageUnavailable) as caught:
        journal_key(path)
    assert "is a symbolic link" in caught.value.message


@pytest.mark.usefixtures("no_hang")
def test_a_journal_key_that_is_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    path = key_path(tmp_path / "data")
    private_dir(path.parent)
    os.mkfifo(path, 0o600)
    with pytest.raises(StorageUnavailable) as caught:
        journal_key(path)
    assert "not a regular file" in caught.value.message


def test_a_journal_file_that_is_a_fifo_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "resilience" / "0123456789abcdef"
    private_dir(folder, top=folder.parent)
    os.mkfifo(folder / "journal.db", 0o600)
    with pytest.raises(StorageUnavailable) as caught:
        Journal(folder / "journal.db", max_entries=10, key_file=key_path(tmp_path))
    assert "not a regular file" in caught.value.message


def test_a_loose_key_of_ours_is_tightened_and_used(tmp_path: Path) -> None:
    path = key_path(tmp_path / "data")
    key = journal_key(path)
    os.chmod(path, 0o644)
    assert journal_key(path) == key
    assert mode(path) == 0o600


def test_a_data_dir_arbiter_makes_under_a_lax_umask_is_private_and_accepted(
        tmp_path: Path) -> None:
    """The breaker, the first to write in a new data_dir, made it with the umask's mode (0777
    under umask 000), which the journal then refused as writable by every user."""
    from arbiter_cli.resilience.breaker import BreakerConfig, FileBreaker, breaker_path

    data = tmp_path / "fresh" / "data"
    old = os.umask(0o000)
    try:
        breaker = FileBreaker(breaker_path(data, PG_URL),
                              BreakerConfig(fail_max=5, reset_timeout_s=10, probe_lease_s=5))
        breaker.success(breaker.allow())
        open_journal(data, PG_URL, max_entries=10).close()
    finally:
        os.umask(old)
    assert (mode(data), mode(data.parent)) == (0o700, 0o700)
