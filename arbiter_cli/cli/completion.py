"""Shell completion of values (SPEC §16 "Completion"), through typer's ``autocompletion=``.

`arbiter --install-completion` installs the shell side; the shell then runs arbiter with
``_ARBITER_COMPLETE`` set, and typer calls the functions here with the word being typed.

- Closed sets (strategies, statuses, roles, backends, workloads, scenarios, ...) are written
  out here, so a key press imports neither numpy nor the tools that define them;
  tests/cli/test_completion.py checks each against its source.
- Task types and languages come from the settings (``registry.task_types``,
  ``registry.languages``), read as the command would read them; profile names from the
  credentials file (never a token).
- Agent and decision ids come from the database, read-only and within
  ``bootstrap.COMPLETION_TIMEOUT_S``, only for a token that may list them, and only of its
  tenant (``bootstrap.complete_ids``; docs/security.md, "Shell completion").

A completion never prompts, never writes and never fails: any error completes nothing. Only
typer and the standard library are imported at module import (start-up of ``arbiter --help``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from arbiter_cli.cli.state import State

STRATEGIES = ("thompson", "ucb", "epsilon-greedy", "weighted", "thompson-stationary")
AGENT_STATUSES = ("available", "draining", "offline", "maintenance")
DECISION_STATUSES = ("open", "succeeded", "failed", "expired")
ROLES = ("viewer", "orchestrator", "manager", "admin")
SCENARIOS = ("easy", "close", "drift", "newcomer", "capacity")
DEMO_SCENARIOS = ("steady", "drift")
BACKENDS = ("memory", "sqlite", "postgres")
BENCH_WORKLOADS = ("registry-v1", "registry-v2", "route", "e2e", "api")
SOAK_WORKLOADS = ("normal", "leaky")
STATS_BY = ("agent", "task-type", "strategy")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "console", "json")
#: A completion that waits on the database longer than this completes nothing.
DEADLINE_S = 2.0


def choices(*values: str) -> Callable[[str], list[str]]:
    """A completion of ``values``: those that start with the word being typed."""

    def complete(incomplete: str) -> list[str]:
        return [value for value in values if value.startswith(incomplete)]

    return complete


def _state(ctx: typer.Context) -> State:
    """The run's State from the options parsed so far (completion runs no callback)."""
    from arbiter_cli.cli.state import State

    root = ctx.find_root().params
    token = ctx.params.get("token")
    return State(token=token if token is not None else root.get("token"),
                 config_file=root.get("config"), env=root.get("env"),
                 profile=root.get("profile"))


def _guarded(look: Callable[[], list[str]], deadline_s: float | None = None) -> list[str]:
    """``look()``, or nothing when it fails (or takes longer than ``deadline_s``).

    With a deadline it runs on a daemon thread: a database that does not answer can neither
    hang the shell nor keep the process alive after the completion is printed.
    """
    found: list[str] = []

    def run() -> None:
        with contextlib.suppress(BaseException):  # a completion never fails: it offers nothing
            found.extend(look())

    if deadline_s is None:
        run()
        return found
    worker = threading.Thread(target=run, name="arbiter-completion", daemon=True)
    worker.start()
    worker.join(deadline_s)
    return [] if worker.is_alive() else list(found)


def revisions(incomplete: str) -> list[str]:
    """Schema revisions this arbiter ships, and the names alembic understands."""
    from arbiter_cli.adapters.sql.schema_version import REVISIONS  # a tuple, nothing heavy

    return choices("head", "head-1", "base", *reversed(REVISIONS))(incomplete)


def _setting(ctx: typer.Context, incomplete: str, key: str) -> list[str]:
    def look() -> list[str]:
        settings = _state(ctx).settings
        values = settings.registry.task_types if key == "task_types" else settings.registry.languages
        return [value for value in values if value.startswith(incomplete)]

    return _guarded(look)


def task_types(ctx: typer.Context, incomplete: str) -> list[str]:
    """``registry.task_types`` of the effective settings."""
    return _setting(ctx, incomplete, "task_types")


def languages(ctx: typer.Context, incomplete: str) -> list[str]:
    """``registry.languages`` of the effective settings, as written there (Python, Go, ...)."""
    return _setting(ctx, incomplete, "languages")


def profiles(ctx: typer.Context, incomplete: str) -> list[str]:
    """Profile names of the credentials file (never their tokens)."""

    def look() -> list[str]:
        from arbiter_cli.adapters.credentials import read_profiles  # deferred: start-up

        path = _state(ctx).settings.paths.credentials_file
        return [name for name in sorted(read_profiles(path)) if name.startswith(incomplete)]

    return _guarded(look)


def _ids(ctx: typer.Context, incomplete: str, kind: str) -> list[str]:
    """Ids from the database; the imports and the local files are read before the clock of
    DEADLINE_S starts, which bounds the database alone."""
    try:
        from arbiter_cli.bootstrap import complete_ids  # deferred: start-up of `arbiter --help`

        state = _state(ctx)
        settings, token = state.settings, state.resolve_token()
    except Exception:  # noqa: BLE001 - unreadable settings or credentials: nothing to offer
        return []
    return _guarded(lambda: complete_ids(settings, token, kind, incomplete), DEADLINE_S)


def agent_ids(ctx: typer.Context, incomplete: str) -> list[str]:
    """Agent ids of the token's tenant (a token that may run ``agents list``)."""
    return _ids(ctx, incomplete, "agents")


def decision_ids(ctx: typer.Context, incomplete: str) -> list[str]:
    """The newest decision ids of the token's tenant (a token that may run ``route history``)."""
    return _ids(ctx, incomplete, "decisions")


def open_decision_ids(ctx: typer.Context, incomplete: str) -> list[str]:
    """The newest open decisions: those an outcome can still close."""
    return _ids(ctx, incomplete, "open-decisions")
