"""Concurrent writers never lose an update (SPEC §2.3), on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import fresh_postgres_database

WORKER = textwrap.dedent(
    """
    import sys
    from arbiter_cli.bootstrap import build
    from arbiter_cli.config import load_settings
    from arbiter_cli.domain.agents import TaskResult
    from arbiter_cli.domain.principal import Principal

    url, count, worker = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    app = build(load_settings(), url=url)
    admin = Principal.local_admin()
    for i in range(count):
        app.agents.record(admin, "shared", TaskResult(success=(i + worker) % 2 == 0, quality=0.5))
    app.close()
    """
)


def _init(url: str, settings) -> None:  # type: ignore[no-untyped-def]
    import io

    from arbiter_cli.adapters import migrations
    from arbiter_cli.adapters.sql.repository import SqlUnitOfWorkFactory
    from arbiter_cli.bootstrap import build, sql_engine, utc_now
    from arbiter_cli.domain.principal import Principal
    from arbiter_cli.tools.setup import initialize

    engine = sql_engine(settings, url, create=True)
    initialize(SqlUnitOfWorkFactory(engine), lambda: migrations.upgrade(engine, "head",
                                                                       io.StringIO())[1], utc_now)
    engine.dispose()
    app = build(settings, url=url)
    app.agents.register(Principal.local_admin(), [{
        "id": "shared", "name": "Shared", "model_family": "x", "task_types": ["testing"]}])
    app.close()


def _record_concurrently(url: str, settings, processes: int = 2, each: int = 500) -> int:  # type: ignore[no-untyped-def]
    from arbiter_cli.bootstrap import build
    from arbiter_cli.domain.principal import Principal

    _init(url, settings)
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, url, str(each), str(n)],
                                stderr=subprocess.PIPE, text=True) for n in range(processes)]
    for worker in workers:
        _, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err
    app = build(settings, url=url)
    try:
        agent = app.agents.show(Principal.local_admin(), "shared")
    finally:
        app.close()
    assert agent.version == 1 + processes * each
    return agent.performance.task_count


@pytest.mark.slow
def test_two_processes_lose_no_update_on_sqlite(test_settings, tmp_path: Path):
    """2 × 500 outcomes on one agent leave task_count = 1000 (BEGIN IMMEDIATE)."""
    url = f"sqlite:///{tmp_path / 'race.db'}"
    assert _record_concurrently(url, test_settings) == 1000


@pytest.mark.slow
@pytest.mark.postgres
def test_two_processes_lose_no_update_on_postgres(test_settings):
    """2 × 500 outcomes on one agent leave task_count = 1000 (SELECT … FOR UPDATE)."""
    with fresh_postgres_database("race") as url:
        assert _record_concurrently(url, test_settings) == 1000
