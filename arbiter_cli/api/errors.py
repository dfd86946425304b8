"""The CLI's error object over HTTP (SPEC §15 "Errors").

The body is exactly what ``--json`` prints on stderr (``{"error": {code, message, exit_code,
details?}}``), so a remote CLI exits as the local one would; the status says the same thing
to HTTP clients. A bug is 500 with no detail: the traceback stays in the server's log.
"""

from __future__ import annotations

import math
from typing import Any

from arbiter_cli.errors import ArbiterError

#: HTTP status of each error ``code`` (SPEC §15).
STATUS: dict[str, int] = {
    "check_failed": 409,
    "invalid_input": 400,
    "config_invalid": 500,
    "not_found": 404,
    "conflict": 409,
    "unauthenticated": 401,
    "forbidden": 403,
    "rate_limited": 429,
    "no_capable_agent": 422,
    "at_capacity": 409,
    "storage_unavailable": 503,
    "schema_outdated": 503,
    "limit_exceeded": 413,
    "internal_error": 500,
}

INTERNAL = {"error": {"code": "internal_error", "message": "internal error: see the server's log",
                      "exit_code": 70}}


def status_of(exc: ArbiterError) -> int:
    return STATUS.get(exc.code, 500)


def body_of(exc: ArbiterError) -> dict[str, Any]:
    """The error object; a 500 and a storage outage keep their message and details to the
    server's log (SPEC §15: no detail). A refused configuration, or the driver's first line of
    an outage, would otherwise tell any caller, token or not, the database's host, port, user
    and name."""
    if exc.code == "storage_unavailable":  # the driver's words can name the database's host
        return {"error": {"code": exc.code, "message": "the server's database is unavailable "
                          "and the write could not be journaled: retry after Retry-After "
                          "seconds", "exit_code": exc.exit_code}}
    if status_of(exc) != 500:
        return exc.to_dict()
    if exc.code == "internal_error":
        return INTERNAL
    return {"error": {"code": exc.code, "message": f"{exc.code.replace('_', ' ')} on the server: "
                      "see the server's log", "exit_code": exc.exit_code}}


def headers_of(exc: ArbiterError, *, unavailable_retry_s: float) -> dict[str, str]:
    """``Retry-After`` on 429 (the bucket's own wait) and 503 (the breaker's reset time)."""
    status = status_of(exc)
    if status == 429:
        wait = float(exc.details.get("retry_after_s") or 1.0)
        return {"Retry-After": str(max(1, math.ceil(wait)))}
    if status == 503:
        return {"Retry-After": str(max(1, math.ceil(unavailable_retry_s)))}
    if status == 401:
        return {"WWW-Authenticate": 'Bearer realm="arbiter"'}
    return {}
