"""SPEC §4.1: concurrent ``arbiter init`` on one fresh database issues exactly one bootstrap
admin token (the bootstrap runs under the migration lock on PostgreSQL, and in one
``BEGIN IMMEDIATE`` transaction on SQLite)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import fresh_postgres_database

PROCESSES = 4
ROUNDS = 3


def _concurrent_inits(url: str, home: Path) -> list[dict[str, object]]:
    env = {**os.environ, "ARBITER_DATABASE__URL": url,
           "ARBITER_DATA_DIR": str(home / "data"), "ARBITER_CONFIG_DIR": str(home / "config")}
    env = {k: v for k, v in env.items()
           if not k.startswith("ARBITER_") or k.startswith(("ARBITER_TEST_", "ARBITER_DATA",
                                                            "ARBITER_CONFIG_DIR"))}
    processes = [subprocess.Popen([sys.executable, "-m", "arbiter_cli", "--json", "init"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=env) for _ in range(PROCESSES)]
    documents = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        documents.append(json.loads(out))
    return documents


def _token_rows(url: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM tokens")).scalar_one())
    finally:
        engine.dispose()


@contextmanager
def _fresh(backend: str, folder: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'arbiter.db'}"
    else:
        with fresh_postgres_database("boot") as url:
            yield url


def _migrate(url: str) -> None:
    """Schema at head, no tenant, no token: every init reaches the bootstrap at once."""
    import io

    from arbiter_cli.adapters import migrations
    from arbiter_cli.adapters.sql.engine import make_engine

    engine = make_engine(url, create=True)
    try:
        migrations.upgrade(engine, "head", io.StringIO())
    finally:
        engine.dispose()


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "start"), [
    pytest.param("postgres", "empty", marks=pytest.mark.postgres),
    pytest.param("postgres", "migrated", marks=pytest.mark.postgres),
    ("sqlite", "migrated"),
])
def test_concurrent_inits_issue_exactly_one_bootstrap_token(backend: str, start: str,
                                                            tmp_path: Path):
    """``migrated`` (schema at head, no token yet) lines every init up at the bootstrap: on
    the code before the fix it printed 2 or 3 tokens in the first round."""
    for round_ in range(ROUNDS):
        home = tmp_path / f"round-{round_}"
        home.mkdir()
        with _fresh(backend, home) as url:
            if start == "migrated":
                _migrate(url)
            documents = _concurrent_inits(url, home)
            printed = [d["admin_token"] for d in documents if d["admin_token"]]
            assert len(printed) == 1, f"round {round_}: {len(printed)} tokens printed"
            assert _token_rows(url) == 1, f"round {round_}: token rows"
            assert sum(bool(d["created"]) for d in documents) == 1
            saved = (home / "config" / "credentials.toml").read_text()
            assert printed[0] in saved
