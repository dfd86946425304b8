"""SPEC §4.1 "Files": private credentials and database, TOML written by a library, profile names
checked, and ``--metrics-file`` never growing folders or replacing someone else's file."""

from __future__ import annotations

import os
import sqlite3
import stat
import tomllib
from pathlib import Path

import pytest

from tests.helpers import cli

#: Profile names that, formatted into TOML by hand, injected a second token or broke the file.
INJECTIONS = [
    'x"]\ntoken = "arb_aaaaaaaaaaaa_injected"\n[profiles."default',
    'evil"]\n[profiles.default]\ntoken = "arb_attacker00000_x',
    'a"b',
    "a]b",
    "a b",
    "",
    "../../etc/passwd",
    "x" * 65,
    "naïve",
    "tab\there",
]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def credentials(env: dict[str, str]) -> Path:
    return Path(env["ARBITER_CONFIG_DIR"]) / "credentials.toml"


@pytest.fixture
def admin(clean_env: dict[str, str]) -> str:
    result = cli("--json", "init")
    assert result.exit_code == 0, result
    return str(result.json()["admin_token"])


# ---------------------------------------------------------------------------- L4: names, writer


@pytest.mark.parametrize("name", INJECTIONS, ids=range(len(INJECTIONS)))
def test_a_profile_name_outside_the_pattern_is_exit_2_and_writes_nothing(
        admin: str, clean_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, name: str):
    path = credentials(clean_env)
    before = path.read_bytes()
    login = cli("--json", "login", "--token", admin, "--profile", name)
    assert login.exit_code == 2, login
    assert login.error()["details"] == {"field": "profile", "rule": "pattern"}
    root = cli("--profile", name, "whoami")
    assert root.exit_code == 2 and root.stderr.count("\n") == 1, root
    monkeypatch.setenv("ARBITER_PROFILE", name)
    from_env = cli("--json", "whoami")
    assert from_env.exit_code == 2 and from_env.error()["details"]["field"] == "profile"
    assert path.read_bytes() == before


def test_the_file_is_written_by_a_toml_writer_whatever_the_token_holds(tmp_path: Path):
    """No value can add a table or a key: the file parses back to exactly what was saved."""
    from arbiter_cli.adapters.credentials import read_profiles, save_token

    path = tmp_path / "arbiter" / "credentials.toml"
    hostile = 'arb_x"\n[profiles.default]\ntoken = "arb_attacker_y'
    save_token(path, "ci", hostile, force=False)
    save_token(path, "default", "arb_real_token", force=False)
    assert tomllib.loads(path.read_text()) == {"profiles": {
        "ci": {"token": hostile}, "default": {"token": "arb_real_token"}}}
    assert read_profiles(path) == {"ci": hostile, "default": "arb_real_token"}


def test_saving_keeps_the_rest_of_the_file(tmp_path: Path):
    from arbiter_cli.adapters.credentials import save_token

    path = tmp_path / "credentials.toml"
    path.write_text('[profiles.ci]\ntoken = "arb_a"\nnote = "kept"\n'
                    'server = "https://arbiter.internal"\n\n'
                    '[profiles."odd name"]\ntoken = "arb_b"\nserver = "https://other"\n')
    path.chmod(0o600)
    save_token(path, "ci", "arb_c", force=True, server="https://arbiter.internal")
    assert tomllib.loads(path.read_text())["profiles"] == {
        "ci": {"token": "arb_c", "note": "kept", "server": "https://arbiter.internal"},
        "odd name": {"token": "arb_b", "server": "https://other"}}
    # a token of a local database (init, tenants create --save, login without a server) is
    # never left paired with the server of the token it replaces: it would be sent there
    save_token(path, "ci", "arb_d", force=True)
    assert tomllib.loads(path.read_text())["profiles"]["ci"] == {"token": "arb_d",
                                                                  "note": "kept"}


# ---------------------------------------------------------------------------- L6: modes


