"""`arbiter route …` through main(): the §3.4 document, exit codes 8 and 9, idempotency."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import cli

DECISION_FIELDS = {"decision_id", "task_id", "task_type", "requirements", "agent_id", "strategy",
                   "seed", "explored", "confidence", "candidates", "excluded", "config_hash",
                   "latency_us", "created_at", "status", "meta"}


@pytest.fixture
def fleet(initialized):  # type: ignore[no-untyped-def]
    for i in range(2):
        assert cli("agents", "register", "--id", f"rev-{i}", "--name", "R", "--model-family", "x",
                   "--task-type", "code-review", "--language", "Python",
                   "--capacity", "1").exit_code == 0
    return initialized


def test_route_task_json_is_the_decision_document(fleet):
    result = cli("--json", "--correlation-id", "c-1", "route", "task", "--task-type",
                 "code-review", "--task-id", "PR-1", "--seed", "9")
    assert result.exit_code == 0, result
    doc = result.json()
    assert DECISION_FIELDS <= set(doc)
    assert doc["task_id"] == "PR-1" and doc["seed"] == 9 and doc["status"] == "open"
    assert doc["strategy"] == "thompson" and 0.0 <= doc["confidence"] <= 1.0
    assert {c["agent_id"] for c in doc["candidates"]} == {"rev-0", "rev-1"}
    assert doc["meta"]["durability"] == "committed" and doc["meta"]["correlation_id"] == "c-1"
    assert doc["created_at"].endswith("Z") and len(doc["config_hash"]) == 64
    again = cli("--json", "route", "task", "--task-type", "code-review", "--task-id", "PR-1").json()
    assert again["already_routed"] is True and again["decision_id"] == doc["decision_id"]


def test_dry_run_prints_the_document_with_a_null_id(fleet):
    doc = cli("--json", "route", "task", "--task-type", "code-review", "--dry-run").json()
    assert doc["decision_id"] is None
    assert cli("--json", "agents", "stats").json()["total_active_tasks"] == 0


def test_exit_8_and_9_are_kept_apart(fleet):
    none = cli("--json", "route", "task", "--task-type", "code-review", "--language", "Rust")
    assert none.exit_code == 8 and none.error()["code"] == "no_capable_agent"
    assert none.error()["details"]["excluded"] == {"language": 2}
    for _ in range(2):
        assert cli("route", "task", "--task-type", "code-review").exit_code == 0
    full = cli("--json", "route", "task", "--task-type", "code-review")
    assert full.exit_code == 9 and full.error()["details"]["excluded"] == {"capacity": 2}


def test_outcome_idempotency_conflict_and_unknown(fleet):
    decision = cli("--json", "route", "task", "--task-type", "code-review", "--task-id",
                   "T").json()
    first = cli("--json", "route", "outcome", decision["decision_id"], "--success",
                "--quality", "0.8", "--tokens", "1200")
    assert first.exit_code == 0 and first.json()["status"] == "succeeded"
    same = cli("--json", "route", "outcome", "--task-id", "T", "--success", "--quality", "0.8",
               "--tokens", "1200")
    assert same.exit_code == 0 and same.json()["already_recorded"] is True
    different = cli("--json", "route", "outcome", "--task-id", "T", "--failure")
    assert different.exit_code == 5
    unknown = cli("--json", "route", "outcome", "01900000-0000-7000-8000-000000000000",
                  "--success")
    assert unknown.exit_code == 4
    assert cli("route", "outcome", "--success").exit_code == 2
    assert cli("route", "outcome", decision["decision_id"]).exit_code == 2


def test_explain_history_stats_and_reap(fleet):
    decision = cli("--json", "route", "task", "--task-type", "code-review", "--seed",
                   "4").json()
    shown = cli("route", "explain", decision["decision_id"])
    assert shown.exit_code == 0
    assert "seed 4" in shown.stdout and "candidates" in shown.stdout
    assert cli("--json", "route", "explain", decision["decision_id"]).json() | {"meta": None} \
        == decision | {"meta": None}
    history = cli("--json", "route", "history", "--since", "1h").json()
    assert history["count"] == 1 and history["items"][0]["decision_id"] == decision["decision_id"]
    assert cli("route", "history", "--since", "yesterday").exit_code == 2
    stats = cli("--json", "route", "stats", "--by", "task-type").json()
    assert stats["decisions"] == 1 and stats["open"] == 1
    assert cli("--json", "route", "reap").json()["count"] == 0


def test_route_from_a_file(fleet, tmp_path: Path):
    path = tmp_path / "task.json"
    path.write_text(json.dumps({"task_type": "code-review", "task_id": "F-1", "priority": 9,
                                "languages": ["python"]}))
    doc = cli("--json", "route", "task", "--file", str(path)).json()
    assert doc["task_id"] == "F-1" and doc["requirements"]["priority"] == 9
    bad = cli("--json", "route", "task", "--task-type", "code-review", "--priority", "11")
    assert bad.exit_code == 2 and bad.error()["details"]["field"] == "priority"


def test_simulate_json_shape_and_determinism(clean_env, tmp_path: Path):
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({"best": 0.9, "a": 0.5, "b": 0.5, "c": 0.5, "d": 0.5}))
    args = ["--json", "route", "simulate", "--tasks", "600", "--strategy", "all", "--seed", "3",
            "--truth", str(truth)]
    doc = cli(*args).json()
    assert doc["best_agent"] == "best" and doc["tasks"] == 600 and doc["seed"] == 3
    assert [s["strategy"] for s in doc["strategies"]] == ["thompson", "ucb", "epsilon-greedy",
                                                          "weighted", "thompson-stationary"]
    for entry in doc["strategies"]:
        assert sum(entry["counts"].values()) == 600
        assert set(entry) >= {"best_agent_share", "best_agent_share_last_500",
                              "cumulative_regret", "counts"}
    assert cli(*args).json()["strategies"] == doc["strategies"]
    assert cli("route", "simulate", "--strategy", "random").exit_code == 2


def test_simulate_a_scenario_with_runs_reports_intervals_and_curves(clean_env):
    """--scenario picks a built-in fleet and its task count; --runs K gives a 95 % interval
    around the mean regret and 100-point curves (SPEC 3.8)."""
    doc = cli("--json", "route", "simulate", "--scenario", "drift", "--strategy", "thompson",
              "--runs", "2", "--tasks", "400").json()
    assert (doc["scenario"], doc["runs"], doc["tasks"]) == ("drift", 2, 400)
    assert doc["truth"]["a"] == [[0, 0.9], [2000, 0.4]]
    entry = doc["strategies"][0]
    low, high = entry["regret_ci95"]
    assert low <= entry["cumulative_regret"] <= high
    assert len(entry["regret_curve"]) == 100 and entry["regret_curve"][-1][0] == 400
    assert entry["regret_curve"][-1][1] == pytest.approx(entry["cumulative_regret"], abs=1e-3)
    assert len(entry["share_curve"]) == 100


def test_simulate_truth_takes_schedules_and_late_arrivals(clean_env, tmp_path: Path):
    """A schedule changes an agent's success mid-run; arrives_at keeps an agent out until then."""
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({"a": [[0, 0.9], [150, 0.1]], "b": 0.5,
                                 "late": {"p": 0.8, "arrives_at": 250}}))
    doc = cli("--json", "route", "simulate", "--truth", str(truth), "--tasks", "300",
              "--strategy", "weighted").json()
    assert doc["best_agent"] == "late"
    assert doc["truth"]["late"] == {"p": 0.8, "arrives_at": 250, "capacity": 1000}
    counts = doc["strategies"][0]["counts"]
    assert 0 < counts["late"] <= 50 and sum(counts.values()) == 300


