"""The API's log line for a refused or failed request names that request's correlation id, not
the one ``serve`` bound for itself at start (every request's answer carries its own)."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from arbiter_cli import errors as E


@pytest.mark.parametrize("error", [E.Unauthenticated("invalid token"), E.NotFound("nope"),
                                   E.StorageUnavailable("down"), E.ConfigInvalid("bad")],
                         ids=lambda e: type(e).__name__)
def test_a_refusal_is_logged_under_the_requests_correlation_id(
        monkeypatch: pytest.MonkeyPatch, test_settings: Any, error: E.ArbiterError) -> None:
    from arbiter_cli.api.server import Api
    from arbiter_cli.observability import logging as log

    log.configure(level="info", fmt="json", environ={})
    log.bind(correlation_id="serve-started", command="serve")
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    try:
        answer = Api(test_settings, engine=None).error(  # type: ignore[arg-type]
            error, {"X-Correlation-ID": "req-42"}, command="whoami", tenant=None)
    finally:
        log.reset()
    assert answer.headers["X-Correlation-ID"] == "req-42"
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    assert [line["correlation_id"] for line in lines] == ["req-42"], lines
