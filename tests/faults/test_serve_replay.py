"""The API server through a PostgreSQL outage (SPEC §15 "Resilience", §7).

A real ``arbiter serve`` on a throwaway cluster: while the cluster is down, writes through the
API are answered 200 with ``meta.durability: "journaled"``; once it is back, serve's background
loop replays them, with no request and no CLI command in between (the summary's
``replayed.applied`` counts them, and the rows are in PostgreSQL).
"""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.faults.cluster import PgCluster
from tests.faults.conftest import arbiter_env
from tests.faults.harness import Arbiter, initialize

pytestmark = [pytest.mark.faults, pytest.mark.slow]

LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")


def _serve(env: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen([sys.executable, "-m", "arbiter_cli", "--json", "serve",
                                "--port", "0"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            found = LISTENING.search(lines.get(timeout=1))
        except queue.Empty:
            assert process.poll() is None, "serve exited before listening"
            continue
        if found:
            return process, int(found.group(1))
    process.kill()
    raise AssertionError("serve never printed its address")


def _register(port: int, token: str, agent: str) -> tuple[int, dict[str, Any]]:
    body = json.dumps({"id": agent, "name": agent, "model_family": "fault-test",
                       "task_types": ["testing"], "capacity": 1}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/agents", data=body, method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _stored(pg_cluster: PgCluster, name: str, agents: list[str]) -> set[str]:
    from sqlalchemy import create_engine, text

    engine = create_engine(pg_cluster.url(name))
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT id FROM agents WHERE id = ANY(:ids)"),
                                      {"ids": agents})
            return {row[0] for row in rows}
    finally:
        engine.dispose()


def test_writes_during_an_outage_are_journaled_and_replayed_by_the_serve_loop(
        tmp_path: Path, running_cluster: PgCluster) -> None:
    from arbiter_cli.adapters.credentials import load_token
    from arbiter_cli.config import load_settings

    pg_cluster = running_cluster
    name = f"sv_{uuid.uuid4().hex[:10]}"
    pg_cluster.create_database(name)
    env = arbiter_env(tmp_path, pg_cluster.url(name),
                      ARBITER_DATABASE__COMMAND_TIMEOUT="2s",
                      ARBITER_BREAKER__RESET_TIMEOUT="1s",
                      ARBITER_SERVE__REPLAY_INTERVAL="500ms")
    initialize(Arbiter(env))
    token = load_token(load_settings(environ=env).paths.credentials_file, "default")
    assert token
    process, port = _serve(env)
    try:
        code, body = _register(port, token, "sv-before")
        assert code == 200 and body["meta"]["durability"] == "committed", body

        pg_cluster.stop("immediate")
        journaled = [f"sv-down-{i}" for i in range(3)]
        for agent in journaled:
            code, body = _register(port, token, agent)
            assert code == 200, body
            assert body["meta"]["durability"] == "journaled", body["meta"]
        assert not _stored_safely(pg_cluster, name, journaled)

        pg_cluster.start()  # no request from here on: only serve's loop can replay
        deadline = time.monotonic() + 90
        while _stored(pg_cluster, name, journaled) != set(journaled):
            assert time.monotonic() < deadline, "serve's loop did not replay the journal"
            assert process.poll() is None
            time.sleep(0.5)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=60)
    assert process.returncode == 0, out
    summary = json.loads(out)
    assert summary["replayed"]["applied"] >= len(journaled), summary
    assert summary["replays"]["ok"] >= 1


def _stored_safely(pg_cluster: PgCluster, name: str, agents: list[str]) -> set[str]:
    """What PostgreSQL holds, when it is down: nothing can be read (an empty set)."""
    return set() if not pg_cluster.running() else _stored(pg_cluster, name, agents)
