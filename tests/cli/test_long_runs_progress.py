"""Every long command reports its progress through the one helper (SPEC §16).

Off a terminal (as here: the runner's stderr is no TTY) progress is log events at most every
10 s; the tests shorten that cadence to 0 s so that a short run shows the events it would
log every 10 s when long.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.helpers import cli


@pytest.fixture
def every_step(monkeypatch: pytest.MonkeyPatch) -> None:
    from arbiter_cli.observability import progress

    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)


def events(stderr: str, name: str) -> list[dict[str, Any]]:
    found = []
    for line in stderr.splitlines():
        if line.startswith("{") and f'"{name}"' in line:
            event = json.loads(line)
            if event["event"] == name:
                found.append(event)
    return found


def test_register_from_a_file_logs_its_progress(initialized: Any, every_step: None) -> None:
    lines = "\n".join(json.dumps({"id": f"bulk-{i}", "name": "b", "model_family": "x",
                                  "task_types": ["testing"]}) for i in range(250))
    result = cli("--json", "agents", "register", "--file", "-", input=lines)
    assert result.exit_code == 0, result
    seen = events(result.stderr, "agents.register.progress")
    assert [e["done"] for e in seen] == [100, 200, 250]
    assert {e["total"] for e in seen} == {250}
    assert seen[-1]["eta_s"] == 0.0


def test_a_quick_register_logs_nothing(initialized: Any) -> None:
    lines = "\n".join(json.dumps({"id": f"bulk-{i}", "name": "b", "model_family": "x",
                                  "task_types": ["testing"]}) for i in range(250))
    result = cli("--json", "agents", "register", "--file", "-", input=lines)
    assert result.exit_code == 0, result
    assert "progress" not in result.stderr


def test_demo_logs_its_progress(clean_env: dict[str, str], every_step: None) -> None:
    result = cli("--json", "demo", "--tasks", "30")
    assert result.exit_code == 0, result
    seen = events(result.stderr, "demo.progress")
    assert [e["done"] for e in seen] == list(range(1, 31))
    assert {e["total"] for e in seen} == {30} and seen[0]["phase"] == "simulating tasks"


def test_bench_logs_the_progress_of_each_phase(clean_env: dict[str, str],
                                               every_step: None) -> None:
    result = cli("--json", "bench", "--agents", "50", "--queries", "20", "--seconds", "0.5")
    assert result.exit_code == 0, result
    seen = events(result.stderr, "bench.progress")
    phases = list(dict.fromkeys(e["phase"] for e in seen))
    assert phases == ["registering agents", "timing queries and updates", "query loop"]
    timing = [e for e in seen if e["phase"] == "timing queries and updates"]
    assert timing[-1]["done"] == timing[-1]["total"] == 20 + 20 + 20
    assert {e["total"] for e in seen if e["phase"] == "query loop"} == {0.5}


def test_bench_route_reports_its_cold_warm_up_and_warm_phases(clean_env: dict[str, str],
                                                              every_step: None) -> None:
    result = cli("--json", "bench", "--workload", "route", "--agents", "20", "--queries", "10",
                 "--warm-outcomes", "5")
    assert result.exit_code == 0, result
    seen = events(result.stderr, "bench.progress")
    last = {e["phase"]: (e["done"], e["total"]) for e in seen}
    assert last == {"registering agents": (20, 20), "routing (cold)": (10, 10),
                    "warm-up outcomes": (5, 5), "routing (warm)": (10, 10)}


def test_bench_e2e_reports_the_seconds_spent(clean_env: dict[str, str], every_step: None) -> None:
    result = cli("--json", "bench", "--workload", "e2e", "--agents", "5", "--seconds", "0.5")
    assert result.exit_code == 0, result
    seen = events(result.stderr, "bench.progress")
    assert {e["phase"] for e in seen} == {"routing and reporting"}
    assert {e["total"] for e in seen} == {0.5} and 0 < seen[-1]["done"] <= 0.5
