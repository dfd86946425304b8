"""Measure `journal replay` throughput: N journaled entries replayed into a real PostgreSQL.

Usage: .venv/bin/python scripts/bench_replay.py [--entries 600] [--server URL]

It creates a fresh database on the server (default: the local one of the test suite), runs
`arbiter init` there, signs N entries into this host's journal exactly as degraded writes would
(half single-agent registers, half heartbeats, as the tenant's admin token), then times one
`replay()` in this process and prints entries/s. The database and the data dir are removed
afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg2
from sqlalchemy.engine import make_url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=600)
    parser.add_argument("--server", default="postgresql+psycopg2://postgres@127.0.0.1:5432/test")
    options = parser.parse_args()
    server = make_url(options.server)
    name = f"bench_replay_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(host=server.host, port=server.port or 5432,
                             user=server.username, password=server.password,
                             dbname=server.database)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        with tempfile.TemporaryDirectory(prefix="bench-replay-") as home:
            return run(options.entries, server.set(database=name).render_as_string(
                hide_password=False), Path(home))
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


def run(entries: int, url: str, home: Path) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")}
    env.update(ARBITER_DATA_DIR=str(home / "data"), ARBITER_CONFIG_DIR=str(home / "config"),
               HOME=str(home), ARBITER_DATABASE__URL=url)
    init = subprocess.run([sys.executable, "-m", "arbiter_cli", "--json", "init"], env=env,
                          capture_output=True, text=True, check=True)
    token_id = json.loads(init.stdout)["admin_token"].split("_")[1]
    os.environ.update(env)
    from arbiter_cli.bootstrap import build
    from arbiter_cli.config import load_settings
    from arbiter_cli.resilience.replay import replay

    app = build(load_settings(environ=env), resilient=True)
    res = app.resilience
    assert res is not None
    principal = {"tenant": "default", "role": "admin", "token_id": token_id}
    for n in range(entries):
        agent = f"bench-{n // 2:05d}"
        if n % 2 == 0:
            kind, args = "agents.register", {"raws": [{
                "id": agent, "name": agent, "model_family": "bench", "task_types": ["testing"]}]}
        else:
            kind, args = "agents.heartbeat", {"agent_id": agent}
        res.journal.append(op_id=str(uuid.uuid4()), tenant="default", kind=kind,
                           principal=principal, args=args)
    started = time.perf_counter()
    report = replay(res, budget_s=None, blocking=True)
    took = time.perf_counter() - started
    app.close()
    print(f"replayed {report['applied']} entries ({report['conflicts']} conflicts, "
          f"{report['remaining']} left) in {took:.2f}s: {report['applied'] / took:.0f} entries/s")
    return 0 if report["applied"] == entries else 1


if __name__ == "__main__":
    raise SystemExit(main())
