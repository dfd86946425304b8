"""Where the CPU of one routing decision goes: one process, on a scratch store.

    .venv/bin/python scripts/profile_decision.py                       # SQLite
    .venv/bin/python scripts/profile_decision.py --database-url postgresql+psycopg2://postgres@127.0.0.1/postgres
    .venv/bin/python scripts/profile_decision.py --profile --top 30    # cProfile, by package

A decision is what ``bench --workload e2e`` times: admit, route a named task, admit, report
its outcome; 100 agents, a warm-up of 50 decisions first. Prints the client's CPU per decision
(``time.process_time``) and, on PostgreSQL, the CPU of the server processes serving the
scratch database (``/proc/<pid>/stat`` of every backend whose title names it: run the server
on this host). With ``--profile`` the client runs under cProfile with a CPU timer (which about
doubles Python's share) and the time is summed by package, then by arbiter function.

``PYTHONPATH=<another tree>`` profiles another checkout with the same venv (interleave runs:
on a shared machine only ratios of neighbouring runs mean anything).
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import os
import pstats
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def backend_cpu_s(database: str) -> float:
    """CPU seconds of the local PostgreSQL backends serving ``database``."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            title = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if title.startswith("postgres: ") and f" {database} " in title:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def plain_decide(app: Any, token: str) -> Callable[[int], None]:
    """One decision (admit, route the named task ``t-<n>``, admit, outcome) on a
    ``build(...)`` app, as a bench worker runs it."""
    from arbiter_cli.domain.routing import Outcome
    from arbiter_cli.tools.bench import TASK

    def decide(n: int) -> None:
        routed = app.routing.route(app.security.admit(token, "route task"),
                                   {**TASK, "task_id": f"t-{n}"})
        app.routing.outcome(app.security.admit(token, "route outcome"),
                            Outcome(success=True, quality=0.9),
                            decision_id=routed.decision.decision_id)

    return decide


def by_package(stats: pstats.Stats, decisions: int, top: int) -> None:
    owners: collections.Counter[str] = collections.Counter()
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (path, _line, _name), (_cc, _nc, own, _cum, _callers) in raw.items():
        if "sqlalchemy/" in path:
            owner = "sqlalchemy/" + path.split("sqlalchemy/")[1].split("/")[0]
        elif "arbiter_cli/" in path:
            owner = "arbiter " + path.split("arbiter_cli/")[1].split("/")[0]
        elif path.startswith("~"):
            owner = "builtins (C calls: drivers, json, hashing)"
        else:
            owner = Path(path).name
        owners[owner] += own
    spent = sum(owners.values())
    print(f"\nprofiled CPU by owner ({spent / decisions * 1e3:.2f} ms per decision)")
    for owner, own in owners.most_common(top):
        print(f"  {own / decisions * 1e3:7.3f} ms {own / spent:6.1%}  {owner}")
    ours = sorted(((cum, own, calls, path, line, name)
                   for (path, line, name), (_cc, calls, own, cum, _callers) in raw.items()
                   if "arbiter_cli/" in path), reverse=True)[:top]
    print("\narbiter functions, cumulative (ms per decision, calls per decision)")
    for cum, own, calls, path, line, name in ours:
        where = f"{path.split('arbiter_cli/')[1]}:{line} {name}"
        print(f"  {cum / decisions * 1e3:7.3f} own {own / decisions * 1e3:6.3f} "
              f"x{calls / decisions:4.1f}  {where}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="a PostgreSQL server (default: SQLite)")
    parser.add_argument("--decisions", type=int, default=600)
    parser.add_argument("--profile", action="store_true", help="cProfile, summed by package")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()

    from arbiter_cli.adapters.scratch import refresh_statistics
    from arbiter_cli.bootstrap import build, scratch_app
    from arbiter_cli.config import load_settings
    from arbiter_cli.dburl import render
    from arbiter_cli.domain.principal import Principal
    from arbiter_cli.tools.bench import _route_agents

    settings = load_settings()
    admin = Principal.local_admin()
    backend = "postgres" if args.database_url else "sqlite"
    with scratch_app(settings, backend, purpose="profile",
                     database_url=args.database_url) as (scratch, _where):
        engine = scratch.engine
        assert engine is not None  # a SQL store
        scratch.agents.register(admin, _route_agents(100, 1000))
        refresh_statistics(engine)
        token = scratch.security.issue(admin, role="orchestrator", name="profile",
                                       expires_in_s=None, rate=1e6, burst=10**7).token
        app = build(settings, url=render(engine.url))  # as a bench worker does
        decide = plain_decide(app, token)

        for n in range(50):
            decide(n)
        database = engine.url.database or ""
        server0 = backend_cpu_s(database) if backend == "postgres" else 0.0
        profiler = cProfile.Profile(time.process_time) if args.profile else None
        wall0, cpu0 = time.perf_counter(), time.process_time()
        if profiler is not None:
            profiler.enable()
        for n in range(50, 50 + args.decisions):
            decide(n)
        if profiler is not None:
            profiler.disable()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        server = backend_cpu_s(database) - server0 if backend == "postgres" else None
        app.close()
    per = 1e3 / args.decisions
    print(f"{backend}: {args.decisions} decisions, per decision: wall {wall * per:.2f} ms, "
          f"client CPU {cpu * per:.2f} ms"
          + ("" if server is None else f", PostgreSQL backend CPU {server * per:.2f} ms")
          + (" (under cProfile)" if profiler else ""))
    if profiler is not None:
        by_package(pstats.Stats(profiler), args.decisions, args.top)


if __name__ == "__main__":
    main()
