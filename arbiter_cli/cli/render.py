"""Output: results on stdout (JSON via ``json.dumps``, never rich), everything else on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from arbiter_cli.errors import ArbiterError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from arbiter_cli.cli.state import State


def stdout_console() -> Console:
    from rich.console import Console

    return Console(file=sys.stdout, highlight=False, soft_wrap=True)


def stderr_console() -> Console:
    from rich.console import Console

    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


def write_json(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def emit(
    state: State, document: dict[str, Any], human: Callable[[Console], None], **meta: Any
) -> None:
    """One result: the flat JSON object with ``meta``, or the human rendering."""
    if state.json:
        write_json({**document, "meta": state.meta(**meta)})
    else:
        human(stdout_console())


def emit_list(
    state: State, items: Sequence[dict[str, Any]], next_cursor: str | None,
    human: Callable[[Console], None], **meta: Any,
) -> None:
    if state.json:
        write_json({"items": list(items), "count": len(items), "next_cursor": next_cursor,
                    "meta": state.meta(**meta)})
    else:
        human(stdout_console())


def error(state: State | None, exc: ArbiterError,
          redact: Callable[[str], str] | None = None) -> None:
    """One line on stderr, or the JSON error object with ``--json``; ``redact`` hides secrets."""
    if state is not None and state.json:
        document: Any = exc.to_dict()
        if redact is not None:
            # deferred: start-up of `arbiter --help`
            from arbiter_cli.observability.redact import redact_value

            document = redact_value(document, redact)
        sys.stderr.write(json.dumps(document, ensure_ascii=False, default=str) + "\n")
    else:
        message = " ".join(exc.message.split())  # one line, whatever the message held
        sys.stderr.write(f"error: {message if redact is None else redact(message)}\n")
    sys.stderr.flush()


def warn(message: str) -> None:
    """A warning on stderr, as a log event: JSON or console like every other log line."""
    from arbiter_cli.observability import logging as log  # deferred: start-up of `arbiter --help`

    log.get_logger().warning(message)


def table(title: str | None, columns: Iterable[str], rows: Iterable[Iterable[Any]]) -> Table:
    from rich.table import Table

    grid = Table(title=title, title_justify="left", header_style="bold")
    for name in columns:
        grid.add_column(name, overflow="fold")
    for row in rows:
        grid.add_row(*("" if cell is None else str(cell) for cell in row))
    return grid


def percent(value: float) -> str:
    return f"{value * 100:.1f}%"
