"""Top-level commands: ``init``, ``demo`` and ``bench``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from arbiter_cli.cli import completion, render
from arbiter_cli.cli.boundary import command
from arbiter_cli.cli.options import JsonOpt, state_of
from arbiter_cli.cli.progress import progress
from arbiter_cli.domain.validation import fail
from arbiter_cli.errors import ConfigInvalid, Conflict

if TYPE_CHECKING:

    from rich.console import Console

    from arbiter_cli.domain.agents import Agent
    from arbiter_cli.tools.demo import DemoReport


def add_commands(app: typer.Typer) -> None:
    command(app, "init")(init)
    command(app, "demo")(demo)
    command(app, "bench")(bench)


def init(
    ctx: typer.Context,
    database_url: Annotated[str | None, typer.Option(
        "--database-url", help="Store to initialize (default: database.url).",
        show_default=False)] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace a token already saved under the profile.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Create and migrate the database and tenant 'default', and save its first admin token.

    On a database without tokens it prints the first admin token once and saves it in the
    credentials file as the profile (--profile before the command, default 'default'). Safe
    to run again.

    A profile that already holds a token (of another database, say) is never replaced without
    --force: save the new token under another name with `arbiter --profile NAME init`.

    Example: arbiter --profile staging init --database-url postgresql+psycopg2://db/arbiter
    """
    from dataclasses import replace

    from arbiter_cli.adapters.credentials import read_profiles  # deferred: start-up of `arbiter --help`
    from arbiter_cli.bootstrap import init_store  # deferred: start-up of `arbiter --help`

    state = state_of(ctx)
    settings = state.settings
    url = database_url or settings.database_url
    enabled = settings.security.enabled
    profile = state.profile_name()
    path = settings.paths.credentials_file
    read_profiles(path)  # an unreadable or unsafe credentials file stops us before any change
    result = init_store(settings, url, out=sys.stderr, issue=enabled, telemetry=state.telemetry,
                        before_issue=lambda: _saveable(path, profile, force=force))
    if result.admin_token is not None:
        saved = save_new_token(path, profile, result.admin_token, force=force)
        result = replace(result, credentials_file=str(path) if saved else None,
                         profile=profile if saved else None)
    state.tenant = result.tenant
    verb = "initialized" if result.created else "already initialized"

    def human(console: Console) -> None:
        console.print(f"{verb}: tenant [bold]{result.tenant}[/], schema {result.revision}, "
                      f"database {_masked(url)}")
        if result.admin_token:
            where = (f"saved as profile '{result.profile}' in {result.credentials_file}"
                     if result.profile else "NOT saved: keep it now")
            console.print(f"admin token (shown once; {where}):\n{result.admin_token}")
        elif not enabled:
            console.print("security.enabled = false: no admin token was issued; this database "
                          "stays a throwaway one until `arbiter init` runs with security on")

    render.emit(state, result.to_dict(), human)


def _saveable(path: Path, profile: str, *, force: bool) -> None:
    from arbiter_cli.adapters.credentials import check_saveable  # deferred: start-up of `arbiter --help`

    check_saveable(path, profile, force=force, hint=(
        "this database has no token yet, and its first admin token will not replace that one: "
        "save it under another name with `arbiter --profile NAME init`, or pass --force"))


def save_new_token(path: Path, profile: str, token: str, *, force: bool = False) -> bool:
    """Save the new admin token; if that fails now, warn and still show it (never lost)."""
    from arbiter_cli.adapters.credentials import save_token  # deferred: start-up of `arbiter --help`

    try:
        save_token(path, profile, token, force=force)
    except (Conflict, ConfigInvalid) as exc:
        render.warn(f"the new admin token was not saved: {exc.message}")
        return False
    return True


def _masked(url: str) -> str:
    from arbiter_cli.config import mask_url  # deferred: start-up of `arbiter --help`

    return mask_url(url)


