"""The CLI contract of SPEC §0 and §5: JSON envelopes, meta, help, and every agents command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from arbiter_cli.adapters.sql.schema_version import HEAD
from tests.cli.conftest import AGENT
from tests.helpers import cli, cli_commands


def test_register_prints_the_flat_agent_with_meta(initialized):
    result = cli("--json", "--correlation-id", "corr-42", "agents", "register", *AGENT)
    assert result.exit_code == 0, result
    doc = result.json()
    assert doc["id"] == "coder-1" and doc["languages"] == ["Python"]
    assert doc["meta"] == {"correlation_id": "corr-42", "command": "agents register",
                           "tenant": "default", "durability": "committed"}
    assert result.stdout.count("\n") == 1


def test_json_and_correlation_id_also_work_after_the_command_and_from_the_environment(initialized):
    result = cli("agents", "register", *AGENT, "--json",
                 env={"ARBITER_CORRELATION_ID": "from-env"})
    assert result.json()["meta"]["correlation_id"] == "from-env"


def test_list_is_the_items_envelope_and_pages(initialized):
    for i in range(5):
        assert cli("agents", "register", "--id", f"a{i}", "--name", "n", "--model-family", "x",
                   "--task-type", "testing").exit_code == 0
    first = cli("--json", "agents", "list", "--limit", "3").json()
    assert set(first) == {"items", "count", "next_cursor", "meta"}
    assert [a["id"] for a in first["items"]] == ["a0", "a1", "a2"] and first["count"] == 3
    second = cli("--json", "agents", "list", "--limit", "3", "--cursor", first["next_cursor"]).json()
    assert [a["id"] for a in second["items"]] == ["a3", "a4"]
    assert second["next_cursor"] is None


def test_human_list_is_a_table_on_stdout_and_nothing_on_stderr(initialized):
    assert cli("agents", "register", *AGENT).exit_code == 0
    result = cli("agents", "list")
    assert result.exit_code == 0
    assert "coder-1" in result.stdout and "Coder One" in result.stdout
    assert result.stderr == ""


def test_register_from_json_lines_on_stdin(initialized):
    lines = "\n".join(json.dumps({"id": f"bulk-{i}", "name": "b", "model_family": "x",
                                  "task_types": ["testing"]}) for i in range(150))
    result = cli("--json", "agents", "register", "--file", "-", input=lines)
    assert result.exit_code == 0, result
    assert result.json()["count"] == 150
    assert cli("--json", "agents", "list", "--limit", "0").json()["count"] == 150


def test_query_items_carry_score_components_and_reasons(initialized):
    assert cli("agents", "register", *AGENT, "--specialization", "backend").exit_code == 0
    doc = cli("--json", "agents", "query", "--task-type", "code-editing", "--language", "Python",
              "--prefer-specialization", "backend").json()
    item = doc["items"][0]
    assert item["agent"]["id"] == "coder-1"
    assert item["match_score"] == pytest.approx(0.3 + 0.3 * 0.8 + 0.2 * 0.7 + 0.2)
    assert set(item["components"]) == {"fit", "success", "quality", "load"}
    assert item["reasons"] == ["supports code-editing", "has Python", "prefers backend",
                               "success 80.0%", "utilization 0%"]


def test_update_status_heartbeat_record_remove(initialized):
    assert cli("agents", "register", *AGENT).exit_code == 0
    updated = cli("--json", "agents", "update", "coder-1", "--capacity", "8",
                  "--expect-version", "1").json()
    assert updated["capacity"] == 8 and updated["version"] == 2
    status = cli("--json", "agents", "status", "coder-1", "draining", "--reason", "deploy").json()
    assert (status["status"], status["status_reason"]) == ("draining", "deploy")
    assert cli("--json", "agents", "heartbeat", "coder-1").json()["version"] == 4
    recorded = cli("--json", "agents", "record", "coder-1", "--failure", "--latency-ms", "250",
                   "--task-type", "code-editing").json()
    assert recorded["performance"] == {"success_rate": 0.0, "average_quality": 0.0,
                                       "average_latency_ms": 250.0, "task_count": 1}
    stale = cli("--json", "agents", "update", "coder-1", "--name", "x", "--expect-version", "1")
    assert stale.exit_code == 5
    removed = cli("--json", "agents", "remove", "coder-1", "--yes").json()
    assert removed["removed"] is True
    assert cli("agents", "show", "coder-1").exit_code == 4


def test_active_tasks_admin_correction_and_stats(initialized):
    assert cli("agents", "register", *AGENT).exit_code == 0
    assert cli("agents", "update", "coder-1", "--active-tasks", "2").exit_code == 0
    stats = cli("--json", "agents", "stats").json()
    assert stats["busy"] == 1 and stats["total_active_tasks"] == 2
    assert stats["mean_utilization"] == 0.5
    assert "busy / idle" in cli("agents", "stats").stdout


def test_cleanup_dry_run_lists_without_changing(initialized):
    assert cli("agents", "register", *AGENT).exit_code == 0
    dry = cli("--json", "agents", "cleanup", "--older-than", "0s", "--dry-run").json()
    assert [a["id"] for a in dry["items"]] == ["coder-1"] and dry["dry_run"] is True
    assert cli("--json", "agents", "show", "coder-1").json()["status"] == "available"
    done = cli("--json", "agents", "cleanup", "--older-than", "0s", "--yes").json()
    assert done["count"] == 1
    assert cli("--json", "agents", "show", "coder-1").json()["status"] == "offline"
    assert cli("agents", "cleanup", "--older-than", "soon").exit_code == 2


def test_init_is_idempotent_and_prints_the_admin_token_once(clean_env):
    import os
    import stat

    first = cli("--json", "init").json()
    assert first["tenant"] == "default" and first["revision"] == HEAD
    assert first["admin_token"].startswith("arb_")
    credentials = Path(first["credentials_file"])
    assert stat.S_IMODE(os.stat(credentials).st_mode) == 0o600
    assert first["admin_token"] in credentials.read_text()
    again = cli("--json", "init").json()
    assert again["created"] is False and again["revision"] == first["revision"]
    assert again["admin_token"] is None and again["credentials_file"] is None
    assert cli("--json", "whoami").json()["role"] == "admin"


@pytest.mark.postgres
def test_init_and_register_on_postgres(clean_env, pg_database):
    env = {"ARBITER_DATABASE__URL": pg_database}
    assert cli("init", env=env).exit_code == 0
    assert cli("agents", "register", *AGENT, env=env).exit_code == 0
    assert cli("--json", "agents", "list", env=env).json()["items"][0]["id"] == "coder-1"


def test_config_show_masks_secrets_and_names_the_layer(clean_env):
    config_dir = Path(clean_env["ARBITER_CONFIG_DIR"])
    (config_dir / "settings.toml").write_text(
        '[default.database]\nurl = "postgresql+psycopg2://app@db.example/arbiter"\n'
        '[default.routing]\nstrategy = "ucb"\n')
    (config_dir / ".secrets.toml").write_text(
        '[default.database]\npassword = "canary-s3cr3t"\n')
    result = cli("--json", "config", "show", env={"ARBITER_ROUTING__HALF_LIFE": "50"})
    assert result.exit_code == 0, result
    assert "canary-s3cr3t" not in result.stdout + result.stderr
    doc = result.json()["settings"]
    assert doc["database.password"] == {"value": "***", "source": ".secrets.toml [default]"}
    assert doc["routing.strategy"]["source"] == "settings.toml [default]"
    assert doc["routing.half_life"] == {"value": 50, "source": "environment"}
    assert doc["routing.weights.performance"]["source"] == "default"
    assert "***" in result.json()["database_url"]
    human = cli("config", "show")
    assert "canary-s3cr3t" not in human.stdout + human.stderr


def test_every_command_has_help_with_an_example():
    commands = cli_commands()
    assert {"agents register", "agents query", "db check", "config show", "init", "demo",
            "bench"} <= set(commands)
    for name, command in commands.items():
        assert command.help and "Example:" in command.help, name
        result = cli(*name.split(), "--help")
        assert result.exit_code == 0 and "Example" in result.stdout, name


def _imported_after(*args: str) -> set[str]:
    code = ("import sys; from arbiter_cli.cli.app import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(','.join(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         check=True, env={**os.environ, "COLUMNS": "120"})
    return set(out.stdout.strip().splitlines()[-1].split(","))


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["agents", "--help"],
                                  ["serve", "--help"]])
def test_version_and_help_do_not_import_heavy_libraries(args):
    modules = _imported_after(*args)
    heavy = {"sqlalchemy", "alembic", "memray", "numpy", "dynaconf", "opentelemetry",
             "fastapi", "uvicorn", "starlette", "h11"}  # the API server's, imported by serve only
    if args[0].startswith("--"):  # typer validates option values with pydantic: none here
        heavy.add("pydantic")
    assert not {m.split(".")[0] for m in modules} & heavy


def test_help_imports_no_command_module():
    """`arbiter --help` lists the commands from the root's table (cli/app.py COMMANDS)."""
    modules = _imported_after("--help")
    assert not {m for m in modules if m.startswith("arbiter_cli.cli.")} - {
        "arbiter_cli.cli.app", "arbiter_cli.cli.lazy", "arbiter_cli.cli.options",
        "arbiter_cli.cli.render", "arbiter_cli.cli.state",
        # the root's own options and help: small, typer and the standard library only
        "arbiter_cli.cli.helptext", "arbiter_cli.cli.completion", "arbiter_cli.cli.cells",
        "arbiter_cli.cli.coercion"}


