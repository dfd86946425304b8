"""One test per retry class, each with a REAL fault on a throwaway cluster, never a mock.

SPEC §7 and issue 8 (Done-when 4): transient faults are retried (at most 4 attempts, each
counted by the breaker), statement timeout and disk full are counted but not retried, and
caller errors are attempted exactly once and leave the breaker's failure count unchanged.
``guarded()`` gets a recording ``sleep``, so the tests never wait for the backoff.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.cluster import PgCluster
from tests.faults.proxy import FaultProxy

pytestmark = pytest.mark.faults

PG_MAX_CONNECTIONS = 8  # small, so "too many clients" is cheap to provoke
DB = "classify"


# --------------------------------------------------------------------------- fixtures, helpers


@pytest.fixture(scope="module")
def db_url(pg_cluster: PgCluster) -> str:
    url = pg_cluster.create_database(DB)
    pg_cluster.psql(
        "CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL DEFAULT 0);"
        "CREATE TABLE counters (id int PRIMARY KEY, v int NOT NULL);"
        "INSERT INTO counters VALUES (1, 0), (2, 0);", dbname=DB)
    return url


@pytest.fixture
def engine(db_url: str, running_cluster: PgCluster) -> Iterator[Any]:
    """arbiter's own PostgreSQL engine (pool, pre-ping, timeouts) with its wait callback."""
    from arbiter_cli.adapters.sql import deadline
    from arbiter_cli.adapters.sql.engine import make_engine

    deadline.install()
    eng = make_engine(db_url, pool_size=2, max_overflow=2, connect_timeout_s=5,
                      statement_timeout_s=30)
    yield eng
    eng.dispose()


@pytest.fixture
def breaker(tmp_path: Path) -> Any:
    from arbiter_cli.resilience.breaker import BreakerConfig, FileBreaker

    # fail_max high: these tests watch the count, they must not trip the breaker
    return FileBreaker(tmp_path / "breaker.json",
                       BreakerConfig(fail_max=100, reset_timeout_s=10, probe_lease_s=5))


class Attempts:
    """Wraps ``fn(attempt_number)``; counts the calls ``guarded`` makes."""

    def __init__(self, fn: Callable[[int], Any]) -> None:
        self.fn = fn
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        return self.fn(self.calls)


class Naps:
    """A recording ``sleep``: remembers the backoff, never waits (or runs ``on_nap``)."""

    def __init__(self, on_nap: Callable[[], None] | None = None) -> None:
        self.waits: list[float] = []
        self.on_nap = on_nap

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.on_nap is not None:
            self.on_nap()


def run_guarded(fn: Attempts, breaker: Any, naps: Naps, budget_s: float = 60.0) -> Any:
    from arbiter_cli.adapters.sql.deadline import Deadline
    from arbiter_cli.resilience.retry import guarded

    return guarded(fn, breaker=breaker, deadline=Deadline(budget_s), sleep=naps)


def failures(breaker: Any) -> int:
    return int(breaker.snapshot().failures)


def admin(cluster: PgCluster, dbname: str = DB) -> Any:
    import psycopg2

    conn = psycopg2.connect(cluster.dsn(dbname))
    conn.autocommit = True
    return conn


def assert_gave_up_transient(exc_info: pytest.ExceptionInfo[Any], fn: Attempts, naps: Naps,
                             breaker: Any, before: int) -> BaseException:
    """4 attempts, 3 backoffs within wait_random_exponential(0.1, max=2), 4 counted failures,
    and a StorageUnavailable (exit 10) chained to the driver's error."""
    from arbiter_cli.adapters.sql.faults import Fault, classify, driver_error
    from arbiter_cli.errors import StorageUnavailable

    error = exc_info.value
    assert isinstance(error, StorageUnavailable) and error.exit_code == 10
    assert fn.calls == 4
    assert len(naps.waits) == 3
    assert all(0 <= w <= 2 for w in naps.waits), naps.waits
    assert failures(breaker) == before + 4
    cause = error.__cause__
    assert cause is not None and classify(cause) is Fault.TRANSIENT
    return driver_error(cause)


# --------------------------------------------------------------------------- TRANSIENT


def test_terminated_backend_is_transient_and_retried_four_times(
    engine: Any, breaker: Any, pg_cluster: PgCluster,
) -> None:
    from sqlalchemy import text

    killer = admin(pg_cluster)

    def terminated(_: int) -> Any:
        with engine.connect() as conn:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
            with killer.cursor() as cur:
                cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
            return conn.execute(text("SELECT 1")).scalar_one()

    fn, naps, before = Attempts(terminated), Naps(), failures(breaker)
    try:
        with pytest.raises(Exception) as exc_info:
            run_guarded(fn, breaker, naps)
    finally:
        killer.close()
    driver = assert_gave_up_transient(exc_info, fn, naps, breaker, before)
    assert type(driver).__module__.startswith("psycopg2")  # classified by the driver's error


