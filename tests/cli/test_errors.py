"""Bad input gives one clear line (or the §0 JSON error) and its §5.2 exit code; no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.conftest import AGENT
from tests.helpers import cli

#: What ``failure`` reports for the error line a person reads: nothing on stdout, one line on
#: stderr starting with "error: ", no traceback.
ONE_ERROR_LINE = "one error line"


def failure(result) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    """The exit code and the shape of the output: ONE_ERROR_LINE, or the output itself."""
    one_line = (result.stdout == "" and result.stderr.startswith("error: ")
                and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr)
    shape = ONE_ERROR_LINE if one_line else f"stdout={result.stdout!r} stderr={result.stderr!r}"
    return result.exit_code, shape


def json_failure(result) -> tuple[tuple[int, str], dict]:  # type: ignore[no-untyped-def,type-arg]
    """The (exit code, error code) of a failed ``--json`` command and its §0 JSON error object,
    which names the same exit code; nothing may reach stdout."""
    assert result.stdout == "", result.stdout
    error = result.error()
    assert error["exit_code"] == result.exit_code, error
    return (result.exit_code, error["code"]), error


@pytest.mark.parametrize("bad_id", ["bad id", "-leading-dash", "x" * 129, "ünï", ""])
def test_invalid_agent_id_is_exit_2_with_field_and_rule(initialized, bad_id):
    result = cli("--json", "agents", "register", "--id", bad_id, "--name", "n",
                 "--model-family", "x", "--task-type", "testing")
    status, error = json_failure(result)
    assert status == (2, "invalid_input")
    assert error["details"]["field"] == "id"
    assert error["details"]["rule"] in {"pattern", "required"}


def test_invalid_id_on_show_is_exit_2(initialized):
    assert failure(cli("agents", "show", "no spaces allowed")) == (2, ONE_ERROR_LINE)


def test_duplicate_id_is_exit_5(initialized):
    assert cli("agents", "register", *AGENT).exit_code == 0
    result = cli("agents", "register", *AGENT)
    assert failure(result) == (5, ONE_ERROR_LINE)
    assert "already exists" in result.stderr


def test_unknown_agent_is_exit_4(initialized):
    result = cli("--json", "agents", "show", "ghost")
    assert json_failure(result)[0] == (4, "not_found")
    for command in (["agents", "remove", "ghost", "--yes"], ["agents", "heartbeat", "ghost"],
                    ["agents", "status", "ghost", "offline"],
                    ["agents", "record", "ghost", "--success"],
                    ["agents", "update", "ghost", "--capacity", "3"]):
        assert failure(cli(*command)) == (4, ONE_ERROR_LINE)


@pytest.mark.parametrize("quality", ["1.5", "-0.1", "nan", "NaN", "inf", "abc"])
def test_bad_quality_is_exit_2(initialized, quality):
    assert cli("agents", "register", *AGENT).exit_code == 0
    result = cli("--json", "agents", "record", "coder-1", "--success", "--quality", quality)
    status, error = json_failure(result)
    assert status == (2, "invalid_input")
    assert error["details"]["field"] == "quality"
    assert cli("--json", "agents", "show", "coder-1").json()["performance"]["task_count"] == 0


def test_unknown_task_type_is_exit_2_and_lists_the_allowed_ones(initialized):
    result = cli("agents", "register", "--id", "a", "--name", "a", "--model-family", "x",
                 "--task-type", "juggling")
    assert failure(result) == (2, ONE_ERROR_LINE)
    assert "juggling" in result.stderr and "code-review" in result.stderr
    assert failure(cli("agents", "query", "--task-type", "juggling")) == (2, ONE_ERROR_LINE)


def test_malformed_file_is_exit_2_and_writes_nothing(initialized, tmp_path: Path):
    good = {"id": "ok-1", "name": "ok", "model_family": "x", "task_types": ["testing"]}
    path = tmp_path / "agents.jsonl"
    path.write_text(json.dumps(good) + "\n{not json\n")
    result = cli("--json", "agents", "register", "--file", str(path))
    status, error = json_failure(result)
    assert status == (2, "invalid_input")
    assert error["details"] == {"field": "file", "rule": "json"}
    assert "line 2" in error["message"]
    assert cli("--json", "agents", "list").json()["count"] == 0


def test_file_with_an_invalid_record_writes_nothing(initialized, tmp_path: Path):
    records = [{"id": f"a{i}", "name": "n", "model_family": "x", "task_types": ["testing"]}
               for i in range(3)]
    records[2]["capacity"] = 5000
    path = tmp_path / "agents.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    result = cli("--json", "agents", "register", "--file", str(path))
    status, error = json_failure(result)
    assert (status, error["details"]["field"]) == ((2, "invalid_input"), "[2].capacity")
    assert cli("--json", "agents", "list").json()["count"] == 0


def test_invalid_config_value_is_exit_3(initialized):
    result = cli("agents", "list", env={"ARBITER_DATABASE__POOL_SIZE": "lots"})
    assert failure(result) == (3, ONE_ERROR_LINE)
    assert "database.pool_size" in result.stderr


def test_config_validate_lists_every_problem(clean_env):
    result = cli("--json", "config", "validate", env={
        "ARBITER_DATABASE__POOL_SIZE": "0", "ARBITER_ROUTING__STRATEGY": "random",
        "ARBITER_QUERY__WEIGHTS__FIT": "0.9"})
    status, error = json_failure(result)
    assert status == (3, "config_invalid")
    problems = " ".join(error["details"]["problems"])
    for key in ("database.pool_size", "routing.strategy", "query.weights"):
        assert key in problems


@pytest.mark.parametrize("args", [["agents", "list", "--bogus"], ["agents", "frobnicate"],
                                  ["agents", "record", "x", "--quality"], ["nonsense"]])
def test_usage_errors_are_exit_2_one_line(clean_env, args):
    assert failure(cli(*args)) == (2, ONE_ERROR_LINE)


def test_usage_error_with_json_is_the_json_error(clean_env):
    result = cli("--json", "agents", "list", "--bogus")
    status, error = json_failure(result)
    assert status == (2, "invalid_input")
    assert "--bogus" in error["message"]


def test_data_command_before_init_is_exit_10(clean_env):
    result = cli("--json", "agents", "stats")
    status, error = json_failure(result)
    assert status == (10, "storage_unavailable")
    assert "arbiter init" in error["message"]


def test_record_needs_success_or_failure(initialized):
    assert cli("agents", "register", *AGENT).exit_code == 0
    assert failure(cli("agents", "record", "coder-1")) == (2, ONE_ERROR_LINE)


def test_bad_cursor_and_status_are_exit_2(initialized):
    assert failure(cli("agents", "list", "--cursor", "%%%")) == (2, ONE_ERROR_LINE)
    assert failure(cli("agents", "list", "--status", "sleepy")) == (2, ONE_ERROR_LINE)
    assert cli("agents", "register", *AGENT).exit_code == 0
    assert failure(cli("agents", "status", "coder-1", "sleepy")) == (2, ONE_ERROR_LINE)


def test_unreachable_postgres_is_exit_10_without_the_password(clean_env):
    url = "postgresql+psycopg2://arbiter:hunter2secret@127.0.0.1:1/nowhere"
    result = cli("agents", "list", env={"ARBITER_DATABASE__URL": url,
                                        "ARBITER_DATABASE__CONNECT_TIMEOUT": "1s"})
    assert failure(result) == (10, ONE_ERROR_LINE)
    assert "hunter2secret" not in result.stderr


def test_internal_errors_are_exit_70_and_verbose_adds_the_traceback(initialized, monkeypatch):
    from arbiter_cli.services import agents as service

    def explode(*_args, **_kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    monkeypatch.setattr(service.AgentService, "stats", explode)
    quiet = cli("agents", "stats")
    assert failure(quiet) == (70, ONE_ERROR_LINE)
    assert "boom" in quiet.stderr and "--verbose" in quiet.stderr
    loud = cli("--verbose", "agents", "stats")
    assert loud.exit_code == 70
    assert "Traceback" in loud.stderr and "RuntimeError: boom" in loud.stderr