@pytest.mark.parametrize(("args", "field"), [
    (["--scenario", "easy", "--truth", "x.json"], "scenario"),
    (["--scenario", "rainy"], "scenario"),
])
def test_simulate_rejects_bad_scenarios(clean_env, args, field):
    result = cli("--json", "route", "simulate", *args)
    assert result.exit_code == 2 and result.error()["details"]["field"] == field


@pytest.mark.parametrize(("truth", "field"), [
    ({"a": [[0, 0.9], [10, "x"]]}, "truth.a"),
    ({"a": []}, "truth.a"),
    ({"a": {"p": 0.5, "colour": 1}}, "truth.a.colour"),
    ({"a": {"arrives_at": 5}}, "truth.a.p"),
    ({"a": {"p": 0.5, "arrives_at": 5}}, "truth"),
])
def test_simulate_rejects_bad_truth_documents(clean_env, tmp_path: Path, truth, field):
    """Each mistake is one line naming the field, exit 2."""
    path = tmp_path / "truth.json"
    path.write_text(json.dumps(truth))
    result = cli("--json", "route", "simulate", "--truth", str(path), "--tasks", "5")
    assert result.exit_code == 2, result
    assert result.error()["details"]["field"] == field


def test_simulate_plot_writes_a_png(clean_env, tmp_path: Path):
    """--plot draws the curves to a PNG file (matplotlib from the soak extra)."""
    pytest.importorskip("matplotlib")
    target = tmp_path / "close.png"
    doc = cli("--json", "route", "simulate", "--scenario", "close", "--tasks", "200",
              "--strategy", "thompson", "--plot", str(target)).json()
    assert doc["plot"] == str(target)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_simulate_plot_without_matplotlib_is_one_clear_error(clean_env, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch):
    """Without the soak extra, --plot exits 2 naming what to install, and writes nothing."""
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    target = tmp_path / "x.png"
    result = cli("route", "simulate", "--tasks", "5", "--strategy", "weighted", "--plot",
                 str(target))
    assert result.exit_code == 2
    assert "install arbiter[soak]" in result.stderr and "Traceback" not in result.stderr
    assert not target.exists()


def test_explain_shows_the_outcome_as_words_not_a_python_dict(fleet):
    decision = cli("--json", "route", "task", "--task-type", "code-review", "--task-id", "PR-9"
                   ).json()["decision_id"]
    assert cli("route", "outcome", "--task-id", "PR-9", "--success", "--quality", "0.9"
               ).exit_code == 0
    shown = cli("route", "explain", decision)
    assert shown.exit_code == 0, shown
    line = next(x for x in shown.stdout.splitlines() if x.startswith("outcome:"))
    assert line == "outcome: success True, quality 0.9"
