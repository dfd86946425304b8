"""Folder records, stranded journals and the file system of data_dir (issue 17, F1 and F7)."""

from __future__ import annotations

import json
import os
import stat
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from arbiter_cli.bootstrap import sql_engine
from arbiter_cli.config import Settings
from arbiter_cli.domain.health import PASS, WARN
from arbiter_cli.resilience.identity import (
    RECORD_FILE,
    mount_of,
    read_record,
    stranded_journals,
    stranded_warnings,
    volatile_filesystem,
    write_record,
)
from arbiter_cli.resilience.journal import Journal, store_key
from arbiter_cli.tools.health import evaluate

URL_A = "postgresql+psycopg2://arb:pw-s3cret@127.0.0.1:1/arbiter"
URL_B = "postgresql+psycopg2://arb:pw-s3cret@localhost:1/arbiter"


def mountinfo(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "mountinfo"
    path.write_text("\n".join(lines) + "\n")
    return path


def line(n: int, point: str, fstype: str, optional: str = "shared:1") -> str:
    return f"{n} 1 0:{n} / {point} rw,relatime {optional} - {fstype} src{n} rw"


# ---------------------------------------------------------------------------- mountinfo


def test_the_longest_mount_point_holding_data_dir_wins(tmp_path: Path) -> None:
    info = mountinfo(tmp_path, line(1, "/", "ext4"), line(2, "/srv", "tmpfs"),
                     line(3, "/srv/data", "xfs"), line(4, "/srv/database", "overlay", ""))
    assert mount_of(Path("/srv/data/arbiter"), info).fstype == "xfs"  # type: ignore[union-attr]
    assert mount_of(Path("/srv/datastore"), info).fstype == "tmpfs"  # type: ignore[union-attr]
    assert mount_of(Path("/srv"), info).fstype == "tmpfs"  # type: ignore[union-attr]
    assert mount_of(Path("/home/me"), info).fstype == "ext4"  # type: ignore[union-attr]
    assert volatile_filesystem(Path("/srv/data/arbiter"), info) is None
    assert volatile_filesystem(Path("/srv/database/x"), info).fstype == "overlay"  # type: ignore[union-attr]


def test_a_mount_on_top_of_the_same_point_wins_and_escapes_are_read(tmp_path: Path) -> None:
    info = mountinfo(tmp_path, line(1, "/", "ext4"), line(2, "/var/lib/my\\040data", "ext4"),
                     line(3, "/var/lib/my\\040data", "ramfs"), "garbage line", "")
    mount = volatile_filesystem(Path("/var/lib/my data/arbiter"), info)
    assert mount is not None and mount.point == "/var/lib/my data" and mount.fstype == "ramfs"


def test_an_unreadable_mountinfo_tells_nothing(tmp_path: Path) -> None:
    assert mount_of(tmp_path, tmp_path / "missing") is None
    assert volatile_filesystem(tmp_path, tmp_path / "missing") is None


def with_values(settings: Settings, **values: Any) -> Settings:
    merged = {**settings.values, **{k.replace("__", "."): v for k, v in values.items()}}
    return replace(settings, values=merged)


@pytest.mark.parametrize(("fstype", "status"), [("tmpfs", WARN), ("overlay", WARN),
                                                ("ramfs", WARN), ("ext4", PASS)])
def test_health_warns_when_data_dir_is_not_persistent(test_settings: Settings, tmp_path: Path,
                                                      fstype: str, status: str) -> None:
    data_dir = test_settings.paths.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    info = mountinfo(tmp_path, line(1, "/", "ext4"), line(2, str(data_dir.resolve()), fstype))
    report = evaluate(test_settings, engine=sql_engine, clock=lambda: datetime.now(UTC), mountinfo=info)
    (check,) = [c for c in report.checks if c.name == "dataDir:persistent"]
    assert check.status == status, check
    assert fstype in check.output
    if status == WARN:
        assert "ARBITER_DATA_DIR" in check.output and report.status != PASS


def test_health_on_the_real_mountinfo_has_the_check(test_settings: Settings) -> None:
    report = evaluate(test_settings, engine=sql_engine, clock=lambda: datetime.now(UTC))
    assert [c.name for c in report.checks].count("dataDir:persistent") == 1


# ---------------------------------------------------------------------------- records


def test_a_record_is_written_once_0600_and_read_back(tmp_path: Path) -> None:
    folder = tmp_path / "resilience" / "0123456789abcdef"
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    assert write_record(folder, first, "postgresql://arb@127.0.0.1:1/arbiter") is True
    assert write_record(folder, second, "postgresql://other") is False  # never rewritten
    record = read_record(folder)
    assert record.identity == first and record.url == "postgresql://arb@127.0.0.1:1/arbiter"
    assert stat.S_IMODE(os.stat(folder / RECORD_FILE).st_mode) == 0o600
    assert [p.name for p in folder.iterdir()] == [RECORD_FILE]  # no temporary left


@pytest.mark.parametrize("body", ["", "not json", "[]", json.dumps({"identity": "x"}),
                                  json.dumps({"identity": "A" * 36}), "{" * 5000])
def test_a_damaged_record_is_an_unknown_database(tmp_path: Path, body: str) -> None:
    (tmp_path / RECORD_FILE).write_text(body)
    assert read_record(tmp_path).identity is None
    assert read_record(tmp_path).url is None
    assert read_record(tmp_path / "nowhere").identity is None


def test_a_damaged_record_is_told_from_a_missing_one(tmp_path: Path) -> None:
    """attack-17 A6: a record that is there but unreadable may name another database, so
    ``--accept-unrecorded`` (meant for folders an older arbiter left without one) must not
    override it."""
    assert read_record(tmp_path).damaged is False  # none at all
    (tmp_path / RECORD_FILE).write_text(json.dumps({"identity": "4007B58A-garbled"}))
    assert read_record(tmp_path).damaged is True
    (tmp_path / RECORD_FILE).write_text(json.dumps({"identity": str(uuid.uuid4())}))
    assert read_record(tmp_path).damaged is False


def test_a_record_that_is_a_fifo_or_a_link_reads_as_damaged_without_waiting(
        tmp_path: Path) -> None:
    """attack-17 A5: every command reads the records of stranded journals; a FIFO in place of
    one blocked them all for ever."""
    import signal

    class Blocked(Exception):  # not an OSError, which read_record would take for damage
        pass

    def stuck(*_: object) -> None:
        raise Blocked("blocked on a FIFO")

    os.mkfifo(tmp_path / RECORD_FILE)
    previous = signal.signal(signal.SIGALRM, stuck)
    signal.alarm(5)
    try:
        assert read_record(tmp_path).damaged is True
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    os.unlink(tmp_path / RECORD_FILE)
    real = tmp_path / "elsewhere.json"
    real.write_text(json.dumps({"identity": str(uuid.uuid4())}))
    (tmp_path / RECORD_FILE).symlink_to(real)
    assert read_record(tmp_path).identity is None and read_record(tmp_path).damaged is True


def test_a_recorded_url_with_control_characters_is_not_shown(tmp_path: Path) -> None:
    body = {"identity": str(uuid.uuid4()), "url": "postgresql://h/db\x1b[2J"}
    (tmp_path / RECORD_FILE).write_text(json.dumps(body))
    record = read_record(tmp_path)
    assert record.identity == body["identity"] and record.url is None


# ---------------------------------------------------------------------------- stranded


def journal_with(data_dir: Path, url: str, entries: int) -> Journal:
    folder = data_dir / "resilience" / store_key(url)
    journal = Journal(folder / "journal.db", key_file=data_dir / "resilience" / "journal.key")
    for _ in range(entries):
        journal.append(op_id=str(uuid.uuid4()), tenant="default", kind="routing.route",
                       principal={"tenant": "default"}, args={})
    return journal


def test_only_other_journals_with_entries_are_stranded(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    old = journal_with(data_dir, URL_A, 2)
    current = journal_with(data_dir, URL_B, 1)
    identity = str(uuid.uuid4())
    write_record(old.path.parent, identity, "postgresql://arb@127.0.0.1:1/arbiter")
    (found,) = stranded_journals(data_dir, store_key(URL_B))
    assert (found.key, found.pending, found.conflicts, found.identity) == (
        store_key(URL_A), 2, 0, identity)
    assert "pw-s3cret" not in str(found.to_dict())
    assert f"arbiter journal replay --from {found.key}" in found.warning()
    old.conflict(1, "gone")
    old.applied(2)
    (found,) = stranded_journals(data_dir, store_key(URL_B))
    assert (found.pending, found.conflicts) == (0, 1)  # listed, not warned about
    (mine,) = stranded_journals(data_dir, store_key(URL_A))
    assert mine.key == store_key(URL_B)
    old.close()
    current.close()


def test_every_command_warns_only_about_pending_writes(test_settings: Settings) -> None:
    settings = with_values(test_settings, database__url=URL_B)
    data_dir = settings.paths.data_dir
    assert stranded_warnings(settings) == []
    old = journal_with(data_dir, URL_A, 1)
    (warning,) = stranded_warnings(settings)
    assert store_key(URL_A) in warning and "an unrecorded database" in warning
    old.applied(1)
    assert stranded_warnings(settings) == []
    old.close()


def test_a_damaged_journal_is_reported_not_raised(tmp_path: Path) -> None:
    folder = tmp_path / "resilience" / store_key(URL_A)
    folder.mkdir(parents=True)
    (folder / "journal.db").write_bytes(b"this is not a database" * 100)
    (found,) = stranded_journals(tmp_path, None)
    assert found.pending == -1
    warning = found.warning().replace(str(folder), "<folder>")  # the tmp path may hold "-1"
    assert "cannot be read" in warning and "-1" not in warning  # A8
    (tmp_path / "resilience" / "not-a-key").mkdir()
    assert len(stranded_journals(tmp_path, None)) == 1


def test_a_folder_records_its_database_without_the_password(test_settings: Settings,
                                                            tmp_path: Path) -> None:
    """After a command that reached the primary: identity and password-free URL, once."""
    from sqlalchemy import create_engine, insert

    from arbiter_cli.adapters.sql import tables as t
    from arbiter_cli.resilience.gateway import Resilience

    engine = create_engine(f"sqlite:///{tmp_path / 'primary.db'}")
    t.metadata.create_all(engine)
    identity = str(uuid.uuid4())
    with engine.begin() as conn:
        conn.execute(insert(t.database_identity), [{"id": 1, "identity": identity}])
    settings = with_values(test_settings, database__url=URL_A)
    res = Resilience(settings=settings, url=URL_A, primary=engine,
                     clock=lambda: datetime.now(UTC))
    res.record_database()
    assert not (res.directory / RECORD_FILE).exists()  # the primary was not reached
    res.primary_ok = True
    res.record_database()
    text = (res.directory / RECORD_FILE).read_text()
    assert "pw-s3cret" not in text and "arb@127.0.0.1:1/arbiter" in text
    assert read_record(res.directory).identity == identity
    with engine.begin() as conn:
        conn.execute(t.database_identity.update().values(identity=str(uuid.uuid4())))
    res.record_database()
    assert read_record(res.directory).identity == identity  # never rewritten
    res.close()
    engine.dispose()
