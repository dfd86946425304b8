"""Worker processes of the fault tests: they run arbiter's real ``main()`` in a loop.

Running ``main()`` in one process instead of one interpreter per command keeps a fault run
fast on 2 cores; every call still builds its own state, engine and app like the console
script does. The nemesis SIGKILLs these processes; that is the "arbiter process" of SPEC §7.

``python -m tests.faults.worker set --history H --process w1 --stop-file S``
    The durability workload: register agents, route tasks and record outcomes with unique
    ids, logging invoke/ok/fail/info to the history (fsync'd) around each command.
    ``--task-type`` picks what the routes ask for (default: the fleet's ``code-review``).

``python -m tests.faults.worker commands``
    Read one JSON argv per line on stdin, run it, answer one JSON line (exit code, elapsed
    seconds, stdout, stderr) flushed as soon as it ends, so the parent can tell a hang from a
    slow answer and interleave other commands.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.faults.history import History

FLEET_TASK_TYPE = "code-review"  # the fleet the routes go to
OWN_TASK_TYPE = "testing"  # agents the workers register: never routed to
JOURNALED_OP = re.compile(r"journaled as op (\S+)")
DEFINITE_FAILURES = frozenset({1, 2, 3, 4, 5, 6, 7, 8, 9, 11})  # nothing was written


def run_cli(argv: Sequence[str]) -> tuple[int, str, str, float]:
    """``main(argv)`` with captured output: (exit code, stdout, stderr, elapsed seconds)."""
    from arbiter_cli.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    started = time.monotonic()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # main() returns its code; be safe anyway
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue(), time.monotonic() - started


def verdict_of(code: int, stdout: str) -> tuple[str, dict[str, Any]]:
    """ok / fail / info for a write's exit code, with what the harness wants to remember."""
    if code == 0:
        try:
            meta = json.loads(stdout).get("meta", {})
        except ValueError:
            return "info", {"exit": code, "problem": "exit 0 without a JSON document"}
        return "ok", {"exit": 0, "durability": meta.get("durability")}
    if code in DEFINITE_FAILURES:
        return "fail", {"exit": code}
    # 10: not accepted, but a commit may have happened before the failure; 70, 130, …: unknown
    return "info", {"exit": code}


def error_line(stderr: str) -> str:
    """The error a command reported (its JSON error object), else its last stderr line."""
    lines = stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith(('{"error"', "error:"))]
    return (errors[-1] if errors else lines[-1])[:500]


class SetWorker:
    """The unique-id workload of one worker process (one generation per (re)start)."""

    def __init__(self, history: History, prefix: str, rng: random.Random,
                 task_type: str = FLEET_TASK_TYPE) -> None:
        self.history = history
        self.prefix = prefix
        self.rng = rng
        self.task_type = task_type  # what routes ask for (tests/faults/test_multihost_long.py)
        self.n = 0
        self.routed: list[str] = []  # tasks routed ok, waiting for their outcome

    def step(self) -> None:
        roll = self.rng.random()
        if self.routed and roll < 0.35:
            self.outcome(self.routed.pop(0))
        elif roll < 0.7:
            self.route()
        else:
            self.register()

    def register(self) -> None:
        self.n += 1
        agent = f"{self.prefix}-a{self.n}"
        self.write("register", agent, ["agents", "register", "--id", agent, "--name", agent,
                                       "--model-family", "fault-test", "--task-type",
                                       OWN_TASK_TYPE, "--capacity", "1"])

    def route(self) -> None:
        self.n += 1
        task = f"{self.prefix}-t{self.n}"
        if self.write("route", task, ["route", "task", "--task-type", self.task_type,
                                      "--task-id", task]) == "ok":
            self.routed.append(task)

    def outcome(self, task: str) -> None:
        self.write("outcome", task, ["route", "outcome", "--task-id", task, "--success",
                                     "--quality", "0.9", "--latency-ms", "100"])

    def write(self, kind: str, element: str, argv: list[str]) -> str:
        op = self.history.invoke(kind, element)
        code, stdout, stderr, elapsed = run_cli(["--json", *argv])
        verdict, extra = verdict_of(code, stdout)
        if verdict != "ok" and stderr.strip():
            extra["stderr"] = error_line(stderr)
        journaled = JOURNALED_OP.search(stderr)
        if journaled:  # the op id the warning names: lets a checker follow it into replay
            extra["journal_op"] = journaled.group(1)
        self.history.complete(verdict, op, kind, element, elapsed_s=round(elapsed, 4), **extra)
        return verdict


def run_set(args: argparse.Namespace) -> int:
    stop = Path(args.stop_file)
    history = History(args.history, args.process)
    worker = SetWorker(history, f"{args.process}g{args.generation}", random.Random(),
                       args.task_type)
    try:
        while not stop.exists():
            worker.step()
    finally:
        history.close()
    return 0


def run_commands(args: argparse.Namespace) -> int:
    answers = sys.stdout
    for raw in sys.stdin:
        if not raw.strip():
            continue
        argv = json.loads(raw)
        code, stdout, stderr, elapsed = run_cli(argv)
        answers.write(json.dumps({"argv": argv, "exit": code, "elapsed_s": elapsed,
                                  "stdout": stdout, "stderr": stderr}) + "\n")
        answers.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tests.faults.worker")
    sub = parser.add_subparsers(dest="mode", required=True)
    set_mode = sub.add_parser("set")
    set_mode.add_argument("--history", required=True)
    set_mode.add_argument("--process", required=True)
    set_mode.add_argument("--generation", type=int, default=0)
    set_mode.add_argument("--stop-file", required=True)
    set_mode.add_argument("--task-type", default=FLEET_TASK_TYPE)
    sub.add_parser("commands")
    args = parser.parse_args(argv)
    return run_set(args) if args.mode == "set" else run_commands(args)


if __name__ == "__main__":
    raise SystemExit(main())
