"""Measure the local snapshot's refresh at N agents on PostgreSQL, each in a fresh process.

Usage: .venv/bin/python scripts/bench_snapshot.py [--agents 10000] [--server URL] [--rounds 3]

It creates a fresh database on the server (default: the local one of the test suite), runs
`arbiter init`, registers N agents, then times in new processes (the way a command pays it):

- ``first``: a refresh with no snapshot yet (a full copy);
- ``incremental``: a refresh with nothing changed since the last one;
- ``incremental+10``: a refresh after 10 agents changed;
- ``after a command``: what ``Resilience.maybe_refresh()`` (run when a command has answered)
  costs the command, with ``resilience.snapshot_refresh`` inline and auto.

Each figure is the median of ``--rounds``. The database and the data dir are removed afterwards.
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
from pathlib import Path

import psycopg2
from sqlalchemy.engine import make_url

REFRESH = """
import sys, time
from sqlalchemy import create_engine
from arbiter_cli.resilience.journal import resilience_dir
from arbiter_cli.resilience.snapshot import LocalStore
from pathlib import Path
url, data_dir = sys.argv[1], Path(sys.argv[2])
engine = create_engine(url)
store = LocalStore(resilience_dir(data_dir, url))
started = time.perf_counter()
store.refresh(engine, interval_s=0, force=True)
print(time.perf_counter() - started)
"""


AFTER_COMMAND = """
import sys, time
from arbiter_cli.bootstrap import build
from arbiter_cli.config import load_settings
import os
app = build(load_settings(environ=os.environ), resilient=True)
res = app.resilience
res.guarded(lambda: None)  # as if the command had reached the primary
started = time.perf_counter()
res.maybe_refresh()
print(time.perf_counter() - started)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--server", default="postgresql+psycopg2://postgres@127.0.0.1:5432/test")
    options = parser.parse_args()
    server = make_url(options.server)
    name = f"bench_snapshot_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(host=server.host, port=server.port or 5432,
                             user=server.username, password=server.password,
                             dbname=server.database)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        with tempfile.TemporaryDirectory(prefix="bench-snapshot-") as home:
            url = server.set(database=name).render_as_string(hide_password=False)
            return run(options, url, Path(home))
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


def arbiter(env: dict[str, str], *argv: str, stdin: str | None = None) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "arbiter_cli", *argv], env=env, input=stdin,
                          capture_output=True, text=True)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"arbiter {' '.join(argv)} failed: {done.stderr.strip()}")
    return took, done.stdout


def refresh(env: dict[str, str], url: str, data_dir: Path) -> float:
    done = subprocess.run([sys.executable, "-c", REFRESH, url, str(data_dir)], env=env,
                          capture_output=True, text=True, check=True)
    return float(done.stdout.strip())


def after_command(env: dict[str, str]) -> float:
    done = subprocess.run([sys.executable, "-c", AFTER_COMMAND], env=env, capture_output=True,
                          text=True, check=True)
    time.sleep(1.5)  # let a background refresh finish before the next round
    return float(done.stdout.strip())


def run(options: argparse.Namespace, url: str, home: Path) -> int:
    data_dir = home / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")}
    env.update(ARBITER_DATA_DIR=str(data_dir), ARBITER_CONFIG_DIR=str(home / "config"),
               HOME=str(home), ARBITER_DATABASE__URL=url,
               ARBITER_DATABASE__COMMAND_TIMEOUT="60s")
    arbiter(env, "--json", "init")
    lines = [json.dumps({"id": f"snap-{n:05d}", "name": f"agent {n}", "model_family": "bench",
                         "task_types": ["testing", "code-review"], "languages": ["Python"]})
             for n in range(options.agents)]
    arbiter(env, "--json", "agents", "register", "--file", "-", stdin="\n".join(lines))
    from arbiter_cli.resilience.journal import resilience_dir

    folder = resilience_dir(data_dir, url)
    figures: dict[str, list[float]] = {"first": [], "incremental": [], "incremental+10": []}
    for round_ in range(options.rounds):
        subprocess.run(["rm", "-rf", str(folder)], check=True)
        figures["first"].append(refresh(env, url, data_dir))
        figures["incremental"].append(refresh(env, url, data_dir))
        for n in range(10):
            arbiter(env, "--json", "agents", "heartbeat", f"snap-{(round_ * 10 + n):05d}")
        figures["incremental+10"].append(refresh(env, url, data_dir))
    for mode in ("inline", "auto"):
        due = {**env, "ARBITER_RESILIENCE__SNAPSHOT_INTERVAL": "0s",
               "ARBITER_RESILIENCE__SNAPSHOT_REFRESH": mode}
        figures[f"after a command, {mode}"] = [after_command(due) for _ in range(options.rounds)]
    for label, values in figures.items():
        print(f"{label:>22}: median {statistics.median(values) * 1000:7.0f} ms "
              f"({', '.join(f'{v * 1000:.0f}' for v in values)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
