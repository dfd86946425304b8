"""Measure what writing a committed route through to the snapshot costs (issue 17, F2).

Usage: .venv/bin/python scripts/bench_write_through.py [--routes 200] [--rounds 4]
       [--agents 50] [--server URL]

It creates a fresh database on the server (default: the local one of the test suite), runs
`arbiter init`, registers ``--agents`` agents of capacity 1000 and takes the snapshot. Then,
in rounds that alternate the two modes in one process, it times ``--routes`` committed
`route task` calls at the service boundary, each through a fresh
``build(settings, resilient=True)`` as a CLI command builds it (the snapshot interval is one
hour, so no refresh runs): ``off`` has no rows noted and nothing written through (what main
does), ``on`` is this code. It prints the median and P99 per mode and the ratio of the
medians. The database and the data dir are removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import psycopg2
from sqlalchemy.engine import make_url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--routes", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--server", default="postgresql+psycopg2://postgres@127.0.0.1:5432/test")
    options = parser.parse_args()
    server = make_url(options.server)
    name = f"bench_wt_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(host=server.host, port=server.port or 5432,
                             user=server.username, password=server.password,
                             dbname=server.database)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        with tempfile.TemporaryDirectory(prefix="bench-wt-") as home:
            return run(options, server.set(database=name).render_as_string(
                hide_password=False), Path(home))
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


class Off:
    """Stands in for the gateway's ``current_written``: nothing is noted, nothing written."""

    _unset: ContextVar[Any] = ContextVar("bench_off", default=None)

    def set(self, value: Any) -> Any:
        return self._unset.set(None)

    def reset(self, token: Any) -> None:
        self._unset.reset(token)


def run(options: argparse.Namespace, url: str, home: Path) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")}
    env.update(ARBITER_DATA_DIR=str(home / "data"), ARBITER_CONFIG_DIR=str(home / "config"),
               HOME=str(home), ARBITER_DATABASE__URL=url,
               ARBITER_RESILIENCE__SNAPSHOT_INTERVAL="1h",
               ARBITER_RESILIENCE__SNAPSHOT_REFRESH="inline")
    init = subprocess.run([sys.executable, "-m", "arbiter_cli", "--json", "init"], env=env,
                          capture_output=True, text=True, check=True)
    token = json.loads(init.stdout)["admin_token"]
    agents = "\n".join(json.dumps({"id": f"bench-{i:04d}", "name": "b", "model_family": "bench",
                                   "task_types": ["testing"], "capacity": 1000})
                       for i in range(options.agents))
    subprocess.run([sys.executable, "-m", "arbiter_cli", "--token", token, "agents",
                    "register", "--file", "-"], env=env, input=agents, capture_output=True,
                   text=True, check=True)
    subprocess.run([sys.executable, "-m", "arbiter_cli", "--token", token, "agents", "list"],
                   env={**env, "ARBITER_RESILIENCE__SNAPSHOT_INTERVAL": "0s"},
                   capture_output=True, text=True, check=True)  # the snapshot holds them
    os.environ.update(env)
    from arbiter_cli.bootstrap import build
    from arbiter_cli.config import load_settings
    from arbiter_cli.resilience import gateway

    settings = load_settings(environ=env)
    real = gateway.current_written
    spent: list[float] = []
    write_through = gateway.Resilience.write_through

    def timed(self: Any, written: Any) -> None:
        started = time.perf_counter()
        try:
            write_through(self, written)
        finally:
            if written:
                spent.append(time.perf_counter() - started)

    gateway.Resilience.write_through = timed  # type: ignore[method-assign]
    taken: dict[str, list[float]] = {"off": [], "on": []}
    n = 0
    for _ in range(options.rounds):
        for mode in ("off", "on"):
            gateway.current_written = Off() if mode == "off" else real  # type: ignore[assignment]
            for _ in range(options.routes):
                n += 1
                app = build(settings, resilient=True)
                try:
                    principal = app.security.admit(token, "route task")
                    started = time.perf_counter()
                    app.routing.route(principal, {"task_type": "testing",
                                                  "task_id": f"T-{n}"})
                    taken[mode].append(time.perf_counter() - started)
                    assert app.resilience is not None
                    assert app.resilience.durability == "committed"
                    app.resilience.maybe_refresh()  # as a command does after answering
                finally:
                    app.close()
    gateway.current_written = real  # type: ignore[assignment]
    medians = {}
    for mode, values in taken.items():
        values.sort()
        medians[mode] = statistics.median(values) * 1000
        p99 = values[max(0, int(len(values) * 0.99) - 1)] * 1000
        print(f"{mode:>3}: {len(values)} routes, median {medians[mode]:.2f} ms, "
              f"P99 {p99:.2f} ms")
    spent.sort()
    print(f"the write-through itself ({len(spent)}): median "
          f"{statistics.median(spent) * 1000:.2f} ms, "
          f"P99 {spent[max(0, int(len(spent) * 0.99) - 1)] * 1000:.2f} ms")
    print(f"ratio of medians on/off: {medians['on'] / medians['off']:.2f} "
          f"(+{medians['on'] - medians['off']:.2f} ms per route)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
