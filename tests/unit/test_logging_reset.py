"""``logging.reset`` leaves the process as ``configure`` found it: a test (or a command run in
process) that chose console logs must not turn the next one's JSON logs into console lines."""

from __future__ import annotations

import io
import json

import pytest


def test_reset_restores_json_logs_after_a_console_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from arbiter_cli.observability import logging as log

    log.configure(level="info", fmt="console", environ={})
    log.reset()
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    log.get_logger().warning("after.reset", detail=1)
    line = stream.getvalue().strip().splitlines()[-1]
    assert json.loads(line)["event"] == "after.reset"
    log.reset()
