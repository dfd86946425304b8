"""Secrets never show (SPEC §4 "Secrets"): a full CLI session hunted for canaries.

Three canaries: a random ``database.password`` in ``.secrets.toml``, another in
``ARBITER_DATABASE__PASSWORD`` (which overrides it), and every token the session creates. The
session covers init, register, query, route task/outcome/explain, tokens, audit, config, db and
errors with ``--verbose``, JSON logs at debug level and spans on the console exporter. No
password canary may appear in any stdout or stderr, in the audit log, in ``config show``, in the
SQLite file or in any exported span (an in-memory exporter sees every span of the session). A
token may appear only in the one output that issues it (``init``, ``tokens create``,
``tenants create``), exactly once, and in no span.

On PostgreSQL the password really is spliced into the DSN, so masking is exercised for real.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.helpers import CliResult, cli, fresh_postgres_database


class Session:
    """Runs commands, remembering every output and which one may show which token."""

    def __init__(self) -> None:
        self.outputs: list[tuple[tuple[str, ...], CliResult]] = []
        self.issued: dict[str, int] = {}  # token → index of the output allowed to show it

    def run(self, *argv: str, code: int = 0, env: dict[str, str] | None = None) -> CliResult:
        result = cli(*argv, env=env)
        assert result.exit_code == code, (argv, result)
        self.outputs.append((argv, result))
        return result

    def issue(self, *argv: str, key: str) -> str:
        result = self.run("--json", *argv)
        token = result.json()[key]
        assert token and token.startswith("arb_")
        self.issued[token] = len(self.outputs) - 1
        return token  # type: ignore[no-any-return]


def secret_of(token: str) -> str:
    return token.split("_", 2)[2]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def canaries(request: pytest.FixtureRequest, clean_env: dict[str, str],
             monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    file_canary = f"CANARYfile{secrets.token_hex(12)}"
    env_canary = f"CANARYenv{secrets.token_hex(12)}"
    config_dir = Path(clean_env["ARBITER_CONFIG_DIR"])
    (config_dir / ".secrets.toml").write_text(
        f'[default.database]\npassword = "{file_canary}"\n')
    monkeypatch.setenv("ARBITER_DATABASE__PASSWORD", env_canary)
    found = {"file": file_canary, "env": env_canary, "backend": request.param}
    if request.param == "sqlite":
        yield found
        return
    with fresh_postgres_database("canary") as url:
        assert "@" in url and ":" not in url.split("://", 1)[1].split("@", 1)[0]
        monkeypatch.setenv("ARBITER_DATABASE__URL", url)
        yield found


def run_session(s: Session, tmp_path: Path) -> dict[str, Any]:
    """Everything an operator does in a day, including mistakes."""
    admin = s.issue("init", key="admin_token")
    s.run("init")  # again: idempotent, prints no token
    orchestrator = s.issue("--token", admin, "tokens", "create", "--role", "orchestrator",
                           "--name", "router", key="token")
    other = s.issue("tenants", "create", "team-b", key="admin_token")
    revoked = s.issue("--token", admin, "tokens", "create", "--role", "viewer", "--name", "old",
                      key="token")
    s.run("--token", admin, "tokens", "revoke", revoked.split("_")[1], "--yes")
    s.run("--token", admin, "agents", "register", "--id", "coder-1", "--name", "Coder",
          "--model-family", "claude-3.5", "--task-type", "code-review", "--language", "Python",
          "--metadata", '{"owner": "ops"}')
    s.run("--json", "--token", admin, "agents", "query", "--task-type", "code-review")
    s.run("--token", admin, "agents", "query", "--task-type", "code-review")
    routed = s.run("--json", "--token", orchestrator, "--log-level", "debug", "route", "task",
                   "--task-type", "code-review", "--task-id", "PR-1").json()
    s.run("--token", orchestrator, "--log-level", "debug", "--log-format", "json", "route",
          "task", "--task-type", "code-review", "--task-id", "PR-2", "--explain")
    s.run("--token", orchestrator, "route", "outcome", "--task-id", "PR-1", "--success",
          "--quality", "0.9", "--error", "none")
    s.run("--json", "--token", orchestrator, "route", "explain", routed["decision_id"])
    s.run("--token", orchestrator, "route", "explain", routed["decision_id"])
    s.run("--token", orchestrator, "route", "history")
    for fmt in ((), ("--json",)):
        s.run(*fmt, "--token", admin, "tokens", "list")
        s.run(*fmt, "--token", admin, "audit", "list", "--limit", "0")
        s.run(*fmt, "--token", admin, "audit", "verify")
        s.run(*fmt, "config", "show")
        s.run(*fmt, "config", "validate")
        s.run(*fmt, "--token", admin, "whoami")
        s.run(*fmt, "tenants", "list")
        s.run(*fmt, "db", "current")
    # Mistakes, with tracebacks where they exist.
    wrong = f"arb_{admin.split('_')[1]}_{'W' * 43}"
    for verbose in ((), ("--verbose",)):
        s.run(*verbose, "--token", admin, "agents", "show", "ghost", code=4)
        s.run(*verbose, "--json", "--token", admin, "route", "explain", "no-such-decision",
              code=4)
        s.run(*verbose, "--token", wrong, "agents", "list", code=6)
        s.run(*verbose, "--json", "--token", revoked, "agents", "list", code=6)
        s.run(*verbose, "login", "--token", revoked, "--profile", "old", code=6)
        s.run(*verbose, "--token", other, "--json", "route", "explain", routed["decision_id"],
              code=4)
        s.run(*verbose, "--token", orchestrator, "tokens", "list", code=6)
        s.run(*verbose, "--token", admin, "agents", "register", "--id", "bad id", "--name", "x",
              "--model-family", "x", "--task-type", "testing", code=2)
        s.run(*verbose, "--token", admin, "route", "task", "--task-type", "testing", code=8)
        s.run(*verbose, "login", "--token", wrong, "--profile", "x", code=6)
        s.run(*verbose, "--token", admin, "--config", str(tmp_path / "absent.toml"), "whoami",
              code=3)
        s.run(*verbose, "--token", admin, "agents", "list", code=10,
              env={"ARBITER_DATABASE__URL": "postgresql+psycopg2://arbiter@127.0.0.1:1/none",
                   "ARBITER_DATABASE__CONNECT_TIMEOUT": "1s"})
    # Observability (SPEC §9): JSON logs at debug level, spans on stderr, failures included.
    debug = ("--log-level", "debug", "--log-format", "json")
    console_spans = {"ARBITER_OBSERVABILITY__TRACING__EXPORTER": "console"}
    s.run(*debug, "--token", admin, "agents", "list", env=console_spans)
    s.run(*debug, "--json", "--token", orchestrator, "route", "outcome", "--task-id", "PR-2",
          "--failure", "--error", "flaky", env=console_spans)
    s.issue(*debug, "--token", admin, "tokens", "create", "--role", "viewer", "--name", "dbg",
            key="token")
    s.run(*debug, "--token", wrong, "agents", "list", code=6, env=console_spans)
    s.run(*debug, "--token", admin, "agents", "list", code=10,
          env={**console_spans, "ARBITER_DATABASE__URL":
               "postgresql+psycopg2://arbiter@127.0.0.1:1/none",
               "ARBITER_DATABASE__CONNECT_TIMEOUT": "1s"})
    audit = s.run("--json", "--token", admin, "audit", "list", "--limit", "0").json()
    config = s.run("--json", "config", "show").json()
    return {"admin": admin, "audit": audit, "config": config}


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Every span of the session, whatever exporter the configuration chose."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from arbiter_cli.observability import tracing

    exporter = InMemorySpanExporter()
    monkeypatch.setattr(tracing, "INJECTED_EXPORTER", exporter)
    yield exporter
    exporter.shutdown()


def test_no_secret_appears_anywhere(canaries: dict[str, str], clean_env: dict[str, str],
                                    tmp_path: Path, spans: Any):
    session = Session()
    seen = run_session(session, tmp_path)
    passwords = {canaries["file"], canaries["env"], quote(canaries["env"], safe="")}
    leaks = []
    for index, (argv, result) in enumerate(session.outputs):
        for stream_name, stream in (("stdout", result.stdout), ("stderr", result.stderr)):
            leaks += [f"{argv} {stream_name}: password canary" for p in passwords if p in stream]
            for token, allowed in session.issued.items():
                count = stream.count(secret_of(token))
                if index == allowed and stream_name == "stdout":
                    if count != 1 or stream.count(token) != 1:
                        leaks.append(f"{argv}: shows its token {count} times, not once")
                elif count or secret_of(token)[:20] in stream:
                    leaks.append(f"{argv} {stream_name}: token secret of output {allowed}")
    assert not leaks, "\n".join(leaks)

    exported = [span.to_json() for span in spans.get_finished_spans()]
    assert len(exported) > 100 and any('"db.statement"' in span for span in exported)
    assert any('"exception.message"' in span for span in exported)  # failures were traced
    traced = "\n".join(exported)
    assert not any(p in traced for p in passwords), "a password canary is in a span"
    assert not [t for t in session.issued if secret_of(t)[:20] in traced], "a token is in a span"
    debug_logs = [line for argv, result in session.outputs if "debug" in argv
                  and "json" in argv for line in result.stderr.splitlines()
                  if not line.startswith("error:")]
    assert len(debug_logs) > 20
    assert all(isinstance(json.loads(line), dict) for line in debug_logs
               if line.startswith("{\"timestamp\""))

    audit_text = json.dumps(seen["audit"])
    assert seen["audit"]["count"] >= 5
    assert not any(p in audit_text for p in passwords)
    assert not any(secret_of(t)[:20] in audit_text for t in session.issued)
    assert not any({"token", "secret", "password", "admin_token"} & set(e["details"])
                   for e in seen["audit"]["items"])

    shown = seen["config"]
    assert shown["settings"]["database.password"]["value"] == "***"
    assert shown["settings"]["database.password"]["source"] == "environment"
    assert not any(p in json.dumps(shown) for p in passwords)
    if canaries["backend"] == "postgres":
        assert ":***@" in shown["database_url"]  # the DSN carries the password, masked
    else:
        data = Path(clean_env["ARBITER_DATA_DIR"])
        raw = b"".join(path.read_bytes() for path in data.glob("arbiter.db*"))
        assert not any(p.encode() in raw for p in passwords)
        assert not any(secret_of(t).encode() in raw for t in session.issued)


def test_the_session_would_see_a_leak(canaries: dict[str, str], clean_env: dict[str, str]):
    """Control: the canary is loaded (config knows it came from the environment) and the
    SQLite URL never carries it, so its absence above is meaningful, not vacuous."""
    from arbiter_cli.config import load_settings

    settings = load_settings(environ=dict(os.environ))
    assert settings["database.password"] == canaries["env"]
    assert canaries["env"] in settings.secret_values()
    if canaries["backend"] == "postgres":
        assert canaries["env"] in settings.database_url
