#!/usr/bin/env python3
"""Dry-run route decisions at 100 agents on the memory store, as `arbiter bench --workload
route` makes them (cold: no outcomes yet; warm: after 1 000 routed tasks with outcomes).

    python -P scripts/profile_route.py N [cold|warm] [cpu|cprof|map]

``map`` runs the N timed decisions inside ``itertools.starmap`` so that callgrind can count
only them (run from /tmp, PYTHONPATH naming the tree under test):

    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=starmap_next \\
        --callgrind-out-file=/tmp/cg.out python -P scripts/profile_route.py 400 cold map

instructions per decision = "Collected" ÷ N. ``cpu`` prints CPU µs per decision,
``cprof`` a cProfile of them. Scratch data and config go to a temporary directory.
"""

from __future__ import annotations

import itertools
import os
import random
import sys
import tempfile
import time


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    warm = len(sys.argv) > 2 and sys.argv[2] == "warm"
    mode = sys.argv[3] if len(sys.argv) > 3 else "map"
    scratch = tempfile.mkdtemp(prefix="profile-route-")
    os.environ["ARBITER_DATA_DIR"] = os.path.join(scratch, "data")
    os.environ["ARBITER_CONFIG_DIR"] = os.path.join(scratch, "config")
    from arbiter_cli.bootstrap import scratch_app
    from arbiter_cli.config import load_settings
    from arbiter_cli.domain.principal import Principal
    from arbiter_cli.domain.routing import Outcome
    from arbiter_cli.tools.bench import TASK, _route_agents

    settings = load_settings(environ={k: v for k, v in os.environ.items()
                                      if k.startswith("ARBITER_")})
    admin = Principal.local_admin()
    with scratch_app(settings, "memory", purpose="bench") as (app, _):
        app.agents.register(admin, _route_agents(100, 1000))
        routing = app.routing
        rng = random.Random(3)
        if warm:
            for i in range(1000):
                decision = routing.route(admin, TASK, seed=i).decision
                routing.outcome(admin, Outcome(success=rng.random() < 0.8, quality=rng.random()),
                                decision_id=decision.decision_id)
        for i in range(50):
            routing.route(admin, TASK, seed=10**7 + i, dry_run=True)

        def one(i: int) -> object:
            return routing.route(admin, TASK, seed=10**6 + i, dry_run=True)

        if mode == "cprof":
            import cProfile
            import pstats

            profile = cProfile.Profile()
            profile.enable()
            for i in range(n):
                one(i)
            profile.disable()
            pstats.Stats(profile).sort_stats("tottime").print_stats(40)
        elif mode == "cpu":
            started = time.process_time()
            for i in range(n):
                one(i)
            print(f"{(time.process_time() - started) / n * 1e6:.1f} µs CPU per dry-run route")
        else:
            list(itertools.starmap(one, ((i,) for i in range(n))))


if __name__ == "__main__":
    main()
