"""The root of the CLI: global options, the command groups, and ``main()``.

The error boundary lives in ``cli/boundary.py``, the shared options in ``cli/options.py``.

Only typer and small arbiter modules are imported here; a command module is imported when its
command runs (``cli/lazy.py``), and every heavy library inside the command that needs it, so
``arbiter --help`` and ``--version`` stay fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from arbiter_cli import __version__
from arbiter_cli.cli import completion, render
from arbiter_cli.cli.helptext import HelpGroup
from arbiter_cli.cli.lazy import Entry, LazyGroup
from arbiter_cli.cli.options import FormatOpt, JsonOpt, TokenOpt, choose_format
from arbiter_cli.cli.state import State, console_start
from arbiter_cli.errors import InvalidInput


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"arbiter {__version__}\n")
        raise typer.Exit(0)


# The root commands in the order of `arbiter --help`, each with the module that defines it
# and the first paragraph of its help (a test keeps these equal to the real ones).
COMMANDS: dict[str, Entry] = {
    "init": Entry("setup", "Create and migrate the database and tenant 'default', and save its "
                  "first admin token."),
    "demo": Entry("setup", "Show the router learning on its own SQLite file: a sample fleet, "
                  "simulated outcomes."),
    "bench": Entry("setup", "Benchmark through the services on a scratch store; never touches "
                   "your data."),
    "whoami": Entry("security", "Show the tenant, role and token id you act as."),
    "login": Entry("security", "Check a token against the database (or a server) and save it "
                   "in the credentials file (0600); with --server, later commands of that "
                   "profile run on the server."),
    "soak": Entry("soak", "Soak the core on a scratch store: sample RSS, profile with memray, "
                  "fit the trend."),
    "health": Entry("health", "Check configuration, database, schema, breaker, journal, disk and "
                    "live soak runs."),
    "mutate": Entry("mutate", "Mutation-test the core with mutmut in an isolated copy; exit 1 "
                    "under --threshold."),
    "serve": Entry("serve", "Serve the API under /v1, plus /livez, /readyz, /health and /metrics; "
                   "replay the journal in the background."),
    "tokens": Entry("security", "Create, list and revoke API tokens of your tenant (admin)."),
    "tenants": Entry("security", "Create and list tenants (direct database authority)."),
    "audit": Entry("security", "Read and verify the tamper-evident audit log (admin)."),
    "agents": Entry("agents", "Register, inspect, query and maintain agents."),
    "route": Entry("route", "Route tasks to agents, record outcomes, and explain decisions."),
    "db": Entry("db", "Migrate the database and check it for drift."),
    "config": Entry("config_cmd", "Show and validate the layered configuration."),
    "journal": Entry("journal", "Inspect, replay and resolve the journal of writes made while "
                     "the database was unavailable."),
}


class Root(LazyGroup, HelpGroup):
    """Commands loaded on first use (cli/lazy.py), help without value types (cli/helptext.py)."""

    entries = COMMANDS


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="arbiter",
        cls=Root,
        help="Operate fleets of AI coding agents: registry, routing, security, health.\n\n"
        "Example: [bold]arbiter init && arbiter agents list[/]",
        no_args_is_help=True,
        rich_markup_mode="rich",
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(root)
    return app


def root(
    ctx: typer.Context,
    json_out: JsonOpt = False,
    output_format: FormatOpt = None,
    token: TokenOpt = None,
    config: Annotated[Path | None, typer.Option(
        "--config", help="Extra settings file (layer 5 of 7).", dir_okay=False,
        show_default=False)] = None,
    env: Annotated[str | None, typer.Option(
        "--env", help="Settings environment (default: ARBITER_ENV or development).",
        show_default=False)] = None,
    profile: Annotated[str | None, typer.Option(
        "--profile", help="Credentials profile (default: ARBITER_PROFILE or default).",
        show_default=False, autocompletion=completion.profiles)] = None,
    log_level: Annotated[str | None, typer.Option(
        "--log-level", help="debug, info, warning or error.", show_default=False,
        autocompletion=completion.choices(*completion.LOG_LEVELS))] = None,
    log_format: Annotated[str | None, typer.Option(
        "--log-format", help="console or json (default: console on a TTY).",
        autocompletion=completion.choices(*completion.LOG_FORMATS),
        show_default=False)] = None,
    correlation_id: Annotated[str | None, typer.Option(
        "--correlation-id", envvar="ARBITER_CORRELATION_ID", help="Id carried through logs, "
        "decisions and audit (default: generated).", show_default=False)] = None,
    metrics_file: Annotated[Path | None, typer.Option(
        "--metrics-file", help="Write this run's metrics in node-exporter textfile format.",
        dir_okay=False, show_default=False)] = None,
    server: Annotated[str | None, typer.Option(
        "--server", help="Run token-checked commands on this arbiter server (remote mode; "
        "default: ARBITER_SERVER, then the profile's, saved by login --server).",
        show_default=False)] = None,
    timeout: Annotated[float, typer.Option(
        "--timeout", help="Remote mode: seconds a command may wait for the server, "
        "retries included.", min=0.1, max=3600)] = 30.0,
    verbose: Annotated[bool, typer.Option(
        "--verbose", help="Show tracebacks of internal errors (never with local variables).")
    ] = False,
    version: Annotated[bool, typer.Option(
        "--version", help="Print the version and exit.", callback=_version, is_eager=True)
    ] = False,
) -> None:
    """Operate fleets of AI coding agents: registry, routing, security, health.

    Global options go before the command; --json and --format may also follow it, and so
    may --token on the commands that take one.

    Example: arbiter --json agents list
    """
    from arbiter_cli.ids import uuid7  # deferred: start-up of `arbiter --help`

    if correlation_id is not None and not _printable(correlation_id, 200):
        raise typer.BadParameter("must be 1 to 200 printable characters",
                           param_hint="--correlation-id")
    _check_paths(profile, metrics_file)
    ctx.obj = State(
        json=json_out, token=token, config_file=config, env=env, profile=profile,
        log_level=log_level, log_format=log_format,
        correlation_id=correlation_id or uuid7(),
        metrics_file=metrics_file, verbose=verbose, server=server, timeout_s=timeout,
    )
    choose_format(ctx.obj, output_format)


def _check_paths(profile: str | None, metrics_file: Path | None) -> None:
    """Usage errors (exit 2) of the root options that name files, before anything runs."""
    if profile is not None:
        from arbiter_cli.adapters.credentials import PROFILE_RE  # deferred: start-up of `arbiter --help`

        if not PROFILE_RE.fullmatch(profile):
            raise typer.BadParameter("must be 1 to 64 letters, digits, '.', '_' or '-'",
                               param_hint="--profile")
    if metrics_file is not None:
        # deferred: start-up of `arbiter --help`
        from arbiter_cli.adapters.metrics import metrics_file_problem

        problem = metrics_file_problem(metrics_file)
        if problem:
            raise typer.BadParameter(problem, param_hint="--metrics-file")


def _printable(value: str, limit: int) -> bool:
    return 0 < len(value) <= limit and value.isprintable()


def _usage_error(args: list[str], message: str) -> int:
    state = State(json=_asks_json(args))
    render.error(state, InvalidInput(" ".join(message.split())))
    return 2


def _asks_json(args: list[str]) -> bool:
    """Whether the command line asks for JSON (``--json``, ``--format json``): its usage
    errors are JSON then, even though parsing never finished."""
    pairs = zip(args, [*args[1:], ""], strict=True)
    return any(arg in ("--json", "--format=json") or (arg, value) == ("--format", "json")
               for arg, value in pairs)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the app with ``standalone_mode=False`` and return the exit code.

    Without ``argv`` (the console script, ``python -m arbiter_cli``) this process runs the one
    command on its own command line, so its start-up runs with the collector off
    (``cli/state.console_start``); an in-process caller passes ``argv`` and its collector is
    left alone."""
    if argv is None:
        with console_start():
            return _main(sys.argv[1:])
    return _main(list(argv))


def _main(args: list[str]) -> int:
    # numpy's OpenBLAS starts a thread per core at import, which spins for a while: ≈ 60 ms of
    # CPU per `route task` on 2 cores, for vectors of tens to thousands of numbers that BLAS
    # never splits. One thread, unless the caller chose (docs/performance.md, Start-up).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if args == ["--version"]:
        sys.stdout.write(f"arbiter {__version__}\n")
        return 0
    try:
        result = build_app()(args=args, prog_name="arbiter", standalone_mode=False)
    except typer.TyperException as exc:  # the public base of typer's usage and parameter errors
        if type(exc).__name__ == "NoArgsIsHelpError":  # the help is printed already (as typer
            return 2  # itself tells it apart: the class is not public)
        ctx = getattr(exc, "ctx", None)  # a usage error knows its command: point at its help
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        return _usage_error(args, exc.format_message() + hint)
    except typer.Abort:
        sys.stderr.write("error: interrupted\n")
        return 130
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    raise SystemExit(main())
