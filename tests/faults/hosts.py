"""Several arbiter hosts against one throwaway cluster (issue 17).

A host is what an operator runs on one machine: its own ``ARBITER_DATA_DIR`` (breaker, journal,
snapshot), its own config dir, its own processes, and its own route to PostgreSQL through a
``FaultProxy`` (so one host can be cut off while the others go on). Host A runs ``init``; the
others use A's admin token (``ARBITER_TOKEN``), as a team sharing one database does.

A host's clock is skewed for real with libfaketime (the ``libfaketime`` package of the test
extras ships ``libfaketime.so.1``): ``LD_PRELOAD`` plus ``FAKETIME="+10800s"`` moves
``time()``, ``clock_gettime(CLOCK_REALTIME)`` and ``gettimeofday()`` of every arbiter process
of that host, SQLite's ``'now'`` included, while the monotonic clock and the database server's
clock stay true.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.faults.cluster import PgCluster
from tests.faults.conftest import arbiter_env
from tests.faults.harness import Arbiter
from tests.faults.proxy import FaultProxy


def libfaketime_path() -> Path:
    """The ``libfaketime.so.1`` that the ``libfaketime`` test dependency ships."""
    import libfaketime

    path = Path(libfaketime.__file__).parent / "vendor" / "libfaketime" / "src" / \
        "libfaketime.so.1"
    if not path.is_file():  # pragma: no cover - a broken install
        raise FileNotFoundError(f"libfaketime ships no {path}")
    return path


def skewed(offset_s: float) -> dict[str, str]:
    """Environment variables that move a process's wall clock by ``offset_s`` seconds."""
    if not offset_s:
        return {}
    return {"LD_PRELOAD": str(libfaketime_path()), "FAKETIME": f"{offset_s:+.0f}s",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1", "FAKETIME_DONT_RESET": "1"}


@dataclass
class Host:
    """One arbiter host: a data dir, an environment, a proxy to the cluster."""

    name: str
    home: Path
    proxy: FaultProxy
    env: dict[str, str]
    clock_offset_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def arbiter(self) -> Arbiter:
        return Arbiter(self.env)

    @property
    def data_dir(self) -> Path:
        return Path(self.env["ARBITER_DATA_DIR"])

    def cut_off(self) -> None:
        """Partial outage: this host's connections are reset; the others go on."""
        self.proxy.set_mode("reset")

    def reconnect(self) -> None:
        self.proxy.set_mode("pass")


def make_host(name: str, base: Path, cluster: PgCluster, dbname: str, *,
              clock_offset_s: float = 0.0, token: str | None = None,
              **settings: str) -> Host:
    """A host with its own proxy (started; close it with ``host.proxy.close()``)."""
    proxy = FaultProxy(("127.0.0.1", cluster.port)).start()
    env = arbiter_env(base / name, cluster.url(dbname, port=proxy.port), **settings)
    env.update(skewed(clock_offset_s))
    if token is not None:
        env["ARBITER_TOKEN"] = token
    return Host(name, base / name, proxy, env, clock_offset_s)


def admin_token(host: Host) -> str:
    """The admin token ``init`` saved in ``host``'s credentials file."""
    from arbiter_cli.adapters.credentials import load_token
    from arbiter_cli.config import load_settings

    settings = load_settings(environ={k: v for k, v in host.env.items()
                                      if k not in ("LD_PRELOAD", "FAKETIME")})
    token = load_token(settings.paths.credentials_file, "default")
    assert token, f"init saved no admin token for host {host.name}"
    return token


def stop_all(hosts: list[Host]) -> None:
    for host in hosts:
        host.proxy.close()


def psql_rows(cluster: PgCluster, dbname: str, sql: str,
              params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows read straight from PostgreSQL with psycopg2 (not through arbiter)."""
    import psycopg2

    conn = psycopg2.connect(cluster.dsn(dbname))
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())
    finally:
        conn.close()
