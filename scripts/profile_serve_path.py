"""Where the CPU of one decision goes on ``arbiter serve``'s path, without HTTP: one process.

    .venv/bin/python scripts/profile_serve_path.py --database-url postgresql+psycopg2://postgres@127.0.0.1/postgres
    .venv/bin/python scripts/profile_serve_path.py --database-url ... --path plain   # bench worker
    .venv/bin/python scripts/profile_serve_path.py --database-url ... --snapshot --profile

A decision is what ``bench --workload api`` asks of serve: ``POST /v1/route`` then
``POST /v1/outcomes``. Here the route's endpoint functions of ``api.server.create_api`` are
called directly (a starlette ``Request`` carrying the bearer token, the body as FastAPI would
hand it over), so each request runs exactly what serve runs per request: ``Api.run``,
``bootstrap.serving_app`` (the resilience layer, its journal probe, breaker, write-through),
admission, the service, the JSON response; only uvicorn, the router and the body parsing are
left out (~1 ms per request, measured apart). The engine is built as serve builds it
(``sql_engine`` with serve's metrics instrumentation; ``--no-instrument`` leaves it plain).

``--path plain`` runs the same decisions on ``build(...)`` as a bench worker does
(``scripts/profile_decision.py``). ``--snapshot`` takes the host's local snapshot first, as
any CLI command against the primary does on a real host (the bench's throwaway data
directory has none, so nothing is written through there).

Prints the CPU per decision (``time.process_time``) and, with ``--profile``, a cProfile with a
CPU timer (about doubles Python's share) summed by package, then the arbiter functions by
cumulative time. On a shared machine compare ratios of interleaved runs only;
``PYTHONPATH=<another tree>`` profiles another checkout with the same venv.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_decision import backend_cpu_s, by_package, plain_decide  # noqa: E402 - the sibling script


def serve_decide(settings: Any, engine: Any, token: str) -> Callable[[int], None]:
    """A decision through the ``/v1`` endpoints' own functions (serve's per-request path)."""
    from starlette.requests import Request

    from arbiter_cli.api.server import create_api

    api = create_api(settings, engine)
    endpoints = {route.path: route.endpoint for route in api.routes  # type: ignore[attr-defined]
                 if getattr(route, "methods", None) == {"POST"}}
    route, outcome = endpoints["/v1/route"], endpoints["/v1/outcomes"]
    headers = [(b"authorization", f"Bearer {token}".encode()),
               (b"content-type", b"application/json")]

    def request(path: str) -> Request:
        return Request({"type": "http", "method": "POST", "path": path, "headers": headers,
                        "query_string": b""})

    from arbiter_cli.tools.bench import TASK

    def decide(n: int) -> None:
        routed = route(request=request("/v1/route"), body={**TASK, "task_id": f"t-{n}"})
        assert routed.status_code == 200, routed.body
        decision_id = json.loads(routed.body)["decision_id"]
        done = outcome(request=request("/v1/outcomes"),
                       body={"decision_id": decision_id, "success": True, "quality": 0.9})
        assert done.status_code == 200, done.body

    return decide


def run(decide: Callable[[int], None], numbers: range, threads: int) -> None:
    """The decisions, from ``threads`` threads at once (each takes the next number)."""
    if threads <= 1:
        for n in numbers:
            decide(n)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(decide, numbers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="a PostgreSQL server")
    parser.add_argument("--path", choices=("serve", "plain"), default="serve")
    parser.add_argument("--decisions", type=int, default=400)
    parser.add_argument("--snapshot", action="store_true",
                        help="take the host's local snapshot first (write-throughs run)")
    parser.add_argument("--no-instrument", action="store_true",
                        help="serve path on an engine without serve's metrics events")
    parser.add_argument("--threads", type=int, default=1,
                        help="run the decisions from this many threads at once, as serve's "
                        "thread pool runs concurrent requests (not with --profile)")
    parser.add_argument("--profile", action="store_true", help="cProfile, summed by package")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--dump", help="with --profile: also write the pstats file here")
    args = parser.parse_args()

    from dataclasses import replace

    from arbiter_cli.adapters.scratch import refresh_statistics
    from arbiter_cli.bootstrap import build, scratch_app, sql_engine
    from arbiter_cli.config import load_settings
    from arbiter_cli.dburl import render
    from arbiter_cli.domain.principal import Principal
    from arbiter_cli.tools.bench import _route_agents

    admin = Principal.local_admin()
    data_dir = tempfile.mkdtemp(prefix="arbiter-profile-serve-")
    base = load_settings(environ={**os.environ, "ARBITER_DATA_DIR": data_dir,
                                  "ARBITER_CONFIG_DIR": data_dir})
    with scratch_app(base, "postgres", purpose="profile",
                     database_url=args.database_url) as (scratch, _where):
        assert scratch.engine is not None
        url = render(scratch.engine.url)
        scratch.agents.register(admin, _route_agents(100, 1000))
        refresh_statistics(scratch.engine)
        token = scratch.security.issue(admin, role="orchestrator", name="profile",
                                       expires_in_s=None, rate=1e6, burst=10**7).token
        settings = load_settings(environ={**os.environ, "ARBITER_DATA_DIR": data_dir,
                                          "ARBITER_CONFIG_DIR": data_dir,
                                          "ARBITER_DATABASE__URL": url,
                                          "ARBITER_LOGGING__LEVEL": "warning"})
        closers: list[Callable[[], Any]] = []
        if args.snapshot:
            warm = build(settings, resilient=True)
            assert warm.resilience is not None
            warm.resilience.primary_ok = True
            warm.resilience.maybe_refresh()
            warm.close()
            assert warm.resilience.local.exists(), "no snapshot was taken"
        if args.path == "plain":
            app = build(settings, url=url)
            closers.append(app.close)
            decide = plain_decide(app, token)
        else:
            telemetry = None
            if not args.no_instrument:
                from arbiter_cli.observability.metrics import Metrics
                from arbiter_cli.observability.runtime import Telemetry

                telemetry = replace(Telemetry(correlation_id="profile", command="serve"),
                                    metrics=Metrics())
            engine = sql_engine(settings, telemetry=telemetry)
            closers.append(engine.dispose)
            decide = serve_decide(settings, engine, token)

        for n in range(50):
            decide(n)
        database = scratch.engine.url.database or ""
        server0 = backend_cpu_s(database)
        profiler = cProfile.Profile(time.process_time) if args.profile else None
        wall0, cpu0 = time.perf_counter(), time.process_time()
        if profiler is not None:
            profiler.enable()
        run(decide, range(50, 50 + args.decisions), args.threads)
        if profiler is not None:
            profiler.disable()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        server = backend_cpu_s(database) - server0
        for close in closers:
            close()
    per = 1e3 / args.decisions
    print(f"{args.path}{' +snapshot' if args.snapshot else ''}"
          f"{f' x{args.threads} threads' if args.threads > 1 else ''}: {args.decisions} decisions, "
          f"per decision: wall {wall * per:.2f} ms, client CPU {cpu * per:.2f} ms, "
          f"PostgreSQL backend CPU {server * per:.2f} ms"
          + (" (under cProfile)" if profiler else ""))
    if profiler is not None:
        by_package(pstats.Stats(profiler), args.decisions, args.top)
        if args.dump:
            profiler.dump_stats(args.dump)


if __name__ == "__main__":
    main()
