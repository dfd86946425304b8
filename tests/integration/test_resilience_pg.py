"""Degraded writes, stale reads, journal and replay on a PostgreSQL primary (SPEC §7).

Everything goes through the CLI's ``main()``. arbiter reaches the database through the
in-repo fault proxy (tests/faults/proxy.py), so a test can cut the primary (``reset``: every
connection is refused with an RST) and heal it. What the primary finally holds is read
straight from PostgreSQL, not through arbiter.

The database is created once per module; each test gets its own tenant (so its agents,
decisions and audit chain are its own) and its own ``data_dir`` (so its own snapshot,
journal and breaker). A second "host" reaches PostgreSQL directly with another ``data_dir``
when a test needs the primary to change while the first host is cut off.

Settings of the module: a 2 s command budget, a breaker that opens on the first counted
failure and half-opens after 1 s (so an outage costs one refused connection, and healing one
second), and a snapshot refreshed in every command that reached the primary.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import NullPool

from tests.faults.proxy import FaultProxy
from tests.helpers import CliResult, cli, fresh_postgres_database, postgres_url

pytestmark = pytest.mark.postgres

RESET_TIMEOUT_S = 1.0
SETTINGS = {
    "ARBITER_DATABASE__COMMAND_TIMEOUT": "2s",
    "ARBITER_DATABASE__CONNECT_TIMEOUT": "2s",
    "ARBITER_BREAKER__FAIL_MAX": "1",
    "ARBITER_BREAKER__RESET_TIMEOUT": "1s",
    "ARBITER_RESILIENCE__SNAPSHOT_INTERVAL": "0s",
    # in the command, so that a cut right after it finds the snapshot up to date (under load a
    # refresh can take over 50 ms, and `auto` would then run it in a detached process)
    "ARBITER_RESILIENCE__SNAPSHOT_REFRESH": "inline",
}
AGENT = ("--name", "Agent", "--model-family", "claude", "--task-type", "testing",
         "--language", "Python")
REVIEWER = ("--name", "Reviewer", "--model-family", "claude", "--task-type", "code-review")
WRONG_SECRET = "Z" * 43


# ---------------------------------------------------------------------------- fixtures


@dataclass
class Primary:
    """The module's PostgreSQL database, reachable directly or through the fault proxy."""

    direct: str
    proxied: str
    proxy: FaultProxy
    engine: Engine
    admin: str  # admin token of tenant "default"

    def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(text(sql), params)]

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()


@pytest.fixture(scope="module")
def primary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Primary]:
    server = make_url(postgres_url())
    with fresh_postgres_database("resil") as direct, \
            FaultProxy((server.host or "127.0.0.1", server.port or 5432)) as proxy:
        proxied = make_url(direct).set(host=proxy.host, port=proxy.port)
        home = tmp_path_factory.mktemp("resilience-init")
        env = {**dirs(home), **SETTINGS, "ARBITER_DATABASE__URL": direct}
        (home / "config").mkdir(exist_ok=True)
        init = cli("--json", "init", env=env)
        assert init.exit_code == 0, init
        engine = create_engine(direct, poolclass=NullPool)
        try:
            yield Primary(direct=direct,
                          proxied=proxied.render_as_string(hide_password=False),
                          proxy=proxy, engine=engine, admin=init.json()["admin_token"])
        finally:
            engine.dispose()


def dirs(root: Path) -> dict[str, str]:
    return {"HOME": str(root / "home"), "ARBITER_DATA_DIR": str(root / "data"),
            "ARBITER_CONFIG_DIR": str(root / "config"),
            "XDG_CONFIG_HOME": str(root / "xdg-config"), "XDG_DATA_HOME": str(root / "xdg-data")}


_tenants = iter(range(1, 10_000))


@dataclass
class Host:
    """One arbiter host (a data_dir) acting as one tenant's admin, through the proxy."""

    primary: Primary
    tenant: str
    token: str
    data_dir: Path
    other_dir: Path
    log: list[CliResult] = field(default_factory=list)

    def run(self, *args: str, token: str | None = None, env: dict[str, str] | None = None
            ) -> CliResult:
        result = cli("--json", "--token", token or self.token, *args, env=env)
        self.log.append(result)
        return result

    def ok(self, *args: str, **kwargs: Any) -> dict[str, Any]:
        result = self.run(*args, **kwargs)
        assert result.exit_code == 0, result
        return result.json()

    def consented(self, *args: str, **kwargs: Any) -> CliResult:
        """A destructive command, consented with ``--yes`` (SPEC §16)."""
        return self.run(*args, "--yes", **kwargs)

    def other(self, *args: str, consent: bool = False) -> dict[str, Any]:
        """The same command from another host that reaches PostgreSQL directly."""
        env = {"ARBITER_DATABASE__URL": self.primary.direct,
               "ARBITER_DATA_DIR": str(self.other_dir)}
        result = (self.consented(*args, env=env) if consent else self.run(*args, env=env))
        assert result.exit_code == 0, result
        return result.json()

    def journaled(self, *args: str) -> dict[str, Any]:
        """Run a write while degraded: exit 0, a warning naming the journal, one more entry."""
        before = self.backlog()
        result = self.run(*args)
        assert result.exit_code == 0, result
        assert "journaled as op" in result.stderr, result
        assert self.backlog() == before + 1, result
        return result.json()

    def cut(self) -> None:
        self.primary.proxy.set_mode("reset")

    def heal(self) -> None:
        """Let the primary through again, and wait until the breaker lets a probe through."""
        self.primary.proxy.set_mode("pass")
        time.sleep(RESET_TIMEOUT_S + 0.1)

    def status(self) -> dict[str, Any]:
        return self.ok("journal", "status")

    def backlog(self) -> int:
        return int(self.status()["backlog"])

    def entries(self, *flags: str) -> list[dict[str, Any]]:
        """`journal list` items in replay (seq) order, whatever order the listing uses."""
        items = self.ok("journal", "list", "--limit", "0", *flags)["items"]
        return sorted(items, key=lambda i: int(i["seq"]))

    def sign_again(self) -> None:
        """Sign every entry again with this host's key, after a test edited journal.db."""
        from arbiter_cli.resilience.files import key_path
        from arbiter_cli.resilience.journal import Journal

        journal = Journal(self.journal_file, key_file=key_path(self.data_dir))
        try:
            for entry in journal.entries(limit=0):
                journal._db.execute("UPDATE entries SET mac = ? WHERE seq = ?",
                                    (journal.mac(entry), entry.seq))
        finally:
            journal.close()

    @property
    def journal_file(self) -> Path:
        from arbiter_cli.resilience.journal import resilience_dir

        return resilience_dir(self.data_dir, self.primary.proxied) / "journal.db"

    # -- the primary, read directly ---------------------------------------------------------

    def agents(self) -> dict[str, dict[str, Any]]:
        rows = self.primary.rows("SELECT * FROM agents WHERE tenant = :t", t=self.tenant)
        return {r["id"]: r for r in rows}

    def decisions(self) -> list[dict[str, Any]]:
        return self.primary.rows("SELECT * FROM decisions WHERE tenant = :t ORDER BY created_at",
                                 t=self.tenant)

    def audit_actions(self) -> list[str]:
        rows = self.primary.rows("SELECT action FROM audit_events WHERE tenant = :t ORDER BY seq",
                                 t=self.tenant)
        return [r["action"] for r in rows]

    def applied_ops(self, kind: str | None = None) -> list[str]:
        rows = self.primary.rows(
            "SELECT op_id FROM applied_ops WHERE tenant = :t AND (:k IS NULL OR kind = :k)",
            t=self.tenant, k=kind)
        return [r["op_id"] for r in rows]


