"""``arbiter health [--live|--ready]``: SPEC §8 checks; exit 0 pass, 1 warn, 2 fail, 3 config."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from arbiter_cli.cli import render
from arbiter_cli.cli.boundary import command
from arbiter_cli.cli.options import JsonOpt, state_of
from arbiter_cli.errors import InvalidInput

if TYPE_CHECKING:
    from rich.console import Console

    from arbiter_cli.domain.health import Check
    from arbiter_cli.tools.health import HealthReport

MARKS = {"pass": ("[+]", "green", "ok"), "warn": ("[!]", "yellow", "warn"),
         "fail": ("[-]", "red", "failed")}


def add_commands(app: typer.Typer) -> None:
    command(app, "health")(health)


def health(
    ctx: typer.Context,
    live: Annotated[bool, typer.Option(
        "--live", help="Liveness only: the process responds; no database I/O.")] = False,
    ready: Annotated[bool, typer.Option(
        "--ready", help="Readiness to serve: database or journal, schema, breaker, backlog.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Check configuration, database, schema, breaker, journal, disk and live soak runs.

    Exit 0 pass, 1 warn (e.g. running degraded on the journal), 2 fail, 3 when the
    configuration cannot be read. --json prints an application/health+json body.

    Example: arbiter health --json
    """
    from arbiter_cli.bootstrap import sql_engine  # deferred: start-up of `arbiter --help`
    from arbiter_cli.tools.health import evaluate  # deferred: start-up of `arbiter --help`

    if live and ready:
        raise InvalidInput("--live and --ready exclude each other", field="mode",
                           rule="exclusive")
    state = state_of(ctx)
    report = evaluate(state.settings, mode="live" if live else "ready" if ready else "full",
                      engine=sql_engine)
    state.gauge("arbiter_health_status", "Health of this run: 0 pass, 1 warn, 2 fail.",
                report.exit_code, mode=report.mode)
    render.emit(state, report.to_dict(), lambda console: _human(console, report))
    if report.exit_code:
        raise typer.Exit(report.exit_code)


def _human(console: Console, report: HealthReport) -> None:
    for check in report.checks:
        console.print(_line(check), highlight=False)
    mark, colour, _ = MARKS[report.status]
    console.print(f"[{colour}]health {report.status}[/] ({report.mode})", highlight=False)


def _line(check: Check) -> str:
    from rich.markup import escape

    mark, colour, word = MARKS[check.status]
    if check.status == "pass":
        detail = _observed(check)
        return f"[{colour}]{escape(mark)}[/] {check.name} {word}" + (f" ({detail})" if detail
                                                                     else "")
    return f"[{colour}]{escape(mark)}[/] {check.name} {word}: {escape(check.output)}"


def _observed(check: Check) -> str:
    """A short rendering of a passing check's value: ``3 ms``, ``41.2 GiB``, ``0 entries``."""
    value, unit = check.observed_value, check.observed_unit
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "" if value is None or isinstance(value, bool) else str(value)
    if unit == "ms":
        return f"{value:.0f} ms"
    if unit == "bytes":
        return f"{value / 1024**3:.1f} GiB" if value >= 1024**3 else f"{value / 1024**2:.0f} MiB"
    return f"{value:g} {unit}" if unit else f"{value:g}"
