"""Migrations (SPEC §6): reversible, drift-checked, serialised, and checked cheaply by commands."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from arbiter_cli.adapters import migrations
from arbiter_cli.adapters.sql.schema_version import HEAD, REVISIONS
from arbiter_cli.adapters.sql.tables import metadata
from tests.helpers import cli, fresh_postgres_database

TABLES = {"tenants", "agents", "agent_task_types", "agent_languages", "agent_specializations",
          "arms", "decisions", "tokens", "rate_buckets", "audit_events", "applied_ops", "database_identity"}



def _engine(url: str, settings):  # type: ignore[no-untyped-def]
    from arbiter_cli.bootstrap import sql_engine

    return sql_engine(settings, url, create=True)


def test_package_head_matches_alembic_head():
    """The cheap revision check knows the same head as the migration scripts."""
    assert migrations.head(io.StringIO()) == HEAD
    assert [r.revision for r in reversed(migrations.history(io.StringIO()))] == list(REVISIONS)


def test_models_define_every_table_of_the_spec():
    assert set(metadata.tables) == TABLES
    for name, table in metadata.tables.items():
        if name not in ("tenants", "database_identity"):
            assert "tenant" in table.c, name


def test_upgrade_downgrade_upgrade_round_trips(sql_url: str, test_settings):
    """Every migration reverses: head → base → head leaves the same schema, without drift."""
    engine = _engine(sql_url, test_settings)
    try:
        assert migrations.upgrade(engine, "head", io.StringIO()) == (None, HEAD)
        assert set(inspect(engine).get_table_names()) >= TABLES
        assert migrations.downgrade(engine, "base", io.StringIO()) == (HEAD, None)
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        migrations.upgrade(engine, "head", io.StringIO())
        assert migrations.check(engine) == []
    finally:
        engine.dispose()


def test_db_check_passes_fresh_and_fails_after_a_dropped_column(sql_url: str, clean_env):
    """`db check`: 0 on a fresh upgrade, 1 naming the column after it is dropped by hand."""
    assert cli("db", "upgrade", "--database-url", sql_url).exit_code == 0
    ok = cli("--json", "db", "check", "--database-url", sql_url)
    assert ok.exit_code == 0, ok
    assert ok.json()["drift"] is False
    from sqlalchemy import create_engine

    engine = create_engine(sql_url)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE agents DROP COLUMN status_reason"))
    engine.dispose()
    drift = cli("db", "check", "--database-url", sql_url)
    assert drift.exit_code == 1, drift
    assert "agents.status_reason" in drift.stderr
    assert drift.stderr.count("\n") == 1


def test_db_check_is_10_when_not_at_head(sql_url: str, clean_env):
    engine_result = cli("db", "upgrade", "--database-url", sql_url)
    assert engine_result.exit_code == 0
    assert cli("db", "downgrade", "base", "--database-url", sql_url, "--yes").exit_code == 0
    result = cli("--json", "db", "check", "--database-url", sql_url)
    assert result.exit_code == 10
    assert result.error()["code"] == "schema_outdated"


def test_data_commands_refuse_a_schema_behind_or_ahead(sql_url: str, clean_env):
    """Behind: run `arbiter db upgrade`; ahead: upgrade arbiter. Both exit 10."""
    assert cli("init", "--database-url", sql_url).exit_code == 0
    env = {"ARBITER_DATABASE__URL": sql_url}
    assert cli("agents", "list", env=env).exit_code == 0
    from sqlalchemy import create_engine

    engine = create_engine(sql_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    ahead = cli("agents", "list", env=env)
    assert ahead.exit_code == 10 and "upgrade arbiter" in ahead.stderr
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM alembic_version"))
    engine.dispose()
    behind = cli("agents", "list", env=env)
    assert behind.exit_code == 10 and "arbiter db upgrade" in behind.stderr


def test_data_command_before_init_exits_10(clean_env):
    result = cli("agents", "list")
    assert result.exit_code == 10
    assert "run `arbiter init`" in result.stderr
    assert not (Path(clean_env["ARBITER_DATA_DIR"]) / "arbiter.db").exists()


def test_downgrade_to_an_unknown_revision_is_invalid_input(sql_url: str, clean_env):
    assert cli("db", "upgrade", "--database-url", sql_url).exit_code == 0
    result = cli("db", "downgrade", "nonsense", "--database-url", sql_url)
    assert result.exit_code == 2, result


@pytest.mark.postgres
@pytest.mark.slow
def test_four_concurrent_upgrades_on_a_fresh_postgres_all_succeed(clean_env):
    """The advisory lock in env.py serialises them; the waiters find the schema at head."""
    with fresh_postgres_database("race") as url:
        procs = [subprocess.Popen([sys.executable, "-m", "arbiter_cli", "db", "upgrade",
                                   "--database-url", url], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(4)]
        results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
        assert [code for _, _, code in results] == [0, 0, 0, 0], results
        assert cli("db", "check", "--database-url", url).exit_code == 0


def test_0006_backfills_the_capabilities_the_writer_writes(sql_url: str, clean_env, test_settings):
    """Downgrading past 0006 drops agents.capabilities; upgrading again fills it from the child
    rows with the very string register writes (awkward labels included), without drift."""
    from arbiter_cli.adapters.sql.capabilities import decode

    assert cli("init", "--database-url", sql_url).exit_code == 0
    env = {"ARBITER_DATABASE__URL": sql_url}
    for agent_id, labels in (("a", ["x|sFoo", "B=%7C", "Ä"]), ("b", []), ("c", ["%"])):
        flags = [arg for label in labels for arg in ("--specialization", label)]
        done = cli("agents", "register", "--id", agent_id, "--name", agent_id, "--model-family",
                   "m", "--task-type", "code-review", "--task-type", "testing",
                   "--language", "Python", "--language", "go", *flags, env=env)
        assert done.exit_code == 0, done
    engine = _engine(sql_url, test_settings)
    try:
        select = text("SELECT id, capabilities FROM agents ORDER BY id")
        with engine.connect() as conn:
            written = conn.execute(select).all()
        assert decode(written[0][1])[2] and sorted(decode(written[0][1])[2]) == sorted(
            ["x|sFoo", "B=%7C", "Ä"])
        migrations.downgrade(engine, "0005_arm_change_detector", io.StringIO())
        assert "capabilities" not in {c["name"] for c in inspect(engine).get_columns("agents")}
        migrations.upgrade(engine, "head", io.StringIO())
        with engine.connect() as conn:
            assert conn.execute(select).all() == written
        assert migrations.check(engine) == []
    finally:
        engine.dispose()
