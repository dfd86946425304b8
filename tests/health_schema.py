"""A hand-written check of the application/health+json shape (draft-inadarei-api-health-check).

Used by the health tests of every tier (and by ``/health`` tests of ``arbiter serve``).
It returns the list of problems, so a failing assertion says what is wrong.
"""

from __future__ import annotations

import re
from typing import Any

STATUSES = {"pass", "warn", "fail"}
TOP_LEVEL = {"status", "version", "releaseId", "notes", "output", "checks", "links",
             "serviceId", "description"}
CHECK_FIELDS = {"componentId", "componentType", "observedValue", "observedUnit", "status",
                "affectedEndpoints", "time", "output", "links"}
REQUIRED_BY_SPEC = {"componentType", "observedValue", "observedUnit", "status", "time", "output"}
KEY_RE = re.compile(r"^[A-Za-z0-9_.-]+:[A-Za-z0-9_.-]+$")
RFC3339_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def health_body_problems(body: Any, *, extra_top_level: frozenset[str] = frozenset()) -> list[str]:
    """Everything in ``body`` that breaks the draft's shape (plus SPEC §8's required fields)."""
    if not isinstance(body, dict):
        return ["body is not an object"]
    problems = [f"unknown top-level field {k!r}" for k in body
                if k not in TOP_LEVEL | extra_top_level]
    if body.get("status") not in STATUSES:
        problems.append(f"status {body.get('status')!r} is not pass, warn or fail")
    for name in ("version", "releaseId", "output", "serviceId", "description"):
        if name in body and not isinstance(body[name], str):
            problems.append(f"{name} is not a string")
    checks = body.get("checks", {})
    if not isinstance(checks, dict):
        return [*problems, "checks is not an object"]
    for key, entries in checks.items():
        problems += _check_problems(key, entries)
    return problems


def _check_problems(key: str, entries: Any) -> list[str]:
    if not KEY_RE.match(key):
        return [f"check key {key!r} is not component:measurement"]
    if not isinstance(entries, list) or not entries:
        return [f"checks[{key!r}] is not a non-empty array"]
    problems: list[str] = []
    for i, entry in enumerate(entries):
        where = f"checks[{key!r}][{i}]"
        if not isinstance(entry, dict):
            problems.append(f"{where} is not an object")
            continue
        problems += [f"{where} has unknown field {k!r}" for k in entry if k not in CHECK_FIELDS]
        problems += [f"{where} lacks {k!r}" for k in sorted(REQUIRED_BY_SPEC - set(entry))]
        if entry.get("status") not in STATUSES:
            problems.append(f"{where}.status {entry.get('status')!r} is invalid")
        if not RFC3339_RE.match(str(entry.get("time", ""))):
            problems.append(f"{where}.time {entry.get('time')!r} is not RFC 3339")
        for name in ("componentId", "componentType", "output"):
            if name in entry and not isinstance(entry[name], str):
                problems.append(f"{where}.{name} is not a string")
        if entry.get("observedUnit") is not None and not isinstance(entry["observedUnit"], str):
            problems.append(f"{where}.observedUnit is not a string")
    return problems
