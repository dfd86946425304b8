"""Running arbiter against a throwaway cluster: real subprocesses, with hang detection.

``Arbiter`` runs the console entry point (``python -m arbiter_cli``) in a fresh interpreter
per command, like an operator or cron would; ``Driver`` keeps one worker process that runs
``main()`` per command (tests/faults/worker.py) and answers line by line, so a test can run
many commands quickly and still tell a hang from an answer.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


class Hang(AssertionError):
    """A command did not answer within its watchdog time."""


@dataclass
class Run:
    argv: list[str]
    exit: int
    stdout: str
    stderr: str
    wall_s: float
    duration_s: float | None = None  # in-process, from --metrics-file (excludes start-up)

    def json(self) -> dict[str, Any]:
        return json.loads(self.stdout)  # type: ignore[no-any-return]

    def meta(self) -> dict[str, Any]:
        try:
            return dict(self.json().get("meta", {}))
        except ValueError:
            return {}

    def __repr__(self) -> str:
        return (f"Run({' '.join(self.argv)!r}, exit={self.exit}, wall={self.wall_s:.2f}s, "
                f"stdout={self.stdout[:300]!r}, stderr={self.stderr[-500:]!r})")


class Arbiter:
    """The ``arbiter`` CLI in a subprocess with a given environment."""

    def __init__(self, env: dict[str, str], metrics_dir: Path | None = None) -> None:
        self.env = env
        self.metrics_dir = metrics_dir
        self._n = 0

    def __call__(self, *argv: str, timeout: float = 120.0, metrics: bool = False,
                 input: str | None = None) -> Run:
        args = list(argv)
        metrics_file: Path | None = None
        if metrics:
            assert self.metrics_dir is not None
            self._n += 1
            metrics_file = self.metrics_dir / f"run-{self._n}.prom"
            args = ["--metrics-file", str(metrics_file), *args]
        started = time.monotonic()
        try:
            done = subprocess.run([sys.executable, "-m", "arbiter_cli", *args], env=self.env,
                                  cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                                  input=input)
        except subprocess.TimeoutExpired as exc:
            raise Hang(f"`arbiter {' '.join(argv)}` hung: no exit after {timeout:.1f}s "
                       f"(stderr: {_text(exc.stderr)[-500:]!r})") from None
        run = Run(list(argv), done.returncode, done.stdout, done.stderr,
                  time.monotonic() - started)
        if metrics_file is not None:
            run.duration_s = command_duration(metrics_file)
        return run


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def command_duration(path: Path) -> float | None:
    """``arbiter_command_duration_seconds_sum`` of a --metrics-file (one run per file)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("arbiter_command_duration_seconds_sum"):
            return float(line.rsplit(" ", 1)[1])
    return None


class Driver:
    """One worker process running ``main()`` per command sent to it (``worker commands``)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.worker", "commands"], env=env, cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, bufsize=1)

    def ask(self, argv: list[str], watchdog_s: float) -> Run:
        """Run ``argv``; ``Hang`` (and the process killed) if no answer within ``watchdog_s``."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        started = time.monotonic()
        self.proc.stdin.write(json.dumps(argv) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], watchdog_s)
        if not ready:
            self.kill()
            raise Hang(f"`arbiter {' '.join(argv)}` hung: no answer after {watchdog_s:.1f}s")
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the driver died running `arbiter {' '.join(argv)}` "
                                 f"(exit {self.proc.wait()})")
        answer = json.loads(line)
        return Run(argv, int(answer["exit"]), answer["stdout"], answer["stderr"],
                   time.monotonic() - started, duration_s=float(answer["elapsed_s"]))

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()

    def close(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            self.proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=30)
        self.kill()


def with_consent(arbiter: Arbiter, *argv: str, **kwargs: Any) -> Run:
    """A destructive command, consented with ``--yes`` (SPEC §16)."""
    return arbiter(*argv, "--yes", **kwargs)


FLEET = [f"fleet-{i}" for i in range(4)]


def replay_until_empty(arbiter: Arbiter, within_s: float = 90.0) -> Run:
    """``journal replay`` until it exits 0: the breaker lets one probe through per timeout."""
    deadline = time.monotonic() + within_s
    while True:
        run = arbiter("--json", "journal", "replay", timeout=within_s)
        if run.exit == 0 or time.monotonic() > deadline:
            return run
        time.sleep(1.0)


def register_fleet(arbiter: Arbiter, task_type: str = "code-review", capacity: int = 1000) -> None:
    """Agents the routes of a test go to (registered while the database is up)."""
    lines = [json.dumps({"id": agent, "name": agent, "model_family": "fault-test",
                         "task_types": [task_type], "capacity": capacity}) for agent in FLEET]
    run = arbiter("--json", "agents", "register", "--file", "-", input="\n".join(lines))
    assert run.exit == 0 and run.json()["count"] == len(FLEET), run


def initialize(arbiter: Arbiter) -> None:
    """``arbiter init`` (the admin token lands in the credentials file of the env's config dir),
    the fleet, and one read so the local snapshot exists before any fault."""
    run = arbiter("--json", "init")
    assert run.exit == 0, run
    register_fleet(arbiter)
    run = arbiter("--json", "agents", "list")
    assert run.exit == 0 and run.json()["count"] == len(FLEET), run
