#!/usr/bin/env python3
"""CLI start-up, interleaved between builds: wall and CPU (user + sys) per call, median of N.

    scripts/bench_start.py --tree before=/work/wt-before --tree after=. --runs 9
    scripts/bench_start.py --tree now=. agents-list route-task

Each tree needs its own .venv. Every tree runs in a scratch data and config directory of its
own (init, 5 agents), removed afterwards; no ARBITER_* variable of the caller reaches the runs,
and bytecode is cached (PYTHONDONTWRITEBYTECODE is dropped), as for an installed package. The
runs of the trees alternate, so load from other work hits them alike; CPU time is steadier
than wall time on a shared machine. The floors are the interpreter and the three imports every
data command needs.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

COMMANDS = {
    "floor-python": ["{py}", "-c", "pass"],
    "floor-imports": ["{py}", "-c", "import sqlalchemy, typer, rich"],
    "version": ["{arbiter}", "--version"],
    "help": ["{arbiter}", "--help"],
    "agents-list": ["{arbiter}", "agents", "list"],
    "route-task-dry-run": ["{arbiter}", "route", "task", "--task-type", "code-editing", "--dry-run"],
    "route-task": ["{arbiter}", "route", "task", "--task-type", "code-editing"],
}


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


def seed(arbiter: str, env: dict[str, str]) -> None:
    subprocess.run([arbiter, "init"], env=env, check=True, stdout=subprocess.DEVNULL)
    for i in range(1, 6):
        subprocess.run([arbiter, "agents", "register", "--id", f"coder-{i}", "--name",
                        f"Coder {i}", "--model-family", "claude-3.5", "--task-type",
                        "code-editing", "--language", "Python", "--capacity", "1000"],
                       env=env, check=True, stdout=subprocess.DEVNULL)


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
        trees = {}
        for spec in args.tree:
            name, _, path = spec.partition("=")
            venv = Path(path).resolve() / ".venv" / "bin"
            env = environment(scratch / name)
            (scratch / name / "config").mkdir(parents=True)
            seed(str(venv / "arbiter"), env)
            trees[name] = ({"py": str(venv / "python"), "arbiter": str(venv / "arbiter")}, env)
        print(f"{'command':22} {'tree':8} {'wall median':>12} {'CPU median':>11}"
              f" {'wall min':>9}  (runs={args.runs}, interleaved)")
        for command in args.commands:
            results: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
            for exe, env in trees.values():  # warm-up: bytecode, page cache
                run([part.format(**exe) for part in COMMANDS[command]], env)
            for _ in range(args.runs):
                for name, (exe, env) in trees.items():
                    results[name].append(run([p.format(**exe) for p in COMMANDS[command]], env))
            for name, samples in results.items():
                wall = [s[0] for s in samples]
                cpu = [s[1] for s in samples]
                print(f"{command:22} {name:8} {statistics.median(wall) * 1000:10.1f}ms"
                      f" {statistics.median(cpu) * 1000:9.1f}ms {min(wall) * 1000:7.1f}ms")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
