"""The options every command group shares, and the run's state on ``ctx.obj``.

The command modules import these from here, and ``cli/app.py`` imports the command modules:
the shared things sit one step below both, so the CLI has no import cycle.
"""

from __future__ import annotations

from typing import Annotated

import typer

from arbiter_cli.cli.state import State

JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one JSON object on stdout (also before the command).")
]
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


def state_of(ctx: typer.Context) -> State:
    root = ctx.find_root()
    if not isinstance(root.obj, State):
        root.obj = State()
    return root.obj