def test_terminated_backend_then_healthy_succeeds_on_the_retry(
    engine: Any, breaker: Any, pg_cluster: PgCluster,
) -> None:
    from sqlalchemy import text

    killer = admin(pg_cluster)

    def once(attempt: int) -> Any:
        with engine.connect() as conn:
            if attempt == 1:
                pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
                with killer.cursor() as cur:
                    cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
            return conn.execute(text("SELECT 42")).scalar_one()

    fn, naps = Attempts(once), Naps()
    try:
        assert run_guarded(fn, breaker, naps) == 42
    finally:
        killer.close()
    assert fn.calls == 2 and len(naps.waits) == 1
    assert failures(breaker) == 0  # a success in closed state forgets the failure


def test_connection_refused_is_transient(engine: Any, breaker: Any, running_cluster: PgCluster) -> None:
    from sqlalchemy import text

    from arbiter_cli.adapters.sql.faults import Fault, classify

    def query(_: int) -> Any:
        with engine.connect() as conn:
            return conn.execute(text("SELECT 1")).scalar_one()

    engine.dispose()
    running_cluster.stop("immediate")
    fn, naps, before = Attempts(query), Naps(), failures(breaker)
    with pytest.raises(Exception) as exc_info:
        run_guarded(fn, breaker, naps)
    driver = assert_gave_up_transient(exc_info, fn, naps, breaker, before)
    assert "refused" in str(driver).lower() or "could not connect" in str(driver).lower()
    assert classify(driver) is Fault.TRANSIENT


def test_connection_refused_recovers_when_the_server_comes_back(
    engine: Any, breaker: Any, running_cluster: PgCluster,
) -> None:
    from sqlalchemy import text

    def query(_: int) -> Any:
        with engine.connect() as conn:
            return conn.execute(text("SELECT 7")).scalar_one()

    engine.dispose()
    running_cluster.stop("immediate")
    fn = Attempts(query)
    naps = Naps(on_nap=running_cluster.start)  # the server is back during the first backoff
    assert run_guarded(fn, breaker, naps) == 7
    assert fn.calls == 2


def test_serialization_failure_is_transient(engine: Any, breaker: Any, pg_cluster: PgCluster) -> None:
    from sqlalchemy import text

    other = admin(pg_cluster)

    def conflicting(attempt: int) -> Any:
        with engine.connect().execution_options(isolation_level="SERIALIZABLE") as conn:
            conn.execute(text("SELECT v FROM counters WHERE id = 1")).scalar_one()  # snapshot
            with other.cursor() as cur:  # a concurrent transaction commits a change meanwhile
                cur.execute("UPDATE counters SET v = v + 1 WHERE id = 1")
            conn.execute(text("UPDATE counters SET v = v + 1 WHERE id = 1"))
            conn.commit()
            return attempt

    fn, naps, before = Attempts(conflicting), Naps(), failures(breaker)
    try:
        with pytest.raises(Exception) as exc_info:
            run_guarded(fn, breaker, naps)
    finally:
        other.close()
    driver = assert_gave_up_transient(exc_info, fn, naps, breaker, before)
    assert getattr(driver, "pgcode", None) == "40001"


def test_deadlock_is_transient_and_the_retry_succeeds(
    engine: Any, breaker: Any, pg_cluster: PgCluster,
) -> None:
    from sqlalchemy import text

    from arbiter_cli.adapters.sql.faults import Fault, classify

    seen: list[BaseException] = []

    def deadlock_once(attempt: int) -> Any:
        if attempt > 1:
            with engine.begin() as conn:
                conn.execute(text("UPDATE counters SET v = v + 1 WHERE id IN (1, 2)"))
            return "done"
        return provoke_deadlock(engine, pg_cluster, seen)

    fn, naps = Attempts(deadlock_once), Naps()
    assert run_guarded(fn, breaker, naps) == "done"
    assert fn.calls == 2
    assert len(seen) == 1 and getattr(seen[0], "pgcode", None) == "40P01"
    assert classify(seen[0]) is Fault.TRANSIENT


