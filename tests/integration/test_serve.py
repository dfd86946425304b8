"""``arbiter serve`` as a real process (SPEC §8, §9): health codes, the fleet's metrics after
routing done by *other* CLI processes, and a graceful SIGTERM that lets a request finish."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import fresh_postgres_database

ARBITER = [sys.executable, "-m", "arbiter_cli"]
LISTENING = re.compile(r"listening on https?://127\.0\.0\.1:(\d+)")


def run(env: dict[str, str], *argv: str) -> dict[str, Any]:
    """One CLI process, to completion; its JSON result."""
    done = subprocess.run([*ARBITER, "--json", *argv], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, (argv, done.stdout, done.stderr)
    return json.loads(done.stdout)  # type: ignore[no-any-return]


class Served:
    """A running ``arbiter serve --port 0`` and the lines it wrote on stderr."""

    token: str | None = None  # the admin token of `arbiter init`, when the test ran it

    def __init__(self, env: dict[str, str], *flags: str) -> None:
        self.process = subprocess.Popen([*ARBITER, "--json", "serve", "--port", "0", *flags],
                                        env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.port = self._port()

    def _pump(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line)

    def _port(self) -> int:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                assert self.process.poll() is None, "serve exited before listening"
                continue
            found = LISTENING.search(line)
            if found:
                return int(found.group(1))
        raise AssertionError("serve never printed its address")

    def get(self, path: str, method: str = "GET") -> tuple[int, str, bytes]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.headers["Content-Type"], response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers["Content-Type"], error.read()

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        from prometheus_client.parser import text_string_to_metric_families

        code, content_type, body = self.get("/metrics")
        assert code == 200 and content_type.startswith("text/plain")
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(body.decode())
                for s in family.samples}

    def stop(self, *, signalled: bool = False) -> tuple[int, str]:
        """SIGTERM (unless the test sent it already), then the exit code and stdout."""
        if not signalled and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=30)
        return self.process.returncode, out


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def environment(request: pytest.FixtureRequest, clean_env: dict[str, str]) -> Iterator[dict[str, str]]:
    env = {**os.environ, **clean_env}
    if request.param == "sqlite":
        yield env
        return
    with fresh_postgres_database("serve") as url:
        yield {**env, "ARBITER_DATABASE__URL": url}


@pytest.fixture
def served(environment: dict[str, str]) -> Iterator[Served]:
    run(environment, "init")
    server = Served(environment)
    yield server
    server.stop()


def total(samples: dict[Any, float], name: str, **labels: str) -> float:
    return sum(value for (found, pairs), value in samples.items()
               if found == name and set(labels.items()) <= set(pairs))


@pytest.mark.slow
def test_the_fleet_series_move_with_routing_done_by_other_processes(
        served: Served, environment: dict[str, str]):
    before = served.metrics()
    assert total(before, "arbiter_fleet_up") == 1
    assert total(before, "arbiter_routing_decisions_total") == 0
    for agent in ("coder-1", "coder-2"):
        run(environment, "agents", "register", "--id", agent, "--name", agent,
            "--model-family", "claude-3.5", "--task-type", "code-review", "--capacity", "2")
    for task in ("T-1", "T-2", "T-3"):
        run(environment, "route", "task", "--task-type", "code-review", "--task-id", task,
            "--strategy", "ucb")
    run(environment, "route", "outcome", "--task-id", "T-1", "--success")
    run(environment, "route", "outcome", "--task-id", "T-2", "--failure")

    after = served.metrics()
    assert total(after, "arbiter_routing_decisions_total", strategy="ucb", result="routed") == 3
    assert total(after, "arbiter_outcomes_total", result="succeeded") == 1
    assert total(after, "arbiter_outcomes_total", result="failed") == 1
    assert total(after, "arbiter_outcomes_total", result="expired") == 0
    assert total(after, "arbiter_decisions_open") == 1
    assert total(after, "arbiter_routing_decision_seconds_count") == 3
    assert total(after, "arbiter_routing_decision_seconds_bucket", le="+Inf") == 3
    assert total(after, "arbiter_agents", status="available") == 2
    assert total(after, "arbiter_agents", status="offline") == 0
    assert total(after, "arbiter_fleet_capacity") == 4
    assert total(after, "arbiter_fleet_active_tasks") == 1
    assert total(after, "arbiter_fleet_utilization") == pytest.approx(0.25)
    assert total(after, "arbiter_breaker_state") == 0
    assert total(after, "arbiter_journal_backlog") == 0
    assert total(after, "process_resident_memory_bytes") > 0
    assert total(after, "arbiter_http_requests_total", route="/metrics", method="GET",
                 status="200") >= 1
    assert total(after, "arbiter_db_call_seconds_count", operation="select") >= 1  # serve's own

    code, out = served.stop()
    assert code == 0
    summary = json.loads(out)
    assert summary["stopped_by"] == "SIGTERM" and summary["requests"] >= 2
    assert summary["meta"]["command"] == "serve"


@pytest.mark.slow
def test_health_endpoints_answer_with_health_json(served: Served):
    for path in ("/livez", "/readyz", "/health"):
        code, content_type, body = served.get(path)
        assert code == 200, (path, body)
        assert content_type == "application/health+json"
        document = json.loads(body)
        assert document["status"] in ("pass", "warn") and "checks" in document
    code, _, body = served.get("/nowhere")
    assert code == 404 and "/metrics" in json.loads(body)["endpoints"]
    assert served.get("/livez", method="HEAD")[::2] == (200, b"")
    assert served.get("/health", method="POST")[0] == 405


@pytest.mark.slow
def test_a_request_carries_its_correlation_id(served: Served):
    request = urllib.request.Request(f"http://127.0.0.1:{served.port}/livez",
                                     headers={"X-Correlation-Id": "probe-7"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["X-Correlation-Id"] == "probe-7"
    with urllib.request.urlopen(f"http://127.0.0.1:{served.port}/livez", timeout=30) as response:
        assert len(response.headers["X-Correlation-Id"]) == 36  # generated: a UUID


@pytest.mark.slow
def test_sigterm_lets_an_in_flight_request_finish_then_exits_0(served: Served):
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
        sock.sendall(b"GET /livez HTTP/1.0\r\n")  # the request is not complete yet
        time.sleep(0.3)
        served.process.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert served.process.poll() is None  # waiting for the request in flight
        sock.sendall(b"Host: test\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200")  # h11 answers a 1.0 request in its own version
    started = time.monotonic()
    code, out = served.stop(signalled=True)
    assert code == 0 and time.monotonic() - started < 10
    assert json.loads(out)["stopped_by"] == "SIGTERM"


@pytest.mark.slow
def test_without_a_database_readiness_fails_but_liveness_and_metrics_answer(clean_env):
    server = Served({**os.environ, **clean_env})  # no `arbiter init`: no database
    try:
        assert server.get("/livez")[0] == 200
        for path in ("/readyz", "/health"):
            code, content_type, body = server.get(path)
            assert (code, content_type) == (503, "application/health+json")
            assert json.loads(body)["status"] == "fail"
        assert total(server.metrics(), "arbiter_fleet_up") == 0
    finally:
        code, _ = server.stop()
    assert code == 0


def test_a_port_in_use_exits_2_with_one_line(clean_env, tmp_path: Path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run([*ARBITER, "serve", "--port", str(port)], capture_output=True,
                              text=True, env={**os.environ, **clean_env}, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("error: cannot listen on 127.0.0.1:") and done.stdout == ""


# ---------------------------------------------------------------------------- slow clients (L1)

#: The transport's bounds hold for either HTTP/1.1 parser (``serve.http``).
PARSERS = pytest.mark.parametrize("http", ["httptools", "h11"])


class SlowClient(threading.Thread):
    """A request line, then one header line every ``every_s``, never the blank line."""

    def __init__(self, port: int, every_s: float = 1.0, lines: int = 60) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.every_s = every_s
        self.lines = lines
        self.halt = threading.Event()

    def run(self) -> None:
        try:
            self.sock.sendall(b"GET /livez HTTP/1.0\r\n")
            for number in range(self.lines):
                if self.halt.wait(self.every_s):
                    return
                self.sock.sendall(f"X-Slow-{number}: x\r\n".encode())
        except OSError:
            return  # the server closed the connection

    def closed_by_server(self) -> bool:
        """True once the server has closed its end (EOF or reset), within 5 s."""
        self.halt.set()
        self.sock.settimeout(5)
        try:
            return self.sock.recv(65536) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
        finally:
            self.sock.close()


@contextlib.contextmanager
def _served(env: dict[str, str], *flags: str, **settings: str) -> Iterator[Served]:
    """``arbiter init`` then ``serve`` with ``serve.*`` settings; killed if a test fails."""
    env = {**env, **{f"ARBITER_SERVE__{k.upper()}": v for k, v in settings.items()}}
    token = run(env, "init")["admin_token"]
    server = Served(env, *flags)
    server.token = token
    try:
        yield server
    finally:
        if server.process.poll() is None:
            _kill_tree(server.process)


def _kill_tree(process: subprocess.Popen[str]) -> None:
    """Kill serve and its worker processes (they hold its stderr open), then reap it."""
    import psutil

    with contextlib.suppress(psutil.NoSuchProcess):
        for child in psutil.Process(process.pid).children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
    process.kill()
    process.communicate()


def _stop_within(server: Served, limit_s: float) -> tuple[float, dict[str, Any]]:
    """SIGTERM, then how long serve took to exit (killed if it overruns) and its summary."""
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    try:
        out, _ = server.process.communicate(timeout=limit_s + 30)
    except subprocess.TimeoutExpired:
        _kill_tree(server.process)
        raise AssertionError(f"serve still running {limit_s + 30:.0f} s after SIGTERM") from None
    took = time.monotonic() - started
    assert server.process.returncode == 0, out
    return took, json.loads(out)


@pytest.mark.slow
@PARSERS
def test_slow_clients_cannot_hold_serve_open_after_sigterm(clean_env, http: str):
    """Five clients trickling a header line a second (the attack) delay the exit by at most
    serve.shutdown_timeout; their connections are closed."""
    with _served({**os.environ, **clean_env}, http=http, shutdown_timeout="3s") as server:
        clients = [SlowClient(server.port) for _ in range(5)]
        for client in clients:
            client.start()
        time.sleep(2.5)
        assert server.get("/livez")[0] == 200  # they do not starve other callers
        took, summary = _stop_within(server, 3 + 2)
    assert took < 3 + 2, f"serve took {took:.1f} s to exit after SIGTERM"
    assert summary["stopped_by"] == "SIGTERM"
    assert all(client.closed_by_server() for client in clients)


@pytest.mark.slow
@pytest.mark.postgres
@PARSERS
def test_a_request_in_flight_completes_during_the_drain(clean_env, http: str):
    """SIGTERM while /health waits on a slow database: the answer still arrives whole, the
    slow clients are cut at the end of the drain, and serve exits in time."""
    from sqlalchemy.engine import make_url

    from tests.faults.proxy import FaultProxy

    with fresh_postgres_database("drain") as url:
        server_url = make_url(url)
        with FaultProxy((server_url.host or "127.0.0.1", server_url.port or 5432)) as proxy:
            proxied = server_url.set(port=proxy.port).render_as_string(hide_password=False)
            with _served({**os.environ, **clean_env, "ARBITER_DATABASE__URL": proxied},
                         http=http, shutdown_timeout="6s") as server:
                clients = [SlowClient(server.port) for _ in range(5)]
                for client in clients:
                    client.start()
                proxy.set_mode("latency", latency_ms=250)
                answer: dict[str, Any] = {}
                asking = threading.Thread(
                    target=lambda: answer.update(health=server.get("/health")))
                started = time.monotonic()
                asking.start()
                time.sleep(0.4)
                assert asking.is_alive(), "the request finished before SIGTERM: nothing in flight"
                took, summary = _stop_within(server, 6 + 2)
                asking.join(timeout=5)
    code, content_type, body = answer["health"]
    assert code in (200, 503) and content_type == "application/health+json"
    assert "database:responseTime" in json.loads(body)["checks"]
    assert time.monotonic() - started > 0.4 and took < 6 + 2
    assert summary["requests"] >= 1
    assert all(client.closed_by_server() for client in clients)


def _closed_after(sock: socket.socket, trickle_s: float | None, limit_s: float) -> float | None:
    """Seconds until the server closes ``sock`` while we trickle a header line every
    ``trickle_s`` (or stay silent); None if it is still open after ``limit_s``."""
    import select

    started = time.monotonic()
    sock.sendall(b"GET /livez HTTP/1.0\r\n")
    while time.monotonic() - started < limit_s:
        readable, _, _ = select.select([sock], [], [], trickle_s or 0.2)
        if readable:
            try:
                if sock.recv(65536) == b"":
                    return time.monotonic() - started
            except ConnectionResetError:
                return time.monotonic() - started
        elif trickle_s:
            try:
                sock.sendall(b"X-Slow: x\r\n")
            except OSError:
                return time.monotonic() - started
    return None


@pytest.mark.slow
@PARSERS
def test_idle_and_trickling_clients_are_cut_off_at_the_read_timeout(clean_env, http: str):
    with _served({**os.environ, **clean_env}, http=http, read_timeout="2s") as server:
        for trickle_s in (0.5, None):
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                closed = _closed_after(sock, trickle_s, limit_s=8)
            assert closed is not None and 1.5 <= closed <= 4, (trickle_s, closed)
        assert server.get("/livez")[0] == 200
        assert server.stop()[0] == 0


@pytest.mark.slow
@PARSERS
def test_connections_over_the_cap_are_answered_503_at_once(clean_env, http: str):
    with _served({**os.environ, **clean_env}, http=http, max_connections="3",
                 read_timeout="30s") as server:
        held = [socket.create_connection(("127.0.0.1", server.port), timeout=10)
                for _ in range(3)]
        try:
            time.sleep(0.3)
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as extra:
                extra.sendall(b"GET /livez HTTP/1.0\r\n\r\n")
                answer = b""
                with contextlib.suppress(ConnectionResetError):
                    while chunk := extra.recv(65536):
                        answer += chunk
            assert answer.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in answer
        finally:
            for sock in held:
                sock.close()
        deadline = time.monotonic() + 5
        while server.get("/livez")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.1)  # the held connections end once their sockets are closed
        assert server.get("/livez")[0] == 200
        _took, summary = _stop_within(server, 10)
    assert summary["refused_connections"] >= 1


# ---------------------------------------------------------------------------- the API server (§15)

def _api(server: Served, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    """One API call with the admin token; (status, headers (case-insensitive), body)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}{path}", data=body, method=method,
        headers={"Authorization": f"Bearer {server.token}", "Content-Type": "application/json",
                 **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


@pytest.mark.slow
def test_the_api_is_served_beside_health_and_counted_by_route_template(clean_env):
    with _served({**os.environ, **clean_env}) as server:
        code, headers, body = _api(server, "GET", "/v1/whoami",
                                   headers={"X-Correlation-ID": "probe-9"})
        assert code == 200 and json.loads(body)["role"] == "admin"
        assert headers["X-Correlation-ID"] == "probe-9"
        for agent in ("ghost-1", "ghost-2"):
            code, _, body = _api(server, "GET", f"/v1/agents/{agent}")
            assert code == 404 and json.loads(body)["error"]["exit_code"] == 4
        assert server.get("/openapi.json")[0] == 200
        samples = server.metrics()
        assert total(samples, "arbiter_http_requests_total", route="/v1/agents/{agent_id}",
                     method="GET", status="404") == 2
        assert total(samples, "arbiter_http_requests_total", route="/v1/whoami",
                     status="200") == 1
        assert total(samples, "arbiter_http_request_duration_seconds_count",
                     route="/v1/agents/{agent_id}") == 2
        routes = {dict(labels).get("route") for (name, labels) in samples
                  if name == "arbiter_http_requests_total"}
        assert not any("ghost" in str(route) for route in routes)  # never the raw path
        assert server.stop()[0] == 0


@pytest.mark.slow
@PARSERS
def test_bodies_past_serve_max_body_are_answered_413_announced_or_streamed(clean_env, http: str):
    with _served({**os.environ, **clean_env}, http=http, max_body="1KiB") as server:
        agent = {"id": "coder-1", "name": "coder", "model_family": "claude-3.5",
                 "task_types": ["code-review"], "capacity": 2}
        code, _, body = _api(server, "POST", "/v1/agents", json.dumps(agent).encode())
        assert code == 200, body  # under the limit: served
        big = json.dumps({**agent, "id": "coder-2", "name": "x" * 2000}).encode()
        code, headers, body = _api(server, "POST", "/v1/agents", big)
        assert code == 413
        error = json.loads(body)["error"]
        assert (error["code"], error["exit_code"]) == ("limit_exceeded", 11)
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"POST /v1/agents HTTP/1.1\r\nHost: t\r\n"
                         b"Authorization: Bearer " + str(server.token).encode() + b"\r\n"
                         b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
            for start in range(0, len(big), 500):  # no length announced: counted as it comes
                chunk = big[start:start + 500]
                with contextlib.suppress(OSError):
                    sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            answer = b""
            with contextlib.suppress(ConnectionResetError):
                while chunk := sock.recv(65536):
                    answer += chunk
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b'"limit_exceeded"' in answer
        assert _api(server, "GET", "/v1/agents/coder-2")[0] == 404  # nothing was registered
        assert server.stop()[0] == 0


def _self_signed(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True,
                   timeout=60)
    return cert, key


@pytest.mark.slow
def test_tls_serves_https(clean_env, tmp_path: Path):
    import ssl

    cert, key = _self_signed(tmp_path)
    with _served({**os.environ, **clean_env}, "--tls-cert", str(cert),
                 "--tls-key", str(key)) as server:
        context = ssl.create_default_context(cafile=str(cert))
        with urllib.request.urlopen(f"https://127.0.0.1:{server.port}/livez", timeout=30,
                                    context=context) as response:
            assert response.status == 200
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/livez", timeout=10)
        assert server.stop()[0] == 0


def test_tls_flags_must_come_in_pairs_and_be_readable(clean_env, tmp_path: Path):
    env = {**os.environ, **clean_env}
    for flags in (["--tls-cert", str(tmp_path / "c.pem")],
                  ["--tls-cert", str(tmp_path / "c.pem"), "--tls-key", str(tmp_path / "k.pem")]):
        done = subprocess.run([*ARBITER, "serve", "--port", "0", *flags], capture_output=True,
                              text=True, env=env, timeout=60)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr


def test_security_disabled_is_refused_off_loopback(clean_env):
    env = {**os.environ, **clean_env, "ARBITER_SECURITY__ENABLED": "false"}
    done = subprocess.run([*ARBITER, "serve", "--host", "0.0.0.0", "--port", "0"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 3
    assert done.stderr.startswith("error: security.enabled = false is refused by serve")
    assert done.stderr.count("\n") == 1 and done.stdout == ""


@pytest.mark.slow
def test_security_disabled_serves_on_loopback(clean_env):
    server = Served({**os.environ, **clean_env, "ARBITER_SECURITY__ENABLED": "false"})
    try:
        assert server.get("/livez")[0] == 200
    finally:
        assert server.stop()[0] == 0


@pytest.mark.slow
def test_two_workers_answer_and_stop_on_sigterm(clean_env):
    import psutil

    with _served({**os.environ, **clean_env}, "--workers", "2") as server:
        deadline = time.monotonic() + 30
        workers: list[Any] = []
        while len(workers) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
            workers = [child for child in psutil.Process(server.process.pid).children()
                       if "resource_tracker" not in " ".join(child.cmdline())]
        assert len(workers) == 2
        served_by: set[int] = set()
        kept: list[http.client.HTTPConnection] = []
        try:
            while len(served_by) < 2 and len(kept) < 60:  # until both workers have answered
                connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
                connection.request("GET", "/livez")
                response = connection.getresponse()
                assert response.status == 200 and response.read()
                kept.append(connection)  # kept alive: its server end shows which worker it is
                mine = connection.sock.getsockname()[1]
                served_by |= {worker.pid for worker in workers
                              if any(c.raddr and c.raddr[1] == mine
                                     for c in worker.net_connections())}
            assert len(served_by) == 2, "every request went to one worker"
            asked = len(kept)
            for _ in range(3):  # whichever worker answers the scrape, the counts are everyone's
                samples = server.metrics()
                assert total(samples, "arbiter_http_requests_total", route="/livez") == asked
                assert total(samples, "arbiter_fleet_up") == 1
            assert _api(server, "GET", "/v1/whoami")[0] == 200
        finally:
            for connection in kept:
                connection.close()
        took, summary = _stop_within(server, 10 + 5)
    assert summary["workers"] == 2 and summary["stopped_by"] == "SIGTERM"
    assert not any(worker.is_running() for worker in workers)


@pytest.mark.slow
@PARSERS
def test_the_slow_header_attack_cannot_hold_serve_open_after_sigterm(clean_env, http: str):
    """The attack: a few clients sending one header line every 8 s kept serve alive > 45 s."""
    with _served({**os.environ, **clean_env}, http=http, shutdown_timeout="3s",
                 read_timeout="60s") as server:
        clients = [SlowClient(server.port, every_s=8) for _ in range(4)]
        for client in clients:
            client.start()
        time.sleep(1.0)
        took, summary = _stop_within(server, 3 + 2)
    assert took < 3 + 2, f"serve took {took:.1f} s to exit after SIGTERM"
    assert summary["stopped_by"] == "SIGTERM"
    assert all(client.closed_by_server() for client in clients)


@pytest.mark.slow
@PARSERS
def test_a_trickled_body_is_cut_at_the_read_timeout(clean_env, http: str):
    with _served({**os.environ, **clean_env}, http=http, read_timeout="2s") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"POST /v1/agents HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n"
                         b"Content-Type: application/json\r\n\r\n")
            started = time.monotonic()
            closed = None
            while time.monotonic() - started < 8:
                try:
                    sock.sendall(b" ")
                except OSError:
                    closed = time.monotonic() - started
                    break
                sock.settimeout(0.5)
                try:
                    if sock.recv(65536) == b"":
                        closed = time.monotonic() - started
                        break
                except TimeoutError:
                    continue
                except ConnectionResetError:
                    closed = time.monotonic() - started
                    break
        assert closed is not None and closed <= 4, closed
        assert server.stop()[0] == 0
