"""``arbiter health``: exit 0 pass, 1 warn, 2 fail, 3 unreadable configuration; no token needed."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.health_schema import health_body_problems
from tests.helpers import cli, fresh_postgres_database

META = frozenset({"meta"})


def body_of(result) -> dict:  # type: ignore[no-untyped-def,type-arg]
    body = result.json()
    assert health_body_problems(body, extra_top_level=META) == []
    assert body["meta"]["command"] == "health"
    return body  # type: ignore[no-any-return]


def statuses(body: dict) -> dict[str, str]:  # type: ignore[type-arg]
    return {name: entries[0]["status"] for name, entries in body["checks"].items()}


def test_initialized_sqlite_store_passes(initialized):
    result = cli("health")
    assert result.exit_code == 0, result
    lines = result.stdout.splitlines()
    assert lines[0] == "[+] config:valid ok"
    assert any(line.startswith("[+] database:responseTime ok (") and line.endswith(" ms)")
               for line in lines)
    assert lines[-1] == "health pass (full)"
    assert result.stderr == ""


def test_json_body_is_application_health_json(initialized):
    result = cli("health", "--json")
    assert result.exit_code == 0, result
    body = body_of(result)
    assert body["status"] == "pass"
    assert set(body["checks"]) == {"config:valid", "database:responseTime", "schema:revision",
                                   "routing:overCapacity", "breaker:state", "journal:backlog",
                                   "journal:conflicts", "clock:skew", "disk:free",
                                   "dataDir:persistent"}
    assert body["checks"]["database:responseTime"][0]["observedUnit"] == "ms"
    assert isinstance(body["checks"]["database:responseTime"][0]["observedValue"], float)


def test_decisions_flagged_over_capacity_in_the_last_day_warn(initialized):
    """routing:overCapacity counts flagged decisions whose interval reaches the last 24 h."""
    import sqlite3

    agent = cli("agents", "register", "--id", "a1", "--name", "A", "--model-family", "claude",
                "--task-type", "testing")
    assert agent.exit_code == 0, agent
    for task_id in ("T-1", "T-2", "T-old"):
        assert cli("route", "task", "--task-type", "testing", "--task-id", task_id).exit_code == 0
    (check,) = body_of(cli("health", "--json"))["checks"]["routing:overCapacity"]
    assert (check["status"], check["observedValue"], check["observedUnit"]) == (
        "pass", 0, "decisions")
    with sqlite3.connect(Path(initialized["ARBITER_DATA_DIR"]) / "arbiter.db") as db:
        db.execute("UPDATE decisions SET over_capacity = 1")
        db.execute("UPDATE decisions SET status = 'expired', closed_at = '2020-01-01 00:00:00' "
                   "WHERE task_id = 'T-old'")  # flagged long ago: not counted
    result = cli("health")
    assert result.exit_code == 1, result
    assert any(line.startswith("[!] routing:overCapacity warn: 2 decision(s)")
               for line in result.stdout.splitlines()), result.stdout
    (check,) = body_of(cli("health", "--json"))["checks"]["routing:overCapacity"]
    assert (check["status"], check["observedValue"]) == ("warn", 2)
    assert "route history --over-capacity" in check["output"]


def test_missing_database_and_no_journal_is_fail_exit_2(clean_env):
    """Before `arbiter init` nothing can take a write: fail, with no token asked for."""
    result = cli("--json", "health")
    assert result.exit_code == 2, result
    body = body_of(result)
    assert body["status"] == "fail"
    assert statuses(body)["database:responseTime"] == "fail"
    assert "arbiter init" in body["checks"]["database:responseTime"][0]["output"]
    assert result.stderr == ""


def test_human_fail_lines_say_why(clean_env):
    result = cli("health")
    assert result.exit_code == 2
    assert "[-] database:responseTime failed: no database at " in result.stdout
    assert result.stdout.splitlines()[-1] == "health fail (full)"


def test_live_needs_no_database(clean_env):
    result = cli("health", "--live", "--json")
    assert result.exit_code == 0, result
    assert set(body_of(result)["checks"]) == {"config:valid", "process:uptime"}


def test_ready_without_a_database_is_exit_2(clean_env):
    result = cli("health", "--ready")
    assert result.exit_code == 2, result


def test_live_and_ready_together_are_a_usage_error(clean_env):
    result = cli("health", "--live", "--ready", "--json")
    assert result.exit_code == 2
    assert result.error()["details"] == {"field": "mode", "rule": "exclusive"}


def test_soak_run_over_its_soft_limit_is_warn_exit_1(initialized):
    from arbiter_cli.tools.soak.state import remove_state, write_state

    data_dir = Path(initialized["ARBITER_DATA_DIR"])
    write_state(data_dir, {"pid": os.getpid(), "started_at": time.time(),
                           "updated_at": time.time(), "rss_bytes": 450 * 2**20,
                           "max_rss_bytes": 512 * 2**20, "soft_limit_bytes": 410 * 2**20,
                           "status": "warn"})
    try:
        result = cli("health", "--json")
    finally:
        remove_state(data_dir, os.getpid())
    assert result.exit_code == 1, result
    body = body_of(result)
    assert body["status"] == "warn"
    assert body["checks"]["soak:rss"][0]["observedValue"] == 450 * 2**20


def test_low_disk_is_warn_exit_1(initialized, monkeypatch):
    from arbiter_cli.tools import health

    monkeypatch.setattr(health, "DEFAULT_THRESHOLDS", health.Thresholds(disk_warn_bytes=2**62))
    result = cli("health")
    assert result.exit_code == 1, result
    assert "[!] disk:free warn: " in result.stdout


def test_unreadable_configuration_is_exit_3(clean_env):
    Path(clean_env["ARBITER_CONFIG_DIR"], "settings.toml").write_text("[default\n")
    result = cli("health")
    assert result.exit_code == 3, result
    assert result.stdout == ""
    assert result.stderr.startswith("error: cannot read ") and result.stderr.count("\n") == 1


def test_invalid_configuration_is_exit_3_as_json(clean_env):
    result = cli("--json", "health", env={"ARBITER_BREAKER__FAIL_MAX": "0"})
    assert result.exit_code == 3, result
    assert result.error()["code"] == "config_invalid"


# ---------------------------------------------------------------------------- through the breaker


@pytest.fixture
def hanging_up_server() -> Iterator[tuple[str, list[int]]]:
    """A TCP port that accepts and hangs up at once (a dying server); counts connections."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    accepted = [0]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            accepted[0] += 1
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    yield f"postgresql+psycopg2://arb:pw-s3cret@127.0.0.1:{port}/arbiter", accepted
    stop.set()
    thread.join()
    listener.close()


