"""Fixtures of the fault tests: a throwaway PostgreSQL per module, a fault proxy, arbiter envs.

A module tunes its cluster with module-level ``PG_MAX_CONNECTIONS`` (default 20) and
``PG_SETTINGS`` (extra postgresql.conf lines). Without PostgreSQL server binaries the tests
skip with the reason; with ``ARBITER_TEST_REQUIRE_POSTGRES=1`` (set by ``.ci/run``) they fail
instead, so CI cannot pass without running them.

The long durability run is ``pytest tests/faults --long`` or ``ARBITER_FAULTS_LONG=1``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.cluster import PgCluster, unavailable_reason
from tests.faults.proxy import FaultProxy

LONG_ENV = "ARBITER_FAULTS_LONG"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", default=False,
                     help="tests/faults: run the long durability variant (100 restarts).")


def long_run(config: pytest.Config) -> bool:
    try:
        flag = bool(config.getoption("--long"))
    except ValueError:  # the option is registered only when tests/faults is on the command line
        flag = False
    return flag or os.environ.get(LONG_ENV) == "1"


def require_cluster() -> None:
    reason = unavailable_reason()
    if reason is None:
        return
    if os.environ.get("ARBITER_TEST_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"{reason}, and ARBITER_TEST_REQUIRE_POSTGRES=1 forbids skipping tests/faults")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def pg_cluster(request: pytest.FixtureRequest) -> Iterator[PgCluster]:
    """A running throwaway cluster for the whole module; stopped and removed afterwards."""
    require_cluster()
    cluster = PgCluster(
        max_connections=int(getattr(request.module, "PG_MAX_CONNECTIONS", 20)),
        settings=getattr(request.module, "PG_SETTINGS", None),
    )
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def running_cluster(pg_cluster: PgCluster) -> Iterator[PgCluster]:
    """The module's cluster, started again after the test if the test stopped it."""
    if not pg_cluster.running():
        pg_cluster.start()
    yield pg_cluster
    if not pg_cluster.running():
        pg_cluster.start()


@pytest.fixture
def fault_proxy(pg_cluster: PgCluster) -> Iterator[FaultProxy]:
    """A fault proxy in front of the module's cluster, in ``pass`` mode."""
    with FaultProxy(("127.0.0.1", pg_cluster.port)) as proxy:
        yield proxy


def arbiter_env(home: Path, database_url: str, **settings: str) -> dict[str, str]:
    """A process environment for arbiter with its own data/config dirs and no user config.

    ``settings`` are extra ``ARBITER_*`` variables, e.g. ``ARBITER_DATABASE__COMMAND_TIMEOUT``.
    """
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ARBITER_") or k.startswith("ARBITER_TEST_")}
    for sub in ("data", "config", "home", "xdg-config", "xdg-data"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    env.update({
        "HOME": str(home / "home"),
        "ARBITER_DATA_DIR": str(home / "data"),
        "ARBITER_CONFIG_DIR": str(home / "config"),
        "XDG_CONFIG_HOME": str(home / "xdg-config"),
        "XDG_DATA_HOME": str(home / "xdg-data"),
        "ARBITER_DATABASE__URL": database_url,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        # the snapshot is refreshed in the command, so a fault right after it finds it up to
        # date (`auto` may move a refresh over 50 ms to a detached process); a test may override
        "ARBITER_RESILIENCE__SNAPSHOT_REFRESH": "inline",
    })
    env.update(settings)
    return env
