"""Remote mode (SPEC §15): the CLI drives a live server with a token only.

The server runs in this process (uvicorn in a thread); the remote CLI runs as the user runs it
(``main()``, and a subprocess where imports matter), from a HOME whose settings name no
database: everything it learns comes over HTTP.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import Live
from tests.helpers import cli

AGENT = ["--id", "coder-1", "--name", "Coder One", "--model-family", "claude-3.5",
         "--task-type", "code-editing", "--language", "python", "--capacity", "1"]


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Another host's environment: its own HOME, data and config dirs, no database."""
    root = tmp_path / "client"
    env = {"HOME": str(root / "home"), "ARBITER_DATA_DIR": str(root / "data"),
           "ARBITER_CONFIG_DIR": str(root / "config"), "XDG_CONFIG_HOME": str(root / "xdg")}
    for name in [n for n in os.environ if n.startswith("ARBITER_")
                 and not n.startswith("ARBITER_TEST_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    (root / "config").mkdir(parents=True)
    return env


def remote(live: Live, *args: str, token: str | None = None) -> Any:
    return cli("--server", live.url, "--token", token or live.token, *args)


def local(live: Live, env: dict[str, str], *args: str) -> Any:
    """The same command on the server's own database (its HOME, its settings)."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return cli("--token", live.token, *args)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def server_env(live: Live, clean_env: dict[str, str]) -> dict[str, str]:
    env = dict(clean_env)
    if live.settings.database_url.startswith("postgres"):
        env["ARBITER_DATABASE__URL"] = live.settings.database_url
    return env


def test_a_remote_cli_registers_routes_and_records_with_a_token_only(
        live: Live, server_env: dict[str, str], elsewhere: dict[str, str]):
    assert remote(live, "agents", "register", *AGENT).exit_code == 0
    listed = remote(live, "--json", "agents", "list")
    assert listed.exit_code == 0, listed
    assert [a["id"] for a in listed.json()["items"]] == ["coder-1"]
    assert listed.json()["meta"]["tenant"] == "default"
    routed = remote(live, "--json", "route", "task", "--task-type", "code-editing")
    assert routed.exit_code == 0, routed
    task_id = routed.json()["task_id"]
    done = remote(live, "--json", "route", "outcome", "--task-id", task_id, "--success")
    assert done.exit_code == 0, done
    assert done.json()["status"] == "succeeded"
    assert not (Path(elsewhere["ARBITER_DATA_DIR"]) / "arbiter.db").exists()


def test_remote_documents_are_the_local_ones(live: Live, server_env: dict[str, str],
                                             elsewhere: dict[str, str]):
    assert remote(live, "agents", "register", *AGENT).exit_code == 0
    for args in (["agents", "show", "coder-1"], ["agents", "list"], ["agents", "stats"],
                 ["route", "history"], ["tokens", "list"], ["audit", "verify"], ["whoami"]):
        over_http = remote(live, "--json", *args)
        on_database = local(live, server_env, "--json", *args)
        assert over_http.exit_code == on_database.exit_code == 0, (args, over_http)
        a, b = over_http.json(), on_database.json()
        for document in (a, b):
            document.pop("meta")
        assert a == b, args


@pytest.mark.parametrize("args", [
    ["agents", "show", "nobody"],
    ["agents", "register", "--id", "x", "--name", "X", "--model-family", "m",
     "--task-type", "code-editing", "--capacity", "0"],
    ["route", "task", "--task-type", "code-review"],
    ["route", "outcome", "--task-id", "never-routed", "--success"],
    ["tokens", "revoke", "nope", "--yes"],
    ["audit", "verify", "--expect-head", "999:abc"],
])
def test_remote_exit_codes_and_errors_are_the_local_ones(
        live: Live, server_env: dict[str, str], elsewhere: dict[str, str], args: list[str]):
    over_http = remote(live, "--json", *args)
    on_database = local(live, server_env, "--json", *args)
    assert over_http.exit_code == on_database.exit_code != 0, (over_http, on_database)
    assert over_http.error()["code"] == on_database.error()["code"]
    assert over_http.error().get("details") == on_database.error().get("details")


def test_at_capacity_and_a_wrong_token_exit_as_locally(sqlite_live: Live, elsewhere: dict[str, str]):
    live = sqlite_live
    assert remote(live, "agents", "register", *AGENT).exit_code == 0
    assert remote(live, "route", "task", "--task-type", "code-editing").exit_code == 0
    assert remote(live, "route", "task", "--task-type", "code-editing").exit_code == 9
    wrong = remote(live, "--json", "agents", "list", token="arb_aaaaaaaaaaaa_" + "b" * 43)
    assert wrong.exit_code == 6 and wrong.error()["code"] == "unauthenticated"
    empty = cli("--server", live.url, "--token", "", "agents", "list")
    assert empty.exit_code == 6


@pytest.mark.parametrize("args", [["init"], ["db", "current"], ["tenants", "list"],
                                  ["journal", "status"], ["demo"], ["bench"],
                                  ["soak", "--duration", "1s"], ["mutate"], ["serve"]])
def test_local_only_commands_refuse_in_remote_mode(sqlite_live: Live, elsewhere: dict[str, str],
                                                   args: list[str]):
    live = sqlite_live
    result = cli("--server", live.url, *args)
    assert result.exit_code == 2, result
    assert "direct database access" in result.stderr
    assert result.stderr.count("\n") == 1
    assert not (Path(elsewhere["ARBITER_DATA_DIR"]) / "arbiter.db").exists()


def test_login_saves_the_server_and_later_commands_use_it(sqlite_live: Live,
                                                          elsewhere: dict[str, str]):
    live = sqlite_live
    saved = cli("--json", "login", "--server", live.url, "--token", live.token)
    assert saved.exit_code == 0, saved
    assert saved.json()["tenant"] == "default" and saved.json()["role"] == "admin"
    credentials = Path(elsewhere["ARBITER_CONFIG_DIR"]) / "credentials.toml"
    assert f'server = "{live.url}"' in credentials.read_text()
    assert cli("whoami").exit_code == 0  # no --server, no --token: the profile's
    forced_local = cli("--server", "", "agents", "list")
    assert forced_local.exit_code == 10  # no database here
    refused = cli("--json", "login", "--server", live.url, "--token", "arb_x_y", "--force")
    assert refused.exit_code == 6
    assert f'server = "{live.url}"' in credentials.read_text()


@pytest.mark.parametrize("url", ["ftp://host", "localhost:8787", "http://user:pw@host:1",
                                 "http://host:1/?q=1"])
def test_a_server_that_is_not_a_server_url_is_exit_2(elsewhere: dict[str, str], url: str):
    result = cli("--json", "--server", url, "agents", "list")
    assert result.exit_code == 2 and result.error()["details"]["field"] == "server"
    assert "pw" not in result.stderr


def test_an_unreachable_server_is_exit_10_within_the_timeout(elsewhere: dict[str, str]):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    started = time.monotonic()
    result = cli("--server", f"http://127.0.0.1:{port}", "--timeout", "1.5", "--token",
                 "arb_aaaaaaaaaaaa_" + "b" * 43, "agents", "list")
    assert result.exit_code == 10, result
    assert time.monotonic() - started < 6
    assert "cannot reach the arbiter server" in result.stderr


def test_a_remote_command_imports_no_sql(sqlite_live: Live, elsewhere: dict[str, str]):
    """Nor pydantic (cli/coercion.py) or httpx's command-line tool (click, pygments, rich's
    Syntax: adapters/remote._import_httpx); ``httpx._main`` stays importable afterwards."""
    live = sqlite_live
    code = ("import sys\nfrom arbiter_cli.cli.app import main\n"
            f"rc = main(['--server', {live.url!r}, '--token', {live.token!r}, '--json', "
            "'agents', 'list'])\n"
            "print(rc, sorted(m for m in ('sqlalchemy', 'psycopg2', 'alembic', 'fastapi', "
            "'uvicorn', 'pydantic', 'click', 'pygments', 'rich.syntax') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **elsewhere}, timeout=60, check=False)
    rc, modules = done.stdout.strip().splitlines()[-1].split(" ", 1)
    assert rc == "0", done.stderr
    assert json.loads(modules.replace("'", '"')) == []


class LosesFirstAnswer:
    """A TCP proxy that delivers the first request to the server and drops its answer (the
    connection closes as if the network failed on the way back); later ones pass."""

    def __init__(self, upstream_port: int) -> None:
        import socket
        import threading

        self.upstream = ("127.0.0.1", upstream_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.dropped = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            if self.dropped == 0:
                self.dropped = 1
                threading.Thread(target=self._drop, args=(client, upstream), daemon=True).start()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _drop(client: Any, upstream: Any) -> None:
        request = b""
        while b"\r\n\r\n" not in request:  # the whole head, then the whole body
            request += client.recv(65536)
        head, _, body = request.partition(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length:
            body += client.recv(65536)
        upstream.sendall(head + b"\r\n\r\n" + body)
        upstream.settimeout(10)
        upstream.recv(65536)  # the server answered: the answer goes nowhere
        client.close()
        upstream.close()

    @staticmethod
    def _pipe(source: Any, target: Any) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.close()


def test_a_route_whose_answer_is_lost_is_retried_as_the_same_task(sqlite_live: Live,
                                                                    elsewhere: dict[str, str]):
    live = sqlite_live
    assert remote(live, "agents", "register", *AGENT[:-1], "2").exit_code == 0
    proxy = LosesFirstAnswer(int(live.url.rsplit(":", 1)[1]))
    routed = cli("--server", f"http://127.0.0.1:{proxy.port}", "--token", live.token,
                 "--json", "route", "task", "--task-type", "code-editing")
    proxy.close()
    assert proxy.dropped == 1
    assert routed.exit_code == 0, routed
    assert routed.json()["already_routed"] is True  # the first attempt had been applied
    history = remote(live, "--json", "route", "history").json()["items"]
    assert [d["task_id"] for d in history] == [routed.json()["task_id"]]  # one decision


def test_503_is_retried_within_the_timeout_then_reported(elsewhere: dict[str, str]):
    """RemoteClient against a small live server that is unavailable, then is not."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    from arbiter_cli.adapters.remote import RemoteClient
    from arbiter_cli.errors import StorageUnavailable
    from tests.api.conftest import serve_app

    calls: list[int] = []
    app = FastAPI()

    @app.get("/flaky")
    def flaky() -> JSONResponse:
        calls.append(1)
        if len(calls) < 3:
            return JSONResponse({"error": {"code": "storage_unavailable", "message": "down",
                                           "exit_code": 10}}, status_code=503)
        return JSONResponse({"ok": True, "meta": {"tenant": "default"}})

    @app.get("/down")
    def down() -> JSONResponse:
        return JSONResponse({"error": {"code": "storage_unavailable", "message": "still down",
                                       "exit_code": 10}}, status_code=503)

    for url in serve_app(app):
        client = RemoteClient(url, "arb_x", timeout_s=5, correlation_id="c")
        assert client.call("GET", "/flaky") == {"ok": True}
        assert len(calls) == 3 and client.meta == {"tenant": "default"}
        short = RemoteClient(url, "arb_x", timeout_s=0.6, correlation_id="c")
        started = time.monotonic()
        with pytest.raises(StorageUnavailable, match="still down"):
            short.call("GET", "/down")
        assert time.monotonic() - started < 3
        client.close()
        short.close()


def test_a_server_answering_odd_documents_is_exit_10_or_its_code_never_a_crash(
        elsewhere: dict[str, str]):
    """A server of another version (or a compromised one) answers documents of other shapes:
    the remote CLI says so in one line (exit 10), never `internal error: KeyError` (exit 70);
    an error object with odd details keeps its exit code; escape sequences in a message never
    reach the operator's terminal; a redirect is not followed (the token stays put)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, RedirectResponse, Response
    from starlette.routing import Route

    from tests.api.conftest import serve_app

    answers: dict[str, Response] = {}
    elsewhere_hits: list[str] = []

    async def answer(request: Request) -> Response:
        if request.url.path.startswith("/stolen"):
            elsewhere_hits.append(request.headers.get("authorization", ""))
            return JSONResponse({"tenant": "default", "role": "admin", "token_id": None})
        return answers["now"]

    app = Starlette(routes=[Route("/{p:path}", answer, methods=["GET", "POST"])])
    for url in serve_app(app):
        cases: list[tuple[Response, int, str]] = [
            (JSONResponse({"tenant": 5}), 10, "cannot read"),
            (JSONResponse({"id": "x", "performance": "?"}), 10, "cannot read"),
            (JSONResponse({"error": {"code": "rate_limited", "message": "slow down",
                                     "exit_code": 7, "details": {"retry_after_s": "soon"}}},
                          status_code=429), 7, "slow down"),
            (JSONResponse({"error": {"code": "config_invalid", "message": "bad",
                                     "exit_code": 3, "details": {"problems": 5}}},
                          status_code=500), 3, "bad"),
            (JSONResponse({"error": {"code": "not_found", "message": "\x1b[2J\x1b]0;owned\x07x",
                                     "exit_code": 4}}, status_code=404), 4, "x"),
            (RedirectResponse(f"{url}/stolen", status_code=307), 10, "HTTP 307"),
        ]
        for response, exit_code, says in cases:
            answers["now"] = response
            for args in (["whoami"], ["agents", "show", "coder-1"]):
                result = cli("--server", url, "--token", "arb_x_y", "--timeout", "2", *args)
                assert result.exit_code == exit_code, (args, response.body, result)
                assert says in result.stderr and "\x1b" not in result.stderr, result.stderr
                assert "Traceback" not in result.stderr
    assert elsewhere_hits == []


def test_a_token_that_cannot_be_a_header_is_exit_6_as_locally(sqlite_live: Live,
                                                                elsewhere: dict[str, str]):
    """A token with a non-ASCII letter or a line break never reaches the wire: exit 6 with the
    local message, not `internal error: UnicodeEncodeError` (70) or `cannot reach` (10)."""
    for token in ("arb_abc_s\u00e9cret", f"{sqlite_live.token}\r\nX-Evil: 1"):
        result = remote(sqlite_live, "whoami", token=token)
        assert result.exit_code == 6, result
        assert result.stderr == "error: malformed token: expected arb_<id>_<secret>\n"


def test_a_token_sent_in_clear_off_this_host_is_warned_about(elsewhere: dict[str, str]):
    """http:// to another host carries the bearer token unencrypted: one warning line;
    https:// and loopback hosts say nothing."""
    warning = "the token travels unencrypted"
    far = cli("--server", "http://192.0.2.1:9", "--token", "arb_abc_def", "--timeout", "0.2",
              "agents", "list")
    assert far.exit_code != 0 and warning in far.stderr, far
    assert "arb_abc_def" not in far.stderr
    for url in ("https://192.0.2.1:9", "http://127.0.0.1:9", "http://[::1]:9",
                "http://localhost:9"):
        near = cli("--server", url, "--token", "arb_abc_def", "--timeout", "0.2",
                   "agents", "list")
        assert warning not in near.stderr, (url, near)


@pytest.mark.parametrize("correlation_id", ["café", "\u65e5\u672c"])
def test_a_correlation_id_that_cannot_be_a_header_is_exit_2_not_an_internal_error(
        sqlite_live: Live, elsewhere: dict[str, str], correlation_id: str):
    """--correlation-id takes any printable text locally; over HTTP it is a header, which
    carries ASCII only: one line, exit 2, never `internal error: UnicodeEncodeError` (70)."""
    result = cli("--server", sqlite_live.url, "--token", sqlite_live.token,
                 "--correlation-id", correlation_id, "whoami")
    assert result.exit_code == 2, result
    assert result.stderr.count("\n") == 1 and "correlation" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and sqlite_live.token not in result.stderr
    ascii_id = cli("--server", sqlite_live.url, "--token", sqlite_live.token, "--json",
                   "--correlation-id", "job-42/step:1", "whoami")
    assert ascii_id.exit_code == 0, ascii_id
    assert ascii_id.json()["meta"]["correlation_id"] == "job-42/step:1"


def test_an_error_code_this_client_does_not_know_is_the_servers_not_a_client_bug(
        elsewhere: dict[str, str]):
    """A server of another version may answer a ``code`` this client has no class for: that is
    the server's answer (exit 10, its message kept, in one line), not exit 70, which says
    "a bug in this program"."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from tests.api.conftest import serve_app

    async def answer(request: Request) -> Response:
        return JSONResponse({"error": {"code": "quota_exceeded", "message": "over quota",
                                       "exit_code": 12}}, status_code=418)

    app = Starlette(routes=[Route("/{p:path}", answer, methods=["GET", "POST"])])
    for url in serve_app(app):
        for args in (["whoami"], ["agents", "show", "coder-1"]):
            result = cli("--server", url, "--token", "arb_x_y", "--timeout", "2", *args)
            assert result.exit_code == 10, (args, result)
            assert result.stderr.count("\n") == 1 and "over quota" in result.stderr, result
            assert "quota_exceeded" in result.stderr


def test_httpx_keeps_its_command_line_tool_for_a_later_import():
    code = ("import sys\nfrom arbiter_cli.adapters.remote import _import_httpx\n"
            "httpx = _import_httpx()\nbefore = 'click' in sys.modules\n"
            "import httpx._main\n"
            "print(before, 'click' in sys.modules, hasattr(httpx._main, 'click'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True", "True"]
