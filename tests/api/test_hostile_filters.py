"""List filters and cursors are inputs too (SPEC §4 "Input validation", §15 "no 5xx").

A query value the stored data can never match (a NUL byte, a control character, an id of the
wrong shape) is refused as invalid input (400, ``field`` and ``rule``) before it reaches the
database: PostgreSQL refuses a NUL in a text parameter, which would otherwise be a 500.
"""

from __future__ import annotations

import pytest

from tests.api.conftest import Live

CASES = [
    ("/v1/decisions", "agent", "agent"),
    ("/v1/decisions", "task_type", "task_type"),
    ("/v1/decisions", "cursor", "cursor"),
    ("/v1/tokens", "cursor", "cursor"),
    ("/v1/audit", "action", "action"),
    ("/v1/audit", "actor", "actor"),
]


@pytest.mark.parametrize(("path", "param", "field"), CASES, ids=[f"{p} {q}" for p, q, _ in CASES])
def test_a_filter_with_a_nul_byte_is_400_never_500(live: Live, path: str, param: str,
                                                    field: str):
    with live.client() as http:
        answer = http.get(path, params={param: "a\x00b"})
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert (error["exit_code"], error["details"]["field"]) == (2, field), error
        assert http.get(path, params={param: "a\x07b"}).status_code == 400
        fine = http.get(path, params={param: "code-editing" if param == "task_type" else
                                      "abcdefghijkl" if path == "/v1/tokens" else "x1"})
        assert fine.status_code == 200, fine.text


def test_a_query_body_with_a_field_that_is_not_a_query_field_is_400(live: Live):
    """A misspelt filter in a query body is refused, never silently no filter at all; and
    ``prefer_specializations`` (the task's name of it) is ``prefer``, with its rules."""
    with live.client() as http:
        typo = http.post("/v1/agents/query", json={"task_type": "code-editing",
                                                   "langauges": ["Python"]})
        assert typo.status_code == 400, typo.text
        error = typo.json()["error"]
        assert (error["details"]["field"], error["details"]["rule"]) == ("langauges",
                                                                         "unknown_field")
        nul = http.post("/v1/agents/query", json={"task_type": "code-editing",
                                                  "prefer_specializations": ["a\x00b"]})
        assert nul.status_code == 400, nul.text
        assert nul.json()["error"]["details"]["field"] == "prefer_specializations"
        fine = http.post("/v1/agents/query", json={"task_type": "code-editing",
                                                   "prefer_specializations": ["security"]})
        assert fine.status_code == 200, fine.text
