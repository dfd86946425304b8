"""``bench``/``soak`` against a server that checks passwords (issue 12, L2; SPEC §7.1).

A throwaway cluster whose TCP logins use scram-sha-256 (``postgres`` stays trusted so the
harness can manage it): a wrong password and a user without CREATEDB are configuration errors,
exit 3 in one line that never shows the password; the right password, in the user info or as
``?password=``, runs the benchmark and drops its scratch database.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.faults.cluster import PgCluster
from tests.faults.conftest import require_cluster
from tests.helpers import CliResult, cli

RIGHT = "right-Pw-7Qx2"
WRONG = "CANARYwrongPw9Zt4"
ODD = "odd Pw+@:/%?&=#x"  # every character that needs percent-encoding in a URL


@pytest.fixture(scope="module")
def password_cluster() -> Iterator[PgCluster]:
    require_cluster()
    cluster = PgCluster()
    hba = cluster.base / "arbiter_hba.conf"
    hba.write_text("local all all trust\n"
                   "host all postgres 127.0.0.1/32 trust\n"
                   "host all all 127.0.0.1/32 scram-sha-256\n")
    os.chmod(hba, 0o644)
    cluster.settings["hba_file"] = f"'{hba}'"
    try:
        cluster.start()
        cluster.psql(f"CREATE ROLE arbiter_pw LOGIN CREATEDB PASSWORD '{RIGHT}'")
        cluster.psql(f"CREATE ROLE arbiter_nocreate LOGIN PASSWORD '{RIGHT}'")
        cluster.psql(f"CREATE ROLE arbiter_odd LOGIN CREATEDB PASSWORD '{ODD}'")
        yield cluster
    finally:
        cluster.cleanup()


def _url(cluster: PgCluster, user: str, password: str, *, in_query: bool = False) -> str:
    where = f"127.0.0.1:{cluster.port}/postgres"
    if in_query:
        return f"postgresql+psycopg2://{user}@{where}?password={password}"
    return f"postgresql+psycopg2://{user}:{password}@{where}"


def _bench(url: str) -> CliResult:
    return cli("--json", "bench", "--backend", "postgres", "--database-url", url, "--agents",
               "10", "--queries", "10", "--seconds", "0.5")


def _soak(url: str, output: Path) -> CliResult:
    return cli("soak", "--no-memray", "--duration", "2s", "--sample-interval", "1s",
               "--agents", "10", "--backend", "postgres", "--database-url", url, "--output",
               str(output))


def _scratch(cluster: PgCluster) -> list[str]:
    return cluster.psql("SELECT datname FROM pg_database WHERE datname LIKE 'postgres\\_%'"
                        ).split()


@pytest.mark.parametrize("in_query", [False, True], ids=["user info", "query"])
def test_a_wrong_password_is_a_configuration_error(password_cluster: PgCluster, in_query: bool,
                                                    clean_env: dict[str, str],
                                                    tmp_path: Path) -> None:
    url = _url(password_cluster, "arbiter_pw", WRONG, in_query=in_query)
    for result in (_bench(url), _soak(url, tmp_path / "out")):
        assert result.exit_code == 3, result
        assert "password authentication failed" in result.stderr
        assert WRONG not in result.stdout + result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "out").exists()
    assert _scratch(password_cluster) == []


def test_a_user_without_createdb_is_told_what_to_grant(password_cluster: PgCluster,
                                                        clean_env: dict[str, str]) -> None:
    result = _bench(_url(password_cluster, "arbiter_nocreate", RIGHT))
    assert result.exit_code == 3, result
    assert "CREATEDB" in result.stderr and RIGHT not in result.stderr
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("in_query", [False, True], ids=["user info", "query"])
def test_the_right_password_runs_and_drops_the_scratch_database(
        password_cluster: PgCluster, in_query: bool, clean_env: dict[str, str]) -> None:
    result = _bench(_url(password_cluster, "arbiter_pw", RIGHT, in_query=in_query))
    assert result.exit_code == 0, result
    assert result.json()["operations"]["query"]["samples"] == 10
    assert RIGHT not in result.stdout + result.stderr
    assert _scratch(password_cluster) == []


def test_a_password_that_needs_encoding_reaches_the_scratch_database_and_the_workers(
        password_cluster: PgCluster, clean_env: dict[str, str]) -> None:
    """The scratch URLs arbiter derives (admin, scratch database, e2e workers) keep the password
    percent-encoded, so they pass the same URL check as the user's."""
    url = _url(password_cluster, "arbiter_odd", quote(ODD, safe=""))
    result = cli("--json", "bench", "--workload", "e2e", "--backend", "postgres",
                 "--database-url", url, "--agents", "10", "--processes", "2", "--seconds", "1")
    assert result.exit_code == 0, result
    assert result.json()["decisions"] > 0
    assert quote(ODD, safe="") not in result.stdout + result.stderr
    assert _scratch(password_cluster) == []
