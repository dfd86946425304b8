"""What ``/openapi.json`` says each resource answers (SPEC §15 "Contract").

The documents are the CLI's ``--json`` documents, built by the domain's ``to_dict``; these JSON
schemas describe them for clients and for the schemathesis run of the test suite, which checks
every live answer against them. Bodies are documented here but validated by the domain, the
one authority (an invalid body is 400 with the CLI's ``field`` and ``rule``).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.models import Example

Schema = dict[str, Any]

NULLABLE_STRING: Schema = {"type": ["string", "null"]}
TIME: Schema = {"type": "string", "format": "date-time"}

META: Schema = {
    "type": "object",
    "required": ["correlation_id", "command", "tenant"],
    "properties": {
        "correlation_id": {"type": "string"},
        "command": {"type": "string"},
        "tenant": NULLABLE_STRING,
        "durability": {"type": "string", "enum": ["committed", "journaled"]},
        "journal": {"type": "object"},
        "stale": {"type": "boolean"},
        "stale_age_s": {"type": "number"},
    },
}

AGENT_FIELDS: Schema = {
    "type": "object",
    "required": ["id", "tenant", "name", "model_family", "task_types", "languages",
                 "specializations", "capacity", "active_tasks", "status", "utilization",
                 "performance", "metadata", "registered_at", "last_active_at", "updated_at",
                 "version"],
    "properties": {
        "id": {"type": "string"},
        "tenant": {"type": "string"},
        "name": {"type": "string"},
        "model_family": {"type": "string"},
        "task_types": {"type": "array", "items": {"type": "string"}},
        "languages": {"type": "array", "items": {"type": "string"}},
        "specializations": {"type": "array", "items": {"type": "string"}},
        "capacity": {"type": "integer", "minimum": 1},
        "active_tasks": {"type": "integer", "minimum": 0},
        "status": {"type": "string", "enum": ["available", "draining", "offline",
                                              "maintenance"]},
        "status_reason": NULLABLE_STRING,
        "utilization": {"type": "number", "minimum": 0},
        "performance": {
            "type": "object",
            "required": ["success_rate", "average_quality", "average_latency_ms", "task_count"],
            "properties": {
                "success_rate": {"type": "number", "minimum": 0, "maximum": 1},
                "average_quality": {"type": "number", "minimum": 0, "maximum": 1},
                "average_latency_ms": {"type": "number", "minimum": 0},
                "task_count": {"type": "integer", "minimum": 0},
            },
        },
        "metadata": {"type": "object"},
        "registered_at": TIME,
        "last_active_at": TIME,
        "updated_at": TIME,
        "version": {"type": "integer", "minimum": 1},
        "removed": {"type": "boolean"},
    },
}

DECISION_FIELDS: Schema = {
    "type": "object",
    "required": ["decision_id", "task_id", "task_type", "agent_id", "strategy", "seed",
                 "explored", "confidence", "candidates", "status"],
    "properties": {
        "decision_id": NULLABLE_STRING,
        "task_id": {"type": "string"},
        "task_type": {"type": "string"},
        "requirements": {"type": "object"},
        "agent_id": {"type": "string"},
        "strategy": {"type": "string"},
        "seed": {"type": "integer"},
        "explored": {"type": "boolean"},
        "confidence": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "candidates": {"type": "array", "items": {"type": "object"}},
        "excluded": {"type": "object"},
        "status": {"type": "string", "enum": ["open", "succeeded", "failed", "expired"]},
        "already_routed": {"type": "boolean"},
        "already_recorded": {"type": "boolean"},
    },
}


def _with_meta(schema: Schema) -> Schema:
    return {**schema, "required": [*schema.get("required", []), "meta"],
            "properties": {**schema.get("properties", {}), "meta": META}}


def _list_of(item: Schema) -> Schema:
    return _with_meta({
        "type": "object",
        "required": ["items", "count", "next_cursor"],
        "properties": {"items": {"type": "array", "items": item},
                       "count": {"type": "integer", "minimum": 0},
                       "next_cursor": NULLABLE_STRING,
                       "dry_run": {"type": "boolean"}},
    })


AGENT = _with_meta(AGENT_FIELDS)
AGENT_LIST = _list_of(AGENT_FIELDS)
AGENT_OR_LIST: Schema = {"oneOf": [AGENT, AGENT_LIST]}
QUERY_LIST = _list_of({"type": "object", "required": ["agent_id", "score"],
                       "properties": {"agent_id": {"type": "string"},
                                      "score": {"type": "number"}}})
DECISION = _with_meta(DECISION_FIELDS)
DECISION_LIST = _list_of(DECISION_FIELDS)
OBJECT = _with_meta({"type": "object"})
LIST = _list_of({"type": "object"})
WHOAMI = _with_meta({"type": "object", "required": ["tenant", "role", "token_id"],
                     "properties": {"tenant": {"type": "string"},
                                    "role": {"type": "string"},
                                    "token_id": NULLABLE_STRING}})

ERROR: Schema = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["code", "message", "exit_code"],
        "properties": {
            "code": {"type": "string"},
            "message": {"type": "string"},
            "exit_code": {"type": "integer"},
            "details": {"type": "object"},
        },
    }},
}

#: Every answer a resource may give besides 200: the CLI's error object.
ERRORS = {
    "400": "invalid input (field and rule in details)",
    "401": "no token, or not a valid one",
    "403": "the token's role may not do this",
    "404": "not found (also another tenant's object)",
    "409": "conflict, or capable agents all at capacity (code at_capacity)",
    "413": "request body over serve.max_body",
    "422": "no capable agent",
    "429": "rate limited (Retry-After)",
    "500": "internal error (no detail)",
    "503": "storage unavailable (Retry-After)",
}


def responses(ok: Schema) -> dict[int | str, dict[str, Any]]:
    answers: dict[int | str, dict[str, Any]] = {
        200: {"description": "the command's JSON document, as `--json` prints it",
              "content": {"application/json": {"schema": ok}}},
    }
    for status, description in ERRORS.items():
        answers[status] = {"description": description,
                           "content": {"application/json": {"schema": ERROR}}}
    return answers


def install(app: FastAPI) -> None:
    """Bearer auth in the schema; answers are documented by ``responses`` on each route."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = original()
        components = document.setdefault("components", {})
        components.setdefault("securitySchemes", {})["bearer"] = {
            "type": "http", "scheme": "bearer",
            "description": "An arbiter token (`arb_…`): `arbiter tokens create`"}
        document["security"] = [{"bearer": []}]
        for path in document.get("paths", {}).values():
            for operation in path.values():
                # FastAPI adds its own 422 for validation; ours is 400 (see server.py)
                if isinstance(operation, dict) and "422" in operation.get("responses", {}):
                    answer = operation["responses"]["422"]
                    if "HTTPValidationError" in str(answer):
                        operation["responses"]["422"] = {
                            "description": ERRORS["422"],
                            "content": {"application/json": {"schema": ERROR}}}
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]


REGISTER: dict[str, Example] = {"one": {"value": {
    "id": "coder-1", "name": "Coder 1", "model_family": "claude-3.5",
    "task_types": ["code-editing"], "languages": ["Python"], "capacity": 4}}}
QUERY: dict[str, Example] = {"python review": {"value": {
    "task_type": "code-review", "languages": ["Python"], "limit": 5}}}
ROUTE: dict[str, Example] = {"task": {"value": {
    "task_type": "code-review", "task_id": "PR-1234", "languages": ["Python"]}}}
OUTCOME: dict[str, Example] = {"success": {"value": {
    "task_id": "PR-1234", "success": True, "quality": 0.9, "latency_ms": 42000}}}
