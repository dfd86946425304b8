"""The dashboard and the local stack stay true to the metrics arbiter really exports (SPEC §9).

These read files under ``deploy/`` and ``docs/``; a copy of the unit tests without them (the
mutation run's scratch project) skips them with that reason.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from arbiter_cli.observability.metrics import SPECS, exposed_names

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
METRIC = re.compile(r"\b(?:arbiter|process|python)_[a-z0-9_]+\b")
#: What the dashboard must show (issue 7): one metric for each topic.
TOPICS = {
    "routing rate": "arbiter_routing_decisions_total",
    "routing latency": "arbiter_routing_decision_seconds_bucket",
    "outcomes": "arbiter_outcomes_total",
    "agents by status": "arbiter_agents",
    "utilization": "arbiter_fleet_utilization",
    "database latency": "arbiter_db_call_seconds_bucket",
    "database errors": "arbiter_db_errors_total",
    "breaker state": "arbiter_breaker_state",
    "journal backlog": "arbiter_journal_backlog",
    "soak RSS": "arbiter_soak_rss_bytes",
}

pytestmark = pytest.mark.skipif(not DEPLOY.is_dir(), reason="no deploy/ in this copy of the tests")


def load_yaml(path: Path) -> Any:
    import yaml

    return yaml.safe_load(path.read_text())


def dashboard() -> dict[str, Any]:
    document = json.loads((DEPLOY / "grafana" / "arbiter.json").read_text())
    assert isinstance(document, dict)
    return document


def exprs(document: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in document["panels"]
            for target in panel.get("targets", [])]


def test_the_dashboard_is_a_grafana_dashboard_with_prometheus_panels():
    document = dashboard()
    assert document["title"] and document["uid"] and document["schemaVersion"] >= 30
    graphs = [p for p in document["panels"] if p["type"] != "row"]
    assert len(graphs) >= len(TOPICS)
    ids = [p["id"] for p in document["panels"]]
    assert len(ids) == len(set(ids))
    for panel in graphs:
        assert panel["title"] and panel["targets"], panel
        assert panel["datasource"]["type"] == "prometheus"
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        assert [t["refId"] for t in panel["targets"]] == sorted({t["refId"] for t in
                                                                 panel["targets"]})


def test_every_metric_the_dashboard_queries_exists_in_the_registry():
    known = exposed_names() | {"process_resident_memory_bytes", "process_cpu_seconds_total"}
    referenced = {name for expr in exprs(dashboard()) for name in METRIC.findall(expr)}
    assert referenced, "no metric found in the dashboard"
    assert referenced <= known, f"unknown metrics: {sorted(referenced - known)}"


def test_the_dashboard_covers_every_topic():
    referenced = {name for expr in exprs(dashboard()) for name in METRIC.findall(expr)}
    missing = {topic for topic, metric in TOPICS.items() if metric not in referenced}
    assert not missing


def test_the_metric_check_would_catch_a_typo():
    """Control: the regex really extracts names, so a misspelt metric cannot slip through."""
    names = set(METRIC.findall('sum by (x) (rate(arbiter_routing_decisons_total{a="b"}[5m]))'))
    assert names == {"arbiter_routing_decisons_total"}
    assert not names <= exposed_names()


def test_metric_names_follow_prometheus_conventions():
    names = [spec.name for spec in SPECS]
    assert len(names) == len(set(names))
    for spec in SPECS:
        assert re.fullmatch(r"arbiter_[a-z0-9_]+", spec.name)
        assert spec.name.endswith("_total") == (spec.kind == "counter"), spec.name
        assert spec.kind != "histogram" or spec.buckets == tuple(sorted(spec.buckets))
        assert not {"agent_id", "task_id", "tenant", "decision_id"} & set(spec.labels)


def test_prometheus_scrapes_arbiter_serve():
    config = load_yaml(DEPLOY / "prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    arbiter = jobs["arbiter"]
    assert arbiter.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for group in arbiter["static_configs"] for t in group["targets"]]
    assert targets == ["arbiter:8787"]


def test_the_compose_stack_wires_postgres_serve_prometheus_and_grafana():
    stack = load_yaml(DEPLOY / "docker-compose.yml")
    services = stack["services"]
    assert {"postgres", "arbiter", "prometheus", "grafana"} <= set(services)
    assert services["postgres"]["image"] == "postgres:15"
    serve = services["arbiter"]
    assert serve["command"][:1] == ["serve"] and "8787" in serve["command"]
    assert any(str(p).endswith(":8787") for p in serve["ports"])
    assert "@postgres:5432/" in serve["environment"]["ARBITER_DATABASE__URL"]
    assert services["init"]["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (DEPLOY / services["init"]["build"]["dockerfile"].removeprefix("deploy/")).is_file()
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in services["prometheus"]["volumes"]
    mounts = [v.split(":")[0] for v in services["grafana"]["volumes"]]
    for mount in mounts:
        assert (DEPLOY / mount).exists(), mount
    assert "./grafana/arbiter.json" in mounts
    datasource = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


def test_the_dockerfile_installs_arbiter_and_serves_on_8787():
    lines = [line.strip() for line in (DEPLOY / "Dockerfile").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert lines[0].startswith("FROM python:3.11")
    assert any(line.startswith("RUN pip install") for line in lines)
    assert "EXPOSE 8787" in lines and "USER arbiter" in lines
    assert lines[-2] == 'ENTRYPOINT ["arbiter"]'
    assert json.loads(lines[-1].removeprefix("CMD ")) == ["serve", "--host", "0.0.0.0",
                                                          "--port", "8787"]


def test_the_observability_doc_lists_every_metric():
    doc = (ROOT / "docs" / "observability.md").read_text()
    missing = [spec.name for spec in SPECS if f"`{spec.name}`" not in doc]
    assert not missing
