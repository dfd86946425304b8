"""``bench`` and ``soak`` on a PostgreSQL scratch database: every way their setup can fail is
one line and its exit code (SPEC §5.2, §7.1), never exit 70 or a traceback, and leaves nothing
behind (issue 12, L2).

- a URL that does not parse, or whose password cannot be isolated: 3, unechoed;
- an unknown database or user, a host name that does not resolve: 3 (configuration);
- a server that refuses the connection: 10 (unavailable);
- a URL of another backend: 2 (usage).

A wrong password and a user without CREATEDB need a server with password authentication:
``tests/faults/test_scratch_setup.py`` runs them on a throwaway cluster.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.helpers import CliResult, cli, postgres_url

CANARY = f"CANARYbench{secrets.token_hex(8)}"


def _url(**parts: object) -> str:
    server = make_url(postgres_url()).set(password=CANARY)
    return server.set(**parts).render_as_string(hide_password=False)  # type: ignore[arg-type]


def _run(command: str, url: str, tmp_path: Path, *, json_out: bool = False) -> CliResult:
    extra = ["--json"] if json_out else []
    if command == "bench":
        return cli(*extra, "bench", "--backend", "postgres", "--database-url", url, "--agents",
                   "10", "--queries", "10", "--seconds", "0.5")
    return cli(*extra, "soak", "--no-memray", "--duration", "2s", "--sample-interval", "1s",
               "--agents", "10", "--backend", "postgres", "--database-url", url, "--output",
               str(tmp_path / "out"))


def _scratch_databases() -> set[str]:
    from sqlalchemy import create_engine, text

    engine = create_engine(postgres_url())
    try:
        with engine.connect() as conn:
            return {row[0] for row in conn.execute(text(
                "SELECT datname FROM pg_database WHERE datname LIKE '%\\_bench\\_%' "
                "OR datname LIKE '%\\_soak\\_%'"))}
    finally:
        engine.dispose()


CASES = {
    "unknown database": (lambda: _url(database="arbiter_no_such_database"), 3,
                         'database "arbiter_no_such_database" does not exist'),
    "unknown user": (lambda: _url(username="arbiter_no_such_role"), 3,
                     'role "arbiter_no_such_role" does not exist'),
    "host that does not resolve": (lambda: _url(host="no-such-host.invalid"), 3,
                                   "could not translate host name"),
    "refused connection": (lambda: _url(port=1), 10, "Connection refused"),
    "URL that does not parse": (lambda: f"postgres ql://u:{CANARY}@h/db", 3,
                                "database URL must be"),
    "unencoded '@' in the password": (lambda: _url().replace(CANARY, CANARY[:9] + "@" + CANARY),
                                      3, "unencoded '@'"),
    "port that is not a number": (lambda: _url().replace(":5432/", ":54x/"), 3, "port"),
    "SQLite URL": (lambda: "sqlite:////tmp/arbiter-bench.db", 2, "needs a PostgreSQL"),
}


@pytest.mark.postgres
@pytest.mark.parametrize("command", ["bench", "soak"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_failed_setup_is_one_line_and_its_exit_code(command: str, case: str, tmp_path: Path,
                                                      clean_env: dict[str, str]) -> None:
    make, code, says = CASES[case]
    before = _scratch_databases()
    result = _run(command, make(), tmp_path)
    assert result.exit_code == code, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], result
    assert CANARY not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert _scratch_databases() == before  # nothing created, nothing left behind
    assert not (tmp_path / "out").exists()

    as_json = _run(command, make(), tmp_path, json_out=True)
    error = json.loads(as_json.stderr)["error"]
    assert as_json.exit_code == code and error["exit_code"] == code
    assert CANARY not in as_json.stderr
