"""Server-side prepared statements on PostgreSQL (``adapters/sql/prepared.py``).

Each test checks what the server was sent (psycopg2's ``cursor.query``, after the statement)
and what the caller got back: a statement run ``threshold`` times on a connection goes as
``EXECUTE``, with the same rows; one PostgreSQL cannot prepare goes as text, with the caller's
transaction intact; a new session after a lost connection, a plan made stale by a schema
change and a full per-connection budget are each recovered on the next call.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Integer, String, bindparam, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from arbiter_cli.adapters.sql.engine import make_engine
from arbiter_cli.adapters.sql.prepared import prepare_repeated
from arbiter_cli.domain.principal import Principal
from arbiter_cli.domain.routing import Outcome
from tests.helpers import fresh_postgres_database, postgres_url

pytestmark = pytest.mark.postgres


class Sent:
    """What psycopg2 sent for each statement SQLAlchemy executed."""

    def __init__(self, engine: Engine) -> None:
        self.queries: list[str] = []
        event.listen(engine, "after_cursor_execute", self._note)

    def _note(self, _conn: Any, cursor: Any, *_args: Any) -> None:
        self.queries.append(cursor.query.decode())

    def take(self) -> list[str]:
        taken, self.queries = self.queries, []
        return taken


@pytest.fixture
def url() -> Iterator[str]:
    with fresh_postgres_database("prep") as url:
        yield url


def _engine(url: str, threshold: int, **options: Any) -> Engine:
    engine = make_engine(url, pool_size=1, max_overflow=0)
    prepare_repeated(engine, threshold, **options)
    return engine


SELECT = text("SELECT n, n * 2 AS twice FROM generate_series(1, :top) AS n WHERE n > :low"
              ).bindparams(bindparam("top", type_=Integer), bindparam("low", type_=Integer))


def test_a_statement_is_prepared_at_the_threshold_with_the_same_rows(url: str) -> None:
    engine = _engine(url, threshold=3)
    sent = Sent(engine)
    with engine.connect() as conn:
        rows = [conn.execute(SELECT, {"top": 5, "low": n}).all() for n in range(5)]
    queries = sent.take()
    assert [q.split()[0] for q in queries] == ["SELECT", "SELECT", "EXECUTE", "EXECUTE",
                                               "EXECUTE"]
    assert rows == [[(n, 2 * n) for n in range(low + 1, 6)] for low in range(5)]
    engine.dispose()


def test_off_at_zero_and_on_sqlite(url: str, tmp_path: Any) -> None:
    for engine in (_engine(url, threshold=0),
                   make_engine(f"sqlite:///{tmp_path / 'x.db'}", create=True,
                               prepare_threshold=1)):
        with engine.connect() as conn:
            for _ in range(3):
                assert conn.execute(text("SELECT 1")).scalar_one() == 1
        assert not engine.dialect.dispatch.do_execute, "no listener: every statement as text"
        engine.dispose()


def test_a_streamed_result_is_never_prepared(url: str) -> None:
    """A server-side cursor declares its query (``DECLARE … CURSOR FOR``), which cannot be an
    ``EXECUTE``: streamed statements go as text, however often they run."""
    engine = _engine(url, threshold=1)
    sent = Sent(engine)
    with engine.connect() as conn:
        streamed = conn.execution_options(stream_results=True)
        rows = [streamed.execute(SELECT, {"top": 4, "low": 2}).all() for _ in range(3)]
    assert rows == [[(3, 6), (4, 8)]] * 3
    assert not any(q.startswith("EXECUTE") for q in sent.take())
    engine.dispose()


def test_one_postgres_cannot_prepare_goes_as_text_and_the_transaction_survives(
    url: str,
) -> None:
    engine = _engine(url, threshold=1)
    sent = Sent(engine)
    untyped = text("SELECT :value")  # PREPARE (unknown) AS SELECT $1: no type to infer
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE kept (n int)"))
        conn.execute(text("INSERT INTO kept VALUES (1)"))
        assert [conn.execute(untyped, {"value": "x"}).scalar_one() for _ in range(3)] == [
            "x", "x", "x"]
        conn.execute(text("INSERT INTO kept VALUES (2)"))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM kept")).scalar_one() == 2
    assert all(not q.startswith("EXECUTE") or "kept" not in q for q in sent.take())
    engine.dispose()


def test_a_new_session_after_a_lost_connection_prepares_again(url: str) -> None:
    engine = _engine(url, threshold=1)
    sent = Sent(engine)
    with engine.connect() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        conn.execute(SELECT, {"top": 3, "low": 0}).all()
        conn.commit()
    killer = make_engine(url, pool_size=1, max_overflow=0)
    with killer.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    killer.dispose()
    with pytest.raises(DBAPIError) as lost, engine.connect() as conn:
        conn.execute(SELECT, {"top": 3, "low": 0}).all()
    assert lost.value.connection_invalidated
    sent.take()
    with engine.connect() as conn:  # a new session: nothing prepared there yet
        assert conn.execute(SELECT, {"top": 3, "low": 1}).all() == [(2, 4), (3, 6)]
    assert sent.take()[-1].startswith("EXECUTE")
    engine.dispose()


def test_a_plan_made_stale_by_a_schema_change_fails_once_then_recovers(url: str) -> None:
    engine = _engine(url, threshold=1)
    star = text("SELECT * FROM moving WHERE n = :n").bindparams(bindparam("n", type_=Integer))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE moving (n int)"))
        conn.execute(text("INSERT INTO moving VALUES (1)"))
    with engine.connect() as conn:
        assert conn.execute(star, {"n": 1}).all() == [(1,)]
        conn.commit()
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE moving ADD COLUMN label text DEFAULT 'x'"))
    with pytest.raises(DBAPIError, match="cached plan must not change result type"), \
            engine.connect() as conn:
        conn.execute(star, {"n": 1}).all()
    with engine.connect() as conn:
        assert conn.execute(star, {"n": 1}).all() == [(1, "x")]
    engine.dispose()


def test_the_oldest_is_deallocated_beyond_the_capacity(url: str) -> None:
    engine = _engine(url, threshold=1, capacity=2)
    statements = [text(f"SELECT :v || '{i}'").bindparams(bindparam("v", type_=String))
                  for i in range(4)]
    with engine.connect() as conn:
        for _ in range(2):
            assert [conn.execute(s, {"v": "a"}).scalar_one() for s in statements] == [
                "a0", "a1", "a2", "a3"]
        held = conn.execute(text("SELECT count(*) FROM pg_prepared_statements "
                                 "WHERE name LIKE 'arbiter_%'")).scalar_one()
    assert held == 2
    engine.dispose()


def test_the_decision_path_runs_prepared_with_the_same_results(clean_env: dict[str, str]
                                                              ) -> None:
    """Route and outcome on the real wiring (``database.prepare_threshold`` = 1): after the
    first decisions every statement of a decision goes as ``EXECUTE``, and the audit chain
    still verifies."""
    from arbiter_cli.bootstrap import scratch_app
    from arbiter_cli.config import load_settings

    settings = load_settings(environ={**clean_env, "ARBITER_DATABASE__PREPARE_THRESHOLD": "1"})
    assert settings.database.prepare_threshold == 1
    admin = Principal.local_admin()
    with scratch_app(settings, "postgres", purpose="t", database_url=postgres_url()) as (app, _):
        app.agents.register(admin, [{"id": "a1", "name": "A", "model_family": "x",
                                     "task_types": ["code-editing"], "capacity": 10}])
        token = app.security.issue(admin, role="orchestrator", name="n",
                                   expires_in_s=None).token
        assert app.engine is not None
        sent = Sent(app.engine)
        for n in range(4):
            routed = app.routing.route(app.security.admit(token, "route task"),
                                       {"task_type": "code-editing", "task_id": f"t{n}"})
            app.routing.outcome(app.security.admit(token, "route outcome"),
                                Outcome(success=True, quality=0.5),
                                decision_id=routed.decision.decision_id)
            if n == 1:
                sent.take()
        steady = sent.take()
        assert steady and all(q.startswith("EXECUTE") for q in steady), [
            q[:100] for q in steady if not q.startswith("EXECUTE")]
        assert app.security.verify(admin).ok


def _abort(conn: Any) -> None:
    """Fail a statement (sent as text) so that the transaction is aborted."""
    with pytest.raises(DBAPIError, match="division by zero"):
        conn.exec_driver_sql("SELECT 1/0")


def test_a_statement_in_an_aborted_transaction_fails_as_it_would_as_text(url: str) -> None:
    """The first PREPARE of a statement, attempted in a transaction already aborted, neither
    changes the caller's error (it was "savepoint does not exist") nor marks the statement
    as one PostgreSQL cannot prepare."""
    engine = _engine(url, threshold=1)
    sent = Sent(engine)
    with engine.connect() as conn:
        _abort(conn)
        with pytest.raises(DBAPIError, match="current transaction is aborted"):
            conn.execute(SELECT, {"top": 3, "low": 0})
        conn.rollback()
        sent.take()
        assert conn.execute(SELECT, {"top": 3, "low": 1}).all() == [(2, 4), (3, 6)]
    assert sent.take()[-1].startswith("EXECUTE")
    engine.dispose()


def test_an_eviction_in_an_aborted_transaction_leaves_the_statement_usable(url: str) -> None:
    """A statement whose eviction (DEALLOCATE) failed in an aborted transaction is still
    prepared on the session: it was forgotten, so preparing it again failed on every later
    call on that connection ("prepared statement … already exists")."""
    engine = _engine(url, threshold=1, capacity=1)
    first, second = (text(f"SELECT :v || '{i}'").bindparams(bindparam("v", type_=String))
                     for i in range(2))
    with engine.connect() as conn:
        assert conn.execute(first, {"v": "a"}).scalar_one() == "a0"  # prepared: capacity full
        conn.commit()
        _abort(conn)
        with pytest.raises(DBAPIError, match="current transaction is aborted"):
            conn.execute(second, {"v": "a"})
        conn.rollback()
        for _ in range(2):
            assert conn.execute(first, {"v": "b"}).scalar_one() == "b0"
            assert conn.execute(second, {"v": "b"}).scalar_one() == "b1"
            conn.commit()
    engine.dispose()


def test_a_first_prepare_cut_by_the_statement_timeout_fails_the_call_once(url: str) -> None:
    """A first PREPARE that waited for a lock (a migration's) until ``statement_timeout`` is
    the statement's timeout, once: the statement was neither run again as text, waiting as
    long a second time, nor marked as one PostgreSQL cannot prepare (sent as text for the
    rest of the process)."""
    engine = make_engine(url, pool_size=1, max_overflow=0, statement_timeout_s=1)
    prepare_repeated(engine, 1)
    sent = Sent(engine)
    locked = text("SELECT count(*) FROM held WHERE n > :n").bindparams(
        bindparam("n", type_=Integer))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE held (n int)"))
    holder = make_engine(url, pool_size=1, max_overflow=0)
    with holder.connect() as migration:
        migration.execute(text("LOCK TABLE held IN ACCESS EXCLUSIVE MODE"))
        began = time.monotonic()
        with pytest.raises(DBAPIError, match="statement timeout"), engine.connect() as conn:
            conn.execute(locked, {"n": 0})
        assert time.monotonic() - began < 1.8, "waited for the lock a second time, as text"
        migration.rollback()
    holder.dispose()
    with engine.connect() as conn:
        assert [conn.execute(locked, {"n": 0}).scalar_one() for _ in range(2)] == [0, 0]
    assert sent.take()[-1].startswith("EXECUTE")
    engine.dispose()


def test_a_stale_plan_reported_in_the_servers_language_resets_the_session(url: str) -> None:
    """PostgreSQL words its errors in ``lc_messages``: a stale plan is known by its SQLSTATE
    (0A000), not by its English text, or a server speaking German would fail that statement on
    every later call on the connection instead of once. (A function raises the error as a
    German server would; this server has no German messages to give.)"""
    engine = _engine(url, threshold=1)
    with engine.begin() as conn:
        conn.execute(text(
            "CREATE FUNCTION stale(n bigint) RETURNS bigint LANGUAGE plpgsql AS $$ BEGIN "
            "IF n > 0 THEN RAISE EXCEPTION USING ERRCODE = '0A000', "
            "MESSAGE = 'gecachter Plan darf den Ergebnistyp nicht ändern'; END IF; "
            "RETURN n; END $$"))
    calling = text("SELECT stale(:n)").bindparams(bindparam("n", type_=Integer))
    with engine.connect() as conn:
        assert conn.execute(calling, {"n": 0}).scalar_one() == 0
        assert conn.execute(SELECT, {"top": 2, "low": 0}).all() == [(1, 2), (2, 4)]
        with pytest.raises(DBAPIError, match="gecachter Plan"):
            conn.execute(calling, {"n": 1})
        conn.rollback()
        assert conn.execute(SELECT, {"top": 2, "low": 1}).all() == [(2, 4)]
        held = conn.exec_driver_sql("SELECT count(*) FROM pg_prepared_statements "
                                    "WHERE name LIKE 'arbiter_%%'").scalar_one()
    assert held == 1, "the session's statements were deallocated, the next one prepared again"
    engine.dispose()


def test_admission_survives_a_column_added_to_tokens(clean_env: dict[str, str]) -> None:
    """The admission statement names the token's columns: prepared on every pooled connection,
    it keeps working when a migration adds a column to ``tokens`` under a running server (with
    ``tokens.*`` each connection failed one admission with a stale plan)."""
    from arbiter_cli.bootstrap import scratch_app
    from arbiter_cli.config import load_settings

    settings = load_settings(environ={**clean_env, "ARBITER_DATABASE__PREPARE_THRESHOLD": "1"})
    admin = Principal.local_admin()
    with scratch_app(settings, "postgres", purpose="t", database_url=postgres_url()) as (app, _):
        assert app.engine is not None
        token = app.security.issue(admin, role="orchestrator", name="n",
                                   expires_in_s=None).token
        sent = Sent(app.engine)
        for _ in range(12):  # every pooled connection it uses prepares it
            app.security.admit(token, "route task")
        assert any(q.startswith("EXECUTE") for q in sent.take())
        with app.engine.begin() as conn:
            conn.execute(text("ALTER TABLE tokens ADD COLUMN added_later text"))
        for _ in range(12):
            assert app.security.admit(token, "route task").tenant == "default"