def provoke_deadlock(engine: Any, cluster: PgCluster, seen: list[BaseException]) -> Any:
    """Make *this* connection the deadlock victim: it checks after 50 ms, the other after 10 s."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    other = admin(cluster)
    other.autocommit = False
    with other.cursor() as cur:
        cur.execute("SET deadlock_timeout = '10s'")
        cur.execute("UPDATE counters SET v = v + 1 WHERE id = 1")
        other_pid = other.get_backend_pid()
    blocked = threading.Thread(target=_update_then_commit, args=(other, 2), daemon=True)
    try:
        with engine.connect() as conn:
            conn.execute(text("SET deadlock_timeout = '50ms'"))
            conn.execute(text("UPDATE counters SET v = v + 1 WHERE id = 2"))
            blocked.start()
            _wait_until_waiting_on_a_lock(cluster, other_pid)
            try:
                conn.execute(text("UPDATE counters SET v = v + 1 WHERE id = 1"))
            except DBAPIError as exc:
                assert exc.orig is not None
                seen.append(exc.orig)
                raise
            raise AssertionError("no deadlock was detected")
    finally:
        blocked.join(timeout=30)
        other.close()


def _update_then_commit(conn: Any, row: int) -> None:
    with conn.cursor() as cur:
        cur.execute("UPDATE counters SET v = v + 1 WHERE id = %s", (row,))
    conn.commit()


def _wait_until_waiting_on_a_lock(cluster: PgCluster, pid: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        state = cluster.psql(f"SELECT wait_event_type FROM pg_stat_activity WHERE pid = {pid}")
        if state == "Lock":
            return
        time.sleep(0.02)
    raise AssertionError("the other transaction never blocked on the row lock")


def test_too_many_connections_is_transient(engine: Any, breaker: Any, pg_cluster: PgCluster) -> None:
    import psycopg2
    from sqlalchemy import text

    def query(_: int) -> Any:
        with engine.connect() as conn:
            return conn.execute(text("SELECT 1")).scalar_one()

    engine.dispose()
    held: list[Any] = []
    try:
        while len(held) < PG_MAX_CONNECTIONS + 2:
            try:
                held.append(psycopg2.connect(pg_cluster.dsn(DB)))
            except psycopg2.OperationalError as exc:
                assert "too many clients" in str(exc)
                break
        else:
            raise AssertionError("max_connections was never reached")
        fn, naps, before = Attempts(query), Naps(), failures(breaker)
        with pytest.raises(Exception) as exc_info:
            run_guarded(fn, breaker, naps)
        driver = assert_gave_up_transient(exc_info, fn, naps, breaker, before)
        assert "too many clients" in str(driver)
    finally:
        for conn in held:
            conn.close()


def test_a_reset_connection_is_transient(
    db_url: str, breaker: Any, fault_proxy: FaultProxy, pg_cluster: PgCluster,
) -> None:
    """The lost-connection case through the fault proxy: every attempt opens a new connection."""
    from sqlalchemy import text

    from arbiter_cli.adapters.sql import deadline
    from arbiter_cli.adapters.sql.engine import make_engine

    deadline.install()
    eng = make_engine(pg_cluster.url(DB, port=fault_proxy.port))
    fault_proxy.set_mode("reset")

    def query(_: int) -> Any:
        with eng.connect() as conn:
            return conn.execute(text("SELECT 1")).scalar_one()

    fn, naps, before = Attempts(query), Naps(), failures(breaker)
    try:
        with pytest.raises(Exception) as exc_info:
            run_guarded(fn, breaker, naps)
    finally:
        eng.dispose()
    assert_gave_up_transient(exc_info, fn, naps, breaker, before)
    assert fault_proxy.accepted == 4  # one connection per attempt reached the proxy


# --------------------------------------------------------------------------- COUNTED


def test_statement_timeout_is_counted_but_not_retried(engine: Any, breaker: Any) -> None:
    from sqlalchemy import text

    from arbiter_cli.adapters.sql.faults import Fault, classify, driver_error
    from arbiter_cli.errors import StorageUnavailable

    def slow(_: int) -> Any:
        with engine.connect() as conn:
            conn.execute(text("SET statement_timeout = '100ms'"))
            return conn.execute(text("SELECT pg_sleep(2)")).scalar_one()

    fn, naps, before = Attempts(slow), Naps(), failures(breaker)
    with pytest.raises(StorageUnavailable) as exc_info:
        run_guarded(fn, breaker, naps)
    assert fn.calls == 1 and naps.waits == []
    assert failures(breaker) == before + 1
    cause = exc_info.value.__cause__
    assert cause is not None and classify(cause) is Fault.COUNTED
    assert getattr(driver_error(cause), "pgcode", None) == "57014"


@pytest.fixture
def tiny_tablespace(pg_cluster: PgCluster) -> Iterator[str]:
    """A 2 MiB tmpfs tablespace (needs mount rights: root here, skipped elsewhere)."""
    where = pg_cluster.base / "tiny"
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("disk full needs a tmpfs mount (root); not available to this user")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the disk-full test: {mounted.stderr.strip()}")
    try:
        os.chown(where, *_postgres_ids())
        pg_cluster.psql(f"CREATE TABLESPACE tiny LOCATION '{where}'")
        pg_cluster.psql("CREATE TABLE filler (x text) TABLESPACE tiny", dbname=DB)
        yield "filler"
    finally:
        try:
            pg_cluster.psql("DROP TABLE IF EXISTS filler", dbname=DB)
            pg_cluster.psql("DROP TABLESPACE IF EXISTS tiny")
        finally:
            subprocess.run(["umount", str(where)], capture_output=True)


def _postgres_ids() -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam("postgres")
    return entry.pw_uid, entry.pw_gid


def test_disk_full_is_counted_but_not_retried(engine: Any, breaker: Any, tiny_tablespace: str) -> None:
    from sqlalchemy import text

    from arbiter_cli.adapters.sql.faults import Fault, classify, driver_error
    from arbiter_cli.errors import StorageUnavailable

    def fill(_: int) -> Any:
        with engine.begin() as conn:
            conn.execute(text(f"INSERT INTO {tiny_tablespace} "
                              "SELECT md5(i::text) FROM generate_series(1, 200000) i"))

    fn, naps, before = Attempts(fill), Naps(), failures(breaker)
    with pytest.raises(StorageUnavailable) as exc_info:
        run_guarded(fn, breaker, naps)
    assert fn.calls == 1 and naps.waits == []
    assert failures(breaker) == before + 1
    cause = exc_info.value.__cause__
    assert cause is not None and classify(cause) is Fault.COUNTED
    assert getattr(driver_error(cause), "pgcode", None) == "53100"


# --------------------------------------------------------------------------- CALLER


def _one_counted_failure(breaker: Any) -> int:
    """Put one counted failure on the breaker, so "unchanged" means neither +1 nor a reset."""
    breaker.failure(breaker.allow())
    return failures(breaker)


CALLER_ERRORS = {
    "unique_violation": ("INSERT INTO items (id) VALUES (1), (1)", "23505"),
    "data_error": ("SELECT 'not a number'::int", "22P02"),
    "division_by_zero": ("SELECT 1 / 0", "22012"),
    "undefined_table": ("SELECT * FROM no_such_table", "42P01"),
    "not_null_violation": ("INSERT INTO items (id) VALUES (NULL)", "23502"),
}


@pytest.mark.parametrize("name", sorted(CALLER_ERRORS))
def test_caller_errors_are_attempted_once_and_never_counted(engine: Any, breaker: Any, name: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from arbiter_cli.adapters.sql.faults import Fault, classify

    sql, code = CALLER_ERRORS[name]

    def bad(_: int) -> Any:
        with engine.begin() as conn:
            return conn.execute(text(sql)).fetchall()

    before = _one_counted_failure(breaker)
    fn, naps = Attempts(bad), Naps()
    with pytest.raises(DBAPIError) as exc_info:  # passed through as it is: not exit 10
        run_guarded(fn, breaker, naps)
    assert fn.calls == 1 and naps.waits == []
    assert getattr(exc_info.value.orig, "pgcode", None) == code
    assert classify(exc_info.value) is Fault.CALLER
    assert failures(breaker) == before  # neither counted nor reset
    assert breaker.snapshot().state == "closed"


def test_our_own_errors_are_caller_errors(engine: Any, breaker: Any) -> None:
    from arbiter_cli.adapters.sql.faults import Fault, classify
    from arbiter_cli.errors import Conflict

    def conflict(_: int) -> Any:
        raise Conflict("agent 'a' exists")

    before = _one_counted_failure(breaker)
    fn, naps = Attempts(conflict), Naps()
    with pytest.raises(Conflict):
        run_guarded(fn, breaker, naps)
    assert fn.calls == 1 and naps.waits == []
    assert classify(Conflict("x")) is Fault.CALLER
    assert failures(breaker) == before


def test_retries_stop_at_the_deadline(engine: Any, breaker: Any, running_cluster: PgCluster) -> None:
    """Transient faults are retried only within the command's budget."""
    from sqlalchemy import text

    from arbiter_cli.errors import StorageUnavailable

    def query(_: int) -> Any:
        with engine.connect() as conn:
            return conn.execute(text("SELECT 1")).scalar_one()

    engine.dispose()
    running_cluster.stop("immediate")
    spent = 0.0

    def nap(seconds: float) -> None:  # a fake sleep that spends the budget for real
        nonlocal spent
        spent += seconds
        time.sleep(seconds)

    fn = Attempts(query)
    with pytest.raises(StorageUnavailable):
        run_guarded(fn, breaker, nap, budget_s=0.3)  # type: ignore[arg-type]
    assert 1 <= fn.calls <= 4
    assert spent <= 0.3 + 1e-6
