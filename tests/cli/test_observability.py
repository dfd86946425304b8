"""SPEC §9 through ``main()``: one correlation id from the CLI call to the decision row, the
audit chain, the JSON logs and the spans; logs on stderr only; metrics files; exporters."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import AGENT
from tests.helpers import CliResult, cli

CORRELATION = "order #42 / retry:1"  # an id is a string, whatever it looks like
LOGS = ("--log-format", "json", "--log-level", "info")


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Every span the commands of the test export (the tracer provider's test hook)."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from arbiter_cli.observability import tracing

    exporter = InMemorySpanExporter()
    monkeypatch.setattr(tracing, "INJECTED_EXPORTER", exporter)
    yield exporter
    exporter.shutdown()


def log_lines(result: CliResult) -> list[dict[str, Any]]:
    """Every stderr line, each of which must be a JSON object."""
    lines = result.stderr.splitlines()
    events = [json.loads(line) for line in lines]
    assert all(isinstance(e, dict) for e in events)
    return events


def only_the_result(result: CliResult) -> dict[str, Any]:
    assert result.stdout.count("\n") == 1 and result.stdout.endswith("}\n"), result
    return result.json()


def database(env: dict[str, str]) -> sqlite3.Connection:
    return sqlite3.connect(Path(env["ARBITER_DATA_DIR"]) / "arbiter.db")


def test_one_correlation_id_follows_a_task_through_logs_rows_audit_and_spans(initialized, spans):
    assert cli("agents", "register", *AGENT).exit_code == 0
    spans.clear()
    routed = cli("--correlation-id", CORRELATION, *LOGS, "--json", "route", "task",
                 "--task-type", "code-editing", "--task-id", "T-1")
    assert routed.exit_code == 0, routed
    decision = only_the_result(routed)
    assert decision["meta"]["correlation_id"] == CORRELATION
    assert decision["correlation_id"] == CORRELATION
    closed = cli("--correlation-id", CORRELATION, *LOGS, "--json", "route", "outcome",
                 "--task-id", "T-1", "--success", "--quality", "0.9")
    assert closed.exit_code == 0, closed
    assert only_the_result(closed)["meta"]["correlation_id"] == CORRELATION

    for result, command, event in ((routed, "route task", "route.decided"),
                                   (closed, "route outcome", "route.outcome")):
        events = log_lines(result)
        assert {e["event"] for e in events} >= {event, "command.end"}
        assert all(e["correlation_id"] == CORRELATION for e in events)
        assert all(e["command"] == command and e["level"] in ("info", "warning")
                   for e in events)
        assert next(e for e in events if e["event"] == event)["tenant"] == "default"

    with database(initialized) as conn:
        row = conn.execute("SELECT correlation_id, status FROM decisions WHERE task_id = 'T-1'")
        assert row.fetchall() == [(CORRELATION, "succeeded")]
        audited = conn.execute("SELECT action FROM audit_events WHERE correlation_id = ? "
                               "ORDER BY seq", (CORRELATION,)).fetchall()
    assert [a for (a,) in audited] == ["route.task", "route.outcome"]

    finished = spans.get_finished_spans()
    names = [s.name for s in finished]
    assert {"arbiter route task", "arbiter route outcome", "security.admit", "routing.route",
            "routing.outcome"} <= set(names)
    assert any(name.startswith("db ") for name in names)
    assert all(s.attributes["correlation_id"] == CORRELATION for s in finished)
    by_id = {s.context.span_id: s for s in finished}
    route = next(s for s in finished if s.name == "routing.route")
    command = next(s for s in finished if s.name == "arbiter route task")
    assert route.parent.span_id == command.context.span_id
    assert command.attributes["tenant"] == "default" and command.parent is None
    statements = [s for s in finished if s.name.startswith("db ")
                  and s.context.trace_id == command.context.trace_id]
    assert any(by_id[s.parent.span_id].name == "routing.route" for s in statements)
    assert {s.attributes["db.system"] for s in statements} == {"sqlite"}


def test_a_quiet_run_writes_nothing_on_stderr_and_errors_still_get_their_line(initialized):
    quiet = cli("--json", "agents", "list")
    assert quiet.exit_code == 0 and quiet.stderr == ""
    failed = cli("--json", *LOGS, "agents", "show", "ghost")
    assert failed.exit_code == 4
    lines = [json.loads(line) for line in failed.stderr.splitlines()]
    assert lines[0]["error"]["code"] == "not_found"  # the error object comes first
    assert lines[-1]["event"] == "command.end" and lines[-1]["exit_code"] == 4


def test_console_format_and_debug_level(initialized):
    result = cli("--log-format", "console", "--log-level", "debug", "agents", "list")
    assert result.exit_code == 0
    assert "command.start" in result.stderr and "db.call" in result.stderr
    assert not result.stderr.lstrip().startswith("{")
    assert "correlation_id=" in result.stderr


def test_stdlib_logging_goes_through_the_same_pipeline(initialized):
    """alembic logs through the stdlib: its lines come out as JSON with the correlation id."""
    result = cli("--correlation-id", "mig-1", *LOGS, "db", "upgrade")
    assert result.exit_code == 0, result
    events = log_lines(result)
    alembic = [e for e in events if e.get("logger", "").startswith("alembic")]
    assert alembic and all(e["correlation_id"] == "mig-1" for e in alembic)


def test_an_invalid_configuration_still_reports_one_line(clean_env):
    result = cli("--log-format", "json", "agents", "list",
                 env={"ARBITER_ROUTING__STRATEGY": "bogus"})
    assert result.exit_code == 3
    assert result.stderr.startswith("error: invalid configuration")
    bad_flag = cli("--log-level", "loud", "agents", "list")
    assert bad_flag.exit_code == 3 and "logging.level" in bad_flag.stderr


def test_the_console_exporter_writes_spans_to_stderr_never_stdout(initialized):
    result = cli("--json", "agents", "list",
                 env={"ARBITER_OBSERVABILITY__TRACING__EXPORTER": "console"})
    assert result.exit_code == 0, result
    only_the_result(result)
    assert '"name": "arbiter agents list"' in result.stderr
    assert '"name": "agents.list"' in result.stderr


def test_otlp_without_the_extra_exits_2_naming_it(initialized):
    result = cli("agents", "list", env={"ARBITER_OBSERVABILITY__TRACING__EXPORTER": "otlp"})
    assert result.exit_code == 2
    assert "install arbiter[otel]" in result.stderr


def test_metrics_file_holds_the_runs_routing_and_database_figures(initialized, tmp_path: Path):
    from prometheus_client.parser import text_string_to_metric_families

    assert cli("agents", "register", *AGENT).exit_code == 0
    path = tmp_path / "route.prom"
    assert cli("--metrics-file", str(path), "route", "task", "--task-type", "code-editing",
               "--strategy", "ucb").exit_code == 0
    assert cli("--metrics-file", str(path), "route", "task", "--task-type",
               "testing").exit_code == 8
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(path.read_text())
               for s in family.samples}
    refused = (("explored", "false"), ("result", "no_capable_agent"), ("strategy", "thompson"))
    assert samples[("arbiter_routing_decisions_total", refused)] == 1
    assert samples[("arbiter_commands_total", (("command", "route task"),
                                               ("result", "exit_8")))] == 1
    assert samples[("arbiter_db_call_seconds_count", (("operation", "select"),))] >= 1
    assert samples[("arbiter_breaker_state", ())] == 0
    assert not any(name.endswith("_created") for name, _ in samples)

    path.unlink()
    assert cli("--metrics-file", str(path), "route", "task", "--task-type", "code-editing",
               "--strategy", "ucb").exit_code == 0
    routed = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for family in text_string_to_metric_families(path.read_text())
              for s in family.samples}
    decided = [v for (name, labels), v in routed.items()
               if name == "arbiter_routing_decisions_total" and ("strategy", "ucb") in labels
               and ("result", "routed") in labels]
    assert decided == [1]
    assert routed[("arbiter_routing_decision_seconds_count", ())] == 1


def test_help_and_a_quiet_command_import_no_observability_library(initialized):
    probe = ("import sys\n"
             "from arbiter_cli.cli.app import main\n"
             "code = main(sys.argv[1:])\n"
             "heavy = [m for m in ('structlog', 'prometheus_client', 'opentelemetry.sdk')\n"
             "         if m in sys.modules]\n"
             "sys.stderr.write(repr(heavy))\n"
             "raise SystemExit(code)\n")
    for argv in (["--help"], ["config", "validate"], ["agents", "list"]):
        done = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True,
                              text=True, timeout=120, env=os.environ)
        assert done.returncode == 0, done
        assert done.stderr.endswith("[]"), (argv, done.stderr)


def test_database_errors_are_counted_and_the_failed_command_span_says_why(clean_env, spans,
                                                                        tmp_path: Path):
    from prometheus_client.parser import text_string_to_metric_families

    path = tmp_path / "down.prom"
    result = cli("--metrics-file", str(path), "agents", "list",
                 env={"ARBITER_DATABASE__URL": "postgresql+psycopg2://arbiter@127.0.0.1:1/none",
                      "ARBITER_DATABASE__CONNECT_TIMEOUT": "1s"})
    assert result.exit_code == 10, result
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(path.read_text())
               for s in family.samples}
    assert samples[("arbiter_db_errors_total", (("kind", "operational"),))] >= 1
    command = next(s for s in spans.get_finished_spans() if s.name == "arbiter agents list")
    assert command.attributes["error.code"] in ("storage_unavailable", "schema_outdated")
    assert command.attributes["exit_code"] == 10
    assert command.status.status_code.name == "ERROR"
