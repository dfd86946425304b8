"""The database's clock (SPEC §4.1, issue 17 F5): a client clock set back or ahead changes
nothing.

Each test runs the real CLI (``main()``) on a new SQLite file or PostgreSQL database, with the
clock the composition root injects (``bootstrap.utc_now``) skewed the way a host with a wrong
clock would be: back 1 h, ahead 10 min, ahead 3 h. Time that must pass is made to pass by
ageing what the database stores, since the database's own clock cannot be moved.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.helpers import age_stored_times, cli


@pytest.fixture
def database(sql_url: str, clean_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
             ) -> Iterator[dict[str, Any]]:
    """An initialized database; ``skew(**delta)`` sets the process's clock off by ``delta``."""
    monkeypatch.setenv("ARBITER_DATABASE__URL", sql_url)
    admin = cli("--json", "init").json()["admin_token"]
    engine = create_engine(sql_url)

    def skew(**delta: float) -> None:
        """The host's clock is off: ``bootstrap.utc_now``, the clock the composition root
        injects, reads the skewed time (patched where it reads the time, so that a default
        argument bound to it sees the skew too)."""
        import arbiter_cli.bootstrap as bootstrap

        offset = timedelta(**delta)

        class Skewed(datetime):
            @classmethod
            def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
                return datetime.now(tz) + offset

        monkeypatch.setattr(bootstrap, "datetime", Skewed)
        assert abs(bootstrap.utc_now() - datetime.now(UTC) - offset) < timedelta(seconds=5)

    try:
        yield {"admin": admin, "engine": engine, "skew": skew, "url": sql_url}
    finally:
        engine.dispose()


def ok(*argv: str) -> dict[str, Any]:
    result = cli("--json", *argv)
    assert result.exit_code == 0, result
    return result.json()  # type: ignore[no-any-return]


def database_now(engine: Any) -> datetime:
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            return conn.execute(text("SELECT now()")).scalar_one()  # type: ignore[no-any-return]
        raw = conn.execute(text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")).scalar_one()
        return datetime.fromisoformat(raw).replace(tzinfo=UTC)


def parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def within(moment: datetime, low: datetime, high: datetime) -> bool:
    """``moment`` is the database's time of a call made between ``low`` and ``high`` (with
    1 ms for the milliseconds of RFC 3339 output)."""
    return low - timedelta(milliseconds=1) <= moment <= high + timedelta(milliseconds=1)


def test_a_clock_set_back_does_not_revive_an_expired_token(database):
    """(a) A token that expired stays expired for a host whose clock is 1 h behind."""
    token = ok("--token", database["admin"], "tokens", "create", "--role", "viewer", "--name",
               "short", "--expires-in", "1m")["token"]
    ok("--token", token, "whoami")
    age_stored_times(database["engine"], minutes=2)  # the database's clock moves on 2 min
    database["skew"](hours=-1)
    refused = cli("--json", "--token", token, "whoami")
    assert refused.exit_code == 6, refused
    assert refused.error()["message"] == "token expired"


def test_a_host_ten_minutes_ahead_does_not_block_a_shared_rate_bucket(database):
    """(b) One call from a host 10 min ahead; a call from a correct host right after is
    admitted, because the bucket refilled on the database's time, not the caller's."""
    issued = ok("--token", database["admin"], "tokens", "create", "--role", "viewer", "--name",
                "bucket", "--rate", "1000", "--burst", "1")
    token = issued["token"]
    database["skew"](minutes=10)
    ok("--token", token, "whoami")
    database["skew"]()
    after = cli("--json", "--token", token, "whoami")
    assert after.exit_code == 0, after
    with database["engine"].connect() as conn:
        stamp = conn.execute(text("SELECT updated_at FROM rate_buckets WHERE token_id = :t"),
                             {"t": issued["id"]}).scalar_one()
    assert stamp <= database_now(database["engine"]).timestamp() + 0.001


@pytest.mark.parametrize("offset", [{"hours": -1}, {"minutes": 10}], ids=["behind", "ahead"])
def test_decision_and_audit_times_are_the_databases(database, offset):
    """(c) created_at of a decision, closed_at of its outcome, the audit events' at and the
    token's last_used_at are the database's time, whatever the caller's clock says."""
    admin = database["admin"]
    ok("--token", admin, "agents", "register", "--id", "a1", "--name", "A", "--model-family",
       "x", "--task-type", "testing")
    database["skew"](**offset)
    low = database_now(database["engine"])
    routed = ok("--token", admin, "route", "task", "--task-type", "testing")
    closed = ok("--token", admin, "route", "outcome", routed["decision_id"], "--success")
    high = database_now(database["engine"])
    assert within(parse(routed["created_at"]), low, high), (routed["created_at"], low, high)
    assert within(parse(closed["closed_at"]), low, high)
    events = ok("--token", admin, "audit", "list", "--limit", "2")["items"]
    assert [e["action"] for e in events] == ["route.outcome", "route.task"]
    for event in events:
        assert within(parse(event["at"]), low, high), (event["at"], low, high)
    [me] = [t for t in ok("--token", admin, "tokens", "list")["items"]
            if t["name"] == "bootstrap admin"]
    assert within(parse(me["last_used_at"]), low - timedelta(minutes=1), high)
    assert ok("--token", admin, "audit", "verify")["ok"] is True


def test_a_reap_from_a_host_hours_ahead_does_not_expire_live_decisions(database):
    """(d) A host 3 h ahead reaps (explicitly, and before routing): another host's decision
    made a minute ago stays open and keeps its slot."""
    admin = database["admin"]
    ok("--token", admin, "agents", "register", "--id", "a1", "--name", "A", "--model-family",
       "x", "--task-type", "testing", "--capacity", "1")
    live = ok("--token", admin, "route", "task", "--task-type", "testing")
    database["skew"](hours=3)
    assert ok("--token", admin, "route", "reap")["count"] == 0
    full = cli("--json", "--token", admin, "route", "task", "--task-type", "testing")
    assert full.exit_code == 9, full  # the agent's one slot is still taken
    assert ok("--token", admin, "route", "explain", live["decision_id"])["status"] == "open"
    database["skew"]()
    age_stored_times(database["engine"], hours=2, seconds=1)  # now it really is stale
    reaped = ok("--token", admin, "route", "reap")
    assert [d["decision_id"] for d in reaped["items"]] == [live["decision_id"]]


def test_memory_store_keeps_the_injected_clock_as_its_database_clock(test_settings):
    """The memory store has no clock of its own: the composition root's clock is its
    "database clock", so tests and benchmarks stay deterministic."""
    from arbiter_cli.bootstrap import build_memory
    from tests.helpers import FakeClock

    clock = FakeClock()
    app = build_memory(test_settings, clock=clock)
    with app.uow() as uow:
        assert uow.now() == clock.now
    clock.advance(hours=1)
    with app.uow() as uow:
        assert uow.now() == clock.now