def demo(
    ctx: typer.Context,
    database: Annotated[Path | None, typer.Option(
        "--database", help="SQLite file of the demo (default: <data_dir>/demo.db); only a "
        "file the demo created is ever replaced.", dir_okay=False, show_default=False)] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the demo database afterwards.")] = False,
    tasks: Annotated[int | None, typer.Option(
        "--tasks", help="Simulated tasks [default: 300, or 800 for drift].", min=10,
        max=100_000, show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the simulation.")] = 7,
    strategy: Annotated[str | None, typer.Option(
        "--strategy", help="Routing strategy (default: routing.strategy).",
        autocompletion=completion.choices(*completion.STRATEGIES),
        show_default=False)] = None,
    demo_scenario: Annotated[str, typer.Option(
        "--scenario", autocompletion=completion.choices(*completion.DEMO_SCENARIOS),
        help="steady, or drift: half-way the best agent breaks and another "
        "improves.")] = "steady",
    json_out: JsonOpt = False,
) -> None:
    """Show the router learning on its own SQLite file: a sample fleet, simulated outcomes.

    It never touches database.url or your credentials, and refuses (exit 2) any --database
    it did not create itself.

    Example: arbiter demo --scenario drift
    """
    import io

    from arbiter_cli.adapters import demo_files  # deferred: start-up of `arbiter --help`

    # deferred: start-up of `arbiter --help`
    from arbiter_cli.adapters.sql.engine import backend_of, sqlite_path
    from arbiter_cli.bootstrap import build, init_store  # deferred: start-up of `arbiter --help`
    from arbiter_cli.domain.principal import Principal  # deferred: start-up of `arbiter --help`
    from arbiter_cli.tools import demo as scenario  # deferred: start-up of `arbiter --help`

    state = state_of(ctx)
    if demo_scenario not in scenario.DEMO_SCENARIOS:
        raise fail("scenario", "allowed", f"must be one of {', '.join(scenario.DEMO_SCENARIOS)}")
    tasks = tasks or (800 if demo_scenario == "drift" else 300)
    settings = state.settings
    path = database or settings.paths.data_dir / "demo.db"
    live = (sqlite_path(settings.database_url) if backend_of(settings.database_url) == "sqlite"
            else None)
    demo_files.prepare(path, live)
    url = f"sqlite:///{path}"
    principal = Principal.local_admin()
    state.tenant = principal.tenant
    try:
        init_store(settings, url, out=io.StringIO(), issue=False, telemetry=state.telemetry)
        app = build(settings, url=url, telemetry=state.telemetry)
        try:
            scenario.register_fleet(app.agents, principal)
            with progress(state, "demo", "simulating tasks", tasks) as bar:
                report = scenario.simulate(app.routing, principal, tasks=tasks, seed=seed,
                                           strategy=strategy, progress=bar.advance,
                                           scenario=demo_scenario)
            fleet = app.agents.list(principal, limit=0).items
        finally:
            app.close()
    finally:
        state.close()  # every engine on the demo file is disposed before it is deleted
        if not keep:
            demo_files.discard(path)
    document = {**report.to_dict(), "database": str(path) if keep else None,
                "agents": [a.to_dict() for a in fleet]}
    render.emit(state, document, lambda c: _demo_human(c, report, fleet, path if keep else None))


def _demo_human(
    console: Console, report: DemoReport, fleet: list[Agent], kept: Path | None
) -> None:
    console.print(f"[bold]arbiter demo[/]: {len(fleet)} agents registered on SQLite; "
                  f"{report.tasks} simulated Python code-editing tasks routed by "
                  "`route task`, outcomes reported by `route outcome`.\n")
    rows = []
    for agent in sorted(fleet, key=lambda a: -a.performance.success_rate):
        n = report.counts.get(agent.id, 0)
        rows.append((agent.id, agent.model_family, n,
                     render.percent(report.successes.get(agent.id, 0) / n) if n else "-",
                     render.percent(agent.performance.success_rate),
                     f"{agent.performance.average_quality:.2f}",
                     agent.performance.task_count))
    console.print(render.table("what the router learned", (
        "agent", "model", "tasks", "observed success", "success estimate", "quality",
        "task count"), rows))
    if report.changed_at:
        console.print(f"\nfrom task {report.changed_at} garnet breaks (skill 0.40) and harbor "
                      "improves (0.95).")
    console.print("\nshare of traffic to the best agent at the time, per window of tasks:")
    for window in report.windows:
        share = window["best_agent_share"]
        console.print(f"  through task {window['through_task']:>5}  {window['best_agent']:<7} "
                      f"{'█' * int(share * 40):<40} {share * 100:5.1f}%")
    if kept:
        console.print(f"\nkept the demo database at {kept}")


def bench(
    ctx: typer.Context,
    workload: Annotated[str, typer.Option(
        "--workload", help="registry-v1, registry-v2, route, e2e or api (HTTP, through "
        "arbiter serve).",
        autocompletion=completion.choices(*completion.BENCH_WORKLOADS))] = "registry-v1",
    agents: Annotated[int, typer.Option("--agents", help="Agents (registry-v1).", min=1,
                                        max=100_000)] = 1000,
    backend: Annotated[str, typer.Option(
        "--backend", help="memory, sqlite or postgres.",
        autocompletion=completion.choices(*completion.BACKENDS))] = "memory",
    database_url: Annotated[str | None, typer.Option(
        "--database-url", help="PostgreSQL server for the scratch database "
        "(default: database.url).", show_default=False)] = None,
    queries: Annotated[int, typer.Option("--queries", help="Timed queries (registry-v1).",
                                         min=10)] = 1000,
    seconds: Annotated[str, typer.Option("--seconds", help="Length of the throughput loop "
                                         "(e2e: of the run), at least 500ms: 5, 30s, 2m.")] = "5s",
    processes: Annotated[int | None, typer.Option(
        "--processes", help="Worker processes (e2e, default 1) or HTTP client processes (api, "
        "default 4), on sqlite or postgres.", min=1, max=64, show_default=False)] = None,
    server_workers: Annotated[int, typer.Option(
        "--server-workers", help="arbiter serve --workers for the api workload.", min=1,
        max=16)] = 1,
    warm_outcomes: Annotated[int | None, typer.Option(
        "--warm-outcomes", help="Outcomes before the warm route run (default 10 x agents).",
        min=0, show_default=False)] = None,
    json_out: JsonOpt = False,
) -> None:
    """Benchmark through the services on a scratch store; never touches your data.

    Example: arbiter bench --workload e2e --backend postgres --processes 4 --seconds 10

    Example: arbiter bench --workload api --backend postgres --server-workers 2 --seconds 10
    """
    from arbiter_cli.bootstrap import scratch_app  # deferred: start-up of `arbiter --help`
    from arbiter_cli.cli.inputs import duration_at_least  # deferred: start-up of `arbiter --help`
    from arbiter_cli.tools import bench as benchmarks  # deferred: start-up of `arbiter --help`

    state = state_of(ctx)
    loop_s = duration_at_least(seconds, "seconds", 0.5)
    with progress(state, "bench", "preparing the scratch store") as bar:
        result = benchmarks.run(
            state.settings, workload=workload, agents=agents, backend=backend,
            database_url=database_url, queries=queries, seconds=loop_s, processes=processes,
            warm_outcomes=warm_outcomes, scratch_app=scratch_app, progress=bar,
            server_workers=server_workers,
            log=lambda message: render.stderr_console().print(message)
            if not state.json else None)
    render.emit(state, result, lambda c: _bench_human(c, result))


def _bench_human(console: Console, result: dict[str, Any]) -> None:
    rows = [(op, s["samples"], f"{s['p50_ms']:.3f}", f"{s['p95_ms']:.3f}", f"{s['p99_ms']:.3f}",
             f"{s['mean_ms']:.3f}", f"{result['throughput'].get(op, 0):,.0f}")
            for op, s in result["operations"].items()]
    console.print(render.table(
        f"{result['workload']} on {result['backend']}, {result['agents']} agents",
        ("operation", "samples", "p50 ms", "p95 ms", "p99 ms", "mean ms", "ops/s"), rows))
    if result.get("memory"):
        console.print(f"memory: {result['memory']}")
    if result.get("server"):
        server = result["server"]
        own = server.get("own_cpu_per_request_ms")
        console.print(f"{result['throughput']['decisions']:,.1f} decisions/s; serve "
                      f"({server['workers']} worker(s)) CPU per request "
                      f"{server['cpu_per_request_ms']} ms"
                      + (f", outside the services {own} ms (py-spy)" if own is not None else "")
                      + f"; capacity never exceeded: {result['capacity_never_exceeded']}, "
                      f"audit verifies: {result['audit_verifies']}")
