"""Where the time of one registry ``query`` goes: one process, on a scratch store.

    .venv/bin/python scripts/profile_query.py                        # SQLite, 1 000 agents
    .venv/bin/python scripts/profile_query.py --agents 10000 --database-url postgresql+psycopg2://postgres@127.0.0.1/postgres
    .venv/bin/python scripts/profile_query.py --profile --top 30     # cProfile, by package
    .venv/bin/python scripts/profile_query.py --explain              # the statement's plan

The query is ``bench --workload registry-v1``'s (top 10 ``code-editing`` in TypeScript,
utilization at most 0.8) on its fleet; a warm-up of 100 queries first. Prints per query the
client's CPU (``time.process_time``), on PostgreSQL the CPU of the backends serving the
scratch database (run the server on this host), wall time (P50 and P95) and the statements
the connection ran. ``--explain`` prints the ranking statement's plan with its timings
(PostgreSQL: ``EXPLAIN (ANALYZE, BUFFERS)``; SQLite: ``EXPLAIN QUERY PLAN``).

``PYTHONPATH=<another tree>`` profiles another checkout with the same venv: run it from
``/tmp`` with ``python -P`` so that no checkout in the working directory is imported instead
(interleave runs: on a shared machine only ratios of neighbouring runs mean anything).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_decision import backend_cpu_s, by_package  # noqa: E402 - the sibling script

QUERY = {"task_type": "code-editing", "languages": ["TypeScript"], "max_utilization": 0.8}


def explain(engine: Any, sql: str, params: Any) -> None:
    """The plan of the ranking statement exactly as the driver ran it, timed three times."""
    postgres = engine.dialect.name == "postgresql"
    print(sql, params, sep="\n")
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        for _ in range(3):
            cursor.execute(("EXPLAIN (ANALYZE, BUFFERS) " if postgres else "EXPLAIN QUERY PLAN ")
                           + sql, params)
            rows = cursor.fetchall()
        for row in rows:
            print("  ", *row)
        raw.rollback()
    finally:
        raw.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="a PostgreSQL server (default: SQLite)")
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--profile", action="store_true", help="cProfile, summed by package")
    parser.add_argument("--explain", action="store_true", help="the ranking statement's plan")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()

    from sqlalchemy import event

    from arbiter_cli.adapters.scratch import refresh_statistics
    from arbiter_cli.bootstrap import scratch_app
    from arbiter_cli.config import load_settings
    from arbiter_cli.domain.principal import Principal
    from arbiter_cli.tools.bench import _v1_agent

    settings = load_settings()
    admin = Principal.local_admin()
    backend = "postgres" if args.database_url else "sqlite"
    with scratch_app(settings, backend, purpose="profile",
                     database_url=args.database_url) as (app, _where):
        engine = app.engine
        assert engine is not None  # a SQL store
        for first in range(0, args.agents, 1000):
            app.agents.register(admin, [_v1_agent(i) for i in
                                        range(first, min(args.agents, first + 1000))])
        refresh_statistics(engine)
        statements: list[str] = []
        last: list[Any] = []

        def seen(_conn: Any, _cursor: Any, sql: str, params: Any, *_rest: Any) -> None:
            statements.append(sql.split()[0])
            if "ORDER BY" in sql:
                last[:] = [sql, params]

        event.listen(engine, "before_cursor_execute", seen)
        for _ in range(100):
            app.agents.query(admin, QUERY)
        if args.explain:
            explain(engine, *last)
        statements.clear()
        database = engine.url.database or ""
        server0 = backend_cpu_s(database) if backend == "postgres" else 0.0
        profiler = cProfile.Profile(time.process_time) if args.profile else None
        walls: list[float] = []
        cpu0 = time.process_time()
        if profiler is not None:
            profiler.enable()
        for _ in range(args.queries):
            began = time.perf_counter()
            app.agents.query(admin, QUERY)
            walls.append(time.perf_counter() - began)
        if profiler is not None:
            profiler.disable()
        cpu = time.process_time() - cpu0
        server = backend_cpu_s(database) - server0 if backend == "postgres" else None
    per = 1e3 / args.queries
    walls.sort()
    kinds: dict[str, int] = {}
    for kind in statements:
        kinds[kind] = kinds.get(kind, 0) + 1
    print(f"{backend}, {args.agents} agents: {args.queries} queries, per query: "
          f"wall P50 {walls[len(walls) // 2] * 1e3:.3f} ms, "
          f"P95 {walls[int(len(walls) * 0.95)] * 1e3:.3f} ms, client CPU {cpu * per:.3f} ms"
          + ("" if server is None else f", PostgreSQL backend CPU {server * per:.3f} ms")
          + (" (under cProfile)" if profiler else "")
          + f"; statements per query {len(statements) / args.queries:.2f} "
          + str({k: round(n / args.queries, 2) for k, n in kinds.items()}))
    if profiler is not None:
        by_package(pstats.Stats(profiler), args.queries, args.top)


if __name__ == "__main__":
    main()
