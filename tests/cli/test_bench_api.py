"""``arbiter bench --workload api``: route plus outcome over HTTP against a real ``arbiter
serve`` subprocess on a scratch store (SPEC §13.1), and the arguments it refuses."""

from __future__ import annotations

import json

import pytest

from tests.cli.test_long_runs_progress import events
from tests.helpers import cli


@pytest.mark.slow
def test_api_workload_routes_and_reports_over_http_on_sqlite(clean_env: dict[str, str],
                                                             monkeypatch: pytest.MonkeyPatch):
    from arbiter_cli.observability import progress

    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    result = cli("--json", "bench", "--workload", "api", "--backend", "sqlite", "--agents", "5",
                 "--processes", "2", "--seconds", "1")
    assert result.exit_code == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["workload"] == "api" and found["processes"] == 2
    assert found["server_workers"] == 1 and found["errors"] == {}
    decisions = found["decisions"]
    assert decisions > 0 and found["throughput"]["decisions"] > 0
    assert set(found["operations"]) == {"route", "outcome", "e2e"}
    assert found["operations"]["route"]["samples"] == decisions
    server = found["server"]
    assert server["exit_code"] == 0  # stopped by SIGTERM, gracefully
    assert server["requests"] == 2 * decisions
    assert server["cpu_s"] > 0 and server["cpu_per_request_ms"] > 0
    if server["profiler"] is not None:  # py-spy, when installed and allowed to read serve
        assert 0 <= server["outside_services"] <= 1
        assert server["own_cpu_per_request_ms"] <= server["cpu_per_request_ms"]
    assert found["capacity_never_exceeded"] is True and found["audit_verifies"] is True
    assert found["audit_events"] >= 2 * decisions  # every route and outcome is audited
    phases = {e["phase"] for e in events(result.stderr, "bench.progress")}
    assert "routing and reporting over HTTP" in phases


@pytest.mark.parametrize(("flags", "says"), [
    (["--workload", "api"], "--workload api needs --backend sqlite or postgres"),
    (["--workload", "e2e", "--server-workers", "2"], "--server-workers > 1 needs --workload api"),
    (["--workload", "route", "--backend", "sqlite", "--processes", "2"],
     "--processes > 1 needs --workload e2e or api"),
])
def test_api_arguments_that_cannot_work_are_refused_in_one_line(
        clean_env: dict[str, str], flags: list[str], says: str):
    result = cli("--json", "bench", *flags, "--seconds", "1")
    assert result.exit_code == 2, result.stderr
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert says in json.loads(line)["error"]["message"]


def test_server_workers_must_be_at_least_one(clean_env: dict[str, str]):
    result = cli("bench", "--workload", "api", "--backend", "sqlite", "--server-workers", "0")
    assert result.exit_code == 2
    assert "--server-workers" in result.stderr
