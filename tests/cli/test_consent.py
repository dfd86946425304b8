"""SPEC §16 "Nothing destroys without consent": every command is classified, every rule tested.

``CONSENT`` names each command that deletes or overwrites, with its rule; ``SAFE`` names every
other command with the reason it destroys nothing. A new command fails
``test_every_command_is_classified`` until someone decides which table it belongs to.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.dbstate import dump
from tests.helpers import CliResult, cli, cli_commands, fresh_postgres_database

YES = "asks on a terminal; --yes off one (exit 2 without it)"
YES_UNLESS_DRY_RUN = YES + ", unless --dry-run"
YES_WITH_DROP = YES + ", with --drop"
OWN_FILES = "replaces only files it created and marked (exit 2 for anything else)"
FORCE = "replaces a saved profile only with --force (exit 5 otherwise)"
NEVER_REPLACES = "never replaces a saved profile (exit 5 before anything is created)"

CONSENT = {
    "db downgrade": YES,
    "agents remove": YES,
    "agents cleanup": YES_UNLESS_DRY_RUN,
    "tokens revoke": YES,
    "journal resolve": YES_WITH_DROP,
    "demo": OWN_FILES,
    "init": FORCE,
    "login": FORCE,
    "tenants create": NEVER_REPLACES,
}
#: Commands another branch adds; their row stays so the rule is decided before they land.

SAFE = {
    "whoami": "reads",
    "agents show": "reads", "agents list": "reads", "agents query": "reads",
    "agents stats": "reads",
    "agents register": "adds agents; an existing id is a conflict (5), never replaced",
    "agents update": "changes only the fields named on its command line (--expect-version "
                     "guards against lost updates)",
    "agents status": "sets one agent's status; audited",
    "agents heartbeat": "refreshes one agent's last-seen time",
    "agents record": "folds one result into the agent's performance",
    "route task": "adds a decision and claims a slot", "route outcome": "closes a decision",
    "route reap": "closes decisions past routing.assignment_ttl; they stay in the history",
    "route explain": "reads", "route history": "reads", "route stats": "reads",
    "route simulate": "in memory only",
    "tokens create": "adds a token", "tokens list": "reads",
    "tenants list": "reads", "audit list": "reads", "audit verify": "reads",
    "db upgrade": "adds schema; never drops", "db current": "reads", "db history": "reads",
    "db check": "reads",
    "config show": "reads", "config validate": "reads",
    "journal status": "reads", "journal list": "reads",
    "journal replay": "applies journaled writes, each re-admitted",
    "health": "reads", "serve": "reads (health and metrics endpoints)",
    "bench": "a scratch store of its own, removed afterwards",
    "soak": "a scratch store of its own; writes its own artifact files under --output",
    "mutate": "mutates a copy; writes its own report files under --output",
}


def _leaf_commands() -> dict[str, Any]:
    return cli_commands()


def _options(command: Any) -> set[str]:
    return {opt for param in command.params for opt in getattr(param, "opts", [])}


# ---------------------------------------------------------------------------- the class


def test_every_command_is_classified():
    commands = _leaf_commands()
    assert not set(CONSENT) & set(SAFE)
    unclassified = sorted(set(commands) - set(CONSENT) - set(SAFE))
    assert not unclassified, (f"commands that neither ask for consent nor say why they destroy "
                              f"nothing: {unclassified}")
    unknown = sorted((set(CONSENT) | set(SAFE)) - set(commands))
    assert not unknown, f"table rows that name no command: {unknown}"


@pytest.mark.parametrize("name", sorted(CONSENT))
def test_each_rule_has_its_flag(name: str):
    flags = _options(_leaf_commands()[name])
    rule = CONSENT[name]
    if rule.startswith(YES):
        assert "--yes" in flags, f"`{name}` destroys but has no --yes"
    if rule == YES_UNLESS_DRY_RUN:
        assert "--dry-run" in flags
    if rule == YES_WITH_DROP:
        assert "--drop" in flags
    if rule == FORCE:
        assert "--force" in flags


def test_only_the_commands_of_the_table_take_yes():
    """A --yes anywhere else would be a consent rule the table does not know about."""
    with_yes = {name for name, command in _leaf_commands().items()
                if "--yes" in _options(command)}
    assert with_yes == {n for n, rule in CONSENT.items() if rule.startswith(YES)}


# ---------------------------------------------------------------------------- each rule


@dataclass
class Store:
    url: str
    data_dir: Path
    admin: str
    extra: dict[str, str] = field(default_factory=dict)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, clean_env: dict[str, str],
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """An initialized database (SQLite file or fresh PostgreSQL) with one agent."""
    data_dir = Path(clean_env["ARBITER_DATA_DIR"])

    def ready(url: str) -> Store:
        init = cli("--json", "init")
        assert init.exit_code == 0, init
        assert cli("agents", "register", "--id", "coder-1", "--name", "Coder",
                   "--model-family", "gpt-4", "--task-type", "code-editing").exit_code == 0
        return Store(url, data_dir, init.json()["admin_token"])

    if request.param == "sqlite":
        yield ready(f"sqlite:///{data_dir / 'arbiter.db'}")
    else:
        with fresh_postgres_database("consent") as url:
            monkeypatch.setenv("ARBITER_DATABASE__URL", url)
            yield ready(url)


def _viewer(store: Store) -> str:
    issued = cli("--json", "tokens", "create", "--role", "viewer", "--name", "v")
    assert issued.exit_code == 0, issued
    store.extra["viewer_id"] = issued.json()["id"]
    return str(issued.json()["token"])


@dataclass(frozen=True)
class Rule:
    name: str
    args: Callable[[Store], list[str]]
    done: Callable[[Store, CliResult], None]
    setup: Callable[[Store], object] = lambda store: None


def _removed(store: Store, result: CliResult) -> None:
    assert result.json()["removed"] is True
    assert cli("agents", "show", "coder-1").exit_code == 4


def _offline(store: Store, result: CliResult) -> None:
    assert [a["id"] for a in result.json()["items"]] == ["coder-1"]
    assert cli("--json", "agents", "show", "coder-1").json()["status"] == "offline"


def _revoked(store: Store, result: CliResult) -> None:
    assert result.json()["revoked_at"]
    listed = cli("--json", "tokens", "list").json()["items"]
    assert [t["revoked_at"] is not None for t in listed if t["id"] == store.extra["viewer_id"]
            ] == [True]


def _downgraded(store: Store, result: CliResult) -> None:
    assert result.json()["to"] is None
    assert "audit_events" in result.json()["tables"]
    assert cli("--json", "db", "current").json()["revision"] is None


RULES = [
    Rule("agents remove", lambda s: ["agents", "remove", "coder-1"], _removed),
    Rule("agents cleanup", lambda s: ["agents", "cleanup", "--older-than", "0s"], _offline),
    Rule("tokens revoke", lambda s: ["tokens", "revoke", s.extra["viewer_id"]], _revoked,
         setup=_viewer),
    Rule("db downgrade", lambda s: ["db", "downgrade", "base"], _downgraded),
    Rule("db downgrade", lambda s: ["--token", s.extra["viewer"], "db", "downgrade", "base"],
         _downgraded, setup=lambda s: s.extra.update(viewer=_viewer(s))),
]


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
def test_refused_off_a_terminal_without_yes_and_done_with_it(store: Store, rule: Rule):
    """stdin is not a terminal here: exit 2 and nothing changed, then --yes does it."""
    rule.setup(store)
    before = dump(store.url)
    refused = cli("--json", *rule.args(store))
    assert refused.exit_code == 2, refused
    error = refused.error()
    assert error["code"] == "invalid_input" and error["details"] == {"field": "yes",
                                                                      "rule": "consent"}
    assert "--yes" in error["message"] and refused.stdout == ""
    assert dump(store.url) == before, "a refused command changed the database"
    human = cli(*rule.args(store))
    lines = human.stderr.splitlines()
    assert human.exit_code == 2 and lines[-1].startswith("error: refusing to ")
    if rule.name == "db downgrade":  # its plan comes first (see the test below)
        assert lines[0].startswith("db downgrade on ")
    else:
        assert len(lines) == 1
    done = cli("--json", *rule.args(store), "--yes")
    assert done.exit_code == 0, done
    rule.done(store, done)


def test_cleanup_dry_run_needs_no_consent(store: Store):
    before = dump(store.url)
    dry = cli("--json", "agents", "cleanup", "--older-than", "0s", "--dry-run")
    assert dry.exit_code == 0, dry
    assert [a["id"] for a in dry.json()["items"]] == ["coder-1"]
    assert dump(store.url) == before


def test_consent_comes_after_authentication_and_permission(store: Store):
    """A caller who may not run the command learns that first (6), not that --yes is missing."""
    viewer = _viewer(store)
    for args in (["agents", "remove", "coder-1"], ["tokens", "revoke", store.extra["viewer_id"]],
                 ["agents", "cleanup"]):
        assert cli("--token", viewer, *args).exit_code == 6
        assert cli("--token", "arb_notavalidtoken", *args).exit_code == 6


def test_downgrade_prints_what_it_drops_before_asking(store: Store):
    result = cli("db", "downgrade", "base")
    assert result.exit_code == 2
    plan, error = result.stderr.splitlines()[:-1], result.stderr.splitlines()[-1]
    text = "\n".join(plan)
    assert ("0006_agent_capabilities, 0005_arm_change_detector, "
            "0004_decision_agent_unavailable, 0003_database_identity, "
            "0002_decision_examples, "
            "0001_initial") in text
    assert "audit_events (" in text and "agents (1 row)" in text and "tokens (1 row)" in text
    assert error.startswith("error: refusing to downgrade")
    to_first = cli("--json", "db", "downgrade", "0001_initial", "--yes")
    assert to_first.exit_code == 0, to_first
    assert to_first.json()["columns"] == [
        "agents.capabilities", "agents.latency_count", "arms.changes", "arms.recent_alpha",
        "arms.recent_beta", "arms.total_alpha", "arms.total_beta", "decisions.agent_unavailable",
        "decisions.excluded_examples"]
    assert to_first.json()["tables"] == {"database_identity": 1}
    again = cli("--json", "db", "downgrade", "0001_initial")  # nothing to drop: nothing to ask
    assert again.exit_code == 0 and again.json()["revisions"] == []


# ---------------------------------------------------------------------------- on a terminal


def _on_terminal(args: list[str], answer: str) -> tuple[int, str]:
    """Run arbiter with stdin and stderr on a pseudo-terminal; answer its question."""
    import pty

    primary, secondary = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "arbiter_cli", *args], stdin=secondary,
                               stderr=secondary, stdout=subprocess.PIPE, env=os.environ)
    os.close(secondary)
    seen = b""
    deadline = time.monotonic() + 60
    while b"[y/N]" not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([primary], [], [], 1)
        if ready:
            try:
                seen += os.read(primary, 4096)
            except OSError:
                break
    os.write(primary, answer.encode() + b"\n")
    process.communicate(timeout=60)
    os.close(primary)
    return process.returncode, seen.decode(errors="replace")


@pytest.mark.slow
def test_on_a_terminal_it_asks_and_only_yes_goes_ahead(store: Store):
    code, prompt = _on_terminal(["agents", "remove", "coder-1"], "n")
    assert "remove agent 'coder-1'" in prompt and "Continue? [y/N]" in prompt
    assert code == 2
    assert cli("agents", "show", "coder-1").exit_code == 0
    code, _ = _on_terminal(["agents", "remove", "coder-1"], "y")
    assert code == 0
    assert cli("agents", "show", "coder-1").exit_code == 4


# ---------------------------------------------------------------------------- demo's own files


def _fingerprint(*paths: Path) -> dict[str, bytes | None]:
    return {str(p): p.read_bytes() if p.exists() else None for p in paths}


def _open_in_wal(path: Path) -> Any:
    """A live SQLite connection with an uncheckpointed write: its -wal and -shm exist."""
    import sqlite3

    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA wal_autocheckpoint=0")
    connection.execute("CREATE TABLE IF NOT EXISTS mine (x)")
    connection.execute("INSERT INTO mine VALUES (1)")
    connection.commit()
    assert Path(f"{path}-wal").exists() and Path(f"{path}-shm").exists()
    return connection


def _refused(result: CliResult) -> str:
    assert result.exit_code == 2, result
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: demo: ")
    return result.stderr


def test_demo_refuses_the_live_database_and_leaves_its_wal_alone(initialized, tmp_path: Path):
    live = Path(initialized["ARBITER_DATA_DIR"]) / "arbiter.db"
    connection = _open_in_wal(live)
    try:
        files = [live, Path(f"{live}-wal"), Path(f"{live}-shm")]
        before = _fingerprint(*files)
        spellings = [live, live.parent / ".." / live.parent.name / live.name]
        link = tmp_path / "link.db"
        link.symlink_to(live)
        for spelling in [*spellings, link]:
            _refused(cli("demo", "--database", str(spelling), "--tasks", "10"))
        assert "database of database.url" in _refused(cli("demo", "--database", str(live)))
        assert _fingerprint(*files) == before
    finally:
        connection.close()


def test_demo_refuses_the_live_database_even_before_init(clean_env, tmp_path: Path):
    live = Path(clean_env["ARBITER_DATA_DIR"]) / "arbiter.db"
    _refused(cli("demo", "--database", str(live), "--tasks", "10"))
    assert not live.exists()


def test_demo_refuses_files_it_did_not_create(clean_env, tmp_path: Path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    foreign = tmp_path / "other.db"
    connection = _open_in_wal(foreign)
    legacy = Path(clean_env["ARBITER_DATA_DIR"]) / "demo.db"  # an older, unmarked demo.db
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(foreign.read_bytes())
    try:
        files = [notes, foreign, Path(f"{foreign}-wal"), Path(f"{foreign}-shm"), legacy]
        before = _fingerprint(*files)
        for target in (notes, foreign):
            assert "was not created by `arbiter demo`" in _refused(
                cli("demo", "--database", str(target), "--tasks", "10"))
        _refused(cli("demo", "--tasks", "10"))  # the default path holds a file not marked
        assert _fingerprint(*files) == before
    finally:
        connection.close()


def test_demo_refuses_what_is_not_a_regular_file(clean_env, tmp_path: Path):
    fifo = tmp_path / "pipe.db"
    os.mkfifo(fifo)
    kept = tmp_path / "kept.db"
    assert cli("demo", "--database", str(kept), "--tasks", "10", "--keep").exit_code == 0
    link = tmp_path / "link-to-demo.db"
    link.symlink_to(kept)
    for target in (fifo, link, Path("/dev/null")):
        assert "not a regular file" in _refused(cli("demo", "--database", str(target)))
    assert fifo.exists() and link.is_symlink() and kept.exists()
    folder = tmp_path / "folder.db"
    folder.mkdir()
    assert cli("demo", "--database", str(folder)).exit_code == 2 and folder.is_dir()


def test_demo_never_deletes_sidecars_of_a_database_it_does_not_have(clean_env, tmp_path: Path):
    target = tmp_path / "x.db"
    stray = Path(f"{target}-wal")
    stray.write_bytes(b"somebody's log")
    assert "next to no database" in _refused(cli("demo", "--database", str(target)))
    assert stray.read_bytes() == b"somebody's log" and not target.exists()


def test_demo_replaces_its_own_marked_database(clean_env, tmp_path: Path):
    from arbiter_cli.adapters.demo_files import is_demo_database

    target = tmp_path / "new" / "demo.db"
    for _ in range(2):
        run = cli("--json", "demo", "--database", str(target), "--tasks", "10", "--keep")
        assert run.exit_code == 0, run
        assert run.json()["database"] == str(target)
        assert is_demo_database(target)
        assert target.stat().st_mode & 0o777 == 0o600
        assert target.parent.stat().st_mode & 0o777 == 0o700
    gone = cli("--json", "demo", "--database", str(target), "--tasks", "10")
    assert gone.exit_code == 0 and not target.exists()
    assert not any(target.parent.iterdir())
