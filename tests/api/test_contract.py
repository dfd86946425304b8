"""The API's contract (SPEC §15): schemathesis generates requests for every operation of the
live server's /openapi.json and checks that no answer is a 5xx and every answer (status,
content type, headers, body) is one the schema declares.

Bodies are documented loosely on purpose: the domain is the one authority on what is valid, so
"schema-valid data was rejected" (positive_data_acceptance) is not a failure here; a 400 with
the error object is the documented answer for what the domain refuses.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from schemathesis import checks

from tests.api.conftest import start_server
from tests.helpers import cli

CHECKS = [checks.not_a_server_error, checks.status_code_conformance,
          checks.content_type_conformance, checks.response_schema_conformance,
          checks.response_headers_conformance]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    import os

    from arbiter_cli.config import load_settings

    root: Path = tmp_path_factory.mktemp("contract")
    env = {"HOME": str(root / "home"), "ARBITER_DATA_DIR": str(root / "data"),
           "ARBITER_CONFIG_DIR": str(root / "config")}
    (root / "config").mkdir()
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("ARBITER_")
                     and not n.startswith("ARBITER_TEST_")]:
            patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        token = cli("--json", "init").json()["admin_token"]
        assert cli("agents", "register", "--id", "coder-1", "--name", "Coder One",
                   "--model-family", "claude-3.5", "--task-type", "code-editing",
                   "--capacity", "2", "--token", token).exit_code == 0
        settings = load_settings(environ={**os.environ})
        for url in start_server(settings):
            yield url, token


OPERATIONS = sorted({
    ("POST", "/v1/agents"), ("GET", "/v1/agents"), ("GET", "/v1/agents/{agent_id}"),
    ("PATCH", "/v1/agents/{agent_id}"), ("DELETE", "/v1/agents/{agent_id}"),
    ("POST", "/v1/agents/query"), ("GET", "/v1/agents/stats"),
    ("POST", "/v1/agents/{agent_id}/status"), ("POST", "/v1/agents/{agent_id}/heartbeat"),
    ("POST", "/v1/agents/{agent_id}/record"), ("POST", "/v1/agents/cleanup"),
    ("POST", "/v1/route"), ("POST", "/v1/outcomes"), ("GET", "/v1/decisions/{decision_id}"),
    ("GET", "/v1/decisions"), ("GET", "/v1/route/stats"), ("POST", "/v1/route/reap"),
    ("GET", "/v1/tokens"), ("POST", "/v1/tokens"), ("DELETE", "/v1/tokens/{token_id}"),
    ("GET", "/v1/audit"), ("GET", "/v1/audit/verify"), ("GET", "/v1/whoami"),
})


@pytest.mark.slow
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_answer_is_a_5xx_or_outside_the_schema(method: str, path: str,
                                                  served: tuple[str, str]) -> None:
    """schemathesis' strategies driven by Hypothesis directly (its lazy pytest loader does not
    run under pytest 9): the examples of the active Hypothesis profile, per operation."""
    from hypothesis import HealthCheck, given, settings

    url, token = served
    operation = schemathesis.openapi.from_url(f"{url}/openapi.json")[path][method]

    @given(case=operation.as_strategy())
    @settings(suppress_health_check=list(HealthCheck), deadline=None)
    def answers_within_the_contract(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=url, headers={"Authorization": f"Bearer {token}"},
                               checks=CHECKS)

    answers_within_the_contract()


def test_the_schema_lists_every_resource_of_the_spec(served: tuple[str, str]) -> None:
    import httpx

    url, _ = served
    paths = httpx.get(f"{url}/openapi.json").json()["paths"]
    expected = {(method.lower(), path) for method, path in OPERATIONS}
    found = {(method, path) for path, operations in paths.items() for method in operations}
    assert expected <= found, expected - found
    for path, operations in paths.items():
        for method, operation in operations.items():
            answers = operation["responses"]
            assert {"200", "400", "401", "500", "503"} <= set(answers), (method, path)
