"""A damaged or hostile journal file gives one line and a documented exit code (attack-17).

A3: a journal file SQLite cannot read (a disk error, a bad restore) made every command exit 70,
then print a Python traceback from the closer that opened the journal again, while ``health``
passed with "0 entries". A4: a row whose time is not a number made ``journal list`` exit 70,
so its op id could not be found to drop it. A7: ``--accept-unrecorded`` without ``--from`` was
silently ignored. A6: a folder record that cannot be read counted as none, which
``--accept-unrecorded`` overrides.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.helpers import cli, fresh_postgres_database

UNREACHABLE = "postgresql+psycopg2://arb@127.0.0.1:1/arbiter"


def journal_file(env: dict[str, str], url: str) -> Path:
    from arbiter_cli.resilience.journal import resilience_dir

    return resilience_dir(Path(env["ARBITER_DATA_DIR"]), url) / "journal.db"


def damage(path: Path) -> None:
    for companion in (Path(f"{path}-wal"), Path(f"{path}-shm")):
        companion.unlink(missing_ok=True)
    path.write_bytes(b"garbage, not a SQLite file\n")


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    (line,) = [line for line in stderr.splitlines() if line.startswith("error:")]
    return line


def test_a_damaged_journal_is_one_line_and_exit_10_not_a_traceback(clean_env):
    """The closer that reads the journal after the command (snapshot refresh) reports it as a
    warning instead of a traceback, and the command itself exits 10 with what to do."""
    with fresh_postgres_database("damaged") as url:
        env = {"ARBITER_DATABASE__URL": url, "ARBITER_RESILIENCE__SNAPSHOT_REFRESH": "inline"}
        assert cli("--json", "init", env=env).exit_code == 0
        assert cli("--json", "agents", "list", env=env).exit_code == 0
        path = journal_file(clean_env, url)
        assert path.is_file()
        damage(path)
        for args in (("agents", "list"), ("journal", "replay")):
            result = cli(*args, env=env)
            assert result.exit_code == 10, result
            line = one_error_line(result.stderr)
            assert str(path) in line and "cannot be read" in line and "aside" in line


def test_health_warns_when_the_journal_cannot_be_read(clean_env):
    env = {"ARBITER_DATABASE__URL": UNREACHABLE, "ARBITER_DATABASE__COMMAND_TIMEOUT": "1s"}
    path = journal_file(clean_env, UNREACHABLE)
    path.parent.mkdir(parents=True)
    damage(path)
    result = cli("health", "--json", env=env)
    (backlog,) = json.loads(result.stdout)["checks"]["journal:backlog"]
    assert backlog["status"] == "warn", backlog
    assert "cannot be read" in backlog["output"]
    assert backlog["observedValue"] is None  # unknown, not 0


def test_a_row_whose_time_is_not_a_number_is_listed(clean_env):
    env = {"ARBITER_DATABASE__URL": UNREACHABLE}
    from arbiter_cli.resilience.journal import open_journal

    open_journal(Path(clean_env["ARBITER_DATA_DIR"]), UNREACHABLE, max_entries=10).close()
    db = sqlite3.connect(journal_file(clean_env, UNREACHABLE))
    db.execute("INSERT INTO entries (op_id, tenant, kind, principal, args, created_at, state) "
               "VALUES ('x1', 'default', 'agents.remove', '{}', '{}', 'yesterday', 'conflict')")
    db.execute("INSERT INTO entries (op_id, tenant, kind, principal, args, created_at) "
               "VALUES ('x2', 'default', 'agents.remove', '{}', '{}', 'today')")
    db.commit()
    db.close()
    listed = cli("--json", "journal", "list", "--conflicts", env=env)
    assert listed.exit_code == 0, listed
    (item,) = json.loads(listed.stdout)["items"]
    assert (item["op_id"], item["age_s"]) == ("x1", None)
    human = cli("journal", "list", env=env)
    assert human.exit_code == 0, human
    assert "x1" in human.stdout and "x2" in human.stdout
    status = cli("--json", "journal", "status", env=env)
    assert status.exit_code == 0, status
    assert json.loads(status.stdout)["backlog"] == 1


def test_accept_unrecorded_without_from_is_refused(clean_env):
    result = cli("journal", "replay", "--accept-unrecorded",
                 env={"ARBITER_DATABASE__URL": UNREACHABLE})
    assert result.exit_code == 2, result
    assert "--from" in one_error_line(result.stderr)


def test_every_closer_runs_and_a_failing_one_is_a_warning(capsys: pytest.CaptureFixture[str]):
    from arbiter_cli.cli.state import State
    from arbiter_cli.errors import StorageUnavailable

    ran: list[str] = []
    state = State()
    state.on_close(lambda: ran.append("first"))

    def failing() -> None:
        raise StorageUnavailable("the journal cannot be read")

    state.on_close(failing)
    state.close()
    assert ran == ["first"]
    assert "the journal cannot be read" in capsys.readouterr().err


def test_a_damaged_folder_record_is_refused_even_with_accept_unrecorded(clean_env):
    """A6: ``--accept-unrecorded`` vouches for a folder an older arbiter left without a
    record, never for one whose record cannot be read (it may name another database)."""
    from arbiter_cli.resilience.journal import open_journal

    with fresh_postgres_database("damagedrecord") as url:
        env = {"ARBITER_DATABASE__URL": url}
        assert cli("--json", "init", env=env).exit_code == 0
        key = "00000000000000ee"
        folder = Path(clean_env["ARBITER_DATA_DIR"]) / "resilience" / key
        opened = open_journal(Path(clean_env["ARBITER_DATA_DIR"]), url, max_entries=10)
        opened.close()
        folder.mkdir(mode=0o700)
        (opened.path.parent / "journal.db").rename(folder / "journal.db")
        (folder / "database.json").write_text('{"identity": "4007B58A-garbled"}')
        result = cli("journal", "replay", "--from", key, "--accept-unrecorded", env=env)
        assert result.exit_code == 5, result
        line = one_error_line(result.stderr)
        assert "cannot be read" in line and "move the record away" in line
        (folder / "database.json").unlink()
        result = cli("--json", "journal", "replay", "--from", key, "--accept-unrecorded",
                     env=env)
        assert result.exit_code == 0, result
