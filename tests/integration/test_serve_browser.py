"""A loopback ``serve`` with ``security.enabled = false`` is not an open door for web pages.

With security off every caller is admin, which serve allows on a loopback address only (SPEC
§15). A web page the operator visits reaches that address too: a cross-site ``POST`` with a
``text/plain`` body needs no CORS preflight (and ``/v1`` reads any body as JSON), and DNS
rebinding makes a hostile name resolve to 127.0.0.1 so that even reads are same-origin. Both
are refused: a request that names a host other than a loopback one, or that a browser marks as
coming from a page (``Origin``, ``Sec-Fetch-Site``), is 403 with the error object.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.integration.test_serve import Served, _kill_tree

ARBITER = [sys.executable, "-m", "arbiter_cli"]
AGENT = {"id": "pwned", "name": "P", "model_family": "m", "task_types": ["code-editing"]}


@pytest.fixture
def open_server(clean_env: dict[str, str]) -> Iterator[Served]:
    env = {**os.environ, **clean_env, "ARBITER_SECURITY__ENABLED": "false"}
    done = subprocess.run([*ARBITER, "db", "upgrade"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    server = Served(env)
    try:
        yield server
    finally:
        if server.process.poll() is None:
            _kill_tree(server.process)


def ask(server: Served, method: str, path: str, headers: dict[str, str],
        body: bytes | None = None) -> tuple[int, dict[str, object]]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.mark.slow
def test_web_pages_cannot_drive_a_loopback_server_without_security(open_server: Served):
    port = open_server.port
    # The CLI (and curl) send neither Origin nor Sec-Fetch-*: they are served as admin.
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "127.0.0.1", f"[::1]:{port}"):
        status, document = ask(open_server, "GET", "/v1/whoami", {"Host": host})
        assert status == 200 and document["role"] == "admin", (host, document)
    # DNS rebinding: the page's own origin, so no Origin header on a GET.
    status, document = ask(open_server, "GET", "/v1/whoami",
                           {"Host": f"rebind.evil.example:{port}"})
    assert status == 403, document
    assert document["error"]["code"] == "forbidden"  # type: ignore[index]
    # A cross-site form-like POST: no preflight, body read as JSON.
    for headers in ({"Origin": "http://evil.example", "Content-Type": "text/plain"},
                    {"Sec-Fetch-Site": "cross-site", "Content-Type": "text/plain"}):
        status, document = ask(open_server, "POST", "/v1/agents",
                               {"Host": f"127.0.0.1:{port}", **headers},
                               json.dumps(AGENT).encode())
        assert status == 403, (headers, document)
        assert document["error"]["exit_code"] == 6  # type: ignore[index]
    assert open_server.stop()[0] == 0


@pytest.mark.slow
def test_serve_endpoints_echo_only_a_correlation_id_the_api_would_keep(open_server: Served):
    """/livez & co. keep a client's X-Correlation-ID under the API's rule (short, no spaces,
    quotes or non-ASCII: it goes into logs and back into a header); anything else is replaced
    by a generated id, as ``/v1`` does."""
    for given, kept in (("probe-7", True), ("job-42/step:1", True), ('a" b} {c', False),
                        ("caf\u00e9", False), ("x" * 150, False)):
        for path in ("/livez", "/v1/whoami"):
            connection = http.client.HTTPConnection("127.0.0.1", open_server.port, timeout=30)
            try:
                connection.request("GET", path, headers={"X-Correlation-ID": given})
                response = connection.getresponse()
                response.read()
                echoed = response.getheader("X-Correlation-ID")
            finally:
                connection.close()
            assert (echoed == given) is kept, (path, given, echoed)
            if not kept:
                assert echoed is not None and len(echoed) == 36, (path, echoed)
    assert open_server.stop()[0] == 0
