"""What ships for operators outside the package stays true (issue 15, "Docs and deployment"):
the Grafana "Commands" panel, the node_exporter scrape, the soak cron job and its lock, the
image's extras and the CI workflows."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
WORKFLOWS = ROOT / ".github" / "workflows"
#: Figures only a --metrics-file run writes: each run replaces its file, so they never grow.
RUN_ONLY = ("arbiter_commands_total", "arbiter_command_duration_seconds")


def load_yaml(path: Path) -> Any:
    import yaml

    return yaml.safe_load(path.read_text())


def panel_exprs() -> dict[str, list[str]]:
    document = json.loads((DEPLOY / "grafana" / "arbiter.json").read_text())
    return {panel["title"]: [t["expr"] for t in panel.get("targets", [])]
            for panel in document["panels"]}


def test_no_panel_takes_the_rate_of_a_counter_each_run_overwrites():
    """A textfile counter is 1 after every run, so increase()/rate() of it stays near 0."""
    for title, exprs in panel_exprs().items():
        for expr in exprs:
            for name in RUN_ONLY:
                assert not re.search(rf"\b(increase|rate|irate)\(\s*{name}", expr), (title, expr)


def test_the_commands_panel_counts_runs_by_their_timestamps():
    exprs = panel_exprs()["Commands"]
    assert any("changes(arbiter_last_run_timestamp_seconds" in e for e in exprs)
    assert any("arbiter_last_success_timestamp_seconds" in e for e in exprs)


def textfile_dir_of_readme() -> str:
    found = re.findall(r"--metrics-file (/var/lib/node_exporter/[^ ]+)/[^/ ]+\.prom",
                       (ROOT / "README.md").read_text())
    assert found, "README shows no --metrics-file example under /var/lib/node_exporter"
    assert len(set(found)) == 1, found
    return found[0]


def test_prometheus_scrapes_the_node_exporter_the_compose_stack_runs():
    jobs = {job["job_name"]: job for job in load_yaml(DEPLOY / "prometheus.yml")["scrape_configs"]}
    targets = [t for group in jobs["node"]["static_configs"] for t in group["targets"]]
    assert targets == ["node-exporter:9100"]
    services = load_yaml(DEPLOY / "docker-compose.yml")["services"]
    exporter = services["node-exporter"]
    folder = textfile_dir_of_readme()
    assert f"--collector.textfile.directory={folder}" in exporter["command"]
    assert any(str(v).startswith("textfile:") and folder in str(v) for v in exporter["volumes"])
    # arbiter containers write into the same volume
    assert any(str(v) == f"textfile:{folder}" for v in services["arbiter"]["volumes"])


def crontab() -> dict[str, str]:
    variables = {}
    for line in (DEPLOY / "cron" / "arbiter-soak.crontab").read_text().splitlines():
        match = re.fullmatch(r"([A-Z_]+)=(.*)", line.strip())
        if match:
            variables[match[1]] = match[2]
    return variables


def test_the_cron_job_assumes_no_checkout_and_writes_where_readme_says():
    text = (DEPLOY / "cron" / "arbiter-soak.crontab").read_text()
    assert "/opt/arbiter" not in text
    variables = crontab()
    assert Path(variables["SOAK_METRICS_FILE"]).parent == Path(textfile_dir_of_readme())
    assert {"ARBITER_SCRIPTS", "SOAK_ARBITER"} <= set(variables)
    assert '"$ARBITER_SCRIPTS/soak-cron.sh"' in text


def fake_arbiter(tmp_path: Path, seconds: float) -> Path:
    """Stands in for `arbiter soak` (a day long in cron): it marks its start, then sleeps."""
    script = tmp_path / "fake-arbiter"
    script.write_text(f"#!/usr/bin/env bash\ntouch {tmp_path}/started\nsleep {seconds}\n"
                      "echo pass\n")
    script.chmod(0o755)
    return script


def run_cron(tmp_path: Path, arbiter: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "SOAK_ARBITER": str(arbiter), "SOAK_ROOT": str(tmp_path / "runs"),
           "SOAK_KEEP_DAYS": "0"}
    return subprocess.Popen(["bash", str(ROOT / "scripts" / "soak-cron.sh")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_a_soak_started_while_the_last_one_runs_does_not_overlap_it(tmp_path: Path):
    arbiter = fake_arbiter(tmp_path, 4)
    first = run_cron(tmp_path, arbiter)
    deadline = time.monotonic() + 10
    while not (tmp_path / "started").exists():
        assert time.monotonic() < deadline, "the first soak never started"
        time.sleep(0.05)
    (tmp_path / "started").unlink()
    second = run_cron(tmp_path, arbiter)
    out, _ = second.communicate(timeout=10)
    assert second.returncode == 75, out
    assert "still running" in out and out.count("\n") == 1
    assert not (tmp_path / "started").exists(), "a second soak was started"
    first_out, _ = first.communicate(timeout=20)
    assert first.returncode == 0, first_out
    third = run_cron(tmp_path, fake_arbiter(tmp_path, 0))
    out, _ = third.communicate(timeout=10)
    assert third.returncode == 0, out
    assert (tmp_path / "started").exists()


def test_the_image_installs_the_soak_extra():
    lines = [line.strip() for line in (DEPLOY / "Dockerfile").read_text().splitlines()]
    install = next(line for line in lines if line.startswith("RUN pip install"))
    extras = re.search(r'"\.\[([a-z,]+)\]"', install)
    assert extras and "soak" in extras[1].split(","), install


def test_nightly_soaks_under_memray_and_passes_a_database_url_to_postgres_only():
    nightly = load_yaml(WORKFLOWS / "nightly.yml")
    soak = nightly["jobs"]["soak"]
    steps = " ".join(str(step.get("run", "")) for step in soak["steps"])
    assert "--no-memray" not in steps
    assert "memray.bin" in steps and "memray-flamegraph.html" in steps
    matrix = {entry["backend"]: entry["database"] for entry in soak["strategy"]["matrix"]["include"]}
    assert matrix["sqlite"] == ""
    assert matrix["postgres"].startswith("--database-url postgresql")
    assert "--database-url" not in steps.replace("${{ matrix.database }}", "")


def test_ci_tests_three_pythons_with_a_pip_cache_and_a_timeout():
    ci = load_yaml(WORKFLOWS / "ci.yml")
    test = ci["jobs"]["test"]
    assert {"3.11", "3.12", "3.13"} <= set(test["strategy"]["matrix"]["python-version"])
    assert 0 < test["timeout-minutes"] <= 45
    setup = next(s for s in test["steps"] if str(s.get("uses", "")).startswith("actions/setup-python"))
    assert setup["with"]["cache"] == "pip"
    assert all(job.get("timeout-minutes") for job in ci["jobs"].values())
    assert all(job.get("timeout-minutes")
               for job in load_yaml(WORKFLOWS / "nightly.yml")["jobs"].values())