def test_init_creates_private_folders_database_and_credentials(admin: str,
                                                               clean_env: dict[str, str]):
    old = os.umask(0o022)
    try:
        data, config = Path(clean_env["ARBITER_DATA_DIR"]), Path(clean_env["ARBITER_CONFIG_DIR"])
        assert mode(data) == 0o700
        assert mode(data / "arbiter.db") == 0o600
        assert mode(credentials(clean_env)) == 0o600
        assert mode(config) == 0o755, "an existing folder keeps its mode"
        connection = sqlite3.connect(data / "arbiter.db")  # a writer: -wal and -shm appear
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA wal_autocheckpoint=0")
        connection.execute("UPDATE tenants SET name = name")
        connection.commit()
        try:
            for sidecar in ("arbiter.db-wal", "arbiter.db-shm"):
                assert mode(data / sidecar) == 0o600, sidecar
        finally:
            connection.close()
    finally:
        os.umask(old)


def test_missing_folders_are_created_0700_each(clean_env: dict[str, str], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch):
    database = tmp_path / "a" / "b" / "store.db"
    assert cli("db", "upgrade", "--database-url", f"sqlite:///{database}").exit_code == 0
    assert [mode(p) for p in (tmp_path / "a", tmp_path / "a" / "b")] == [0o700, 0o700]
    assert mode(database) == 0o600
    config = Path(clean_env["XDG_CONFIG_HOME"]) / "arbiter"
    monkeypatch.delenv("ARBITER_CONFIG_DIR")  # the XDG default: arbiter creates the folder
    assert cli("init").exit_code == 0
    assert mode(config.parent) == 0o700 and mode(config) == 0o700
    assert mode(config / "credentials.toml") == 0o600


@pytest.mark.parametrize("loose", [0o644, 0o640, 0o604, 0o660, 0o666, 0o620], ids=oct)
def test_a_credentials_file_others_may_access_is_refused_with_the_fix(
        admin: str, clean_env: dict[str, str], loose: int):
    path = credentials(clean_env)
    path.chmod(loose)
    for args in (["whoami"], ["--json", "whoami"], ["login", "--token", admin, "--profile", "x"]):
        result = cli(*args)
        assert result.exit_code == 3, result
        assert result.stderr.count("\n") == 1
        assert f"chmod 600 {path}" in result.stderr
        assert admin not in result.stderr
    path.chmod(0o400)  # stricter than 0600 is fine
    assert cli("whoami").exit_code == 0


def test_init_refuses_to_write_into_a_loose_credentials_file(clean_env: dict[str, str]):
    path = credentials(clean_env)
    path.write_text("")
    path.chmod(0o666)
    result = cli("init")
    assert result.exit_code == 3 and "chmod 600" in result.stderr
    assert not (Path(clean_env["ARBITER_DATA_DIR"]) / "arbiter.db").exists()


# ---------------------------------------------------------------------------- --metrics-file


def test_metrics_file_never_creates_folders(admin: str, tmp_path: Path):
    path = tmp_path / "missing" / "deeper" / "arbiter.prom"
    result = cli("--metrics-file", str(path), "whoami")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result
    assert "does not exist" in result.stderr
    assert not (tmp_path / "missing").exists()


def test_metrics_file_never_replaces_a_file_arbiter_did_not_write(admin: str, tmp_path: Path):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    result = cli("--metrics-file", str(notes), "whoami")
    assert result.exit_code == 2 and "not a metrics file arbiter wrote" in result.stderr
    assert notes.read_text() == "mine\n"
    assert cli("--metrics-file", str(tmp_path), "whoami").exit_code == 2
    ours = tmp_path / "arbiter.prom"
    ours.touch()  # an empty file (pre-created by an operator) is fine, and so is our own
    for _ in range(2):
        assert cli("--metrics-file", str(ours), "whoami").exit_code == 0
        assert "arbiter_commands_total" in ours.read_text()
