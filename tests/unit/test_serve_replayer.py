"""serve's replay pass (bootstrap.Replayer): the full replay only when the journal holds work.

``arbiter serve`` replays every ``serve.replay_interval`` (1 s). Each pass used to build an app
(an engine, the replay lock, the journal opened and closed) even with nothing journaled, which
was most of the serve process's own CPU between requests (bench --workload api, py-spy)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from arbiter_cli import bootstrap
from arbiter_cli.config import Settings, load_settings
from arbiter_cli.resilience.journal import open_journal

PG = "postgresql+psycopg2://nobody@127.0.0.1:1/nowhere"


def settings_for(tmp_path: Path, url: str) -> Settings:
    return load_settings(environ={"ARBITER_DATA_DIR": str(tmp_path / "data"),
                                  "ARBITER_CONFIG_DIR": str(tmp_path / "config"),
                                  "ARBITER_DATABASE__URL": url})


@pytest.fixture
def passes(monkeypatch: pytest.MonkeyPatch) -> list[float | None]:
    calls: list[float | None] = []

    def full(settings: Settings, *, budget_s: float | None) -> dict[str, Any]:
        calls.append(budget_s)
        return {"applied": 1, "conflicts": 0, "remaining": 0, "stopped": None}

    monkeypatch.setattr(bootstrap, "replay_pending", full)
    return calls


def test_an_empty_journal_costs_no_replay(tmp_path: Path, passes: list[float | None]) -> None:
    replayer = bootstrap.Replayer()
    settings = settings_for(tmp_path, PG)
    for _ in range(3):
        assert replayer(settings, 5.0) == {"applied": 0, "conflicts": 0, "remaining": 0,
                                           "stopped": None}
    replayer.close()
    assert passes == []


def test_a_pending_entry_another_process_journaled_is_replayed(
        tmp_path: Path, passes: list[float | None]) -> None:
    replayer = bootstrap.Replayer()
    settings = settings_for(tmp_path, PG)
    assert replayer(settings, 5.0)["applied"] == 0  # its journal is open from here on
    other = open_journal(settings.paths.data_dir, settings.database_url, max_entries=100)
    other.append(op_id="op-1", tenant="default", kind="agents.heartbeat",
                 principal={"tenant": "default", "role": "admin"}, args={"agent_id": "a"})
    other.close()
    assert replayer(settings, 5.0)["applied"] == 1
    replayer.close()
    assert passes == [5.0]


def test_a_sqlite_primary_has_no_journal_to_replay(tmp_path: Path,
                                                   passes: list[float | None]) -> None:
    settings = settings_for(tmp_path, f"sqlite:///{tmp_path / 'arbiter.db'}")
    assert bootstrap.Replayer()(settings, 5.0)["applied"] == 0
    assert passes == []
    assert not (tmp_path / "data" / "resilience").exists()


def test_the_pending_probe_sees_what_other_connections_journal_per_tenant(
        tmp_path: Path) -> None:
    """serve's writes ask the process's probe how many of their tenant's entries wait (to keep
    their order behind them, SPEC §7); it must see each entry as soon as it is committed."""
    from arbiter_cli.resilience.journal import PendingProbe

    settings = settings_for(tmp_path, PG)
    probe = PendingProbe(settings.paths.data_dir, settings.database_url, max_entries=100)
    assert probe("default") == 0
    other = open_journal(settings.paths.data_dir, settings.database_url, max_entries=100)
    seq = other.append(op_id="op-1", tenant="default", kind="agents.heartbeat",
                       principal={"tenant": "default", "role": "admin"}, args={"agent_id": "a"})
    assert probe("default") == 1 and probe("other") == 0
    other.applied(seq)
    assert probe("default") == 0
    other.close()
    probe.close()


def test_a_probe_that_cannot_open_the_journal_says_so(tmp_path: Path) -> None:
    from arbiter_cli.resilience.journal import PendingProbe

    blocked = tmp_path / "file"
    blocked.write_text("")
    probe = PendingProbe(blocked / "data", PG, max_entries=100)  # a folder under a file
    assert probe("default") is None  # the write then opens its own journal, which says why


def test_requests_share_the_process_breaker_and_still_see_its_shared_state(
        tmp_path: Path) -> None:
    """serving_app hands each request's Resilience the process's FileBreaker (it holds only
    its path and configuration): an open breaker written by any process refuses them all."""
    from arbiter_cli.errors import StorageUnavailable
    from arbiter_cli.resilience.breaker import breaker_for

    settings = settings_for(tmp_path, PG)
    engine = bootstrap.sql_engine(settings)
    first = bootstrap.serving_app(settings, engine, correlation_id="a")
    second = bootstrap.serving_app(settings, engine, correlation_id="b")
    assert first.resilience is not None and second.resilience is not None
    assert first.resilience.breaker is second.resilience.breaker
    other = breaker_for(settings)  # another process's view of the same file
    for _ in range(settings.breaker.fail_max):
        other.failure(other.allow())
    with pytest.raises(StorageUnavailable):
        second.resilience.breaker.allow()
    first.close()
    second.close()
    engine.dispose()
