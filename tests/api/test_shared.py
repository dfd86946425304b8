"""Several servers on one PostgreSQL (SPEC §15 "Proof"): stateless servers share the rate
buckets, the slot claims and one verifiable audit chain; and clients in 4 processes routing
through the API never push an agent past its capacity."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.helpers import cli, fresh_postgres_database, start_server

AGENT = {"id": "coder-1", "name": "Coder One", "model_family": "claude-3.5",
         "task_types": ["code-editing"], "languages": ["python"], "capacity": 3}


@pytest.fixture
def two_servers(clean_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
                ) -> Iterator[tuple[list[str], str, Any]]:
    """Two live servers, each with its own engine, on one fresh PostgreSQL database."""
    from arbiter_cli.config import load_settings

    with fresh_postgres_database("two") as url:
        monkeypatch.setenv("ARBITER_DATABASE__URL", url)
        token = cli("--json", "init").json()["admin_token"]
        settings = load_settings(environ=dict(os.environ))
        first, second = start_server(settings), start_server(settings)
        urls = [next(first), next(second)]
        try:
            yield urls, token, settings
        finally:
            for server in (first, second):
                server.close()


def client(url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


@pytest.mark.postgres
def test_two_servers_share_one_rate_bucket(two_servers: tuple[list[str], str, Any]):
    urls, admin, _ = two_servers
    slow = cli("--json", "tokens", "create", "--role", "viewer", "--name", "slow", "--rate",
               "0.01", "--burst", "4", "--token", admin).json()["token"]
    a, b = client(urls[0], slow), client(urls[1], slow)
    statuses = [(a if i % 2 == 0 else b).get("/v1/whoami").status_code for i in range(6)]
    assert statuses == [200, 200, 200, 200, 429, 429]  # 4 in all, whichever server
    a.close()
    b.close()


@pytest.mark.postgres
def test_two_servers_share_claims_idempotency_and_one_audit_chain(
        two_servers: tuple[list[str], str, Any]):
    urls, admin, _ = two_servers
    a, b = client(urls[0], admin), client(urls[1], admin)
    assert a.post("/v1/agents", json=AGENT).status_code == 200
    first = a.post("/v1/route", json={"task_type": "code-editing", "task_id": "T-1"}).json()
    again = b.post("/v1/route", json={"task_type": "code-editing", "task_id": "T-1"}).json()
    assert again["decision_id"] == first["decision_id"] and again["already_routed"] is True
    assert b.post("/v1/route", json={"task_type": "code-editing"}).status_code == 200
    assert a.post("/v1/route", json={"task_type": "code-editing"}).status_code == 200
    full = b.post("/v1/route", json={"task_type": "code-editing"})
    assert full.status_code == 409 and full.json()["error"]["code"] == "at_capacity"
    assert a.get("/v1/agents/coder-1").json()["active_tasks"] == 3
    done = b.post("/v1/outcomes", json={"task_id": "T-1", "success": True})
    assert done.status_code == 200
    assert a.post("/v1/outcomes", json={"task_id": "T-1", "success": True}
                  ).json()["already_recorded"] is True
    verdicts = [c.get("/v1/audit/verify").json() for c in (a, b)]
    assert all(v["ok"] for v in verdicts)
    assert verdicts[0]["head"] == verdicts[1]["head"]  # one chain, whichever server reads it
    actions = [e["action"] for e in a.get("/v1/audit", params={"limit": 0}).json()["items"]]
    assert actions.count("route.task") >= 3
    a.close()
    b.close()


def _route_until_full(url: str, token: str, n: int, queue: Any) -> None:
    """A client process: route n tasks; report how many were placed and any other answer."""
    placed, refused, other = 0, 0, []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                      timeout=60) as http:
        for _ in range(n):
            answer = http.post("/v1/route", json={"task_type": "code-editing"})
            if answer.status_code == 200:
                placed += 1
            elif answer.status_code == 409:
                refused += 1
            else:
                other.append(answer.status_code)
    queue.put((placed, refused, other))


@pytest.mark.postgres
@pytest.mark.slow
def test_four_client_processes_through_the_api_never_exceed_capacity(
        two_servers: tuple[list[str], str, Any]):
    urls, admin, _ = two_servers
    with client(urls[0], admin) as http:
        fleet = [{**AGENT, "id": f"coder-{i}", "capacity": 2} for i in range(5)]
        assert http.post("/v1/agents", json=fleet).status_code == 200
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_route_until_full,
                               args=(urls[i % 2], admin, 8, queue)) for i in range(4)]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    assert all(other == [] for _, _, other in results), results
    assert sum(placed for placed, _, _ in results) == 10  # 5 agents x capacity 2, exactly
    assert sum(refused for _, refused, _ in results) == 32 - 10
    with client(urls[1], admin) as http:
        agents = http.get("/v1/agents", params={"limit": 0}).json()["items"]
    assert all(a["active_tasks"] <= a["capacity"] for a in agents)
    assert sum(a["active_tasks"] for a in agents) == 10
