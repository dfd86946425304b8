"""``arbiter config …``: the effective settings and their validation (SPEC §10)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from arbiter_cli.cli import render
from arbiter_cli.cli.boundary import command, redactor
from arbiter_cli.cli.helptext import HelpGroup
from arbiter_cli.cli.options import JsonOpt, state_of
from arbiter_cli.errors import ConfigInvalid

if TYPE_CHECKING:
    from rich.console import Console

app = typer.Typer(help="Show and validate the layered configuration.\n\n"
                  "Example: arbiter config show", no_args_is_help=True)


def add_commands(root: typer.Typer) -> None:
    root.add_typer(app, name="config", cls=HelpGroup)


@command(app, "show")
def show(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Print every effective setting with the layer it came from; secrets masked, values
    never shortened (database.url is the URL arbiter connects to).

    Example: ARBITER_ROUTING__STRATEGY=ucb arbiter config show --json
    """
    from arbiter_cli.config import KEYS  # deferred: start-up of `arbiter --help`

    state = state_of(ctx)
    settings = state.settings
    values = {k.name: {"value": settings.display(k.name),
                       "source": settings.sources.get(k.name, "default")} for k in KEYS}
    document = {
        "env": settings.env,
        "config_dir": str(settings.paths.config_dir),
        "data_dir": str(settings.paths.data_dir),
        "files": list(settings.files),
        "database_url": _masked(settings.database_url),
        "settings": values,
    }

    def human(console: Console) -> None:
        console.print(f"env {settings.env}; config dir {settings.paths.config_dir}; "
                      f"data dir {settings.paths.data_dir}")
        console.print(render.table(None, ("key", "value", "source"), [
            (name, _text(entry["value"]), entry["source"]) for name, entry in values.items()]))

    render.emit(state, document, human)


def _masked(url: str) -> str:
    from arbiter_cli.dburl import mask_url  # deferred: start-up of `arbiter --help`

    return mask_url(url)


def _text(value: object) -> str:
    """A value as TOML would spell it (true/false), a list comma-separated; never shortened."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


@command(app, "validate")
def validate(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Exit 0 when the configuration is valid, or 3 listing every problem, one per line.

    Example: arbiter config validate
    """
    state = state_of(ctx)
    try:
        settings = state.settings
    except ConfigInvalid as exc:
        if state.json or not exc.problems:
            raise  # one JSON object (details.problems, details.errors), or one line
        redact = redactor(state)
        for problem in exc.problems:
            render.error(state, ConfigInvalid(problem), redact)
        raise typer.Exit(exc.exit_code) from None
    render.emit(state, {"valid": True, "env": settings.env, "files": list(settings.files)},
                lambda c: c.print(f"configuration valid (env {settings.env}, "
                                  f"{len(settings.files)} file(s))"))
