#!/usr/bin/env python3
"""CLI start-up, interleaved between builds: wall and CPU (user + sys) per call, median of N.

    scripts/bench_start.py --tree before=/work/wt-before --tree after=. --runs 9
    scripts/bench_start.py --tree now=. agents-list route-task remote-agents-list

Each tree needs its own .venv. Every tree runs in a scratch data and config directory of its
own (init, 5 agents), removed afterwards; no ARBITER_* variable of the caller reaches the runs,
and bytecode is cached (PYTHONDONTWRITEBYTECODE is dropped), as for an installed package. The
runs of the trees alternate, so load from other work hits them alike; CPU time is steadier
than wall time on a shared machine. The floors are the interpreter and the three imports every
data command needs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

COMMANDS = {
    "floor-python": ["{py}", "-c", "pass"],
    "floor-imports": ["{py}", "-c", "import sqlalchemy, typer, rich"],
    "version": ["{arbiter}", "--version"],
    "help": ["{arbiter}", "--help"],
    "agents-list": ["{arbiter}", "agents", "list"],
    "route-task-dry-run": ["{arbiter}", "route", "task", "--task-type", "code-editing", "--dry-run"],
    "route-task": ["{arbiter}", "route", "task", "--task-type", "code-editing"],
    "remote-agents-list": ["{arbiter}", "agents", "list"],  # remote: see remote_environment
}
LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")


def environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ARBITER_") and k != "PYTHONDONTWRITEBYTECODE"}
    env.update(ARBITER_DATA_DIR=str(home / "data"), ARBITER_CONFIG_DIR=str(home / "config"),
               COLUMNS="120")
    return env


def run(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    import time

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def seed(arbiter: str, env: dict[str, str]) -> str:
    """init (its admin token is returned) and 5 agents."""
    init = subprocess.run([arbiter, "--json", "init"], env=env, check=True, text=True,
                          stdout=subprocess.PIPE)
    token: str = json.loads(init.stdout)["admin_token"]
    for i in range(1, 6):
        subprocess.run([arbiter, "agents", "register", "--id", f"coder-{i}", "--name",
                        f"Coder {i}", "--model-family", "claude-3.5", "--task-type",
                        "code-editing", "--language", "Python", "--capacity", "1000"],
                       env=env, check=True, stdout=subprocess.DEVNULL)
    return token


@contextmanager
def serving(arbiter: str, env: dict[str, str]) -> Iterator[str]:
    """``arbiter serve --port 0`` on the tree's scratch store; its URL, then SIGTERM."""
    server = subprocess.Popen([arbiter, "serve", "--port", "0"], env=env, text=True,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        assert server.stderr is not None
        for line in server.stderr:
            found = LISTENING.search(line)
            if found:
                break
        else:
            raise SystemExit(f"arbiter serve did not start (exit {server.wait()})")
        threading.Thread(target=server.stderr.read, daemon=True).start()  # drained
        yield found.group(1)
    finally:
        server.terminate()
        server.wait(timeout=60)


def remote_environment(home: Path, url: str, token: str) -> dict[str, str]:
    """A home with no database, configuration or credentials: the server and token only."""
    (home / "config").mkdir(parents=True, exist_ok=True)
    return {**environment(home), "ARBITER_SERVER": url, "ARBITER_TOKEN": token}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", required=True, metavar="NAME=PATH")
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("commands", nargs="*", metavar="COMMAND",
                        help=f"any of {', '.join(COMMANDS)} (default: all)")
    args = parser.parse_args()
    unknown = set(args.commands) - set(COMMANDS)
    if unknown:
        parser.error(f"unknown command(s): {', '.join(sorted(unknown))}")
    args.commands = args.commands or list(COMMANDS)
    scratch = Path(tempfile.mkdtemp(prefix="arbiter-start."))
    try:
        with ExitStack() as servers:
            trees = {}
            for spec in args.tree:
                name, _, path = spec.partition("=")
                venv = Path(path).resolve() / ".venv" / "bin"
                env = environment(scratch / name)
                (scratch / name / "config").mkdir(parents=True)
                token = seed(str(venv / "arbiter"), env)
                exe = {"py": str(venv / "python"), "arbiter": str(venv / "arbiter")}
                envs = {command: env for command in args.commands}
                if "remote-agents-list" in args.commands:
                    url = servers.enter_context(serving(exe["arbiter"], env))
                    envs["remote-agents-list"] = remote_environment(scratch / f"{name}-remote", url,
                                                                    token)
                trees[name] = (exe, envs)
            print(f"{'command':22} {'tree':8} {'wall median':>12} {'CPU median':>11}"
                  f" {'wall min':>9}  (runs={args.runs}, interleaved)")
            for command in args.commands:
                results: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
                for exe, envs in trees.values():  # warm-up: bytecode, page cache
                    run([part.format(**exe) for part in COMMANDS[command]], envs[command])
                for _ in range(args.runs):
                    for name, (exe, envs) in trees.items():
                        results[name].append(run([p.format(**exe) for p in COMMANDS[command]],
                                                 envs[command]))
                for name, samples in results.items():
                    wall = [s[0] for s in samples]
                    cpu = [s[1] for s in samples]
                    print(f"{command:22} {name:8} {statistics.median(wall) * 1000:10.1f}ms"
                          f" {statistics.median(cpu) * 1000:9.1f}ms {min(wall) * 1000:7.1f}ms")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
