"""Authentication, credentials, audit chain, kill switch and rate limits through the CLI (SPEC §4).

Every refusal is checked twice: by its exit code and error code, and by the audit event that
must carry the refused call's correlation id.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import typer

from tests.helpers import CliResult, cli, cli_commands, fresh_postgres_database

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------- helpers


@pytest.fixture
def admin(clean_env: dict[str, str]) -> str:
    """An initialized SQLite store; the bootstrap admin token of tenant ``default``."""
    result = cli("--json", "init")
    assert result.exit_code == 0, result
    token = result.json()["admin_token"]
    assert token and token.startswith("arb_")
    return token  # type: ignore[no-any-return]


def ok(result: CliResult) -> dict[str, Any]:
    assert result.exit_code == 0, result
    return result.json()


def issue(admin: str, role: str, *extra: str, name: str = "t") -> dict[str, Any]:
    return ok(cli("--json", "--token", admin, "tokens", "create", "--role", role,
                  "--name", name, *extra))


def secret_of(token: str) -> str:
    return token.split("_", 2)[2]


def events(admin: str, *filters: str) -> list[dict[str, Any]]:
    return ok(cli("--json", "--token", admin, "audit", "list", "--limit", "0", *filters)
              )["items"]  # type: ignore[no-any-return]


def by_correlation(admin: str, correlation_id: str) -> list[dict[str, Any]]:
    return [e for e in events(admin) if e["correlation_id"] == correlation_id]


def database_bytes(clean_env: dict[str, str]) -> bytes:
    """The SQLite file and its WAL/SHM companions, as they are on disk."""
    data = Path(clean_env["ARBITER_DATA_DIR"])
    files = sorted(data.glob("arbiter.db*"))
    assert files, f"no database files in {data}"
    return b"".join(path.read_bytes() for path in files)


def credentials_file(clean_env: dict[str, str]) -> Path:
    return Path(clean_env["ARBITER_CONFIG_DIR"]) / "credentials.toml"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---------------------------------------------------------------------------- bad tokens


BAD_TOKENS = ["missing", "malformed", "wrong-secret", "unknown-id", "expired", "revoked"]


def _bad_token(kind: str, admin: str) -> tuple[str | None, str | None, str]:
    """(token to present, actor expected in the audit event, reason expected)."""
    if kind == "missing":
        return None, None, "missing token"
    if kind == "malformed":
        return "not-a-token", None, "malformed token"
    if kind == "unknown-id":
        return "arb_zzzzzzzzzzzz_" + "A" * 43, None, "invalid token"
    issued = issue(admin, "viewer", *(["--expires-in", "1s"] if kind == "expired" else []))
    if kind == "wrong-secret":
        return f"arb_{issued['id']}_{'B' * 43}", issued["id"], "invalid token"
    if kind == "revoked":
        ok(cli("--json", "--token", admin, "tokens", "revoke", issued["id"], "--yes"))
        return issued["token"], issued["id"], "token revoked"
    assert issued["expires_at"] is not None
    time.sleep(1.1)
    return issued["token"], issued["id"], "token expired"


@pytest.mark.parametrize("kind", BAD_TOKENS)
def test_a_bad_token_exits_6_and_is_audited(admin: str, kind: str):
    """Missing, malformed, wrong-secret, unknown, expired and revoked tokens: 6, audited."""
    token, actor, reason = _bad_token(kind, admin)
    correlation_id = f"bad-{kind}"
    argv = ["--json", "--correlation-id", correlation_id, "--profile", "nobody"]
    result = cli(*argv, *(["--token", token] if token else []), "agents", "list")
    assert result.exit_code == 6, result
    assert result.stdout == ""
    assert result.error()["code"] == "unauthenticated"
    assert (reason if kind != "missing" else "no token") in result.error()["message"]
    if token:
        assert token not in result.stderr
    found = by_correlation(admin, correlation_id)
    assert len(found) == 1, found
    event = found[0]
    assert (event["action"], event["result"], event["actor"]) == ("auth.denied", "denied", actor)
    assert event["details"]["reason"] == reason
    assert event["details"]["command"] == "agents list"
    if token:
        assert token not in json.dumps(event)
        if token.startswith("arb_"):
            assert secret_of(token) not in json.dumps(event)


def test_login_checks_the_token_before_saving_it(admin: str, clean_env: dict[str, str]):
    """A wrong token is refused (6) and nothing is written under its profile."""
    wrong = f"arb_{admin.split('_')[1]}_{'C' * 43}"
    result = cli("login", "--token", wrong, "--profile", "ci")
    assert result.exit_code == 6, result
    assert "[ci]" not in credentials_file(clean_env).read_text()  # no such profile section


def test_a_failed_login_is_audited(admin: str):
    wrong = f"arb_{admin.split('_')[1]}_{'C' * 43}"
    assert cli("--correlation-id", "failed-login", "login", "--token", wrong,
               "--profile", "ci").exit_code == 6
    assert [e["action"] for e in by_correlation(admin, "failed-login")] == ["auth.denied"]


@pytest.mark.postgres
def test_a_long_correlation_id_does_not_turn_a_denial_into_an_internal_error(
        clean_env: dict[str, str], monkeypatch: pytest.MonkeyPatch):
    with fresh_postgres_database("corr") as url:
        monkeypatch.setenv("ARBITER_DATABASE__URL", url)
        admin = ok(cli("--json", "init"))["admin_token"]
        wrong = f"arb_{admin.split('_')[1]}_{'D' * 43}"
        result = cli("--json", "--correlation-id", "c" * 300, "--token", wrong, "agents", "list")
        assert result.exit_code in (2, 6), result
        if result.exit_code == 6:
            assert [e["action"] for e in events(admin, "--action", "auth.denied")] == [
                "auth.denied"]


# ---------------------------------------------------------------------------- secrets at rest


def test_the_database_holds_only_token_hashes(admin: str, clean_env: dict[str, str]):
    """Neither a full token nor its secret is anywhere in the SQLite files; the hash is."""
    tokens = [admin, issue(admin, "viewer")["token"], issue(admin, "admin")["token"],
              ok(cli("--json", "tenants", "create", "team-b"))["admin_token"]]
    ok(cli("--json", "--token", tokens[1], "agents", "list"))  # a use: last_used_at written
    raw = database_bytes(clean_env)
    for token in tokens:
        secret = secret_of(token)
        assert token.encode() not in raw
        assert secret.encode() not in raw
        assert secret[:24].encode() not in raw
        assert hashlib.sha256(secret.encode()).hexdigest().encode() in raw


def test_credentials_file_is_private(admin: str, clean_env: dict[str, str]):
    """init, login and tenants create --save all leave the file at mode 0600."""
    path = credentials_file(clean_env)
    assert mode(path) == 0o600
    assert admin in path.read_text()
    viewer = issue(admin, "viewer")["token"]
    ok(cli("--json", "login", "--token", viewer, "--profile", "ci"))
    assert mode(path) == 0o600
    ok(cli("--json", "tenants", "create", "team-b", "--save"))
    assert mode(path) == 0o600
    assert "team-b" in path.read_text()


# ---------------------------------------------------------------------------- login


def test_login_saves_refuses_to_overwrite_and_replaces_with_force(admin: str,
                                                                  clean_env: dict[str, str]):
    first, second = issue(admin, "viewer"), issue(admin, "orchestrator")
    saved = ok(cli("--json", "login", "--token", first["token"], "--profile", "ci"))
    assert saved["profile"] == "ci" and saved["token_id"] == first["id"]
    assert saved["replaced"] is False
    assert ok(cli("--json", "--profile", "ci", "whoami"))["token_id"] == first["id"]
    again = ok(cli("--json", "login", "--token", first["token"], "--profile", "ci"))
    assert again["replaced"] is False  # the same token again is no conflict

    refused = cli("--json", "login", "--token", second["token"], "--profile", "ci")
    assert refused.exit_code == 5, refused
    assert refused.error()["code"] == "conflict" and "--force" in refused.error()["message"]
    assert ok(cli("--json", "--profile", "ci", "whoami"))["token_id"] == first["id"]

    forced = ok(cli("--json", "login", "--token", second["token"], "--profile", "ci",
                    "--force"))
    assert forced["replaced"] is True
    assert ok(cli("--json", "--profile", "ci", "whoami"))["token_id"] == second["id"]
    text = credentials_file(clean_env).read_text()
    assert second["token"] in text and first["token"] not in text
    assert admin in text  # the default profile is untouched


def test_token_resolution_order(admin: str):
    """--token beats ARBITER_TOKEN, which beats the profile; --token also after the command."""
    profile_id = admin.split("_")[1]
    from_env, from_flag = issue(admin, "viewer"), issue(admin, "orchestrator")
    env = {"ARBITER_TOKEN": from_env["token"]}

    def who(*argv: str, env: dict[str, str] | None = None) -> str:
        return ok(cli("--json", *argv, "whoami", env=env))["token_id"]  # type: ignore[no-any-return]

    assert who() == profile_id
    assert who(env=env) == from_env["id"]
    assert who("--token", from_flag["token"], env=env) == from_flag["id"]
    assert ok(cli("--json", "whoami", "--token", from_flag["token"], env=env)
              )["token_id"] == from_flag["id"]
    assert who("--token", from_flag["token"]) == from_flag["id"]
    # A profile named by ARBITER_PROFILE or --profile is used only when nothing else is given.
    ok(cli("--json", "login", "--token", from_flag["token"], "--profile", "ci"))
    assert who(env={"ARBITER_PROFILE": "ci"}) == from_flag["id"]
    assert who("--profile", "ci", env=env) == from_env["id"]


def test_whoami_reports_tenant_role_and_token(admin: str):
    viewer = issue(admin, "viewer")
    document = ok(cli("--json", "--token", viewer["token"], "whoami"))
    assert {k: document[k] for k in ("tenant", "role", "token_id")} == {
        "tenant": "default", "role": "viewer", "token_id": viewer["id"]}
    human = cli("--token", viewer["token"], "whoami")
    assert human.exit_code == 0 and viewer["id"] in human.stdout and "viewer" in human.stdout
    other = ok(cli("--json", "tenants", "create", "team-b"))["admin_token"]
    assert ok(cli("--json", "--token", other, "whoami"))["tenant"] == "team-b"


def test_tokens_list_never_shows_secrets(admin: str):
    issued = [issue(admin, role, name=f"n-{role}") for role in ("viewer", "manager", "admin")]
    tokens = [admin] + [i["token"] for i in issued]
    as_json = cli("--json", "--token", admin, "tokens", "list")
    human = cli("--token", admin, "tokens", "list")
    listed = ok(as_json)
    assert {i["id"] for i in issued} <= {item["id"] for item in listed["items"]}
    for item in listed["items"]:
        assert not {"token", "secret", "secret_hash"} & set(item)
    assert human.exit_code == 0
    for output in (as_json.stdout, human.stdout, as_json.stderr, human.stderr):
        for token in tokens:
            secret = secret_of(token)
            assert secret not in output and secret[:16] not in output
            assert hashlib.sha256(secret.encode()).hexdigest() not in output


def test_the_full_token_is_shown_once(admin: str):
    """tokens create prints the token; nothing afterwards (show, list, audit) prints it again."""
    issued = issue(admin, "viewer")
    assert issued["token"] == f"arb_{issued['id']}_{secret_of(issued['token'])}"
    assert len(secret_of(issued["token"])) >= 32  # >= 192 bits of url-safe base64
    later = [cli("--json", "--token", admin, "tokens", "list").stdout,
             cli("--json", "--token", admin, "audit", "list").stdout,
             cli("--token", admin, "audit", "list").stdout]
    assert all(secret_of(issued["token"]) not in output for output in later)


# ---------------------------------------------------------------------------- audit chain


def _register(admin: str, agent_id: str) -> None:
    ok(cli("--json", "--token", admin, "agents", "register", "--id", agent_id, "--name", "n",
           "--model-family", "x", "--task-type", "testing"))


def _sql(clean_env: dict[str, str], statement: str) -> None:
    connection = sqlite3.connect(Path(clean_env["ARBITER_DATA_DIR"]) / "arbiter.db")
    try:
        connection.execute(statement)
        connection.commit()
    finally:
        connection.close()


def test_audit_verify_prints_the_head_and_names_a_tampered_seq(admin: str,
                                                               clean_env: dict[str, str]):
    for agent_id in ("a-1", "a-2", "a-3"):
        _register(admin, agent_id)
    newest = events(admin)[0]
    verified = ok(cli("--json", "--token", admin, "audit", "verify"))
    assert verified["ok"] is True and verified["head"] == f"4:{newest['hash']}"
    assert (verified["head_seq"], verified["head_hash"]) == (4, newest["hash"])
    assert verified["events"] == newest["seq"] == 4
    human = cli("--token", admin, "audit", "verify")
    assert human.exit_code == 0 and f"head 4:{newest['hash']}" in human.stdout

    _sql(clean_env, "UPDATE audit_events SET action = 'agent.remove' "
                    "WHERE tenant = 'default' AND seq = 2")
    broken = cli("--token", admin, "audit", "verify")
    assert broken.exit_code == 1, broken
    assert "seq 2" in broken.stderr
    as_json = cli("--json", "--token", admin, "audit", "verify")
    assert as_json.exit_code == 1
    assert as_json.error()["code"] == "check_failed"
    assert as_json.error()["details"]["first_bad_seq"] == 2


def test_audit_verify_expect_head_holds_on_a_growing_log_and_detects_truncation(
        admin: str, clean_env: dict[str, str]):
    """An anchor taken earlier still holds after more writes; cutting the tail below it fails
    naming the anchored seq."""
    _register(admin, "a-1")
    older = ok(cli("--json", "--token", admin, "audit", "verify"))["head"]
    _register(admin, "a-2")
    anchored = ok(cli("--json", "--token", admin, "audit", "verify"))["head"]
    assert anchored != older
    for anchor in (older, anchored):
        assert ok(cli("--json", "--token", admin, "audit", "verify", "--expect-head", anchor)
                  )["ok"] is True

    _sql(clean_env, "DELETE FROM audit_events WHERE tenant = 'default' AND seq = "
                    "(SELECT max(seq) FROM audit_events WHERE tenant = 'default')")
    assert ok(cli("--json", "--token", admin, "audit", "verify"))["head"] == older
    truncated = cli("--json", "--token", admin, "audit", "verify", "--expect-head", anchored)
    assert truncated.exit_code == 1, truncated
    assert truncated.error()["code"] == "check_failed"
    assert truncated.error()["details"]["first_bad_seq"] == int(anchored.split(":")[0])
    assert "removed from the tail" in truncated.error()["message"]


# ---------------------------------------------------------------------------- kill switch


def test_security_disabled_works_on_a_throwaway_database_and_warns_every_run(clean_env):
    """A database without tokens: init issues none, every command acts as admin of default.

    On a database with tokens the switch is refused: tests/cli/test_trust.py.
    """
    env = {"ARBITER_SECURITY__ENABLED": "false"}
    init = cli("--json", "init", env=env)
    assert init.exit_code == 0, init
    assert init.json()["admin_token"] is None and init.json()["credentials_file"] is None
    for _ in range(2):
        result = cli("--json", "--profile", "nobody", "whoami", env=env)
        assert result.exit_code == 0, result
        assert result.json()["tenant"] == "default" and result.json()["role"] == "admin"
        assert "warning" in result.stderr and "security.enabled" in result.stderr
        listed = cli("--json", "--profile", "nobody", "agents", "list", env=env)
        assert listed.exit_code == 0 and "warning" in listed.stderr
        json.loads(listed.stdout)  # the warning never lands on stdout
    enabled = cli("--json", "--profile", "nobody", "agents", "list")
    assert enabled.exit_code == 6 and "warning" not in enabled.stderr


# ---------------------------------------------------------------------------- rate limits


def test_the_call_after_the_burst_exits_7_with_retry_after(admin: str):
    viewer = issue(admin, "viewer")["token"]
    env = {"ARBITER_SECURITY__RATE_LIMIT__RATE": "0.001",
           "ARBITER_SECURITY__RATE_LIMIT__BURST": "3"}
    for n in range(3):
        assert cli("--json", "--token", viewer, "whoami", env=env).exit_code == 0, n
    started = time.time()
    refused = [cli("--json", "--token", viewer, "whoami", env=env) for _ in range(4)]
    finished = time.time()
    for result in refused:
        assert result.exit_code == 7, result
        assert result.stdout == ""
        assert result.error()["code"] == "rate_limited"
    waits = [r.error()["details"]["retry_after_s"] for r in refused]
    # The refusal left one token of debt: a call needs (1 - (-1)) / 0.001 s of refill.
    assert 1990 < waits[0] <= 2000
    assert waits == sorted(waits) and waits[-1] > waits[0]  # a refusal still spends
    denied = events(admin, "--action", "rate_limit.denied")
    assert 1 <= len(denied) <= int(finished) - int(started) + 1  # aggregated per second
    assert {e["result"] for e in denied} == {"denied"}


def test_per_token_rate_overrides_the_setting(admin: str):
    limited = issue(admin, "viewer", "--rate", "0.001", "--burst", "2")
    assert (limited["rate"], limited["burst"]) == (0.001, 2)
    codes = [cli("--token", limited["token"], "whoami").exit_code for _ in range(3)]
    assert codes == [0, 0, 7]


WORKER = textwrap.dedent(
    """
    import json, sys, time
    from arbiter_cli.bootstrap import build
    from arbiter_cli.config import load_settings
    from arbiter_cli.errors import RateLimited

    url, token, attempts, start_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    app = build(load_settings(), url=url)
    security = app.security
    while time.time() < start_at:
        time.sleep(0.001)
    admitted = refused = 0
    first = time.time()
    for _ in range(attempts):
        try:
            security.admit(token, "whoami")
            admitted += 1
        except RateLimited:
            refused += 1
    last = time.time()
    app.close()
    print(json.dumps({"admitted": admitted, "refused": refused, "first": first, "last": last}))
    """
)


def _contend(url: str, token: str, *, processes: int = 4, attempts: int = 15) -> dict[str, float]:
    start_at = time.time() + 2.0
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, url, token, str(attempts),
                                 str(start_at)], cwd=ROOT, env=dict(os.environ),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(processes)]
    reports = []
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
        reports.append(json.loads(out))
    assert sum(r["admitted"] + r["refused"] for r in reports) == processes * attempts
    return {"admitted": sum(r["admitted"] for r in reports),
            "wall_s": max(r["last"] for r in reports) - min(r["first"] for r in reports)}


def _race_for_a_limited_token(url: str, admin: str, burst: int, rate: float) -> dict[str, float]:
    """Issue a token limited to ``burst`` and ``rate``, race four processes on it, and return
    what they were admitted with the ceiling the bucket allows: burst + rate × wall time."""
    limited = issue(admin, "orchestrator", "--rate", str(rate), "--burst", str(burst))
    outcome = _contend(url, limited["token"])
    return {**outcome, "ceiling": burst + math.floor(rate * outcome["wall_s"])}


def test_four_processes_never_exceed_the_burst_on_sqlite(admin: str, clean_env: dict[str, str]):
    """4 processes × 15 admits on one token with burst 10: at most 10 + rate × wall time."""
    url = f"sqlite:///{Path(clean_env['ARBITER_DATA_DIR']) / 'arbiter.db'}"
    race = _race_for_a_limited_token(url, admin, burst=10, rate=1.0)
    assert 10 <= race["admitted"] <= race["ceiling"], race


@pytest.mark.postgres
def test_four_processes_never_exceed_the_burst_on_postgres(clean_env: dict[str, str],
                                                           monkeypatch: pytest.MonkeyPatch):
    with fresh_postgres_database("rate") as url:
        monkeypatch.setenv("ARBITER_DATABASE__URL", url)
        admin = ok(cli("--json", "init"))["admin_token"]
        race = _race_for_a_limited_token(url, admin, burst=10, rate=1.0)
    assert 10 <= race["admitted"] <= race["ceiling"], race


# ---------------------------------------------------------------------------- permissions


def _leaf_commands() -> set[str]:
    return set(cli_commands())


def test_every_command_has_a_permission_entry_or_is_on_the_no_token_list():
    from arbiter_cli.domain.security import NO_TOKEN, PERMISSIONS

    commands = _leaf_commands()
    assert len(commands) > 20
    unlisted = sorted(c for c in commands if c not in PERMISSIONS and c not in NO_TOKEN)
    assert not unlisted, f"commands with neither a role nor a no-token entry: {unlisted}"
    assert not set(PERMISSIONS) & NO_TOKEN
    assert set(PERMISSIONS) <= commands, "a role entry names no command"


def test_a_command_without_an_entry_is_denied_by_default(admin: str,
                                                         monkeypatch: pytest.MonkeyPatch):
    import arbiter_cli.cli.app as app_module
    from arbiter_cli.cli.boundary import command

    real = app_module.build_app

    def rogue(ctx: typer.Context) -> None:
        """A command nobody listed.

        Example: arbiter rogue
        """
        sys.stdout.write("rogue ran\n")

    def build() -> typer.Typer:
        app = real()
        command(app, "rogue")(rogue)
        return app

    monkeypatch.setattr(app_module, "build_app", build)
    result = cli("--json", "rogue")
    assert result.exit_code == 6, result
    assert result.error()["code"] == "forbidden" and "rogue ran" not in result.stdout
