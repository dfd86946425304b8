"""The /v1 resources against a live server on SQLite and PostgreSQL (SPEC §15): the CLI's
documents, its admission and its errors, over real HTTP."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.api.conftest import Live
from tests.helpers import cli

AGENT: dict[str, Any] = {"id": "coder-1", "name": "Coder One", "model_family": "claude-3.5",
                         "task_types": ["code-editing"], "languages": ["python"], "capacity": 1}


def register(live: Live, **fields: Any) -> dict[str, Any]:
    with live.client() as http:
        answer = http.post("/v1/agents", json={**AGENT, **fields})
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def test_a_new_user_registers_routes_and_records_through_the_api(live: Live):
    agent = register(live)
    assert agent["id"] == "coder-1" and agent["version"] == 1
    assert agent["meta"]["command"] == "agents register"
    assert agent["meta"]["tenant"] == "default"
    with live.client() as http:
        listed = http.get("/v1/agents").json()
        assert [a["id"] for a in listed["items"]] == ["coder-1"]
        assert listed["count"] == 1 and listed["next_cursor"] is None
        routed = http.post("/v1/route", json={"task_type": "code-editing", "task_id": "T-1"})
        assert routed.status_code == 200, routed.text
        decision = routed.json()
        assert decision["agent_id"] == "coder-1" and decision["status"] == "open"
        again = http.post("/v1/route", json={"task_type": "code-editing", "task_id": "T-1"})
        assert again.json()["decision_id"] == decision["decision_id"]
        assert again.json()["already_routed"] is True
        done = http.post("/v1/outcomes", json={"task_id": "T-1", "success": True,
                                                "quality": 0.9, "latency_ms": 1200})
        assert done.status_code == 200, done.text
        assert done.json()["status"] == "succeeded"
        shown = http.get(f"/v1/decisions/{decision['decision_id']}").json()
        assert shown["status"] == "succeeded"
        history = http.get("/v1/decisions", params={"agent": "coder-1"}).json()
        assert [d["task_id"] for d in history["items"]] == ["T-1"]
        whoami = http.get("/v1/whoami").json()
        assert whoami["role"] == "admin" and whoami["tenant"] == "default"
        verify = http.get("/v1/audit/verify").json()
        assert verify["ok"] is True and verify["events"] > 0


def test_the_api_answers_the_document_the_cli_prints(live: Live):
    register(live)
    with live.client() as http:
        over_http = http.get("/v1/agents/coder-1").json()
    local = cli("--json", "agents", "show", "coder-1", "--token", live.token).json()
    for document in (over_http, local):
        document.pop("meta")
    assert over_http == local


def test_the_correlation_id_goes_in_and_comes_back(live: Live):
    with live.client() as http:
        answer = http.get("/v1/whoami", headers={"X-Correlation-ID": "job-7731"})
        assert answer.headers["X-Correlation-ID"] == "job-7731"
        assert answer.json()["meta"]["correlation_id"] == "job-7731"
        generated = http.get("/v1/whoami")
        assert generated.headers["X-Correlation-ID"] == generated.json()["meta"]["correlation_id"]
        hostile = http.get("/v1/whoami", headers={"X-Correlation-ID": "a b\tc" * 100})
        assert hostile.headers["X-Correlation-ID"] != "a b\tc" * 100


def test_without_a_valid_token_it_is_401_and_the_cli_s_exit_code(live: Live):
    for token in ("", "arb_nope_nope", "Basic abc"):
        with live.client(token) as http:
            answer = http.get("/v1/agents")
        assert answer.status_code == 401, (token, answer.text)
        error = answer.json()["error"]
        assert error["code"] == "unauthenticated" and error["exit_code"] == 6
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_role_below_the_command_s_is_403(live: Live):
    viewer = cli("--json", "tokens", "create", "--role", "viewer", "--name", "v",
                 "--token", live.token).json()["token"]
    with live.client(viewer) as http:
        answer = http.post("/v1/agents", json=AGENT)
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"]["code"] == "forbidden"
        assert http.get("/v1/agents").status_code == 200


def test_invalid_input_is_400_with_the_cli_s_field_and_rule(live: Live):
    with live.client() as http:
        answer = http.post("/v1/agents", json={**AGENT, "capacity": 0})
    assert answer.status_code == 400, answer.text
    over_http = answer.json()["error"]
    local = cli("--json", "agents", "register", "--id", "coder-1", "--name", "Coder One",
                "--model-family", "claude-3.5", "--task-type", "code-editing",
                "--capacity", "0", "--token", live.token)
    assert local.exit_code == 2
    assert over_http["details"] == local.error()["details"]
    assert over_http["exit_code"] == 2


def test_bodies_that_are_not_objects_are_400_never_500(live: Live):
    with live.client() as http:
        for path in ("/v1/route", "/v1/outcomes", "/v1/agents/query", "/v1/tokens"):
            for body in ("[1, 2]", "null", "42", "{", '"text"'):
                answer = http.post(path, content=body,
                                   headers={"Content-Type": "application/json"})
                assert answer.status_code == 400, (path, body, answer.text)
                assert answer.json()["error"]["exit_code"] == 2


def test_not_found_no_capable_agent_and_at_capacity_have_their_statuses(live: Live):
    register(live)
    with live.client() as http:
        missing = http.get("/v1/agents/nobody")
        assert missing.status_code == 404 and missing.json()["error"]["exit_code"] == 4
        none = http.post("/v1/route", json={"task_type": "code-review"})
        assert none.status_code == 422 and none.json()["error"]["code"] == "no_capable_agent"
        assert http.post("/v1/route", json={"task_type": "code-editing"}).status_code == 200
        full = http.post("/v1/route", json={"task_type": "code-editing"})
        assert full.status_code == 409, full.text
        assert full.json()["error"]["code"] == "at_capacity"
        assert full.json()["error"]["exit_code"] == 9


def test_a_rate_limited_token_gets_429_with_retry_after(live: Live):
    slow = cli("--json", "tokens", "create", "--role", "viewer", "--name", "slow", "--rate",
               "0.01", "--burst", "2", "--token", live.token).json()["token"]
    with live.client(slow) as http:
        statuses = [http.get("/v1/whoami").status_code for _ in range(4)]
        limited = http.get("/v1/whoami")
    assert statuses[:2] == [200, 200] and 429 in statuses[2:]
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.json()["error"]["exit_code"] == 7


def test_another_tenant_s_agent_is_404_like_one_that_does_not_exist(live: Live):
    register(live)
    other = cli("--json", "tenants", "create", "acme").json()["admin_token"]
    with live.client(other) as http:
        theirs = http.get("/v1/agents/coder-1")
        nowhere = http.get("/v1/agents/no-such-agent")
        assert theirs.status_code == nowhere.status_code == 404
        assert (theirs.json()["error"]["message"].replace("coder-1", "X")
                == nowhere.json()["error"]["message"].replace("no-such-agent", "X"))
        assert http.get("/v1/agents").json()["items"] == []


def test_writes_say_their_durability_and_reads_do_not(live: Live):
    agent = register(live)
    with live.client() as http:
        read = http.get("/v1/agents/coder-1").json()
    assert "durability" not in read["meta"]
    if live.settings.database_url.startswith("postgres"):
        assert agent["meta"]["durability"] == "committed"


def test_a_body_is_json_whatever_its_content_type_says(live: Live):
    """`curl -d '{…}'` sends application/x-www-form-urlencoded: the body is still read as JSON."""
    register(live)
    with live.client() as http:
        answer = http.post("/v1/route", content=b'{"task_type": "code-editing"}',
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["agent_id"] == "coder-1"
        text = http.post("/v1/route", content=b"task_type=code-editing",
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert text.status_code == 400 and text.json()["error"]["details"]["field"] == "body"


def test_answers_the_framework_gives_are_the_error_object_too(sqlite_live: Live):
    """An unknown path, a method a resource does not take and a body the JSON parser gives up
    on (nested past its depth) answer the CLI's error object with X-Correlation-ID, as every
    other error does: a remote CLI reads its exit code instead of blaming the server."""
    with sqlite_live.client() as http:
        cases = [("GET", "/v1/nope", None, 404, 4), ("PUT", "/v1/agents", None, 405, 2),
                 ("POST", "/v1/agents", "[" * 100_000 + "]" * 100_000, 400, 2)]
        for method, path, body, status, exit_code in cases:
            answer = http.request(method, path, content=body,
                                  headers={"X-Correlation-ID": "probe-1"})
            assert answer.status_code == status, (method, path, answer.text)
            assert answer.json()["error"]["exit_code"] == exit_code, (method, path)
            assert answer.headers["X-Correlation-ID"] == "probe-1"
        assert "POST" in http.put("/v1/agents").headers["Allow"]


def test_a_500_carries_no_detail_not_even_a_refused_configuration(
        clean_env: dict[str, str], monkeypatch: pytest.MonkeyPatch):
    """A server whose database refuses its configuration answers 500 with the code and exit
    code only: never the database's host, port, user or name, to a caller without a token."""
    import os

    from sqlalchemy.engine import make_url

    from arbiter_cli.config import load_settings
    from tests.api.conftest import start_server

    given = os.environ.get("ARBITER_TEST_DATABASE_URL")
    if not given:
        pytest.skip("PostgreSQL tests need ARBITER_TEST_DATABASE_URL")
    url = make_url(given).set(database="arbiter_no_such_database_here")
    url = url.render_as_string(hide_password=False)
    monkeypatch.setenv("ARBITER_DATABASE__URL", url)
    settings = load_settings(environ={**clean_env, "ARBITER_DATABASE__URL": url})
    for base in start_server(settings):
        answer = httpx.get(f"{base}/v1/whoami", timeout=30)
        assert answer.status_code == 500
        error = answer.json()["error"]
        assert (error["code"], error["exit_code"]) == ("config_invalid", 3)
        assert "details" not in error
        for secret in ("arbiter_no_such_database_here", "127.0.0.1", "5432", "postgres"):
            assert secret not in answer.text


def test_deeply_nested_metadata_is_stored_never_500(sqlite_live: Live):
    """Metadata nested as deep as JSON encoding allows (here 900 objects, under the size cap)
    is read by every check without exhausting the stack: stored and shown, never a 500."""
    nested = '{"a":' * 900 + "1" + "}" * 900
    body = ('{"id": "deep-1", "name": "Deep", "model_family": "x", "task_types": ["testing"], '
            f'"capacity": 1, "metadata": {nested}}}')
    with sqlite_live.client() as http:
        answer = http.post("/v1/agents", content=body)
        assert answer.status_code == 200, answer.text[:300]
        shown = http.get("/v1/agents/deep-1")
    assert shown.status_code == 200, shown.text[:300]
    assert json.dumps(shown.json()["metadata"], separators=(",", ":")) == nested
