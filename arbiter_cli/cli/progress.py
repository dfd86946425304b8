"""The progress of a long command (``observability.progress``), as this run should show it."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from arbiter_cli.cli.state import State
    from arbiter_cli.observability.progress import Progress


def progress(state: State, event: str, phase: str, total: float | None = None, *,
             unit: str = "") -> Progress:
    """A bar on a terminal (not ``TERM=dumb``) unless the output is JSON; log events at most
    every 10 s otherwise."""
    # deferred: start-up of `arbiter --help`
    from arbiter_cli.observability.progress import Progress, can_draw

    terminal = not state.json and can_draw(sys.stderr)
    return Progress(event, phase, total, terminal=terminal, unit=unit)