def test_help_lists_each_root_command_as_the_loaded_command_would(
        monkeypatch: pytest.MonkeyPatch):
    """The root's table of names and first paragraphs matches the commands themselves: the
    listing of `--help` is the same before and after every command module is loaded."""
    import contextlib
    import io

    import typer.main

    from arbiter_cli.cli.app import COMMANDS, build_app

    monkeypatch.setenv("COLUMNS", "200")
    root = typer.main.get_command(build_app())

    def help_text() -> str:
        with contextlib.redirect_stdout(io.StringIO()) as out:
            assert root.main(["--help"], prog_name="arbiter", standalone_mode=False) == 0
        return out.getvalue()

    lazy = help_text()
    ctx = root.make_context("arbiter", [], resilient_parsing=True)
    loaded = {name: root.get_command(ctx, name) for name in COMMANDS}
    assert all(command is not None and (command.callback or hasattr(command, "list_commands"))
               for command in loaded.values())
    assert "journal" in lazy and lazy == help_text()


def test_agents_list_on_sqlite_imports_only_what_it_needs(initialized):
    """No PostgreSQL dialect or driver, no numpy, no server, no other command group."""
    modules = _imported_after("agents", "list")
    assert "arbiter_cli.cli.agents" in modules and "sqlalchemy" in modules
    unwanted = {"psycopg2", "fastapi", "uvicorn", "numpy", "alembic", "dynaconf", "structlog",
                "opentelemetry", "prometheus_client", "sqlalchemy.dialects.postgresql",
                "arbiter_cli.cli.route", "arbiter_cli.cli.setup", "arbiter_cli.cli.db"}
    assert not unwanted & modules


