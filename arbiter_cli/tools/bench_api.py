"""The ``api`` workload of ``arbiter bench`` (SPEC §13.1): route plus outcome over HTTP.

A real ``arbiter serve --port 0 --workers N`` runs on the scratch store; client processes, each
with one keep-alive ``httpx.Client``, POST ``/v1/route`` then ``/v1/outcomes`` until the time is
up; then serve gets SIGTERM. The server's CPU per request is the CPU time of the serve process
tree (psutil) over the requests; the part spent outside the services is sampled by py-spy when
it is installed (docs/performance.md, "API").
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, Protocol

from arbiter_cli.dburl import render
from arbiter_cli.observability.progress import Tracker
from arbiter_cli.tools.spawn import python_command

Log = Callable[[str], None]
LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")
MAX_WARNINGS = 10  # distinct warning events of serve kept in the result
SERVICES = "(arbiter_cli/services/"  # a sample with a frame of a service is the services' CPU


class Watch(Protocol):
    """``bench.CapacityWatch``: started when built."""

    checks: int

    def stop(self) -> None: ...

    def held(self) -> bool: ...

API_CLIENT = """
import json, random, sys, time
import httpx
job = json.loads(sys.stdin.readline())  # on stdin: argv is visible to every user of the host
worker, seconds = job["worker"], job["seconds"]
rng = random.Random(worker)
task = {"task_type": "code-editing", "languages": ["TypeScript"]}
samples = {"route": [], "outcome": [], "e2e": []}
errors = {}
def failed(op, answer):  # "route 503 storage_unavailable": the status and the error's code
    try:
        code = answer.json()["error"]["code"]
    except Exception:
        code = "-"
    key = f"{op} {answer.status_code} {code}"
    errors[key] = errors.get(key, 0) + 1
with httpx.Client(base_url=job["url"], timeout=30,
                  headers={"Authorization": "Bearer " + job["token"]}) as client:
    warm = client.post("/v1/route", json={**task, "task_id": f"w{worker}-warm-up"})
    if warm.status_code == 200:  # the server's first route and outcome import their code
        client.post("/v1/outcomes", json={"decision_id": warm.json()["decision_id"],
                                          "success": True, "quality": 0.9})
    print("ready", flush=True)  # warmed up: the run starts when every client is ready
    sys.stdin.readline()
    deadline = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < deadline:
        t0 = time.perf_counter_ns()
        routed = client.post("/v1/route", json={**task, "task_id": f"w{worker}-{n}"})
        t1 = time.perf_counter_ns()
        n += 1
        if routed.status_code != 200:
            failed("route", routed)
            continue
        told = client.post("/v1/outcomes", json={"decision_id": routed.json()["decision_id"],
                                                 "success": rng.random() < 0.8,
                                                 "quality": rng.random()})
        t2 = time.perf_counter_ns()
        if told.status_code != 200:
            failed("outcome", told)
            continue
        samples["route"].append(t1 - t0); samples["outcome"].append(t2 - t1)
        samples["e2e"].append(t2 - t0)
