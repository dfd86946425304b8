"""A journal left under another URL of the same database is found and drained (issue 17, F1/F7).

A host journals while it is cut off (the fault proxy in front of its URL resets every
connection), then is pointed at the same database under another URL string (``localhost``
for ``127.0.0.1``), as happens after a failover. Its old resilience folder is keyed by the old
URL, so before the fix ``journal status`` said backlog 0, ``health`` passed and nothing ever
replayed the acknowledged writes. Now the folder records the database's identity
(``database_identity``, migration 0003); status, health and every command name the stranded
journal, and ``journal replay --from KEY`` drains it into the same database, and refuses one
written for another database (exit 5, nothing applied).

A second host (its own data dir and processes, straight to the cluster) keeps writing while
the first is cut off. Every acknowledged journaled write says which host and folder hold it
(``meta.journal``, and the warning line: F7).
"""

from __future__ import annotations

import json
import shutil
import socket
import uuid
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from tests.faults.cluster import PgCluster
from tests.faults.conftest import arbiter_env
from tests.faults.harness import Arbiter, Run, initialize, replay_until_empty
from tests.faults.proxy import FaultProxy

pytestmark = [pytest.mark.faults]

SETTINGS = {"ARBITER_DATABASE__COMMAND_TIMEOUT": "3s", "ARBITER_BREAKER__FAIL_MAX": "2",
            "ARBITER_BREAKER__RESET_TIMEOUT": "1s"}


def _rows(cluster: PgCluster, dbname: str, sql: str) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(cluster.dsn(dbname))
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        conn.close()


def _task_ids(cluster: PgCluster, dbname: str) -> set[str]:
    return {r[0] for r in _rows(cluster, dbname, "SELECT task_id FROM decisions")}


def _token_of(home: Path) -> str:
    from arbiter_cli.adapters.credentials import load_token

    token = load_token(home / "config" / "credentials.toml", "default")
    assert token
    return token


def _error(run: Run) -> dict[str, Any]:
    """The JSON error object of a failed ``--json`` command: its one error line on stderr."""
    (line,) = [line for line in run.stderr.splitlines() if line.startswith('{"error"')]
    return dict(json.loads(line)["error"])


def _route(arbiter: Arbiter, task_id: str) -> Run:
    return arbiter("--json", "route", "task", "--task-type", "code-review", "--task-id", task_id)


def _journal_while_cut_off(host: Arbiter, proxy: FaultProxy, home: Path,
                           task_ids: list[str]) -> list[Run]:
    """The host's routes while its proxy resets every connection: each journaled, and each
    naming the host and the folder that hold it (F7)."""
    proxy.set_mode("reset")
    runs = [_route(host, task_id) for task_id in task_ids]
    for run in runs:
        assert run.exit == 0, run
        meta = run.meta()
        assert meta["durability"] == "journaled", run
        where = meta["journal"]
        assert where["host"] == socket.gethostname(), meta
        assert Path(where["path"]).name == "journal.db", meta
        assert Path(where["path"]).is_relative_to(home / "data" / "resilience"), meta
        assert Path(where["path"]).is_file()
        assert f"on host {where['host']} in {where['path']}" in run.stderr, run
    return runs


def _key(url: str) -> str:
    from arbiter_cli.resilience.journal import store_key

    return store_key(url)


def test_a_journal_left_under_another_url_is_warned_about_and_drained(
    tmp_path: Path, pg_cluster: PgCluster, fault_proxy: FaultProxy,
) -> None:
    name = f"st_{uuid.uuid4().hex[:10]}"
    pg_cluster.create_database(name)
    url_a = pg_cluster.url(name, port=fault_proxy.port)  # 127.0.0.1, through the proxy
    url_b = url_a.replace("@127.0.0.1:", "@localhost:")  # the same database, another string
    home = tmp_path / "host-1"
    host_a = Arbiter(arbiter_env(home, url_a, **SETTINGS))
    initialize(host_a)
    other = Arbiter(arbiter_env(tmp_path / "host-2", pg_cluster.url(name),
                                ARBITER_TOKEN=_token_of(home), **SETTINGS))
    assert other("--json", "agents", "list").exit == 0

    try:
        _journal_while_cut_off(host_a, fault_proxy, home, ["strand-0", "strand-1"])
        assert _route(other, "live-0").exit == 0  # the other host is not cut off
    finally:
        fault_proxy.set_mode("pass")
    assert _task_ids(pg_cluster, name) == {"live-0"}

    key_a = _key(url_a)
    host_b = Arbiter(arbiter_env(home, url_b, **SETTINGS))  # same data dir, new URL

    status = host_b("--json", "journal", "status")
    assert status.exit == 0, status
    assert status.json()["backlog"] == 0
    (stranded,) = status.json()["stranded"]
    assert stranded["key"] == key_a and stranded["pending"] == 2, stranded
    identity = _rows(pg_cluster, name, "SELECT identity FROM database_identity")[0][0]
    assert stranded["identity"] == identity and "127.0.0.1" in stranded["url"], stranded
    assert f"journal replay --from {key_a}" in status.stderr, status
    human = host_b("journal", "status")
    assert f"other journal {key_a}" in human.stdout and "2 pending" in human.stdout, human

    health = host_b("--json", "health")
    assert health.exit == 1, health
    (check,) = health.json()["checks"]["journal:stranded"]
    assert check["status"] == "warn" and check["observedValue"] == 2, check
    assert f"--from {key_a}" in check["output"], check

    listing = host_b("--json", "agents", "list")  # any command warns, on stderr
    assert listing.exit == 0, listing
    assert f"arbiter journal replay --from {key_a}" in listing.stderr, listing
    assert _task_ids(pg_cluster, name) == {"live-0"}  # nothing replayed it by itself

    drained = host_b("--json", "journal", "replay", "--from", key_a)
    assert drained.exit == 0, drained
    assert {k: v for k, v in drained.json().items() if k != "meta"} == {
        "applied": 2, "conflicts": 0, "remaining": 0, "over_capacity": 0, "from": key_a}, drained
    assert _task_ids(pg_cluster, name) == {"live-0", "strand-0", "strand-1"}

    after = host_b("--json", "journal", "status")
    assert after.json()["stranded"] == [] and "--from" not in after.stderr, after
    health = host_b("--json", "health")
    assert health.json()["checks"]["journal:stranded"][0]["status"] == "pass", health
    again = host_b("--json", "agents", "list")
    assert again.exit == 0 and "--from" not in again.stderr, again


