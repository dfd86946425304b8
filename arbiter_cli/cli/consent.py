"""Consent before anything is destroyed (SPEC §16): ask on a terminal, need ``--yes`` off one.

Every command that deletes or overwrites data calls :func:`require_consent` before it touches
anything. On a terminal it shows what will happen and asks; off a terminal (cron, CI, a pipe)
it refuses with exit 2 unless the operator passed ``--yes``, so a script can never destroy by
accident. ``tests/cli/test_consent.py`` enumerates the commands that must call it.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from arbiter_cli.errors import InvalidInput

YesOpt = Annotated[bool, typer.Option(
    "--yes", "-y", help="Do it without asking (needed when stdin is not a terminal).")]


def interactive() -> bool:
    """True when someone can answer a question: stdin and stderr are terminals."""
    return sys.stdin.isatty() and sys.stderr.isatty()


def will_ask(*, yes: bool) -> bool:
    """True when :func:`require_consent` is going to ask (so a preview is worth computing)."""
    return not yes and interactive()


def require_consent(action: str, *, yes: bool, flag: str = "--yes",
                    detail: str | None = None) -> None:
    """Return when the operator agreed to ``action``; raise ``InvalidInput`` (exit 2) if not.

    ``action`` is one sentence naming what will be destroyed, e.g.
    "remove agent 'coder-1' (its decisions and audit records stay)".

    Commands call it after admission and input checks and before the first change, so a
    refusal changes nothing. The order of the other checks (SPEC §0) is unchanged.
    ``detail`` (lines shown above the question) is for what the command does not print itself.
    """
    if yes:
        return
    if not interactive():
        raise InvalidInput(f"refusing to {action} without {flag}: stdin is not a terminal, "
                           f"so nobody could confirm (pass {flag} to do it anyway)",
                           field=flag.lstrip("-"), rule="consent")
    if detail:
        sys.stderr.write(detail.rstrip("\n") + "\n")
    sys.stderr.write(f"This will {action}.\nContinue? [y/N] ")  # stdout carries results only
    sys.stderr.flush()
    answer = sys.stdin.readline()
    if answer.strip().lower() not in ("y", "yes"):
        raise InvalidInput(f"not confirmed: nothing was changed ({action})",
                           field=flag.lstrip("-"), rule="consent")
