"""The root of the CLI: global options, the one error boundary, and ``main()``.

Only typer and small arbiter modules are imported here; every heavy library is imported inside
the command that needs it, so ``arbiter --help`` and ``--version`` stay fast.
"""

from __future__ import annotations

import functools
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from arbiter_cli import __version__
from arbiter_cli.cli.state import State
from arbiter_cli.errors import ArbiterError, Interrupted, InvalidInput

F = TypeVar("F", bound=Callable[..., Any])

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


@contextmanager
def boundary(state: State) -> Iterator[None]:
    """Turn any failure into one stderr line (or JSON) and its exit code."""
    started = time.monotonic()
    exit_code = 0
    try:
        yield
    except ArbiterError as exc:
        _report(state, exc, exc)
        exit_code = exc.exit_code
        raise typer.Exit(exc.exit_code) from None
    except typer.Exit as exc:
        exit_code = exc.exit_code
        raise
    except KeyboardInterrupt:
        _report(state, Interrupted("interrupted"), None)
        exit_code = 130
        raise typer.Exit(130) from None
    except Exception as exc:  # noqa: BLE001 - the boundary reports bugs as exit 70
        hint = "" if state.verbose else " (run with --verbose for the traceback)"
        first = (str(exc).strip().splitlines() or [""])[0][:300]  # never the SQL or its values
        _report(state, ArbiterError(f"internal error: {type(exc).__name__}: {first}{hint}"), exc)
        exit_code = 70
        raise typer.Exit(70) from None
    finally:
        state.close()
        from arbiter_cli.observability.runtime import finish

        finish(state, exit_code, time.monotonic() - started)  # logs, --metrics-file, spans


@contextmanager
def observed(state: State) -> Iterator[None]:
    """Logs, the command's span and its metrics (arbiter_cli/observability/runtime.py)."""
    from arbiter_cli.observability.runtime import observe

    with observe(state):
        yield


def _report(state: State, error: ArbiterError, original: BaseException | None) -> None:
    from arbiter_cli.cli import render

    redact = _redactor(state)
    if state.verbose and original is not None:
        # Plain traceback without local variables: locals can hold secrets.
        sys.stderr.write(redact("".join(traceback.format_exception(original))))
    render.error(state, error, redact)


def _redactor(state: State) -> Callable[[str], str]:
    """The run's redaction (its secrets, token secrets, URL passwords): errors go through it."""
    if state.telemetry is not None:
        return state.telemetry.redact
    from arbiter_cli.observability.redact import make_redactor

    return make_redactor([state.token, *state.secrets])