def test_replay_from_refuses_a_journal_of_another_database(
    tmp_path: Path, pg_cluster: PgCluster, fault_proxy: FaultProxy,
) -> None:
    name, elsewhere = (f"st_{uuid.uuid4().hex[:10]}" for _ in range(2))
    for dbname in (name, elsewhere):
        pg_cluster.create_database(dbname)
    url = pg_cluster.url(name, port=fault_proxy.port)
    home = tmp_path / "host-1"
    host = Arbiter(arbiter_env(home, url, **SETTINGS))
    initialize(host)
    stranger_home = tmp_path / "host-3"  # the other database gets its own admin and fleet
    initialize(Arbiter(arbiter_env(stranger_home, pg_cluster.url(elsewhere), **SETTINGS)))
    try:
        _journal_while_cut_off(host, fault_proxy, home, ["mine-0", "mine-1"])
    finally:
        fault_proxy.set_mode("pass")
    key = _key(url)
    moved = Arbiter(arbiter_env(home, pg_cluster.url(elsewhere),
                                ARBITER_TOKEN=_token_of(stranger_home), **SETTINGS))

    refused = moved("--json", "journal", "replay", "--from", key)
    assert refused.exit == 5, refused
    error = _error(refused)
    assert error["code"] == "conflict" and "nothing was applied" in error["message"], error
    assert _task_ids(pg_cluster, elsewhere) == set()
    assert _task_ids(pg_cluster, name) == set()

    record = home / "data" / "resilience" / key / "database.json"
    hidden = record.with_name("database.json.away")
    shutil.move(record, hidden)  # as an older arbiter left it: no record
    unknown = moved("--json", "journal", "replay", "--from", key)
    assert unknown.exit == 5 and "--accept-unrecorded" in _error(unknown)["message"]
    shutil.move(hidden, record)
    assert _task_ids(pg_cluster, elsewhere) == set()

    for bad, code in (("../../etc", 2), (key.upper(), 2), ("0" * 16, 4), (_key(
            pg_cluster.url(elsewhere)), 2)):
        run = moved("--json", "journal", "replay", "--from", bad)
        assert run.exit == code, (bad, run)
        assert "Traceback" not in run.stderr

    status = moved("--json", "journal", "status")
    (stranded,) = status.json()["stranded"]
    assert stranded["pending"] == 2, stranded  # kept: nothing was lost by the refusals
    back = replay_until_empty(host)  # its own URL again: the journal is its own
    assert back.exit == 0 and back.json()["applied"] == 2, back
    assert _task_ids(pg_cluster, name) == {"mine-0", "mine-1"}


def test_an_unrecorded_journal_drains_only_on_the_operators_word(
    tmp_path: Path, pg_cluster: PgCluster, fault_proxy: FaultProxy,
) -> None:
    """A folder without its record (an arbiter before 0003 made it): refused, then drained
    with --accept-unrecorded, each entry still checked and re-admitted."""
    name = f"st_{uuid.uuid4().hex[:10]}"
    pg_cluster.create_database(name)
    url_a = pg_cluster.url(name, port=fault_proxy.port)
    home = tmp_path / "host-1"
    host_a = Arbiter(arbiter_env(home, url_a, **SETTINGS))
    initialize(host_a)
    try:
        _journal_while_cut_off(host_a, fault_proxy, home, ["old-0"])
    finally:
        fault_proxy.set_mode("pass")
    key_a = _key(url_a)
    (home / "data" / "resilience" / key_a / "database.json").unlink()
    host_b = Arbiter(arbiter_env(home, url_a.replace("@127.0.0.1:", "@localhost:"), **SETTINGS))
    (stranded,) = host_b("--json", "journal", "status").json()["stranded"]
    assert (stranded["identity"], stranded["url"], stranded["pending"]) == (None, None, 1)
    refused = host_b("--json", "journal", "replay", "--from", key_a)
    assert refused.exit == 5 and _task_ids(pg_cluster, name) == set(), refused
    drained = host_b("--json", "journal", "replay", "--from", key_a, "--accept-unrecorded")
    assert drained.exit == 0 and drained.json()["applied"] == 1, drained
    assert "on the operator's word" in drained.stderr, drained
    assert _task_ids(pg_cluster, name) == {"old-0"}
    assert host_b("--json", "journal", "status").json()["stranded"] == []
