"""The one error boundary of the CLI, and ``command``, which puts each command body inside it.

Every failure becomes one stderr line (or a JSON object) and its documented exit code; the
traceback appears only with ``--verbose``. The command modules register through ``command``.
"""

from __future__ import annotations

import functools
import inspect
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import typer

from arbiter_cli.cli import render
from arbiter_cli.cli.helptext import HelpCommand
from arbiter_cli.cli.options import FormatOpt, choose_format, state_of
from arbiter_cli.cli.state import State, resume_collector
from arbiter_cli.errors import ArbiterError, Forbidden, Interrupted, InvalidInput

F = TypeVar("F", bound=Callable[..., Any])

#: Command groups that need direct database access: refused in remote mode (SPEC §15).
LOCAL_ONLY = frozenset({"init", "db", "tenants", "journal", "demo", "bench", "soak", "mutate",
                        "serve"})


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
        from arbiter_cli.cli.telemetry import finish  # deferred: start-up of `arbiter --help`

        finish(state, exit_code, time.monotonic() - started)  # logs, --metrics-file, spans


@contextmanager
def observed(state: State) -> Iterator[None]:
    """Logs, the command's span and its metrics (arbiter_cli/cli/telemetry.py)."""
    from arbiter_cli.cli.telemetry import observe  # deferred: start-up of `arbiter --help`

    with observe(state):
        yield


def _report(state: State, error: ArbiterError, original: BaseException | None) -> None:
    redact = redactor(state)
    if state.verbose and original is not None:
        # Plain traceback without local variables: locals can hold secrets.
        sys.stderr.write(redact("".join(traceback.format_exception(original))))
    render.error(state, error, redact)


def redactor(state: State) -> Callable[[str], str]:
    """The run's redaction (its secrets, token secrets, URL passwords): errors go through it."""
    if state.telemetry is not None:
        return state.telemetry.redact
    from arbiter_cli.observability.redact import make_redactor  # deferred: start-up of `arbiter --help`

    return make_redactor([state.token, *state.secrets])


def command(group: typer.Typer, name: str | None = None, **options: Any) -> Callable[[F], F]:
    """Register ``fn`` on ``group`` inside the error boundary.

    The command's first parameter must be ``ctx: typer.Context``. Parameters named
    ``json_out`` and ``token`` are the repeated global options. Every command also takes the
    global ``--format`` after it: ``command`` adds that option to the command's signature
    (``_with_format``) and records it on the state, so the command body never sees it.
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            ctx: typer.Context = kwargs["ctx"]
            state = state_of(ctx)
            choose_format(state, kwargs.pop(FORMAT_PARAM, None),
                          json_out=bool(kwargs.get("json_out")))
            if kwargs.get("token") is not None:  # "" too: an empty token is an answer (6)
                state.token = kwargs["token"]
            if kwargs.get("database_url"):  # a password on the command line is a secret too
                from arbiter_cli.dburl import passwords  # deferred: start-up of `arbiter --help`

                state.secrets += passwords(kwargs["database_url"])
            state.command = ctx.command_path.partition(" ")[2] or ctx.command_path
            with boundary(state), observed(state):
                _gate(state)
                resume_collector()  # the console script's start-up is over (cli/state.py)
                return fn(*args, **kwargs)

        wrapper.__signature__ = _with_format(fn)  # type: ignore[attr-defined]
        options.setdefault("cls", HelpCommand)  # help without <bool>, reflowed (cli/helptext.py)
        group.command(name, **options)(wrapper)
        return fn

    return decorate


FORMAT_PARAM = "output_format"


def _with_format(fn: Callable[..., Any]) -> inspect.Signature:
    """``fn``'s signature (annotations evaluated, as typer reads them) plus ``--format``."""
    signature = inspect.signature(fn, eval_str=True)
    extra = inspect.Parameter(FORMAT_PARAM, inspect.Parameter.KEYWORD_ONLY, default=None,
                              annotation=FormatOpt)
    return signature.replace(parameters=[*signature.parameters.values(), extra])


def _gate(state: State) -> None:
    """Token-checked commands are admitted before their body runs; deny by default."""
    from arbiter_cli.domain.security import NO_TOKEN, PERMISSIONS  # deferred: start-up of `arbiter --help`

    if state.command.split(" ")[0] in LOCAL_ONLY and state.remote_url() is not None:
        raise InvalidInput(f"`{state.command}` needs direct database access and cannot run "
                           "against a server (--server, ARBITER_SERVER or the profile's "
                           "server): run it where the database is", field="server",
                           rule="local_only")
    if state.command in PERMISSIONS:
        state.admit()
    elif state.command not in NO_TOKEN:
        raise Forbidden(f"`{state.command}` has no permission entry: denied by default")