def command(group: typer.Typer, name: str | None = None, **options: Any) -> Callable[[F], F]:
    """Register ``fn`` on ``group`` inside the error boundary.

    The command's first parameter must be ``ctx: typer.Context``. Parameters named
    ``json_out`` and ``token`` are the repeated global options.
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            ctx: typer.Context = kwargs["ctx"]
            state = state_of(ctx)
            state.json = state.json or bool(kwargs.get("json_out"))
            if kwargs.get("token") is not None:  # "" too: an empty token is an answer (6)
                state.token = kwargs["token"]
            if kwargs.get("database_url"):  # a password on the command line is a secret too
                from arbiter_cli.dburl import passwords

                state.secrets += passwords(kwargs["database_url"])
            state.command = ctx.command_path.partition(" ")[2] or ctx.command_path
            with boundary(state), observed(state):
                _gate(state)
                return fn(*args, **kwargs)

        group.command(name, **options)(wrapper)
        return fn

    return decorate


def _gate(state: State) -> None:
    """Token-checked commands are admitted before their body runs; deny by default."""
    from arbiter_cli.domain.security import NO_TOKEN, PERMISSIONS
    from arbiter_cli.errors import Forbidden

    if state.command in PERMISSIONS:
        state.admit()
    elif state.command not in NO_TOKEN:
        raise Forbidden(f"`{state.command}` has no permission entry: denied by default")


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"arbiter {__version__}\n")
        raise typer.Exit(0)


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="arbiter",
        help="Operate fleets of AI coding agents: registry, routing, security, health.\n\n"
        "Example: [bold]arbiter init && arbiter agents list[/]",
        no_args_is_help=True,
        rich_markup_mode="rich",
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(root)
    from arbiter_cli.cli import agents, config_cmd, db, route, security, setup

    setup.register(app)
    security.register(app)
    from arbiter_cli.cli import soak as soak_cli  # noqa: I001 - one line per helper, no merge conflicts
    soak_cli.register(app)
    from arbiter_cli.cli import health as health_cli  # noqa: I001 - one line per helper
    health_cli.register(app)
    from arbiter_cli.cli import mutate as mutate_cli  # noqa: I001 - one line per helper
    mutate_cli.register(app)
    from arbiter_cli.cli import serve as serve_cli  # noqa: I001 - one line per helper
    serve_cli.register(app)
    app.add_typer(agents.app, name="agents")
    app.add_typer(route.app, name="route")
    app.add_typer(db.app, name="db")
    app.add_typer(config_cmd.app, name="config")
    from arbiter_cli.cli import journal as journal_cli  # noqa: I001 - one line per group
    app.add_typer(journal_cli.app, name="journal")
    return app


def root(
    ctx: typer.Context,
    json_out: JsonOpt = False,
    token: TokenOpt = None,
    config: Annotated[Path | None, typer.Option(
        "--config", help="Extra settings file (layer 5 of 7).", dir_okay=False,
        show_default=False)] = None,
    env: Annotated[str | None, typer.Option(
        "--env", help="Settings environment (default: ARBITER_ENV or development).",
        show_default=False)] = None,
    profile: Annotated[str | None, typer.Option(
        "--profile", help="Credentials profile (default: ARBITER_PROFILE or default).",
        show_default=False)] = None,
    log_level: Annotated[str | None, typer.Option(
        "--log-level", help="debug, info, warning or error.", show_default=False)] = None,
    log_format: Annotated[str | None, typer.Option(
        "--log-format", help="console or json (default: console on a TTY).",
        show_default=False)] = None,
    correlation_id: Annotated[str | None, typer.Option(
        "--correlation-id", envvar="ARBITER_CORRELATION_ID", help="Id carried through logs, "
        "decisions and audit (default: generated).", show_default=False)] = None,
    metrics_file: Annotated[Path | None, typer.Option(
        "--metrics-file", help="Write this run's metrics in node-exporter textfile format.",
        dir_okay=False, show_default=False)] = None,
    verbose: Annotated[bool, typer.Option(
        "--verbose", help="Show tracebacks of internal errors (never with local variables).")
    ] = False,
    version: Annotated[bool, typer.Option(
        "--version", help="Print the version and exit.", callback=_version, is_eager=True)
    ] = False,
) -> None:
    """Operate fleets of AI coding agents: registry, routing, security, health.

    Global options go before the command; --json and --token may also follow it.

    Example: arbiter --json agents list
    """
    from arbiter_cli.ids import uuid7

    if correlation_id is not None and not _printable(correlation_id, 200):
        from typer._click.exceptions import BadParameter

        raise BadParameter("must be 1 to 200 printable characters",
                           param_hint="--correlation-id")
    _check_paths(profile, metrics_file)
    ctx.obj = State(
        json=json_out, token=token, config_file=config, env=env, profile=profile,
        log_level=log_level, log_format=log_format,
        correlation_id=correlation_id or uuid7(),
        metrics_file=metrics_file, verbose=verbose,
    )


def _check_paths(profile: str | None, metrics_file: Path | None) -> None:
    """Usage errors (exit 2) of the root options that name files, before anything runs."""
    from typer._click.exceptions import BadParameter

    if profile is not None:
        from arbiter_cli.adapters.credentials import PROFILE_RE

        if not PROFILE_RE.fullmatch(profile):
            raise BadParameter("must be 1 to 64 letters, digits, '.', '_' or '-'",
                               param_hint="--profile")
    if metrics_file is not None:
        from arbiter_cli.adapters.metrics import metrics_file_problem

        problem = metrics_file_problem(metrics_file)
        if problem:
            raise BadParameter(problem, param_hint="--metrics-file")


def _printable(value: str, limit: int) -> bool:
    return 0 < len(value) <= limit and value.isprintable()


def _usage_error(args: list[str], message: str) -> int:
    from arbiter_cli.cli import render

    state = State(json="--json" in args)
    render.error(state, InvalidInput(" ".join(message.split())))
    return 2


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the app with ``standalone_mode=False`` and return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--version"]:
        sys.stdout.write(f"arbiter {__version__}\n")
        return 0
    from typer._click import exceptions as click_exc  # typer vendors click

    try:
        result = build_app()(args=args, prog_name="arbiter", standalone_mode=False)
    except click_exc.NoArgsIsHelpError:
        return 2
    except click_exc.UsageError as exc:
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        return _usage_error(args, exc.format_message() + hint)
    except click_exc.ClickException as exc:
        return _usage_error(args, exc.format_message())
    except typer.Abort:
        sys.stderr.write("error: interrupted\n")
        return 130
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    raise SystemExit(main())
