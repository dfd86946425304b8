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

from tests.helpers import CliResult, cli, fresh_postgres_database, postgres_url


class Session:
    """Runs commands, remembering every output and which one may show which token."""

    def __init__(self) -> None:
        self.outputs: list[tuple[tuple[str, ...], CliResult]] = []
        self.issued: dict[str, int] = {}  # token → index of the output allowed to show it

    def run(self, *argv: str, code: int | None = 0,
            env: dict[str, str] | None = None) -> CliResult:
        result = cli(*argv, env=env)
        assert code is None or result.exit_code == code, (argv, result)
        assert result.exit_code != 70, (argv, result)  # never an internal error
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
    assert settings.database.password == canaries["env"]
    assert canaries["env"] in settings.secret_values()
    if canaries["backend"] == "postgres":
        assert canaries["env"] in settings.database_url


# ---------------------------------------------------------------------------- URL forms (M6)

def _form(kind: str, canary: str, port: int, database: str) -> tuple[str, list[str]]:
    """A database URL carrying ``canary`` as written in ``kind``, and the strings that must
    never show (the password in every spelling a leak could take)."""
    host = f"127.0.0.1:{port}/{database}"
    head, tail = canary[:len(canary) // 2], canary[len(canary) // 2:]
    forms = {
        "userinfo": (f"postgresql+psycopg2://postgres:{canary}@{host}", [canary]),
        "userinfo with ':'": (f"postgresql+psycopg2://postgres:{head}:{tail}@{host}",
                              [f"{head}:{tail}", tail]),
        "userinfo with encoded '@'": (f"postgresql+psycopg2://postgres:{head}%40{tail}@{host}",
                                      [f"{head}@{tail}", f"{head}%40{tail}", tail]),
        "query": (f"postgresql+psycopg2://postgres@{host}?sslmode=disable&password={canary}"
                  "&application_name=arbiter", [canary]),
        "unencoded '@' (refused)": (f"postgresql+psycopg2://postgres:{head}@{tail}@{host}",
                                    [head, tail]),
        "upper-case query key (refused)": (f"postgresql+psycopg2://postgres@{host}"
                                           f"?PASSWORD={canary}", [canary]),
    }
    return forms[kind]


URL_FORMS = ["userinfo", "userinfo with ':'", "userinfo with encoded '@'", "query",
             "unencoded '@' (refused)", "upper-case query key (refused)"]


@pytest.fixture
def proxied_database(clean_env: dict[str, str]) -> Iterator[tuple[Any, str]]:
    """A fresh database on the test server, reached through a fault proxy (for an outage)."""
    from sqlalchemy.engine import make_url

    from tests.faults.proxy import FaultProxy

    with fresh_postgres_database("urlcanary") as url:
        server = make_url(url)
        with FaultProxy((server.host or "127.0.0.1", server.port or 5432)) as proxy:
            yield proxy, str(server.database)


def _files(root: Path) -> Iterator[tuple[str, bytes]]:
    for path in sorted(root.rglob("*")):
        yield str(path.relative_to(root)), path.read_bytes() if path.is_file() else b""


@pytest.mark.postgres
@pytest.mark.parametrize("kind", URL_FORMS)
def test_a_password_in_any_url_form_never_shows(kind: str, proxied_database: tuple[Any, str],
                                                clean_env: dict[str, str], tmp_path: Path,
                                                spans: Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """config show, health, failed connects (wrong host, wrong port), --verbose tracebacks,
    debug JSON logs, spans, --metrics-file, and every file in data_dir (breaker, journal,
    snapshot: names and contents) are free of the password, whatever URL form carries it."""
    proxy, database = proxied_database
    canary = f"CANARYurl{secrets.token_hex(10)}"
    url, forbidden = _form(kind, canary, proxy.port, database)
    forbidden = [*forbidden, quote(forbidden[0], safe="")]
    monkeypatch.setenv("ARBITER_DATABASE__URL", url)
    monkeypatch.setenv("ARBITER_DATABASE__COMMAND_TIMEOUT", "3s")
    monkeypatch.setenv("ARBITER_DATABASE__CONNECT_TIMEOUT", "2s")
    refused = "refused" in kind
    s = Session()
    metrics = tmp_path / "run.prom"
    debug = ("--verbose", "--log-level", "debug", "--log-format", "json")
    spans_env = {"ARBITER_OBSERVABILITY__TRACING__EXPORTER": "console"}
    wrong_host = url.replace("127.0.0.1", "no-such-host.invalid")
    wrong_port = url.replace(f":{proxy.port}/", ":1/")
    for fmt in ((), ("--json",)):
        s.run(*fmt, "config", "show", code=3 if refused else 0)
        s.run(*fmt, "config", "validate", code=3 if refused else 0)
    if refused:
        for argv in (("agents", "list"), ("health",), ("--json", "health", "--ready"),
                     ("db", "current"), ("init",)):
            result = s.run(*debug, *argv, code=3)
            assert "unencoded '@'" in result.stderr or "password=" in result.stderr
        s.run("--json", "db", "current", "--database-url", url, code=3)
        s.run("bench", "--backend", "postgres", "--database-url", url, code=3)
    else:
        admin = s.issue("init", key="admin_token")
        s.run("--token", admin, "agents", "register", "--id", "a1", "--name", "A",
              "--model-family", "m", "--task-type", "testing")
        s.run("health")
        s.run("--json", "health", "--ready")
        s.run(*debug, "--token", admin, "agents", "list", env=spans_env)
        s.run("--metrics-file", str(metrics), "--token", admin, "agents", "list")
        s.run(*debug, "db", "current", "--database-url", url)
        for bad in (wrong_host, wrong_port):  # failed connects: one line, no password
            for verbose in ((), debug):
                result = s.run(*verbose, "--token", admin, "agents", "list", code=None,
                               env={**spans_env, "ARBITER_DATABASE__URL": bad})
                assert result.exit_code in (3, 10), result
            s.run("--json", "health", code=None, env={"ARBITER_DATABASE__URL": bad})
            s.run(*debug, "db", "current", "--database-url", bad, code=None)
        proxy.set_mode("reset")  # an outage: the write goes to the journal
        journaled = s.run("--json", "--token", admin, "agents", "register", "--id", "a2",
                          "--name", "B", "--model-family", "m", "--task-type", "testing").json()
        assert journaled["meta"]["durability"] == "journaled"
        s.run("--json", "journal", "status")
        s.run("--json", "journal", "list")
        s.run(*debug, "--metrics-file", str(metrics), "--json", "health", code=None)
        proxy.set_mode("pass")
        s.run("--verbose", "journal", "replay", code=None)  # the breaker may still be open
    leaks = [f"{argv} {name}" for argv, result in s.outputs
             for name, stream in (("stdout", result.stdout), ("stderr", result.stderr))
             for secret in forbidden if secret in stream]
    assert not leaks, leaks
    traced = "\n".join(span.to_json() for span in spans.get_finished_spans())
    assert not [p for p in forbidden if p in traced], "a password is in a span"
    data = Path(clean_env["ARBITER_DATA_DIR"])
    found = list(_files(data)) + list(_files(tmp_path / "home"))
    if metrics.exists():
        found.append(("metrics", metrics.read_bytes()))
    assert not [name for name, body in found for p in forbidden
                if p in name or p.encode() in body], "a password is in a file"
    if not refused:  # control: the run really wrote the files this test reads
        names = {name for name, _body in found}
        assert any(n.startswith("breaker/") and n.endswith(".json") for n in names), names
        assert any(n.endswith("journal.db") for n in names), names
        assert metrics.exists() and b"arbiter_command" in metrics.read_bytes()
        assert forbidden[0] in _loaded_url()


def _loaded_url() -> str:
    from arbiter_cli.config import load_settings

    settings = load_settings(environ=dict(os.environ))
    return settings.database_url + " " + " ".join(settings.secret_values())


def _subprocess_env(clean_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")
           or k.startswith("ARBITER_TEST_")}
    return {**env, **clean_env}


@pytest.mark.postgres
@pytest.mark.parametrize("workload", ["e2e", pytest.param("api", marks=pytest.mark.slow)])
def test_bench_workers_get_no_password_in_their_command_line(clean_env: dict[str, str],
                                                             workload: str) -> None:
    """argv is readable by every user of the host (ps, /proc): the scratch URL and the bench
    token reach the e2e worker processes on stdin, and the api workload's serve (URL in its
    environment) and HTTP clients (token on stdin)."""
    import subprocess
    import sys
    import time

    from sqlalchemy.engine import make_url

    canary = f"CANARYargv{secrets.token_hex(8)}"
    url = make_url(postgres_url()).set(password=canary).render_as_string(hide_password=False)
    env = {**_subprocess_env(clean_env), "ARBITER_DATABASE__URL": url}
    bench = subprocess.Popen([sys.executable, "-m", "arbiter_cli", "--json", "bench",
                              "--workload", workload, "--backend", "postgres", "--agents", "10",
                              "--processes", "2", "--seconds", "3"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    seen: dict[int, bytes] = {}
    while bench.poll() is None:
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                if int(stat[1]) == bench.pid:  # a child of bench
                    seen[int(proc.name)] = (proc / "cmdline").read_bytes()
            except (OSError, IndexError, ValueError):
                continue
        time.sleep(0.05)
    out, err = bench.communicate()
    assert bench.returncode == 0, err.decode()[-2000:]
    assert json.loads(out)["processes"] == 2
    assert len(seen) >= 2, "the workers were not observed"
    assert not [cmd for cmd in seen.values() if canary.encode() in cmd or b"arb_" in cmd]
    assert canary.encode() not in out + err


@pytest.mark.postgres
@pytest.mark.slow
def test_the_memray_capture_of_a_soak_holds_no_password(clean_env: dict[str, str],
                                                         tmp_path: Path) -> None:
    """memray records the command line in its capture and flame graph: --database-url is
    masked there."""
    import subprocess
    import sys

    pytest.importorskip("memray")
    from sqlalchemy.engine import make_url

    canary = f"CANARYmemray{secrets.token_hex(8)}"
    url = make_url(postgres_url()).set(password=canary).render_as_string(hide_password=False)
    out = tmp_path / "soak"
    done = subprocess.run([sys.executable, "-m", "arbiter_cli", "--json", "soak", "--duration",
                           "3s", "--sample-interval", "1s", "--agents", "10", "--backend",
                           "postgres", "--database-url", url, "--output", str(out)],
                          capture_output=True, timeout=300, env=_subprocess_env(clean_env))
    assert done.returncode in (0, 1), done.stderr.decode()[-2000:]
    files = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
    assert {"memray.bin", "summary.json"} <= set(files), sorted(files)
    assert not [name for name, body in files.items() if canary.encode() in body]
    assert b"--database-url" in files["memray.bin"]  # control: the command line is recorded
    assert canary.encode() not in done.stdout + done.stderr
