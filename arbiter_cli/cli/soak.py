"""``arbiter soak``: a memory soak run on a scratch store (SPEC §11). No token: local authority."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from arbiter_cli.cli import completion, render
from arbiter_cli.cli.boundary import command
from arbiter_cli.cli.options import JsonOpt, state_of
from arbiter_cli.errors import CheckFailed, Interrupted, LimitExceeded

if TYPE_CHECKING:
    from rich.console import Console

    from arbiter_cli.cli.state import State


def add_commands(app: typer.Typer) -> None:
    command(app, "soak")(soak)


def soak(
    ctx: typer.Context,
    duration: Annotated[str, typer.Option("--duration", help="Length of the run (30s, 10m, 24h).")
                        ] = "10m",
    rate: Annotated[float, typer.Option("--rate", help="Operations per second; 0: as fast as "
                                        "possible.")] = 100.0,
    agents: Annotated[int, typer.Option("--agents", help="Fleet size kept by the churn.", min=1,
                                        max=100_000)] = 100,
    mix: Annotated[str, typer.Option("--mix", help="Relative weights of register, query, route, "
                                     "outcome, heartbeat and remove.")] =
    "register=5,query=35,route=30,outcome=30,heartbeat=10,remove=5",
    backend: Annotated[str, typer.Option(
        "--backend", help="memory, sqlite or postgres.",
        autocompletion=completion.choices(*completion.BACKENDS))
                       ] = "sqlite",
    database_url: Annotated[str | None, typer.Option(
        "--database-url", help="PostgreSQL server for the scratch database <db>_soak_<time> "
        "(default: database.url).", show_default=False)] = None,
    memray: Annotated[bool, typer.Option("--memray/--no-memray", help="Profile with memray (the "
                                         "soak extra).")] = True,
    native: Annotated[bool, typer.Option("--native", help="memray native stacks (slower).")
                      ] = False,
    sample_interval: Annotated[str, typer.Option("--sample-interval", help="Time between "
                                                 "samples.")] = "5s",
    warmup: Annotated[str, typer.Option("--warmup", help="Left out of the fit: a share (10%) or "
                                        "a duration (5m).")] = "10%",
    max_slope: Annotated[str, typer.Option("--max-slope", help="RSS growth allowed after the "
                                           "warm-up.")] = "1MiB/h",
    min_r2: Annotated[float, typer.Option("--min-r2", help="Fit quality a leak needs, in [0, 1].")
                      ] = 0.8,
    max_rss: Annotated[str, typer.Option("--max-rss", help="Hard limit: over it the run stops "
                                         "(exit 11); warns at 80 %.")] = "512MiB",
    output: Annotated[Path | None, typer.Option(
        "--output", help="Artifacts folder (default: <data_dir>/soak/<timestamp>/).",
        file_okay=False, show_default=False)] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the scratch store.")] = False,
    workload: Annotated[str, typer.Option("--workload", autocompletion=completion.choices(
        *completion.SOAK_WORKLOADS), help="normal, or leaky (leaks on "
                                          "purpose, to prove the detector).")] = "normal",
    json_out: JsonOpt = False,
) -> None:
    """Soak the core on a scratch store: sample RSS, profile with memray, fit the trend.

    Exit 0 pass, 1 leak (slope over --max-slope with r² >= --min-r2 over >= 30 samples), 11 when
    RSS passes --max-rss. Artifacts: summary.json, samples.csv, rss.png, memray.bin and its flame
    graph. Live view on a TTY, one JSON log line per sample on stderr otherwise.

    Example: arbiter soak --duration 30m --backend postgres --sample-interval 10s
    """
    from arbiter_cli.bootstrap import scratch_app  # deferred: start-up of `arbiter --help`
    from arbiter_cli.tools.soak import runner as soaking  # deferred: start-up of `arbiter --help`
    from arbiter_cli.tools.soak.options import parse_options  # deferred: start-up of `arbiter --help`

    state = state_of(ctx)
    options = parse_options(
        duration=duration, rate=rate, agents=agents, mix=mix, backend=backend,
        database_url=database_url, memray=memray, native=native,
        sample_interval=sample_interval, warmup=warmup, max_slope=max_slope, min_r2=min_r2,
        max_rss=max_rss, output=output or soaking.default_output(state.settings.paths.data_dir),
        keep=keep, workload=workload)
    summary = soaking.run(state.settings, options,
                          context={"correlation_id": state.correlation_id, "command": "soak"},
                          scratch_app=scratch_app)
    _gauges(state, summary)
    render.emit(state, summary, lambda c: _human(c, summary))
    _exit_for(summary)


def _gauges(state: State, summary: dict[str, Any]) -> None:
    rss_help = "RSS of the soak run, by stat (baseline, final, peak)."
    for stat in ("baseline", "final", "peak"):
        state.gauge("arbiter_soak_rss_bytes", rss_help, summary[f"{stat}_rss_bytes"], stat=stat)
    if summary["memray_peak_bytes"] is not None:
        state.gauge("arbiter_soak_memray_peak_bytes", "Peak heap memray saw in the soak run.",
                    summary["memray_peak_bytes"])
    state.gauge("arbiter_soak_slope_mib_per_hour", "Fitted RSS growth after the warm-up.",
                summary["slope_mib_per_h"])
    state.gauge("arbiter_soak_r2", "Fit quality of the RSS slope.", summary["r2"])
    for verdict in ("pass", "leak", "aborted"):
        state.gauge("arbiter_soak_verdict", "1 for the soak run's verdict, 0 for the others.",
                    1.0 if summary["verdict"] == verdict else 0.0, verdict=verdict)


def _exit_for(summary: dict[str, Any]) -> None:
    where = summary["artifacts"]["summary"]
    if summary["verdict"] == "leak":
        raise CheckFailed(f"{summary['reason']} (see {where})")
    if summary["verdict"] == "aborted":
        raise LimitExceeded(f"RSS {summary['peak_rss_bytes'] / 2**20:.1f} MiB passed --max-rss "
                            f"{summary['thresholds']['max_rss_bytes'] / 2**20:.1f} MiB: run "
                            f"stopped (see {where})")
    if summary["stopped_by"] in ("SIGINT", "SIGTERM"):
        raise Interrupted(f"stopped by {summary['stopped_by']}; artifacts in "
                          f"{summary['artifacts']['output']}")


def _human(console: Console, summary: dict[str, Any]) -> None:
    colour = {"pass": "green", "leak": "red", "aborted": "red"}[summary["verdict"]]
    head, _, rest = str(summary["reason"]).partition(": ")
    console.print(f"[bold {colour}]{head}[/]: {rest}", markup=True)
    mib = 2**20
    memray_peak = summary["memray_peak_bytes"]
    console.print(f"RSS baseline {summary['baseline_rss_bytes'] / mib:.1f} MiB, peak "
                  f"{summary['peak_rss_bytes'] / mib:.1f} MiB, final "
                  f"{summary['final_rss_bytes'] / mib:.1f} MiB"
                  + ("" if memray_peak is None else f"; memray heap peak {memray_peak / mib:.1f} MiB"))
    console.print(render.table(None, ("operation", "count", "p50 ms", "p95 ms", "p99 ms"), [
        (op, f"{lat['count']:,}", lat["p50"], lat["p95"], lat["p99"])
        for op, lat in summary["latency_ms"].items()]))
    if summary["errors"]:
        console.print(f"errors: {summary['errors']}")
    for leak in summary["top_leaks"][:5]:
        console.print(f"still alive: {leak['bytes'] / 1024:,.0f} KiB in {leak['allocations']:,} "
                      f"allocations at {leak['function']} {leak['file']}:{leak['line']}")
    for note in summary["notes"]:
        console.print(f"note: {note}")
    console.print(f"artifacts: {summary['artifacts']['output']}")
