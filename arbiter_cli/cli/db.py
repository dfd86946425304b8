"""``arbiter db …``: schema migrations and drift (SPEC §6). Direct database authority; no token."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, TextIO

import typer

from arbiter_cli.cli import completion, render
from arbiter_cli.cli.boundary import command
from arbiter_cli.cli.consent import YesOpt, require_consent
from arbiter_cli.cli.helptext import HelpGroup
from arbiter_cli.cli.options import JsonOpt, state_of
from arbiter_cli.errors import CheckFailed

if TYPE_CHECKING:
    from rich.console import Console
    from sqlalchemy.engine import Engine

    from arbiter_cli.adapters.migrations import DowngradePlan
    from arbiter_cli.cli.state import State

app = typer.Typer(help="Migrate the database and check it for drift.\n\n"
                  "Example: arbiter db upgrade", no_args_is_help=True)


def add_commands(root: typer.Typer) -> None:
    root.add_typer(app, name="db", cls=HelpGroup)

UrlOpt = Annotated[str | None, typer.Option(
    "--database-url", help="Database to act on (default: database.url).", show_default=False)]


def _engine(state: State, url: str | None, *, create: bool = False) -> Engine:
    from arbiter_cli.bootstrap import sql_engine  # deferred: start-up of `arbiter --help`

    engine = sql_engine(state.settings, url, create=create, telemetry=state.telemetry)
    state.on_close(engine.dispose)
    return engine


def _alembic_out(state: State) -> TextIO:
    """Alembic's own messages: never on stdout, which holds only the result."""
    return sys.stderr


@command(app, "upgrade")
def upgrade(
    ctx: typer.Context,
    revision: Annotated[str, typer.Argument(help="Target revision.",
                                                 autocompletion=completion.revisions)] = "head",
    database_url: UrlOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Upgrade the schema (creates a SQLite file if needed). Safe to run concurrently.

    Example: arbiter db upgrade
    """
    from arbiter_cli.adapters import migrations  # deferred: start-up of `arbiter --help`

    state = state_of(ctx)
    engine = _engine(state, database_url, create=True)
    before, after = migrations.upgrade(engine, revision, _alembic_out(state))
    render.emit(state, {"from": before, "to": after},
                lambda c: c.print(f"schema at {after} (was {before or 'empty'})"))


@command(app, "downgrade")
def downgrade(
    ctx: typer.Context,
    revision: Annotated[str, typer.Argument(help="Target revision, e.g. base or head-1.",
                                            autocompletion=completion.revisions,
                                            show_default=False)],
    database_url: UrlOpt = None,
    yes: YesOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Downgrade the schema to REVISION ('base' drops every table, the audit log included).

    It first prints the revisions it undoes and the tables (with their row counts) and
    columns it drops, then asks on a terminal; off one it needs --yes. Direct database
    authority: a token neither allows nor forbids it.

    Example: arbiter db downgrade head-1 --yes
    """
    from arbiter_cli.adapters import migrations  # deferred: start-up of `arbiter --help`

    state = state_of(ctx)
    engine = _engine(state, database_url)
    plan = migrations.plan_downgrade(engine, revision)
    if plan.empty:
        render.emit(state, {"from": plan.before, "to": plan.after, **plan.to_dict()},
                    lambda c: c.print(f"schema already at {plan.after or 'base'}: nothing to do"))
        return
    where = _masked(str(engine.url.render_as_string(hide_password=True)))
    described = _describe(plan, where)
    if not state.json:  # with --json stderr holds only the error object, if any
        sys.stderr.write(described + "\n")
    dropped = " and ".join(part for part in (
        f"{len(plan.tables)} table(s)" if plan.tables else "",
        f"{len(plan.columns)} column(s)" if plan.columns else "") if part) or "no data"
    require_consent(f"downgrade {where} to {plan.after or 'base'}, dropping {dropped}",
                    yes=yes, detail=described if state.json else None)
    before, after = migrations.downgrade(engine, plan.after or "base", _alembic_out(state))
    render.emit(state, {"from": before, "to": after, **plan.to_dict()},
                lambda c: c.print(f"schema at {after or 'base'} (was {before or 'base'})"))


def _describe(plan: DowngradePlan, where: str) -> str:
    """The plan, for stderr: what will be undone and dropped (rows included)."""
    lines = [f"db downgrade on {where}: {plan.before} -> {plan.after or 'base'}, undoing "
             f"{len(plan.revisions)} revision(s): {', '.join(plan.revisions)}"]
    if plan.tables:
        lines.append(f"  drops {len(plan.tables)} table(s) and every row in them: " + ", ".join(
            f"{name} ({rows} row{'' if rows == 1 else 's'})"
            for name, rows in plan.tables.items()))
    if plan.columns:
        lines.append(f"  drops {len(plan.columns)} column(s) and their values: "
                     + ", ".join(plan.columns))
    return "\n".join(lines)


def _masked(url: str) -> str:
    from arbiter_cli.config import mask_url  # deferred: start-up of `arbiter --help`

    return mask_url(url)


@command(app, "current")
def current(ctx: typer.Context, database_url: UrlOpt = None, json_out: JsonOpt = False) -> None:
    """Print the database's schema revision and whether it is the head.

    Example: arbiter db current --json
    """
    from arbiter_cli.adapters import migrations  # deferred: start-up of `arbiter --help`
    from arbiter_cli.adapters.sql.schema_version import HEAD  # deferred: start-up of `arbiter --help`

    state = state_of(ctx)
    revision = migrations.current(_engine(state, database_url))
    render.emit(state, {"revision": revision, "head": HEAD, "at_head": revision == HEAD},
                lambda c: c.print(f"{revision or 'base'}" + (" (head)" if revision == HEAD
                                                              else f" (head is {HEAD})")))


@command(app, "history")
def history(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """List the migrations this arbiter ships, newest first.

    Example: arbiter db history
    """
    from arbiter_cli.adapters import migrations  # deferred: start-up of `arbiter --help`

    state = state_of(ctx)
    revisions = migrations.history(sys.stderr)

    def human(console: Console) -> None:
        console.print(render.table(None, ("revision", "down", "message"), [
            (r.revision + (" (head)" if r.is_head else ""), r.down_revision or "base", r.message)
            for r in revisions]))

    render.emit_list(state, [r.to_dict() for r in revisions], None, human,
                     empty="no migrations ship with this arbiter")


@command(app, "check")
def check(ctx: typer.Context, database_url: UrlOpt = None, json_out: JsonOpt = False) -> None:
    """Compare the database with the models: 0 no drift, 1 drift, 10 not at head.

    Example: arbiter db check
    """
    from arbiter_cli.adapters import migrations  # deferred: start-up of `arbiter --help`

    state = state_of(ctx)
    differences = migrations.check(_engine(state, database_url))
    if differences:
        raise CheckFailed(
            f"schema drift: {len(differences)} difference(s): " + "; ".join(differences),
        )
    render.emit(state, {"drift": False, "differences": []},
                lambda c: c.print("schema matches the models: no drift"))