@pytest.fixture
def host(primary: Primary, clean_env: dict[str, str], tmp_path: Path,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[Host]:
    """A fresh tenant on the primary, and a host whose snapshot already holds it."""
    for name, value in SETTINGS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ARBITER_DATABASE__URL", primary.proxied)
    primary.proxy.set_mode("pass")
    tenant = f"res-{next(_tenants)}"  # the database is the module's own: unique enough
    created = cli("--json", "--token", primary.admin, "tenants", "create", tenant)
    assert created.exit_code == 0, created
    made = Host(primary=primary, tenant=tenant, token=created.json()["admin_token"],
                data_dir=Path(clean_env["ARBITER_DATA_DIR"]), other_dir=tmp_path / "other-host")
    try:
        yield made
    finally:
        primary.proxy.set_mode("pass")


def register(host: Host, agent_id: str, *extra: str) -> dict[str, Any]:
    return host.ok("agents", "register", "--id", agent_id, *AGENT, *extra)


# ---------------------------------------------------------------------------- primary up


def test_a_committed_write_says_committed_and_stores_its_op_id(host: Host) -> None:
    """With the primary up, writes commit, say so, and leave their op id in applied_ops."""
    doc = register(host, "a1")
    assert doc["meta"]["durability"] == "committed"
    assert "stale" not in doc["meta"]
    assert len(host.applied_ops("agents.register")) == 1
    routed = host.ok("route", "task", "--task-type", "testing", "--task-id", "T-1")
    assert routed["meta"]["durability"] == "committed"
    assert len(host.applied_ops("routing.route")) == 1
    assert host.decisions()[0]["decision_id"] == routed["decision_id"]
    assert host.status()["backlog"] == 0


# ---------------------------------------------------------------------------- primary cut


def test_every_write_command_succeeds_journaled_during_an_outage(host: Host) -> None:
    """register, update, status, heartbeat, record, route task, route outcome and remove all
    answer exit 0 while the primary is cut, each appending one journal entry; the primary is
    untouched until replay."""
    register(host, "a1")
    host.ok("agents", "register", "--id", "gone", *REVIEWER)
    before = (host.agents(), host.audit_actions())
    host.cut()
    host.journaled("agents", "register", "--id", "a2", *AGENT)
    host.journaled("agents", "update", "a1", "--capacity", "4")
    host.journaled("agents", "status", "a1", "draining", "--reason", "deploy")
    host.journaled("agents", "heartbeat", "a2")
    host.journaled("agents", "record", "a2", "--success", "--quality", "0.5",
                   "--task-type", "testing")
    routed = host.journaled("route", "task", "--task-type", "testing", "--task-id", "T-1")
    assert routed["agent_id"] == "a2"  # a1 is draining in the snapshot
    closed = host.journaled("route", "outcome", "--task-id", "T-1", "--success")
    assert closed["status"] == "succeeded"
    host.journaled("agents", "remove", "gone", "--yes")
    assert [e["kind"] for e in host.entries()] == [
        "agents.register", "agents.update", "agents.set_status", "agents.heartbeat",
        "agents.record", "routing.route", "routing.outcome", "agents.remove"]
    assert (host.agents(), host.audit_actions()) == before


def test_a_journaled_write_reports_durability_journaled(host: Host) -> None:
    """SPEC §0/§7: meta.durability is "journaled" when the primary did not take the write."""
    register(host, "a1")
    host.cut()
    doc = host.journaled("agents", "heartbeat", "a1")
    assert doc["meta"]["durability"] == "journaled"


def test_reads_during_an_outage_come_from_the_snapshot_marked_stale(host: Host) -> None:
    """Reads answer from the snapshot with meta.stale and its age, and see journaled writes."""
    register(host, "a1")
    routed = host.ok("route", "task", "--task-type", "testing", "--task-id", "T-0")
    host.cut()
    host.journaled("agents", "register", "--id", "a2", *AGENT)
    for args in (("agents", "list"), ("agents", "show", "a1"),
                 ("agents", "query", "--task-type", "testing"), ("agents", "stats"),
                 ("route", "explain", routed["decision_id"])):
        result = host.run(*args)
        assert result.exit_code == 0, result
        assert result.stderr.count("served from the local snapshot") == 1, result
        doc = result.json()
        assert doc["meta"]["stale"] is True, args
        assert isinstance(doc["meta"]["stale_age_s"], float), args
        assert doc["meta"]["stale_age_s"] >= 0, args
    listed = host.ok("agents", "list")
    assert [a["id"] for a in listed["items"]] == ["a1", "a2"]
    assert host.ok("agents", "show", "a1")["active_tasks"] == 1


def test_reads_with_the_primary_up_are_not_stale(host: Host) -> None:
    register(host, "a1")
    doc = host.ok("agents", "list")
    assert "stale" not in doc["meta"] and "stale_age_s" not in doc["meta"]


def test_tokens_are_checked_against_the_snapshot_during_an_outage(host: Host) -> None:
    """The right token is admitted from the snapshot; a wrong, unknown or revoked one is still
    refused (6)."""
    register(host, "a1")
    viewer = host.ok("tokens", "create", "--role", "viewer", "--name", "v")
    revoked = host.ok("tokens", "create", "--role", "viewer", "--name", "r")
    host.ok("tokens", "revoke", revoked["id"], "--yes")
    host.cut()
    assert host.ok("agents", "list", token=viewer["token"])["meta"]["stale"] is True
    gone = host.run("agents", "list", token=revoked["token"])
    assert gone.exit_code == 6, gone
    denied = host.run("agents", "heartbeat", "a1", token=viewer["token"])
    assert denied.exit_code == 6, denied  # a viewer may not write, snapshot or not
    assert json.loads(denied.stderr.splitlines()[0])["error"]["code"] == "forbidden"
    assert host.ok("agents", "list")["meta"]["stale"] is True
    token_id = host.token.split("_")[1]
    wrong = host.run("agents", "list", token=f"arb_{token_id}_{WRONG_SECRET}")
    assert wrong.exit_code == 6, wrong
    assert json.loads(wrong.stderr.splitlines()[0])["error"]["code"] == "unauthenticated"
    stranger = host.run("agents", "register", "--id", "x", *AGENT,
                        token=f"arb_nosuchtoken0_{WRONG_SECRET}")
    assert stranger.exit_code == 6, stranger
    assert host.backlog() == 0  # a refused write is not journaled


def test_without_a_snapshot_commands_fail_closed(host: Host, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A host that never reached the primary has no snapshot: writes, reads and even token
    checks exit 10; nothing is journaled."""
    monkeypatch.setenv("ARBITER_DATA_DIR", str(tmp_path / "never-connected"))
    host.cut()
    for args in (("agents", "register", "--id", "a1", *AGENT), ("agents", "list"),
                 ("route", "task", "--task-type", "testing")):
        result = host.run(*args)
        assert result.exit_code == 10, result
        assert json.loads(result.stderr.splitlines()[0])["error"]["code"] == (
            "storage_unavailable")
    wrong = host.run("agents", "list", token=f"arb_nosuchtoken0_{WRONG_SECRET}")
    assert wrong.exit_code == 10, wrong  # no snapshot: no token can be checked at all
    assert host.status()["backlog"] == 0


def test_a_journal_replay_during_the_outage_exits_10_and_keeps_everything(host: Host) -> None:
    register(host, "a1")
    host.cut()
    host.journaled("agents", "heartbeat", "a1")
    result = host.run("journal", "replay")
    assert result.exit_code == 10, result
    assert host.backlog() == 1


def test_a_long_replay_logs_its_progress_off_a_terminal(
        host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    """SPEC §16: off a terminal, replay's progress is log events with done, total and ETA
    (here every entry: the cadence is shortened from 10 s to 0 s for the test)."""
    from arbiter_cli.observability import progress

    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    register(host, "a1")
    host.cut()
    for _ in range(3):
        host.journaled("agents", "heartbeat", "a1")
    host.heal()
    result = host.run("journal", "replay")
    assert result.exit_code == 0, result
    events = [json.loads(line) for line in result.stderr.splitlines()
              if '"journal.replay.progress"' in line]
    assert [e["done"] for e in events] == [1, 2, 3], result.stderr
    assert {e["total"] for e in events} == {3}
    assert events[-1]["eta_s"] == 0.0


def test_replay_goes_through_the_open_breaker(host: Host, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    """While the breaker is open, replay does not even connect (SPEC §7)."""
    monkeypatch.setenv("ARBITER_BREAKER__RESET_TIMEOUT", "60s")
    register(host, "a1")
    host.cut()
    host.journaled("agents", "heartbeat", "a1")
    host.primary.proxy.set_mode("pass")  # the primary is back, the breaker does not know yet
    accepted = host.primary.proxy.accepted
    result = host.run("journal", "replay")
    assert result.exit_code == 10, result
    assert "breaker" in json.loads(result.stderr.splitlines()[0])["error"]["message"]
    assert host.primary.proxy.accepted == accepted
    assert host.backlog() == 1


def test_the_journal_snapshot_and_key_are_0600_in_0700_folders(host: Host) -> None:
    """SPEC §4.1 "Files": what the resilience layer keeps in data_dir is its owner's only."""
    register(host, "a1")
    host.cut()
    host.journaled("agents", "heartbeat", "a1")
    root = host.data_dir / "resilience"
    found = [root, *root.rglob("*")]
    assert {p.name for p in found} >= {"journal.db", "journal.key", "snapshot.db", "generations"}
    for path in found:
        if path.is_symlink():
            continue  # snapshot.db points at its generation; a link has no mode of its own
        expected = 0o700 if path.is_dir() else 0o600
        assert path.stat().st_mode & 0o777 == expected, path


def test_a_due_refresh_can_run_in_a_detached_process_holding_the_lock(
        host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    """resilience.snapshot_refresh = background: the command starts the refresh and returns;
    a detached process brings the snapshot up to date and releases the refresh lock."""
    from arbiter_cli.resilience.journal import resilience_dir
    from arbiter_cli.resilience.snapshot import LocalStore

    register(host, "a1")
    store = LocalStore(resilience_dir(host.data_dir, host.primary.proxied))
    before = store.meta()["refreshed_at"]
    monkeypatch.setenv("ARBITER_RESILIENCE__SNAPSHOT_REFRESH", "background")
    register(host, "a2")
    deadline = time.monotonic() + 30
    while store.meta().get("refreshed_at") == before:
        assert time.monotonic() < deadline, "the detached refresh never ran"
        time.sleep(0.1)
    db = sqlite3.connect(f"file:{store.current()}?mode=ro", uri=True)
    try:
        ids = {row[0] for row in db.execute("SELECT id FROM agents WHERE tenant = ?",
                                            (host.tenant,))}
    finally:
        db.close()
    assert ids == {"a1", "a2"}
    while (fd := store.try_lock()) is None:  # the child lets go of the lock when done
        assert time.monotonic() < deadline, "the detached refresh kept the lock"
        time.sleep(0.1)
    import os

    os.close(fd)
    assert store.last_took_s() is not None


def test_a_refresh_records_the_primary_s_clock_offset_once_a_minute(host: Host) -> None:
    """F5: the offset (the primary's clock minus this host's) is measured by a refresh, kept
    by the next ones, and measured again once it is CLOCK_EVERY_S old."""
    from sqlalchemy import create_engine

    from arbiter_cli.resilience.journal import resilience_dir
    from arbiter_cli.resilience.snapshot import CLOCK_EVERY_S, LocalStore

    register(host, "a1")
    store = LocalStore(resilience_dir(host.data_dir, host.primary.proxied))
    meta = store.meta()
    assert abs(meta["db_clock_offset_s"]) < 5  # the same machine's clock
    measured = meta["db_clock_measured_at"]
    primary = create_engine(host.primary.proxied)
    try:
        store.refresh(primary, interval_s=0, force=True)
        assert store.meta()["db_clock_measured_at"] == measured  # kept: no extra round trip
        db = sqlite3.connect(store.current())
        try:  # a measurement a minute old, and wrong
            db.execute("UPDATE arbiter_snapshot_meta SET value = json_set(value, "
                       "'$.db_clock_measured_at', ?, '$.db_clock_offset_s', 999.0) "
                       "WHERE name = 'meta'", (measured - CLOCK_EVERY_S,))
            db.commit()
        finally:
            db.close()
        store.refresh(primary, interval_s=0, force=True)
    finally:
        primary.dispose()
    again = store.meta()
    assert again["db_clock_measured_at"] > measured and abs(again["db_clock_offset_s"]) < 5


# ---------------------------------------------------------------------------- journal views


def test_journal_status_reports_backlog_age_and_breaker(host: Host) -> None:
    """`journal status --json` has the fixed shape of SPEC §7, plus meta."""
    register(host, "a1")
    quiet = host.status()
    assert set(quiet) == {"backlog", "conflicts", "oldest_age_s", "breaker", "stranded", "meta"}
    assert (quiet["backlog"], quiet["conflicts"], quiet["oldest_age_s"]) == (0, 0, None)
    assert quiet["breaker"] == {"state": "closed", "opened_at": None}
    host.cut()
    host.journaled("agents", "heartbeat", "a1")
    time.sleep(0.05)
    host.journaled("agents", "heartbeat", "a1")
    degraded = host.status()
    assert degraded["backlog"] == 2 and degraded["conflicts"] == 0
    assert degraded["oldest_age_s"] >= 0.05
    assert degraded["breaker"]["state"] == "open"
    assert degraded["breaker"]["opened_at"].endswith("Z")
    host.heal()
    assert host.ok("journal", "replay") | {"meta": None} == {
        "applied": 2, "conflicts": 0, "remaining": 0, "over_capacity": 0, "meta": None}
    healed = host.status()
    assert (healed["backlog"], healed["oldest_age_s"]) == (0, None)
    assert healed["breaker"]["state"] == "closed"


def test_journal_list_describes_each_entry(host: Host) -> None:
    register(host, "a1")
    host.cut()
    host.journaled("agents", "heartbeat", "a1")
    host.journaled("agents", "update", "a1", "--capacity", "2")
    items = host.entries()
    assert [i["kind"] for i in items] == ["agents.heartbeat", "agents.update"]
    assert {i["tenant"] for i in items} == {host.tenant}
    assert {i["state"] for i in items} == {"pending"}
    assert all(i["op_id"] and i["age_s"] >= 0 and i["attempts"] == 0 for i in items)
    assert host.entries("--conflicts") == []
    one = host.ok("journal", "list", "--limit", "1")
    assert one["count"] == 1 and len(one["items"]) == 1


def test_journal_list_is_newest_first(host: Host) -> None:
    register(host, "a1")
    host.cut()
    host.journaled("agents", "heartbeat", "a1")
    host.journaled("agents", "update", "a1", "--capacity", "2")
    items = host.ok("journal", "list")["items"]
    assert [i["kind"] for i in items] == ["agents.update", "agents.heartbeat"]


# ---------------------------------------------------------------------------- replay


def test_replay_applies_every_journaled_effect_once_in_order(host: Host) -> None:
    """After `journal replay` the primary holds exactly what the degraded host showed:
    the same agents, the decision with its outcome, the arm, one audit event per op, chained,
    and every op id in applied_ops."""
    register(host, "a1", "--capacity", "2")
    host.ok("agents", "register", "--id", "gone", *REVIEWER)
    audit_before = host.audit_actions()
    host.cut()
    host.journaled("agents", "register", "--id", "a2", *AGENT)
    host.journaled("agents", "update", "a1", "--capacity", "3")
    host.journaled("agents", "status", "a1", "maintenance", "--reason", "patch")
    host.journaled("agents", "heartbeat", "a2")
    host.journaled("agents", "record", "a2", "--success", "--quality", "0.8",
                   "--latency-ms", "100", "--task-type", "testing")
    routed = host.journaled("route", "task", "--task-type", "testing", "--task-id", "T-1")
    host.journaled("route", "outcome", "--task-id", "T-1", "--success", "--quality", "0.9")
    host.journaled("agents", "remove", "gone", "--yes")
    degraded_view = host.ok("agents", "list")["items"]
    op_ids = [e["op_id"] for e in host.entries()]
    assert len(op_ids) == 8

    host.heal()
    report = host.ok("journal", "replay")
    assert (report["applied"], report["conflicts"], report["remaining"]) == (8, 0, 0)

    agents = host.agents()
    assert set(agents) == {"a1", "a2"}
    assert (agents["a1"]["capacity"], agents["a1"]["status"],
            agents["a1"]["status_reason"]) == (3, "maintenance", "patch")
    assert (agents["a2"]["task_count"], agents["a2"]["active_tasks"]) == (2, 0)
    (decision,) = host.decisions()
    assert (decision["decision_id"], decision["task_id"], decision["agent_id"]) == (
        routed["decision_id"], "T-1", "a2")
    assert (decision["status"], decision["over_capacity"]) == ("succeeded", False)
    assert decision["agent_uid"] == agents["a2"]["uid"]  # the primary's uid, not the snapshot's
    arms = host.primary.rows("SELECT * FROM arms WHERE agent_uid = :u", u=agents["a2"]["uid"])
    assert [(a["task_type"], a["outcomes"]) for a in arms] == [("testing", 1)]
    assert host.audit_actions() == audit_before + [
        "agent.register", "agent.update", "agent.status", "agent.heartbeat", "agent.record",
        "route.task", "route.outcome", "agent.remove"]
    assert set(op_ids) <= set(host.applied_ops())
    assert host.ok("audit", "verify")["ok"] is True

    healed_view = host.ok("agents", "list")
    assert "stale" not in healed_view["meta"]
    assert [without_times(a) for a in healed_view["items"]] == [
        without_times(a) for a in degraded_view]


# One journaled write of every kind (resilience.records.Kind), in an order where no entry
# depends on an earlier one: each conflicts for its own reason or not at all.
EVERY_KIND = (
    ("routing.route", ("route", "task", "--task-type", "testing", "--task-id", "T-1")),
    ("routing.outcome", ("route", "outcome", "--task-id", "T-0", "--success")),
    ("agents.heartbeat", ("agents", "heartbeat", "a1")),
    ("agents.record", ("agents", "record", "a1", "--success", "--task-type", "testing")),
    ("agents.update", ("agents", "update", "a1", "--capacity", "7")),
    ("agents.set_status", ("agents", "status", "a1", "draining")),
    ("agents.register", ("agents", "register", "--id", "a2", *AGENT)),
    ("agents.remove", ("agents", "remove", "gone")),
)


def journal_every_kind(host: Host, token: str | None = None) -> None:
    """With the primary cut: one journaled write of each kind, as ``token``."""
    for kind, args in EVERY_KIND:
        before = host.backlog()
        result = (host.consented(*args, token=token) if kind == "agents.remove"
                  else host.run(*args, token=token))
        assert result.exit_code == 0 and "journaled as op" in result.stderr, (kind, result)
        assert host.backlog() == before + 1, kind
    from arbiter_cli.resilience.records import Kind

    assert sorted(e["kind"] for e in host.entries()) == sorted(Kind)


def primary_state(host: Host) -> tuple[Any, ...]:
    """What replay could change on the primary, without the audit events of conflicts."""
    audit = [a for a in host.audit_actions() if a != "journal.conflict"]
    return host.agents(), host.decisions(), audit, host.applied_ops()


def before_every_kind(host: Host) -> None:
    register(host, "a1")
    host.ok("agents", "register", "--id", "gone", *REVIEWER)
    host.ok("route", "task", "--task-type", "testing", "--task-id", "T-0")


def conflict_audits(host: Host) -> list[dict[str, Any]]:
    rows = host.primary.rows(
        "SELECT actor, target, result, details FROM audit_events WHERE tenant = :t "
        "AND action = 'journal.conflict' ORDER BY seq", t=host.tenant)
    for row in rows:
        if isinstance(row["details"], str):
            row["details"] = json.loads(row["details"])
    return rows


def test_every_kind_journaled_with_a_token_revoked_before_the_write_conflicts(
        host: Host) -> None:
    """SPEC §4.1 "Replay re-admits", for every journal entry kind: a token revoked on the
    primary (after this host's last snapshot) still passes the stale snapshot, so its writes
    are journaled; replay re-admits each one on the primary and keeps it as a conflict."""
    before_every_kind(host)
    manager = host.ok("tokens", "create", "--role", "manager", "--name", "m")
    revoked = host.run("--json", "tokens", "revoke", manager["id"], "--yes",
                       env={"ARBITER_DATABASE__URL": host.primary.direct,
                            "ARBITER_DATA_DIR": str(host.other_dir)})
    if revoked.exit_code == 2 and "no such option: --yes" in revoked.stderr.lower():
        host.other("tokens", "revoke", manager["id"])
    else:
        assert revoked.exit_code == 0, revoked
    host.cut()  # this host's snapshot still holds the token as valid
    journal_every_kind(host, token=manager["token"])
    unchanged = primary_state(host)
    host.heal()
    report = host.ok("journal", "replay")
    assert (report["applied"], report["conflicts"], report["remaining"]) == (0, len(EVERY_KIND), 0)
    assert primary_state(host) == unchanged
    conflicts = host.entries("--conflicts")
    assert sorted(c["kind"] for c in conflicts) == sorted(k for k, _ in EVERY_KIND)
    assert all("revoked before the write" in c["error"] for c in conflicts), conflicts
    audits = conflict_audits(host)
    assert len(audits) == len(EVERY_KIND)
    assert {a["actor"] for a in audits} == {None}  # never the revoked token
    assert {a["details"]["claimed_token_id"] for a in audits} == {manager["id"]}
    assert host.ok("audit", "verify")["ok"] is True


def test_every_kind_inserted_into_the_journal_by_hand_conflicts_on_its_hmac(host: Host) -> None:
    """SPEC §4.1: rows inserted with sqlite3, one per kind, claiming the tenant's valid admin
    token (so re-admission alone would let them through): none is applied."""
    before_every_kind(host)
    host.cut()
    journal_every_kind(host)
    db = sqlite3.connect(host.journal_file)
    with db:
        genuine = db.execute("SELECT seq, tenant, kind, principal, args, correlation_id, "
                             "created_at, mac FROM entries ORDER BY seq").fetchall()
        for seq, *fields in genuine:
            db.execute("INSERT INTO entries (op_id, tenant, kind, principal, args, "
                       "correlation_id, created_at, mac) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (f"forged-{seq}", *fields))  # even with a genuine entry's MAC
            db.execute("DELETE FROM entries WHERE seq = ?", (seq,))
    db.close()
    unchanged = primary_state(host)
    host.heal()
    report = host.ok("journal", "replay")
    assert (report["applied"], report["conflicts"]) == (0, len(EVERY_KIND)), report
    assert primary_state(host) == unchanged
    conflicts = host.entries("--conflicts")
    assert sorted(c["kind"] for c in conflicts) == sorted(k for k, _ in EVERY_KIND)
    assert all("HMAC does not verify" in c["error"] for c in conflicts), conflicts
    assert {a["actor"] for a in conflict_audits(host)} == {None}


def test_a_write_journaled_without_a_token_conflicts_on_a_database_with_tokens(
        host: Host) -> None:
    """A signed entry from security.enabled = false (no token id) is applied only where the
    primary holds no token at all; this one holds tokens."""
    from arbiter_cli.resilience.files import key_path
    from arbiter_cli.resilience.journal import Journal

    register(host, "a1")
    host.cut()
    host.journaled("agents", "heartbeat", "a1")  # makes the journal, signed by this host
    journal = Journal(host.journal_file, key_file=key_path(host.data_dir))
    try:
        journal.append(op_id="no-token", tenant=host.tenant, kind="agents.remove",
                       principal={"tenant": host.tenant, "role": "admin", "token_id": None},
                       args={"agent_id": "a1"})
    finally:
        journal.close()
    host.heal()
    report = host.ok("journal", "replay")
    assert (report["applied"], report["conflicts"]) == (1, 1), report
    assert "a1" in host.agents()
    (conflict,) = host.entries("--conflicts")
    assert conflict["op_id"] == "no-token" and "without a token" in conflict["error"]


# ---------------------------------------------------------------------------- journal resolve


def conflicting_register(host: Host) -> dict[str, Any]:
    """A journaled register of "dup" that conflicts: another host registered it meanwhile."""
    register(host, "a1")
    host.cut()
    host.journaled("agents", "register", "--id", "dup", *AGENT, "--capacity", "3")
    host.other("agents", "register", "--id", "dup", *AGENT, "--capacity", "10")
    host.heal()
    assert host.ok("journal", "replay")["conflicts"] == 1
    (conflict,) = host.entries("--conflicts")
    return conflict


def health_conflicts(host: Host) -> str:
    result = host.run("health")
    (check,) = result.json()["checks"]["journal:conflicts"]
    return str(check["status"])


def resolutions(host: Host) -> list[dict[str, Any]]:
    rows = host.primary.rows(
        "SELECT actor, target, result, details FROM audit_events WHERE tenant = :t "
        "AND action = 'journal.resolve' ORDER BY seq", t=host.tenant)
    for row in rows:
        if isinstance(row["details"], str):
            row["details"] = json.loads(row["details"])
    return rows


def test_a_conflict_retried_once_its_cause_is_gone_is_applied(host: Host) -> None:
    """SPEC §7.1 "Conflicts can be resolved": --retry puts it back to pending (attempts
    reset), audited; the next replay re-admits and applies it; health goes back to pass."""
    conflict = conflicting_register(host)
    assert "already exists" in conflict["error"]  # `journal list --conflicts` says why
    assert health_conflicts(host) == "warn"
    host.other("agents", "remove", "dup", consent=True)  # the cause goes away
    retried = host.ok("journal", "resolve", conflict["op_id"], "--retry")
    assert (retried["resolution"], retried["state"], retried["kind"]) == (
        "retry", "pending", "agents.register")
    (pending,) = host.entries()
    assert (pending["state"], pending["attempts"], pending["error"]) == ("pending", 0, None)
    assert host.ok("journal", "replay")["applied"] == 1
    assert host.agents()["dup"]["capacity"] == 3  # ours, replayed
    assert health_conflicts(host) == "pass"
    (audit,) = resolutions(host)
    assert (audit["actor"], audit["target"], audit["result"]) == (None, conflict["op_id"], "ok")
    assert audit["details"]["resolution"] == "retry"
    assert host.ok("audit", "verify")["ok"] is True


def test_dropping_a_conflict_needs_consent_off_a_terminal_then_forgets_it(host: Host) -> None:
    """SPEC §16: `journal resolve --drop` asks on a TTY and needs --yes off one (exit 2)."""
    conflict = conflicting_register(host)
    refused = host.run("journal", "resolve", conflict["op_id"], "--drop")
    assert refused.exit_code == 2, refused
    assert json.loads(refused.stderr.splitlines()[0])["error"]["details"]["rule"] == "consent"
    assert host.status()["conflicts"] == 1 and resolutions(host) == []
    dropped = host.ok("journal", "resolve", conflict["op_id"], "--drop", "--yes")
    assert (dropped["resolution"], dropped["state"]) == ("drop", None)
    assert host.status()["conflicts"] == 0 and host.entries() == []
    assert host.agents()["dup"]["capacity"] == 10  # theirs, untouched
    assert health_conflicts(host) == "pass"
    (audit,) = resolutions(host)
    assert (audit["actor"], audit["details"]["resolution"]) == (None, "drop")
    assert "already exists" in audit["details"]["error"]


def test_resolve_refuses_what_is_not_a_conflict_and_needs_one_choice(host: Host) -> None:
    register(host, "a1")
    host.cut()
    host.journaled("agents", "heartbeat", "a1")
    (pending,) = host.entries()
    for args, code in (((pending["op_id"], "--retry"), 5), (("no-such-op", "--retry"), 4),
                       ((pending["op_id"],), 2),
                       ((pending["op_id"], "--retry", "--drop", "--yes"), 2)):
        result = host.run("journal", "resolve", *args)
        assert result.exit_code == code, (args, result)
        assert len(result.stderr.strip().splitlines()) == 1, result
    assert [(e["op_id"], e["state"]) for e in host.entries()] == [(pending["op_id"], "pending")]


def test_resolve_changes_nothing_while_the_decision_cannot_be_audited(host: Host) -> None:
    conflict = conflicting_register(host)
    host.cut()
    result = host.run("journal", "resolve", conflict["op_id"], "--drop", "--yes")
    assert result.exit_code == 10, result
    (still,) = host.entries("--conflicts")
    assert still["op_id"] == conflict["op_id"]


def without_times(agent: dict[str, Any]) -> dict[str, Any]:
    """An agent document without the moments (a replayed write happens at replay time)."""
    return {k: v for k, v in agent.items()
            if k not in ("registered_at", "last_active_at", "updated_at")}


def test_a_replayed_register_of_an_id_created_meanwhile_is_a_conflict(host: Host) -> None:
    """The entry stays as a conflict, is listed and audited, and the primary's agent is kept."""
    register(host, "a1")
    host.cut()
    host.journaled("agents", "register", "--id", "dup", "--name", "Mine",
                   "--model-family", "claude", "--task-type", "testing")
    host.journaled("agents", "heartbeat", "a1")
    theirs = host.other("agents", "register", "--id", "dup", "--name", "Theirs",
                        "--model-family", "gpt", "--task-type", "testing")
    host.heal()
    replayed = host.run("journal", "replay")
    assert replayed.exit_code == 0, replayed
    assert (replayed.json()["applied"], replayed.json()["conflicts"]) == (1, 1)
    (conflict,) = host.entries("--conflicts")
    assert (conflict["kind"], conflict["state"]) == ("agents.register", "conflict")
    assert "already exists" in conflict["error"]
    status = host.status()
    assert (status["backlog"], status["conflicts"]) == (0, 1)
    kept = host.agents()["dup"]
    assert (kept["name"], kept["model_family"], kept["version"]) == (
        "Theirs", "gpt", theirs["version"])
    denied = host.primary.rows(
        "SELECT target, result, details FROM audit_events WHERE tenant = :t "
        "AND action = 'journal.conflict'", t=host.tenant)
    assert len(denied) == 1 and denied[0]["result"] == "denied"
    assert denied[0]["target"] == conflict["op_id"]
    assert host.ok("audit", "verify")["ok"] is True


def test_a_claim_replayed_over_capacity_is_applied_flagged_and_audited(host: Host) -> None:
    """Capacity holds per host only while degraded; the promised assignment is kept. Both
    tasks held the capacity-1 agent at once, so both decisions are flagged (docs/resilience.md:
    the flag follows the intervals, not which claim reached the database first)."""
    register(host, "solo", "--capacity", "1")
    host.cut()
    mine = host.journaled("route", "task", "--task-type", "testing", "--task-id", "MINE")
    theirs = host.other("route", "task", "--task-type", "testing", "--task-id", "THEIRS")
    assert mine["agent_id"] == theirs["agent_id"] == "solo"
    host.heal()
    assert host.ok("journal", "replay")["applied"] == 1
    decisions = {d["task_id"]: d for d in host.decisions()}
    assert decisions["MINE"]["over_capacity"] is True
    assert decisions["THEIRS"]["over_capacity"] is True
    solo = host.agents()["solo"]
    assert (solo["active_tasks"], solo["capacity"]) == (2, 1)
    audited = host.primary.rows(
        "SELECT details FROM audit_events WHERE tenant = :t AND action = 'route.task' "
        "AND target = :d", t=host.tenant, d=mine["decision_id"])
    assert len(audited) == 1
    details = audited[0]["details"]
    details = json.loads(details) if isinstance(details, str) else details
    assert details["over_capacity"] is True and details["journaled"] is True
    assert details["over_capacity_changed"] == {theirs["decision_id"]: True}
    # the outcome still releases the slot
    host.ok("route", "outcome", "--task-id", "MINE", "--success")
    assert host.agents()["solo"]["active_tasks"] == 1


def test_a_command_that_replays_first_warns_about_the_decisions_it_flagged(host: Host) -> None:
    """The replay a command runs before its work says when it flagged over_capacity."""
    register(host, "solo", "--capacity", "1")
    host.cut()
    host.journaled("route", "task", "--task-type", "testing", "--task-id", "MINE")
    host.other("route", "task", "--task-type", "testing", "--task-id", "THEIRS")
    host.heal()
    listed = host.run("agents", "list")
    assert listed.exit_code == 0 and host.backlog() == 0, listed
    assert "2 decision(s) flagged over_capacity at replay" in listed.stderr, listed


def test_replaying_the_same_entries_twice_changes_nothing(host: Host) -> None:
    """A journal restored to before a replay (a crash between commit and delete) replays
    harmlessly: each op id is already in applied_ops."""
    register(host, "a1")
    host.cut()
    host.journaled("agents", "register", "--id", "a2", *AGENT)
    host.journaled("route", "task", "--task-type", "testing", "--task-id", "T-1")
    host.journaled("agents", "record", "a1", "--failure")
    saved = host.data_dir.parent / "journal-before-replay.db"
    copy_sqlite(host.journal_file, saved)
    host.heal()
    assert host.ok("journal", "replay")["applied"] == 3
    after_first = (host.agents(), host.decisions(), host.audit_actions(), host.applied_ops())
    copy_sqlite(saved, host.journal_file)
    assert host.backlog() == 3
    assert host.ok("journal", "replay")["applied"] == 3
    assert (host.agents(), host.decisions(), host.audit_actions(),
            host.applied_ops()) == after_first
    assert host.ok("journal", "replay")["applied"] == 0


def copy_sqlite(source: Path, target: Path) -> None:
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def test_an_op_whose_commit_was_ambiguous_is_skipped_at_replay(host: Host) -> None:
    """An op id already in applied_ops means the original commit happened: replay drops the
    entry without applying it a second time."""
    register(host, "a1")
    host.cut()
    host.journaled("agents", "register", "--id", "ghost", *AGENT)
    host.journaled("agents", "heartbeat", "a1")
    ghost_op, heartbeat_op = (e["op_id"] for e in host.entries())
    with host.primary.engine.begin() as conn:
        conn.execute(text("INSERT INTO applied_ops (op_id, tenant, kind, applied_at) "
                          "VALUES (:o, :t, 'agents.register', now())"),
                     {"o": ghost_op, "t": host.tenant})
    host.heal()
    report = host.ok("journal", "replay")
    assert (report["applied"], report["conflicts"], report["remaining"]) == (2, 0, 0)
    assert "ghost" not in host.agents()
    assert host.audit_actions().count("agent.register") == 1  # a1's only
    assert heartbeat_op in host.applied_ops("agents.heartbeat")
    assert host.status()["backlog"] == 0


def test_past_the_journal_cap_a_write_exits_10_and_nothing_is_written(
        host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    """resilience.journal.max_entries: the write past it is refused, not half done."""
    monkeypatch.setenv("ARBITER_RESILIENCE__JOURNAL__MAX_ENTRIES", "2")
    register(host, "a1")
    host.cut()
    host.journaled("agents", "register", "--id", "a2", *AGENT)
    host.journaled("agents", "heartbeat", "a1")
    refused = host.run("agents", "register", "--id", "a3", *AGENT)
    assert refused.exit_code == 10, refused
    error = json.loads(refused.stderr.splitlines()[0])["error"]
    assert error["code"] == "storage_unavailable" and "journal full" in error["message"]
    assert host.backlog() == 2
    assert host.run("agents", "show", "a3").exit_code == 4  # not even in the snapshot
    assert [a["id"] for a in host.ok("agents", "list")["items"]] == ["a1", "a2"]
    host.heal()
    host.ok("journal", "replay")
    assert set(host.agents()) == {"a1", "a2"}


def test_a_tenant_with_journaled_writes_keeps_journaling_until_they_are_replayed(
        host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    """Order per tenant: once a tenant's writes wait in the journal, its new writes join
    them even with the primary back; another tenant's writes commit."""
    monkeypatch.setenv("ARBITER_RESILIENCE__REPLAY_BUDGET", "0s")  # no start-of-command replay
    other = host.primary.admin  # tenant "default"
    register(host, "a1")
    host.cut()
    host.journaled("agents", "register", "--id", "first", *AGENT)
    host.heal()
    assert "stale" not in host.ok("agents", "show", "a1")["meta"]  # the primary is back
    second = host.run("agents", "register", "--id", "second", *AGENT)
    assert second.exit_code == 0, second
    assert "wait in the journal" in second.stderr
    assert host.backlog() == 2
    assert set(host.agents()) == {"a1"}
    committed = host.run("agents", "register", "--id", f"{host.tenant}-n", *AGENT, token=other)
    assert committed.exit_code == 0, committed
    assert "journaled" not in committed.stderr
    assert committed.json()["meta"]["durability"] == "committed"
    assert host.backlog() == 2
    report = host.ok("journal", "replay")
    assert (report["applied"], report["remaining"]) == (2, 0)
    assert host.audit_actions()[-2:] == ["agent.register", "agent.register"]
    registered = host.primary.rows(
        "SELECT details FROM audit_events WHERE tenant = :t AND action = 'agent.register' "
        "ORDER BY seq", t=host.tenant)
    ids = [(json.loads(r["details"]) if isinstance(r["details"], str) else r["details"])["ids"]
           for r in registered]
    assert ids == [["a1"], ["first"], ["second"]]


def test_a_command_replays_the_journal_before_its_own_work(host: Host) -> None:
    """resilience.replay_budget: the first command after healing drains the journal first,
    so it reads its own journaled writes from the primary."""
    register(host, "a1")
    host.cut()
    host.journaled("agents", "register", "--id", "a2", *AGENT)
    host.journaled("agents", "status", "a1", "draining")
    host.heal()
    listed = host.ok("agents", "list")
    assert "stale" not in listed["meta"]
    assert [(a["id"], a["status"]) for a in listed["items"]] == [
        ("a1", "draining"), ("a2", "available")]
    assert host.status()["backlog"] == 0
    assert set(host.agents()) == {"a1", "a2"}


def test_an_outcome_for_a_committed_decision_is_journaled_once_and_replayed(host: Host) -> None:
    """An outcome during the outage closes the decision in the snapshot; an identical repeat
    is recognised there and not journaled again; replay closes it on the primary."""
    register(host, "a1", "--capacity", "1")
    routed = host.ok("route", "task", "--task-type", "testing", "--task-id", "T-1")
    host.cut()
    host.journaled("route", "outcome", routed["decision_id"], "--failure", "--error", "boom")
    repeat = host.run("route", "outcome", routed["decision_id"], "--failure", "--error", "boom")
    assert repeat.exit_code == 0, repeat
    assert repeat.json()["already_recorded"] is True
    assert host.backlog() == 1
    different = host.run("route", "outcome", routed["decision_id"], "--success")
    assert different.exit_code == 5, different
    assert host.backlog() == 1
    host.heal()
    assert host.ok("journal", "replay")["applied"] == 1
    (decision,) = host.decisions()
    assert decision["status"] == "failed"
    assert host.agents()["a1"]["active_tasks"] == 0


def test_a_task_routed_meanwhile_by_another_host_is_a_conflict_without_a_leaked_slot(
        host: Host) -> None:
    """Task ids are unique among open decisions: the replayed claim is not applied (its slot
    is not taken) and the entry waits as a conflict."""
    register(host, "a1")
    host.cut()
    host.journaled("route", "task", "--task-type", "testing", "--task-id", "SAME")
    host.other("route", "task", "--task-type", "testing", "--task-id", "SAME")
    host.heal()
    report = host.ok("journal", "replay")
    assert (report["applied"], report["conflicts"]) == (0, 1)
    assert len(host.decisions()) == 1
    assert host.agents()["a1"]["active_tasks"] == 1
    assert [e["kind"] for e in host.entries("--conflicts")] == ["routing.route"]
    assert host.ok("audit", "verify")["ok"] is True


def test_replayed_events_keep_the_callers_token_and_correlation_id(host: Host) -> None:
    """The journal keeps who asked and under which correlation id; replay audits with both."""
    register(host, "a1")
    host.cut()
    result = cli("--json", "--token", host.token, "--correlation-id", "outage-42",
                 "agents", "heartbeat", "a1")
    assert result.exit_code == 0, result
    host.heal()
    host.ok("journal", "replay")
    (event,) = host.primary.rows(
        "SELECT actor, correlation_id FROM audit_events WHERE tenant = :t "
        "AND action = 'agent.heartbeat'", t=host.tenant)
    assert event["correlation_id"] == "outage-42"
    assert event["actor"] == host.token.split("_")[1]


def test_ops_that_depend_on_a_conflicting_register_do_not_touch_the_primarys_agent(
        host: Host) -> None:
    """SPEC §7: a conflict is never silently overwritten. The update below was made to *our*
    journaled agent; the primary's agent of the same id belongs to someone else."""
    register(host, "a1")
    host.cut()
    host.journaled("agents", "register", "--id", "dup", *AGENT, "--capacity", "3")
    host.journaled("agents", "update", "dup", "--capacity", "7")
    host.other("agents", "register", "--id", "dup", *AGENT, "--capacity", "10")
    host.heal()
    host.ok("journal", "replay")
    assert host.agents()["dup"]["capacity"] == 10
    assert host.status()["conflicts"] == 2


def test_a_malformed_entry_becomes_a_conflict_instead_of_blocking_every_command(host: Host) -> None:
    """Every command replays first: an entry that does not fit its kind (another version, a
    damaged file) must not turn every command into an internal error."""
    register(host, "a1")
    host.cut()
    host.journaled("agents", "heartbeat", "a1")
    host.journaled("agents", "update", "a1", "--capacity", "5")
    db = sqlite3.connect(host.journal_file)
    with db:
        db.execute("UPDATE entries SET args = '{\"agent\":\"a1\"}' "
                   "WHERE kind = 'agents.heartbeat'")
    db.close()
    host.sign_again()  # as if another arbiter version had written it on this host
    host.heal()
    result = host.run("agents", "list")
    assert result.exit_code == 0, result
    assert "conflicted at replay" in result.stderr
    (conflict,) = host.entries("--conflicts")
    assert conflict["kind"] == "agents.heartbeat" and "malformed" in conflict["error"]
    assert host.agents()["a1"]["capacity"] == 5  # the entry after it was applied


def test_an_update_of_an_agent_removed_meanwhile_conflicts_instead_of_resurrecting_it(
        host: Host) -> None:
    """Tombstones win: the journaled update finds no agent and waits as a conflict."""
    register(host, "a1")
    host.cut()
    host.journaled("agents", "update", "a1", "--capacity", "9")
    host.other("agents", "remove", "a1", "--yes")
    host.heal()
    report = host.ok("journal", "replay")
    assert (report["applied"], report["conflicts"]) == (0, 1)
    assert "a1" not in host.agents()
    (conflict,) = host.entries("--conflicts")
    assert conflict["kind"] == "agents.update"


def test_a_different_outcome_recorded_meanwhile_is_a_conflict(host: Host) -> None:
    """The outcome the primary holds is kept; ours waits as a conflict."""
    register(host, "a1")
    routed = host.ok("route", "task", "--task-type", "testing", "--task-id", "T-1")
    host.cut()
    host.journaled("route", "outcome", routed["decision_id"], "--success")
    host.other("route", "outcome", routed["decision_id"], "--failure")
    host.heal()
    report = host.ok("journal", "replay")
    assert (report["applied"], report["conflicts"]) == (0, 1)
    (decision,) = host.decisions()
    assert decision["status"] == "failed"
    agent = host.agents()["a1"]
    assert (agent["active_tasks"], agent["task_count"]) == (0, 1)  # released and folded once
