"""The journal a thread keeps open between resilience layers (``gateway._OpenJournals``).

``arbiter serve`` builds a resilience layer per request, and every write asks the journal for
its tenant's backlog: the journal is opened once per thread, and opened anew (with every
check of ``open_journal``) when the file was moved aside or replaced, or is no longer private.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine

from arbiter_cli.config import load_settings
from arbiter_cli.domain.principal import Principal
from arbiter_cli.resilience import gateway
from arbiter_cli.resilience.journal import Journal
from arbiter_cli.resilience.records import principal_record

URL = "postgresql+psycopg2://arbiter@db.example:5432/kept"


@pytest.fixture
def layer(tmp_path: Path) -> Any:
    settings = load_settings(environ={"ARBITER_DATA_DIR": str(tmp_path / "data"),
                                      "ARBITER_CONFIG_DIR": str(tmp_path / "config"),
                                      "ARBITER_DATABASE__URL": URL,
                                      "HOME": str(tmp_path / "home")})
    engine = create_engine(URL)

    def make(keep: bool = True) -> gateway.Resilience:
        return gateway.Resilience(settings=settings, url=URL, primary=engine, clock=time.time,
                                  keep_journal=keep)

    return make


def opened(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A counter of ``open_journal`` calls made by the gateway."""
    seen = [0]
    real = gateway.open_journal

    def counting(*args: Any, **kwargs: Any) -> Journal:
        seen[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(gateway, "open_journal", counting)
    return seen


def append(journal: Journal, n: int) -> None:
    journal.append(op_id=f"op-{n}", tenant="default", kind="agents.heartbeat",
                   principal=principal_record(Principal.local_admin()),
                   args={"agent_id": f"a{n}"})


def test_one_thread_opens_the_journal_once_for_many_commands(
    layer: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen = opened(monkeypatch)
    journals = []
    for _ in range(5):
        res = layer()
        assert res.journal.pending("default") == 0
        journals.append(res.journal)
        res.close()
    assert seen[0] == 1
    assert all(j is journals[0] for j in journals)


def test_a_kept_journal_sees_what_another_connection_appended(layer: Any) -> None:
    first = layer()
    assert first.journal.pending() == 0
    first.close()
    other = Journal(first.directory / "journal.db")  # another process's, say
    append(other, 1)
    other.close()
    second = layer()
    assert second.journal.pending("default") == 1
    second.close()


def test_a_kept_journal_stamps_with_the_clock_of_the_command_using_it(layer: Any) -> None:
    first = layer()
    first.journal.pending()
    first.close()
    second = layer()
    monkeypatch_time = 2_000_000_000.0
    second._local_clock_offset_s = monkeypatch_time - time.time()  # the primary far ahead
    append(second.journal, 1)
    [entry] = second.journal.entries(limit=1)
    assert entry.created_at >= monkeypatch_time
    second.close()


def used_once(layer: Any) -> Path:
    """A layer that opened the journal, read it and closed: the kept journal's path."""
    first = layer()
    first.journal.pending()
    path: Path = first.journal.path
    first.close()
    return path


def test_a_journal_moved_aside_is_not_written_again(
    layer: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen = opened(monkeypatch)
    path = used_once(layer)
    aside = path.with_name("journal.db.aside")
    shutil.move(path, aside)
    for suffix in ("-wal", "-shm"):
        if Path(f"{path}{suffix}").exists():
            shutil.move(f"{path}{suffix}", f"{aside}{suffix}")
    second = layer()
    append(second.journal, 1)
    second.close()
    assert seen[0] == 2  # opened anew at the path
    assert Journal(aside).pending() == 0
    assert Journal(path).pending() == 1


@pytest.mark.parametrize("which", ["file", "folder"])
def test_a_journal_made_readable_by_others_is_opened_anew_and_tightened(
    layer: Any, monkeypatch: pytest.MonkeyPatch, which: str,
) -> None:
    seen = opened(monkeypatch)
    path = used_once(layer)
    target = path if which == "file" else path.parent
    os.chmod(target, 0o644 if which == "file" else 0o755)
    second = layer()
    second.journal.pending()
    second.close()
    assert seen[0] == 2
    assert os.stat(target).st_mode & 0o077 == 0


def test_each_thread_has_its_own_connection(layer: Any) -> None:
    found: list[Journal] = []

    def command() -> None:
        res = layer()
        res.journal.pending()
        found.append(res.journal)
        res.close()

    command()
    worker = threading.Thread(target=command)
    worker.start()
    worker.join()
    assert len(found) == 2 and found[0] is not found[1]


def test_a_replay_folder_journal_is_not_kept(layer: Any, tmp_path: Path) -> None:
    res = layer()
    res.journal.pending()
    other = res.for_folder(res.directory)
    assert other.journal is not res.journal
    other.close()
    res.close()


def test_a_command_of_its_own_keeps_no_journal_open(layer: Any) -> None:
    """Outside ``serve`` every layer opens the journal anew: a journal damaged in place since
    the last command is reported by the next one (tests/cli/test_damaged_journal.py)."""
    first = layer(keep=False)
    journal = first.journal
    first.close()
    second = layer(keep=False)
    try:
        assert second.journal is not journal
    finally:
        second.close()
