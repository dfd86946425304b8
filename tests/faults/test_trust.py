"""Configuration is not an outage, and replay trusts nothing it cannot check (issue 12, H1).

The attack of H1, end to end on a throwaway PostgreSQL: revoke a token, point a command at the
same cluster with a wrong password. Before SPEC §7.1 that was an outage, so the command checked
the revoked token against the stale snapshot, journaled the write, and replay applied it. Now a
wrong password, an unknown database or a host name that does not resolve exits 3: nothing is
retried, counted by the breaker, journaled or served from the snapshot. And a row inserted into
``journal.db`` by hand, claiming a viewer token that never existed, is never applied: its HMAC
does not verify, its token is re-admitted on the primary, and the audit actor never becomes it.

The cluster has one role, ``arbiter``, that must give its password (scram-sha-256); the
database belongs to it. Everything else runs as whole ``arbiter`` processes.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from tests.faults.cluster import PgCluster
from tests.faults.conftest import arbiter_env
from tests.faults.harness import Arbiter, Run, with_consent

pytestmark = [pytest.mark.faults]

ROLE, PASSWORD, WRONG = "arbiter", "right-horse-battery", "wrong-horse-battery"
SETTINGS = {"ARBITER_DATABASE__COMMAND_TIMEOUT": "3s", "ARBITER_BREAKER__FAIL_MAX": "2",
            "ARBITER_BREAKER__RESET_TIMEOUT": "1h"}
AGENT = ("--name", "Agent", "--model-family", "fault-test", "--task-type", "testing")


@dataclass
class Site:
    """One database on the cluster, one host (data_dir) initialised against it."""

    cluster: PgCluster
    name: str
    home: Path
    admin: Arbiter

    def url(self, *, password: str = PASSWORD, host: str = "127.0.0.1",
            database: str | None = None) -> str:
        return (f"postgresql+psycopg2://{ROLE}:{password}@{host}:{self.cluster.port}/"
                f"{database or self.name}")

    def arbiter(self, **settings: str) -> Arbiter:
        """The same host (data_dir, breaker, snapshot, journal) with other settings."""
        return Arbiter(arbiter_env(self.home, settings.pop("url", self.url()), **SETTINGS,
                                   **settings))

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        conn = psycopg2.connect(self.cluster.dsn(self.name))
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return list(cur.fetchall())
        finally:
            conn.close()

    @property
    def resilience_dir(self) -> Path:
        from arbiter_cli.resilience.journal import resilience_dir

        return resilience_dir(self.home / "data", self.url())


@pytest.fixture(scope="module")
def password_cluster(pg_cluster: PgCluster) -> PgCluster:
    pg_cluster.add_password_role(ROLE, PASSWORD)
    deadline = time.monotonic() + 10
    while True:  # pg_reload_conf() signals the postmaster: wait until it asks for a password
        try:
            psycopg2.connect(host="127.0.0.1", port=pg_cluster.port, user=ROLE,
                             password=WRONG, dbname="postgres", connect_timeout=5).close()
        except psycopg2.OperationalError as exc:
            if "password authentication failed" in str(exc):
                return pg_cluster
        if time.monotonic() > deadline:
            raise AssertionError("the cluster never started asking for a password")
        time.sleep(0.1)


@pytest.fixture
def site(password_cluster: PgCluster, tmp_path: Path) -> Iterator[Site]:
    name = f"trust_{uuid.uuid4().hex[:10]}"
    password_cluster.psql(f'CREATE DATABASE "{name}" OWNER "{ROLE}"')
    home = tmp_path / "host"
    url = (f"postgresql+psycopg2://{ROLE}:{PASSWORD}@127.0.0.1:{password_cluster.port}/{name}")
    admin = Arbiter(arbiter_env(home, url, **SETTINGS))
    run = admin("--json", "init")
    assert run.exit == 0, run
    registered = admin("--json", "agents", "register", "--id", "a1", *AGENT)
    assert registered.exit == 0, registered
    assert admin("--json", "agents", "list").exit == 0  # the snapshot exists from here on
    yield Site(password_cluster, name, home, admin)


def one_error_line(run: Run, *secrets: str) -> dict[str, Any]:
    """The run failed with exactly one JSON error line on stderr and nothing on stdout."""
    assert run.stdout == "", run
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run
    for secret in secrets:
        assert secret not in run.stderr, run
    return dict(json.loads(lines[0])["error"])


def journal_status(site: Site) -> dict[str, Any]:
    run = site.admin("--json", "journal", "status")
    assert run.exit == 0, run
    return run.json()


# ---------------------------------------------------------------------------- the driver


def test_psycopg2_reports_configuration_errors_as_we_classify_them(site: Site) -> None:
    """The connect-time texts of faults.CONFIG_MESSAGES, from a real server and libpq, with
    and without our wait callback (a libpq that rewords them must fail here)."""
    from sqlalchemy.exc import SQLAlchemyError

    from arbiter_cli.adapters.sql import deadline
    from arbiter_cli.adapters.sql.faults import Fault, classify
    from arbiter_cli.bootstrap import sql_engine
    from arbiter_cli.config import load_settings

    port = site.cluster.port
    cases = {
        "wrong password": dict(user=ROLE, password=WRONG, dbname=site.name),
        "no password": dict(user=ROLE, dbname=site.name),
        "unknown role": dict(user="nobody", dbname=site.name),
        "unknown database": dict(user=ROLE, password=PASSWORD, dbname="no_such_db"),
        "unresolvable host": dict(user=ROLE, password=PASSWORD, dbname=site.name,
                                  host="arbiter-db.invalid"),
    }
    for label, params in cases.items():
        params = {"host": "127.0.0.1", "port": port, "connect_timeout": 5, **params}
        with pytest.raises(psycopg2.OperationalError) as caught:
            psycopg2.connect(**params).close()
        assert caught.value.pgcode is None, label  # only the message tells
        assert classify(caught.value) is Fault.CONFIG, (label, str(caught.value))
    with pytest.raises(psycopg2.OperationalError) as refused:
        psycopg2.connect(host="127.0.0.1", port=1, user=ROLE, dbname=site.name).close()
    assert classify(refused.value) is Fault.TRANSIENT  # nobody listens: an outage
    # Through SQLAlchemy and our wait callback, as commands connect.
    settings = load_settings(environ=site.arbiter(url=site.url(password=WRONG)).env)
    deadline.install()
    engine = sql_engine(settings)
    try:
        with deadline.Deadline(3).active(), pytest.raises(SQLAlchemyError) as wrapped:
            engine.connect().close()
        assert classify(wrapped.value) is Fault.CONFIG, str(wrapped.value)
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------- H1, first half


def test_a_wrong_password_exits_3_and_journals_nothing_even_with_a_revoked_token(
        site: Site) -> None:
    """The attack of H1: a revoked token, and the same cluster with a wrong password. Exit 3,
    one line without the password, nothing journaled, the breaker never counts it."""
    made = site.admin("--json", "tokens", "create", "--role", "manager", "--name", "m")
    assert made.exit == 0, made
    token = made.json()["token"]
    revoked = with_consent(site.admin, "--json", "tokens", "revoke", made.json()["id"])
    assert revoked.exit == 0, revoked
    assert site.admin("--json", "agents", "list").exit == 0  # the snapshot knows the revocation
    attacker = site.arbiter(url=site.url(password=WRONG), ARBITER_TOKEN=token)
    for _ in range(3):  # more than breaker.fail_max
        run = attacker("--json", "agents", "register", "--id", "evil", *AGENT)
        assert run.exit == 3, run
        error = one_error_line(run, WRONG, PASSWORD)
        assert error["code"] == "config_invalid"
        assert "password authentication failed" in error["message"]
    for other in (attacker("--json", "agents", "list"),
                  with_consent(attacker, "--json", "agents", "remove", "a1")):
        assert other.exit == 3, other  # never served from the snapshot either
        one_error_line(other, WRONG, PASSWORD)
    status = journal_status(site)
    assert (status["backlog"], status["conflicts"]) == (0, 0), status
    assert status["breaker"]["state"] == "closed", status
    from arbiter_cli.config import load_settings
    from arbiter_cli.resilience.breaker import breaker_for

    assert breaker_for(load_settings(environ=site.admin.env)).snapshot().failures == 0
    assert [r[0] for r in site.rows("SELECT id FROM agents ORDER BY id")] == ["a1"]


@pytest.mark.parametrize("case", ["unknown database", "unresolvable host"])
def test_an_unknown_database_or_host_exits_3_and_never_opens_the_breaker(
        site: Site, case: str) -> None:
    url = (site.url(database="no_such_db") if case == "unknown database"
           else site.url(host="arbiter-db.invalid"))
    wrong = site.arbiter(url=url)
    for _ in range(3):  # more than breaker.fail_max
        run = wrong("--json", "agents", "register", "--id", "x", *AGENT)
        assert run.exit == 3, run
        one_error_line(run, PASSWORD)
    status = Arbiter(wrong.env)("--json", "journal", "status")
    assert status.exit == 0 and status.json()["backlog"] == 0, status
    assert status.json()["breaker"]["state"] == "closed", status


def test_health_fails_on_a_configuration_error_whatever_the_journal(site: Site) -> None:
    """SPEC §7.1: `health --ready` fails on them (a journal cannot stand in for a typo)."""
    wrong = site.arbiter(url=site.url(password=WRONG))
    for mode in ((), ("--ready",)):
        run = wrong("--json", "health", *mode)
        assert run.exit == 2, run
        body = run.json()
        assert body["status"] == "fail"
        (database,) = body["checks"]["database:responseTime"]
        assert database["status"] == "fail"
        assert "configuration error" in database["output"]
        assert WRONG not in run.stdout + run.stderr
    status = journal_status(site)
    assert status["breaker"]["state"] == "closed", status


# ---------------------------------------------------------------------------- H1, second half


def test_a_row_inserted_into_the_journal_by_hand_is_never_applied_nor_its_ghost_audited(
        site: Site) -> None:
    """The forged row of H1: ``agents.remove`` with principal ``{"role": "viewer",
    "token_id": "ghost0000000"}``. The next replay (a command's, then `journal replay`)
    keeps it as a conflict; the agent stays; no audit event has the ghost as its actor."""
    assert site.admin("--json", "journal", "status").exit == 0  # journal.db exists
    journal_file = site.resilience_dir / "journal.db"
    db = sqlite3.connect(journal_file)
    with db:
        db.execute(
            "INSERT INTO entries (op_id, tenant, kind, principal, args, correlation_id, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            ("forged-remove", "default", "agents.remove",
             json.dumps({"role": "viewer", "tenant": "default", "token_id": "ghost0000000"}),
             json.dumps({"agent_id": "a1"}), "forged", time.time()))
    db.close()
    listed = site.admin("--json", "agents", "list")  # a command replays first
    assert listed.exit == 0, listed
    assert "conflicted at replay" in listed.stderr
    assert [a["id"] for a in listed.json()["items"]] == ["a1"]
    replayed = site.admin("--json", "journal", "replay")
    assert replayed.exit == 0 and replayed.json()["applied"] == 0, replayed
    conflicts = site.admin("--json", "journal", "list", "--conflicts")
    (conflict,) = conflicts.json()["items"]
    assert conflict["op_id"] == "forged-remove" and "HMAC" in conflict["error"], conflict
    assert [r[0] for r in site.rows("SELECT id FROM agents")] == ["a1"]
    actors = {r[0] for r in site.rows("SELECT actor FROM audit_events")}
    assert "ghost0000000" not in actors
    (event,) = site.rows("SELECT actor, result FROM audit_events "
                         "WHERE action = 'journal.conflict'")
    assert event == (None, "denied")
    assert site.rows("SELECT count(*) FROM applied_ops WHERE op_id = 'forged-remove'") == [(0,)]
