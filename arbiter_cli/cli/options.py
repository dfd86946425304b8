"""The options every command group shares, and the run's state on ``ctx.obj``.

The command modules import these from here, and ``cli/app.py`` imports the command modules:
the shared things sit one step below both, so the CLI has no import cycle.
"""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from arbiter_cli.cli.state import State

JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one JSON object on stdout (also before the command).")
]
Format = Literal["table", "tsv", "json"]
FormatOpt = Annotated[Format | None, typer.Option(
    "--format", help="table, tsv or json (--json is --format json; also after the command). "
    "Default: a table on a terminal, tab-separated rows otherwise.", show_default=False)]
LimitOpt = Annotated[int, typer.Option("--limit", help="Page size; 0 means all.")]
CursorOpt = Annotated[str | None, typer.Option(
    "--cursor", help="next_cursor of the previous page.", show_default=False)]
SinceOpt = Annotated[str | None, typer.Option(
    "--since", help="A duration (24h) or an RFC 3339 timestamp.", show_default=False)]
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", help="API token (default: ARBITER_TOKEN, then the credentials file).",
                 show_default=False),
]


def choose_format(state: State, fmt: str | None, *, json_out: bool = False) -> None:
    """Record ``--format``/``--json`` on ``state``; two different choices are a usage error."""
    chosen = {f for f in (fmt, "json" if json_out else None,
                          "json" if state.json else state.format) if f is not None}
    if len(chosen) > 1:
        raise typer.BadParameter(f"{' and '.join(sorted(chosen))} both asked for: choose one "
                                 "(--json is --format json)", param_hint="--format")
    if chosen:
        (only,) = chosen
        state.json = only == "json"
        state.format = None if only == "json" else only


def state_of(ctx: typer.Context) -> State:
    root = ctx.find_root()
    if not isinstance(root.obj, State):
        root.obj = State()
    return root.obj
