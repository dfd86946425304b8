"""CLI tests run ``main()`` in an isolated data and config directory."""

from __future__ import annotations

import pytest

from tests.helpers import cli


@pytest.fixture
def initialized(clean_env):  # type: ignore[no-untyped-def]
    """An initialized SQLite store in the test's data dir."""
    result = cli("init")
    assert result.exit_code == 0, result
    return clean_env


AGENT = ["--id", "coder-1", "--name", "Coder One", "--model-family", "claude-3.5",
         "--task-type", "code-editing", "--language", "python", "--capacity", "4"]
