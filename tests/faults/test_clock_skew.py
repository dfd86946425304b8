"""Clock skew between hosts (issue 17, F5; SPEC §4.1): time is the database's.

Two hosts against one throwaway cluster, each with its own data dir and fault proxy. Host B's
clock runs 3 hours ahead (libfaketime, see tests/faults/hosts.py), past
``routing.assignment_ttl`` (2 h). Host A holds 2 live tasks on an agent of capacity 2:

- B routing on the primary does not expire A's live decisions (the reap cutoff is the
  database's now): it is told ``at_capacity`` and nothing is over capacity;
- B cut off through its proxy (a partial outage) routes on its snapshot: its clock does not
  expire A's decisions there either, so it answers ``at_capacity`` instead of journaling a
  third and fourth task onto the full agent;
- ``arbiter health`` on B warns ``clock:skew`` (about 10 800 s, beyond
  ``resilience.max_clock_skew``); on A it passes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.cluster import PgCluster
from tests.faults.harness import replay_until_empty
from tests.faults.hosts import Host, admin_token, make_host, psql_rows, stop_all

pytestmark = [pytest.mark.faults, pytest.mark.slow]

AHEAD_S = 3 * 3600
SETTINGS = {"ARBITER_DATABASE__COMMAND_TIMEOUT": "2s", "ARBITER_BREAKER__RESET_TIMEOUT": "1s"}
AGENT = "skew-q"


@pytest.fixture
def two_hosts(tmp_path: Path, pg_cluster: PgCluster) -> Iterator[tuple[str, Host, Host]]:
    dbname = f"skew_{uuid.uuid4().hex[:10]}"
    pg_cluster.create_database(dbname)
    a = make_host("a", tmp_path, pg_cluster, dbname, **SETTINGS)
    hosts = [a]
    try:
        run = a.arbiter("--json", "init")
        assert run.exit == 0, run
        b = make_host("b", tmp_path, pg_cluster, dbname, clock_offset_s=AHEAD_S,
                      token=admin_token(a), **SETTINGS)
        hosts.append(b)
        yield dbname, a, b
    finally:
        stop_all(hosts)


def open_on_agent(cluster: PgCluster, dbname: str) -> tuple[list[str], int]:
    rows = psql_rows(cluster, dbname, "SELECT task_id FROM decisions WHERE agent_id = %s AND "
                     "status = 'open' ORDER BY task_id", (AGENT,))
    (active,), = psql_rows(cluster, dbname, "SELECT active_tasks FROM agents WHERE id = %s",
                           (AGENT,))
    return [r[0] for r in rows], int(active)


def health(host: Host) -> dict[str, object]:
    run = host.arbiter("health", "--json")
    assert run.exit in (0, 1, 2), run
    return run.json()  # type: ignore[no-any-return]


def test_a_host_3h_ahead_expires_nothing_and_routes_nothing_over_capacity(
    two_hosts: tuple[str, Host, Host], pg_cluster: PgCluster,
) -> None:
    dbname, a, b = two_hosts
    run = a.arbiter("--json", "agents", "register", "--id", AGENT, "--name", AGENT,
                    "--model-family", "skew", "--task-type", "documentation", "--capacity", "2")
    assert run.exit == 0, run
    for task in ("a-1", "a-2"):
        run = a.arbiter("--json", "route", "task", "--task-type", "documentation",
                        "--task-id", task)
        assert run.exit == 0 and run.json()["agent_id"] == AGENT, run
    wall = b.arbiter("--json", "agents", "list")  # B's first command: its snapshot too
    assert wall.exit == 0, wall

    # B on the primary: the reap cutoff is the database's now, not B's
    run = b.arbiter("--json", "route", "task", "--task-type", "documentation",
                    "--task-id", "b-1")
    assert run.exit == 9 and "at_capacity" in run.stderr, run
    assert open_on_agent(pg_cluster, dbname) == (["a-1", "a-2"], 2)

    # B cut off (partial outage): its snapshot holds A's two live tasks; its clock must not
    # expire them there either
    b.cut_off()
    try:
        for task in ("b-2", "b-3"):
            run = b.arbiter("--json", "route", "task", "--task-type", "documentation",
                            "--task-id", task)
            assert run.exit == 9 and "at_capacity" in run.stderr, run
        # A goes on meanwhile
        run = a.arbiter("--json", "agents", "show", AGENT)
        assert run.exit == 0 and run.json()["active_tasks"] == 2, run
    finally:
        b.reconnect()
    drained = replay_until_empty(b.arbiter)
    assert drained.exit == 0, drained
    assert open_on_agent(pg_cluster, dbname) == (["a-1", "a-2"], 2)
    (flagged,), = psql_rows(pg_cluster, dbname,
                            "SELECT count(*) FROM decisions WHERE over_capacity")
    assert flagged == 0
    # every stored time is the database's: nothing stamped 3 h ahead
    (future,), = psql_rows(pg_cluster, dbname, "SELECT count(*) FROM decisions "
                           "WHERE created_at > now() + interval '1 minute'")
    assert future == 0

    # health: B warns of its clock, A passes
    b_health = health(b)
    skew = b_health["checks"]["clock:skew"][0]  # type: ignore[index]
    assert skew["status"] == "warn", b_health
    assert abs(float(skew["observedValue"]) - AHEAD_S) < 60, skew
    assert skew["observedUnit"] == "s"
    a_health = health(a)
    a_skew = a_health["checks"]["clock:skew"][0]  # type: ignore[index]
    assert a_skew["status"] == "pass" and abs(float(a_skew["observedValue"])) < 5, a_health


BEHIND_S = 86_400


def test_a_host_clock_set_back_a_day_does_not_back_date_its_journaled_route(
    tmp_path: Path, pg_cluster: PgCluster,
) -> None:
    """A9: the snapshot refreshed under a correct clock, the host cut off, then its clock set a
    day back (libfaketime): the journaled decision is stamped no earlier than the refresh (the
    primary's time then), with one warning, and replay stores it at that time, not a day ago."""
    from tests.faults.harness import Arbiter
    from tests.faults.hosts import skewed

    dbname = f"back_{uuid.uuid4().hex[:10]}"
    pg_cluster.create_database(dbname)
    host = make_host("h", tmp_path, pg_cluster, dbname, **SETTINGS)
    try:
        assert host.arbiter("--json", "init").exit == 0
        run = host.arbiter("--json", "agents", "register", "--id", AGENT, "--name", AGENT,
                           "--model-family", "skew", "--task-type", "documentation",
                           "--capacity", "2")
        assert run.exit == 0, run  # its snapshot is refreshed under the correct clock
        (before,), = psql_rows(pg_cluster, dbname, "SELECT now()")
        host.cut_off()
        set_back = Arbiter({**host.env, **skewed(-BEHIND_S)})
        try:
            run = set_back("--json", "route", "task", "--task-type", "documentation",
                           "--task-id", "back-1")
            assert run.exit == 0 and run.json()["meta"]["durability"] == "journaled", run
            assert "behind the database's last known time" in run.stderr, run
        finally:
            host.reconnect()
        drained = replay_until_empty(host.arbiter)
        assert drained.exit == 0, drained
        (age,), = psql_rows(pg_cluster, dbname,
                            "SELECT extract(epoch FROM %s - created_at) FROM decisions "
                            "WHERE task_id = 'back-1'", (before,))
        assert float(age) < 60, age  # at the refresh's time, give or take: not a day old
    finally:
        stop_all([host])