def test_a_mistyped_root_command_is_refused_with_a_suggestion():
    result = cli("agnets", "list")
    assert result.exit_code == 2
    assert "No such command 'agnets'. Did you mean 'agents'?" in result.stderr


def test_version_prints_the_package_version():
    from arbiter_cli import __version__

    result = cli("--version")
    assert (result.exit_code, result.stdout) == (0, f"arbiter {__version__}\n")


@pytest.mark.slow
def test_demo_runs_as_a_real_process_and_leaves_no_state(clean_env):
    """README's first command: the demo on its own SQLite file, then removed."""
    exe = Path(sys.executable).with_name("arbiter")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "arbiter_cli"]
    done = subprocess.run([*command, "--json", "demo", "--tasks", "200"], capture_output=True,
                          text=True, timeout=300, env=os.environ)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["tasks"] == 200 and len(doc["agents"]) == 8
    assert doc["windows"][-1]["best_agent_share"] > doc["windows"][0]["best_agent_share"]
    data_dir = Path(clean_env["ARBITER_DATA_DIR"])
    assert not (data_dir / "arbiter.db").exists()
    assert not (data_dir / "demo.db").exists()
    human = subprocess.run([*command, "demo", "--tasks", "100"], capture_output=True, text=True,
                           timeout=300, env=os.environ)
    assert human.returncode == 0 and "what the router learned" in human.stdout


def test_demo_drift_reports_the_change_and_the_best_agent_of_each_window(clean_env):
    """`demo --scenario drift`: half-way the best agent changes; windows name the best of their
    time, and the JSON says where the change was."""
    doc = cli("--json", "demo", "--scenario", "drift", "--tasks", "100").json()
    assert (doc["scenario"], doc["changed_at"], doc["best_agent"]) == ("drift", 51, "harbor")
    assert [(w["through_task"], w["best_agent"]) for w in doc["windows"]] == [
        (50, "garnet"), (100, "harbor")]
    bad = cli("--json", "demo", "--scenario", "rainy")
    assert bad.exit_code == 2 and bad.error()["details"]["field"] == "scenario"


def test_metrics_file_is_written_for_node_exporter(initialized, tmp_path: Path):
    from prometheus_client.parser import text_string_to_metric_families

    path = tmp_path / "metrics" / "arbiter.prom"
    path.parent.mkdir()  # arbiter never creates it: tests/cli/test_files.py
    assert cli("--metrics-file", str(path), "agents", "list").exit_code == 0
    samples = {(s.name, s.labels.get("command"), s.labels.get("result")): s.value
               for family in text_string_to_metric_families(path.read_text())
               for s in family.samples}
    assert samples[("arbiter_commands_total", "agents list", "ok")] == 1
    assert ("arbiter_last_success_timestamp_seconds", "agents list", None) in samples
    succeeded_at = samples[("arbiter_last_success_timestamp_seconds", "agents list", None)]
    assert cli("--metrics-file", str(path), "agents", "list", "--status", "bad").exit_code == 2
    after = {(s.name, s.labels.get("result")): s.value
             for family in text_string_to_metric_families(path.read_text())
             for s in family.samples}
    assert after[("arbiter_commands_total", "exit_2")] == 1
    assert after[("arbiter_last_success_timestamp_seconds", None)] == succeeded_at
    assert after[("arbiter_last_run_timestamp_seconds", None)] >= succeeded_at