def test_open_breaker_stops_health_from_connecting(clean_env, hanging_up_server):
    """Counted failures open the breaker; then health reports it and connects no more."""
    url, accepted = hanging_up_server
    env = {"ARBITER_DATABASE__URL": url, "ARBITER_BREAKER__FAIL_MAX": "2",
           "ARBITER_BREAKER__RESET_TIMEOUT": "600s"}
    for _ in range(2):
        result = cli("--json", "health", env=env)
        assert result.exit_code in (1, 2), result
        assert statuses(body_of(result))["database:responseTime"] in ("warn", "fail")
    connections = accepted[0]
    assert connections >= 2
    for _ in range(3):
        result = cli("--json", "health", env=env)
        body = body_of(result)
        database = body["checks"]["database:responseTime"][0]
        assert database["output"].startswith("circuit breaker open: not connecting")
        assert body["checks"]["breaker:state"][0]["observedValue"] == "open"
        assert "pw-s3cret" not in result.stdout + result.stderr
    assert accepted[0] == connections  # not one connection while the breaker is open
    files = list(Path(clean_env["ARBITER_DATA_DIR"], "breaker").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["state"] == "open"
    assert "pw-s3cret" not in files[0].read_text()


@pytest.mark.postgres
def test_postgresql_primary_at_head_passes(clean_env):
    from arbiter_cli.resilience import journal

    with fresh_postgres_database("health") as url:
        upgrade = cli("db", "upgrade", "--database-url", url)
        assert upgrade.exit_code == 0, upgrade
        result = cli("--json", "health", env={"ARBITER_DATABASE__URL": url})
    body = body_of(result)
    checks = statuses(body)
    for name in ("config:valid", "database:responseTime", "schema:revision", "breaker:state",
                 "disk:free"):
        assert checks[name] == "pass", body
    if hasattr(journal, "resilience_status"):
        assert result.exit_code == 0 and body["status"] == "pass", body
    else:  # until the journal module reports its status, the journal checks say so
        assert result.exit_code == 1, body
        assert body["checks"]["journal:backlog"][0]["output"] == "journal status unavailable"


@pytest.mark.postgres
def test_health_goes_warn_then_pass_when_the_database_is_back(clean_env):
    """Breaker open: warn without connecting; once reset_timeout has passed, health's own probe
    finds the database and closes the breaker: pass."""
    from arbiter_cli.resilience.breaker import BreakerConfig, BreakerState, FileBreaker, breaker_path

    with fresh_postgres_database("health") as url:
        assert cli("db", "upgrade", "--database-url", url).exit_code == 0
        env = {"ARBITER_DATABASE__URL": url}
        shared = FileBreaker(breaker_path(Path(clean_env["ARBITER_DATA_DIR"]), url),
                             BreakerConfig(5, 10, 5))
        shared._apply(lambda _: BreakerState("open", 5, opened_at=time.time()))
        blind = cli("--json", "health", env=env)  # no snapshot yet: nothing could be journaled
        assert blind.exit_code == 2, blind
        assert "no local snapshot" in body_of(blind)["checks"]["database:responseTime"][0][
            "output"]
        take_snapshot(clean_env, url)
        degraded = cli("--json", "health", env=env)
        assert degraded.exit_code == 1, degraded
        body = body_of(degraded)
        assert body["checks"]["database:responseTime"][0]["status"] == "warn"
        assert body["checks"]["breaker:state"][0]["status"] == "warn"
        shared._apply(lambda _: BreakerState("open", 5, opened_at=time.time() - 11))
        healed = cli("--json", "health", env=env)
    assert healed.exit_code == 0, healed
    assert body_of(healed)["status"] == "pass"
    assert shared.snapshot() == BreakerState()


def take_snapshot(clean_env: dict[str, str], url: str) -> None:
    """The local snapshot a host has once a command reached the database (SPEC §7)."""
    from sqlalchemy import create_engine

    from arbiter_cli.resilience.journal import resilience_dir
    from arbiter_cli.resilience.snapshot import LocalStore

    engine = create_engine(url)
    try:
        LocalStore(resilience_dir(Path(clean_env["ARBITER_DATA_DIR"]), url)).refresh(
            engine, interval_s=0, force=True)
    finally:
        engine.dispose()


def _tmpfs_shm() -> bool:
    from arbiter_cli.resilience.identity import mount_of

    mount = mount_of(Path("/dev/shm"))
    return mount is not None and mount.fstype == "tmpfs" and os.access("/dev/shm", os.W_OK)


@pytest.mark.skipif(not _tmpfs_shm(), reason="/dev/shm is not a writable tmpfs here")
def test_a_data_dir_on_a_real_tmpfs_makes_health_warn(clean_env):
    """issue 17, F7: the journal (and a SQLite store) in data_dir is gone at a reboot."""
    import tempfile

    with tempfile.TemporaryDirectory(dir="/dev/shm", prefix="arbiter-f7-") as shm:
        env = {"ARBITER_DATA_DIR": shm}
        assert cli("init", env=env).exit_code == 0
        result = cli("health", "--json", env=env)
        assert result.exit_code == 1, result
        (check,) = body_of(result)["checks"]["dataDir:persistent"]
        assert check["status"] == "warn" and "tmpfs" in check["output"], check
        assert cli("health", "--json").json()["checks"]["dataDir:persistent"][0]["status"] \
            == "pass"
