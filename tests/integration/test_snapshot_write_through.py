"""Writing a host's commits through to its snapshot (issue 17, F2; resilience/snapshot.py).

The primary here is a SQLite file with arbiter's schema (the refresh reads it like any
primary); the snapshot is the real ``LocalStore`` with its generations. The fault tests
(tests/faults/test_claims.py) run the same path end to end on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from arbiter_cli.adapters.sql import tables as t
from arbiter_cli.adapters.sql.written import Written
from arbiter_cli.resilience import snapshot
from arbiter_cli.resilience.snapshot import LocalStore

NOW = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)


def agent_row(uid: str, *, active: int = 0, version: int = 1) -> dict[str, Any]:
    return {"uid": uid, "tenant": "default", "id": uid, "name": uid, "model_family": "x",
            "capacity": 1, "active_tasks": active, "status": "available",
            "status_reason": None, "success_rate": 0.0, "average_quality": 0.0,
            "average_latency_ms": 0.0, "task_count": 0, "latency_count": None,
            "metadata": {}, "registered_at": NOW, "last_active_at": NOW, "updated_at": NOW,
            "version": version, "capabilities": "|ttesting=testing|"}


def decision_row(decision_id: str, agent_uid: str) -> dict[str, Any]:
    return {"decision_id": decision_id, "tenant": "default", "task_id": f"T-{decision_id}",
            "task_type": "testing", "priority": 5, "requirements": {}, "metadata": {},
            "agent_id": agent_uid, "agent_uid": agent_uid, "strategy": "thompson", "seed": 1,
            "explored": False, "confidence": None, "candidates": [], "excluded": {},
            "excluded_examples": {}, "config_hash": "h", "latency_us": 1, "status": "open",
            "correlation_id": None, "created_at": NOW, "closed_at": None, "outcome": None,
            "over_capacity": False, "agent_unavailable": False}


@pytest.fixture
def primary(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'primary.db'}", poolclass=NullPool)
    t.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(t.tenants).values(name="default", created_at=NOW))
        conn.execute(insert(t.agents), [agent_row("a1"), agent_row("a2")])
        conn.execute(insert(t.task_types), [
            {"agent_uid": uid, "task_type": "testing", "tenant": "default"}
            for uid in ("a1", "a2")])
    yield engine
    engine.dispose()


@pytest.fixture
def store(tmp_path: Path, primary: Engine) -> LocalStore:
    local = LocalStore(tmp_path / "resilience" / "k")
    assert local.refresh(primary, interval_s=0, force=True)
    return local


def held(store: LocalStore) -> dict[str, tuple[int, int]]:
    engine = create_engine(store.url(), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return {r.uid: (r.active_tasks, r.version) for r in conn.execute(
                select(t.agents.c.uid, t.agents.c.active_tasks, t.agents.c.version))}
    finally:
        engine.dispose()


def open_decisions(store: LocalStore) -> set[str]:
    engine = create_engine(store.url(), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return set(conn.execute(select(t.decisions.c.decision_id)).scalars())
    finally:
        engine.dispose()


def commit(primary: Engine, uid: str, *, active: int, version: int) -> dict[str, Any]:
    """What a claim or release on the primary leaves: the agent row as updated."""
    row = agent_row(uid, active=active, version=version)
    with primary.begin() as conn:
        conn.execute(update(t.agents).where(t.agents.c.uid == uid).values(
            active_tasks=active, version=version))
    return row


def test_a_committed_claim_and_its_decision_reach_the_snapshot(store: LocalStore,
                                                               primary: Engine) -> None:
    written = Written(agents={"a1": commit(primary, "a1", active=1, version=2)},
                      opened={"d1": decision_row("d1", "a1")})
    assert store.write_through(written, wait_s=1.0)
    assert held(store)["a1"] == (1, 2)
    assert open_decisions(store) == {"d1"}
    # its release (and the decision closed) too
    assert store.write_through(Written(agents={"a1": commit(primary, "a1", active=0,
                                                            version=3)}, closed={"d1"}),
                               wait_s=1.0)
    assert held(store)["a1"] == (0, 3)
    assert open_decisions(store) == set()


def test_an_older_row_never_moves_the_snapshot_back(store: LocalStore) -> None:
    """Two commands writing through in the other order: the newer version stays."""
    assert store.write_through(Written(agents={"a1": agent_row("a1", active=2, version=5)}),
                               wait_s=1.0)
    late = Written(agents={"a1": agent_row("a1", active=1, version=4)},
                   opened={"d-late": decision_row("d-late", "a1")})
    assert store.write_through(late, wait_s=1.0)
    assert held(store)["a1"] == (2, 5)
    assert open_decisions(store) == set()  # its decision goes only with its agent row


def test_an_agent_the_snapshot_does_not_hold_is_left_to_the_refresh(store: LocalStore) -> None:
    assert store.write_through(Written(agents={"new": agent_row("new", version=3)}),
                               wait_s=1.0)
    assert "new" not in held(store)


def test_a_write_through_during_a_refresh_reaches_the_new_generation(
    store: LocalStore, primary: Engine, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The refresh read the primary before the commit; the write-through landed in the old
    generation after the refresh copied it. Publishing carries it over."""
    with primary.begin() as conn:
        conn.execute(insert(t.decisions).values(**decision_row("d1", "a2")))
    assert store.refresh(primary, interval_s=0, force=True)
    assert open_decisions(store) == {"d1"}
    real_sync = snapshot._sync
    raced: list[bool] = []

    def sync_then_commit(src: Any, dst: Any, watermark: str | None) -> str | None:
        out = real_sync(src, dst, watermark)  # the primary as it was before the commits
        raced.append(store.write_through(
            Written(agents={"a1": agent_row("a1", active=1, version=7),
                            "a2": agent_row("a2", active=0, version=8)}, closed={"d1"}),
            wait_s=1.0))
        return out

    monkeypatch.setattr(snapshot, "_sync", sync_then_commit)
    before = store.current()
    assert store.refresh(primary, interval_s=0, force=True)
    assert raced == [True] and store.current() != before  # a new generation was published
    assert held(store) == {"a1": (1, 7), "a2": (0, 8)}
    assert open_decisions(store) == set()


def test_a_busy_publish_lock_gives_up_after_its_wait(store: LocalStore) -> None:
    with snapshot.file_lock(store.directory / snapshot.PUBLISH_LOCK, blocking=True):
        assert not store.write_through(Written(agents={"a1": agent_row("a1", version=9)}),
                                       wait_s=0.05)
    assert held(store)["a1"] == (0, 1)