print(json.dumps({"samples": samples, "errors": errors}))
"""


class Served:
    """A running ``arbiter serve --port 0`` on ``url``; its stderr is drained in a thread (the
    last lines are kept for an error message)."""

    def __init__(self, database_url: str, workers: int, data_dir: str) -> None:
        env = {**os.environ, "ARBITER_DATABASE__URL": database_url, "ARBITER_DATA_DIR": data_dir,
               "ARBITER_LOGGING__LEVEL": "warning"}
        self.process = subprocess.Popen(
            python_command("-m", "arbiter_cli", "serve", "--port", "0", "--workers",
                           str(workers)), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.tail: list[str] = []
        #: How often serve logged each warning or error event (the outage and degraded-mode
        #: lines a refused request leaves in its log), so that a run with errors says why.
        self.warnings: dict[str, int] = {}
        self.exit_code: int | None = None
        self._pumping = threading.Thread(target=self._pump, daemon=True)
        self._pumping.start()
        self.url = self._address()

    def _pump(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line)
            self.tail = [*self.tail[-4:], line.strip()]
            self._note(line)

    def _note(self, line: str) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            return
        if isinstance(event, dict) and event.get("level") in ("warning", "error", "critical"):
            what = f"{event['level']}: {str(event.get('event', ''))[:200]}"
            if what in self.warnings or len(self.warnings) < MAX_WARNINGS:
                self.warnings[what] = self.warnings.get(what, 0) + 1

    def _address(self) -> str:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.process.poll() is None:
            with suppress(queue.Empty):
                found = LISTENING.search(self.lines.get(timeout=0.5))
                if found:
                    return found.group(1)
        self.stop()
        raise RuntimeError(f"bench: arbiter serve did not start: {' | '.join(self.tail)}")

    def processes(self) -> list[Any]:
        import psutil

        parent = psutil.Process(self.process.pid)
        return [parent, *parent.children(recursive=True)]

    def cpu_s(self) -> float:
        """User plus system CPU seconds of the serve process tree so far."""
        import psutil

        total = 0.0
        for process in self.processes():
            with suppress(psutil.NoSuchProcess):
                times = process.cpu_times()
                total += times.user + times.system
        return total

    def stop(self) -> int:
        """SIGTERM (killed with its workers if it overruns a minute), then its exit code."""
        import psutil

        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            for process in self.processes():
                with suppress(psutil.NoSuchProcess):
                    process.kill()
            code = self.process.wait()
        self._pumping.join(timeout=10)
        assert self.process.stderr is not None
        self.process.stderr.close()
        self.exit_code = code
        return code


def _ready(url: str, workers: int) -> None:
    """Wait until fresh connections (each may reach another worker) answer /livez, then let
    the workers finish starting, so start-up CPU stays out of the measurement."""
    import httpx

    deadline, answered = time.monotonic() + 120, 0
    while answered < 3 * workers:
        if time.monotonic() > deadline:
            raise RuntimeError("bench: arbiter serve never answered /livez")
        try:
            answered += httpx.get(f"{url}/livez", timeout=5).status_code == 200
        except httpx.TransportError:
            time.sleep(0.2)
    time.sleep(1.0)


@contextmanager
def _profiled(pids: list[int], seconds: float) -> Iterator[dict[str, Any]]:
    """py-spy sampling the serve processes while the clients run (nothing without py-spy)."""
    found: dict[str, Any] = {"profiler": None}
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=os.path.dirname(sys.executable))
    if spy is None:
        yield found
        return
    folder = tempfile.mkdtemp(prefix="arbiter-bench-spy-")
    outputs = [os.path.join(folder, f"{pid}.txt") for pid in pids]
    spies = [subprocess.Popen([spy, "record", "--pid", str(pid), "--rate", "100", "--format",
                               "raw", "--duration", str(max(1, int(seconds))), "--nonblocking",
                               "--output", output], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for pid, output in zip(pids, outputs, strict=True)]
    try:
        yield found
    finally:
        for process in spies:
            try:
                process.wait(timeout=seconds + 60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        inside = outside = 0
        for output in outputs:
            with suppress(FileNotFoundError), open(output, encoding="utf-8") as lines:
                for line in lines:
                    stack, _, count = line.rstrip().rpartition(" ")
                    if count.isdigit():
                        if SERVICES in stack:
                            inside += int(count)
                        else:
                            outside += int(count)
        shutil.rmtree(folder, ignore_errors=True)
        if inside + outside:
            found.update(profiler="py-spy", samples=inside + outside,
                         outside_services=round(outside / (inside + outside), 4))


@contextmanager
def _serving(database_url: str, workers: int) -> Iterator[Served]:
    """``arbiter serve`` on a throwaway data directory; stopped and removed at the end."""
    data_dir = tempfile.mkdtemp(prefix="arbiter-bench-serve-")
    try:
        served = Served(database_url, workers, data_dir)
        try:
            yield served
        finally:
            served.stop()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def run_api(app: Any, principal: Any, *, seconds: float, processes: int, workers: int,
            say: Log, progress: Tracker, watch_capacity: Callable[[Any], Watch],
            ) -> tuple[dict[str, list[int]], dict[str, Any]]:
    """Serve the scratch store, drive it from ``processes`` clients; the latency samples (ns)
    per operation and the rest of the result. ``watch_capacity(engine)`` starts the capacity
    check (``bench.CapacityWatch``)."""
    token = app.security.issue(principal, role="orchestrator", name="bench-api",
                               expires_in_s=None, rate=1e6, burst=10**7).token
    progress.update(0, total=seconds, phase="starting arbiter serve")
    with _serving(render(app.engine.url), workers) as served:
        _ready(served.url, workers)
        say(f"arbiter serve ({workers} worker(s)) at {served.url}; {processes} client processes "
            f"for {seconds:g} s")
        watch = watch_capacity(app.engine)
        pids = [p.pid for p in served.processes()]
        if workers > 1:
            pids = pids[1:]  # the supervisor serves no request
        clients = _start_clients(served.url, token, seconds, processes)
        cpu_before, started = served.cpu_s(), time.perf_counter()
        with _profiled(pids, seconds) as profile:
            found = _drive(clients, seconds, progress, started)
        wall = time.perf_counter() - started
        cpu = served.cpu_s() - cpu_before
        watch.stop()
    code = served.exit_code
    samples: dict[str, list[int]] = {}
    errors: dict[str, int] = {}
    for one in found:
        for op, values in one["samples"].items():
            samples.setdefault(op, []).extend(values)
        for kind, n in one["errors"].items():
            errors[kind] = errors.get(kind, 0) + n
    requests = 2 * len(samples.get("route", [])) + sum(errors.values())
    verdict = app.security.verify(principal)
    per_request = cpu / requests * 1000 if requests else None
    server = {"workers": workers, "exit_code": code, "requests": requests,
              "warnings": served.warnings,
              "cpu_s": round(cpu, 3),
              "cpu_per_request_ms": None if per_request is None else round(per_request, 4),
              **profile}
    if per_request is not None and profile.get("outside_services") is not None:
        server["own_cpu_per_request_ms"] = round(per_request * profile["outside_services"], 4)
    return samples, {"processes": processes, "server_workers": workers,
                     "wall_s": round(wall, 2), "decisions": len(samples.get("route", [])),
                     "errors": errors, "server": server,
                     "capacity_never_exceeded": watch.held(), "capacity_checks": watch.checks,
                     "audit_verifies": verdict.ok, "audit_events": verdict.events}


def _start_clients(url: str, token: str, seconds: float,
                   processes: int) -> list[subprocess.Popen[str]]:
    """The client processes, each ready (imports done, its client open) and waiting for go."""
    clients = [subprocess.Popen(python_command("-c", API_CLIENT), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(processes)]
    for number, client in enumerate(clients):  # the token never goes in argv
        assert client.stdin is not None
        client.stdin.write(json.dumps({"url": url, "worker": number, "seconds": seconds,
                                       "token": token}) + "\n")
        client.stdin.flush()
    for client in clients:
        assert client.stdout is not None
        if client.stdout.readline().strip() != "ready":
            _, err = client.communicate(timeout=60)
            for other in clients:
                other.kill()
                other.communicate()
            raise RuntimeError(f"bench client failed: {err.strip().splitlines()[-1:]}")
    return clients


def _drive(clients: list[subprocess.Popen[str]], seconds: float, progress: Tracker,
           started: float) -> list[dict[str, Any]]:
    for client in clients:  # go
        assert client.stdin is not None
        client.stdin.write("go\n")
        client.stdin.flush()
    progress.update(0, total=seconds, phase="routing and reporting over HTTP")
    while (spent := time.perf_counter() - started) < seconds:
        progress.update(spent)
        time.sleep(min(0.25, max(0.0, seconds - spent)))
    progress.update(seconds)
    found = []
    for client in clients:
        out, err = client.communicate(timeout=seconds * 10 + 120)
        if client.returncode != 0:
            raise RuntimeError(f"bench client failed: {err.strip().splitlines()[-1:]}")
        found.append(json.loads(out.strip().splitlines()[-1]))
    return found
