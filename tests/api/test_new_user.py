"""The new user's path of issue 14, step by step, as a user runs it: a real `arbiter serve`
process, a token, a real `curl` (when installed), and the remote CLI from a HOME that has no
database configured."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_serve import Served, _kill_tree, run

ARBITER = [sys.executable, "-m", "arbiter_cli"]


@pytest.mark.slow
def test_serve_token_curl_and_a_remote_cli_with_a_token_only(clean_env: dict[str, str],
                                                             tmp_path: Path):
    server_env = {**os.environ, **clean_env}
    admin = run(server_env, "init")["admin_token"]
    assert run(server_env, "--token", admin, "agents", "register", "--id", "tester-1", "--name",
               "Tester", "--model-family", "claude-3.5", "--task-type", "testing")["id"]
    served = Served(server_env)  # 1. arbiter serve --port 0 (the port it chose is printed)
    try:
        url = f"http://127.0.0.1:{served.port}"
        token = run(server_env, "--token", admin, "tokens", "create", "--role",  # 2. a token
                    "orchestrator", "--name", "new-user")["token"]
        body = '{"task_type":"testing"}'  # 3. curl, exactly as the issue writes it
        if shutil.which("curl"):
            done = subprocess.run(["curl", "-s", "-H", f"Authorization: Bearer {token}",
                                   "-d", body, f"{url}/v1/route"],
                                  capture_output=True, text=True, timeout=60, check=False)
            routed = json.loads(done.stdout)
        else:  # the same request: curl -d sends a form content type
            import httpx

            routed = httpx.post(f"{url}/v1/route", content=body, headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/x-www-form-urlencoded"}, timeout=60).json()
        assert routed["agent_id"] == "tester-1", routed
        assert routed["meta"]["command"] == "route task"
        elsewhere = tmp_path / "elsewhere"  # 4. another HOME: no settings, no database
        client_env = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")
                      or k.startswith("ARBITER_TEST_")}
        client_env.update({"HOME": str(elsewhere), "ARBITER_DATA_DIR": str(elsewhere / "data"),
                           "ARBITER_CONFIG_DIR": str(elsewhere / "config"),
                           "XDG_CONFIG_HOME": str(elsewhere / "xdg"),
                           "ARBITER_SERVER": url})
        listed = subprocess.run([*ARBITER, "--token", token, "agents", "list"],
                                capture_output=True, text=True, env=client_env, timeout=60,
                                check=False)
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.splitlines()[0].split("\t")[0] == "id"  # TSV: stdout is a pipe
        assert "tester-1" in listed.stdout
        assert not (elsewhere / "data" / "arbiter.db").exists()
        code, _ = served.stop()
        assert code == 0
    finally:
        if served.process.poll() is None:
            _kill_tree(served.process)
