"""Fixtures shared by every tier: isolated settings, backends, PostgreSQL scratch databases.

PostgreSQL tests read ``ARBITER_TEST_DATABASE_URL`` and skip with a reason when it is unset,
unless ``ARBITER_TEST_REQUIRE_POSTGRES=1`` (set by ``.ci/run``), which turns the skip into a
failure so CI can never pass with PostgreSQL untested.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.helpers import fresh_postgres_database

settings.register_profile(
    "ci", max_examples=100, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A process environment with no user configuration: data and config dirs in tmp_path."""
    for name in list(os.environ):
        if name.startswith("ARBITER_") and not name.startswith("ARBITER_TEST_"):
            monkeypatch.delenv(name)
    env = {
        "HOME": str(tmp_path / "home"),
        "ARBITER_DATA_DIR": str(tmp_path / "data"),
        "ARBITER_CONFIG_DIR": str(tmp_path / "config"),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
        "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "config").mkdir()
    return env


@pytest.fixture
def test_settings(clean_env: dict[str, str]):  # type: ignore[no-untyped-def]
    from arbiter_cli.config import load_settings

    return load_settings(environ=clean_env)


@pytest.fixture
def pg_database() -> Iterator[str]:
    """URL of a fresh PostgreSQL database (skips without ARBITER_TEST_DATABASE_URL)."""
    with fresh_postgres_database() as url:
        yield url
