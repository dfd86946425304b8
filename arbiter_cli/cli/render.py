"""Output: results on stdout (JSON via ``json.dumps``, never rich), everything else on stderr.

Three output formats (SPEC §16), chosen by ``--format table|tsv|json`` (``--json`` is
``--format json``), else by where stdout goes:

- ``table``: rich tables, the default on a terminal. Timestamps show as ages (``3m ago``,
  ``in 5d``); ids and timestamps never wrap.
- ``tsv``: the default off a terminal: a header line, then one tab-separated line per row,
  with no box characters, wrapping or colour; cells escape ``\\``, tab, newline and carriage
  return as ``\\\\``, ``\\t``, ``\\n``, ``\\r``; timestamps are full RFC 3339 text.
- ``json``: one ``json.dumps`` object.

Hints such as ``more: --cursor …`` go to stderr in every format. rich is imported only when a
table or console is drawn (``cli/tables.py``; tsv mode writes tables without it, ``cli/tsv.py``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from arbiter_cli.cli.cells import Stamp as Stamp  # the cells of `table`, as render.Stamp
from arbiter_cli.errors import ArbiterError

if TYPE_CHECKING:
    from rich.console import Console

    from arbiter_cli.cli.state import State
    from arbiter_cli.cli.tsv import Rows, TsvConsole

FORMATS = ("table", "tsv", "json")


def output_format(state: State | None) -> str:
    """``json``, ``table`` or ``tsv``: the chosen format, else ``table`` only on a terminal."""
    if state is not None and state.json:
        return "json"
    if state is not None and state.format is not None:
        return state.format
    return "table" if _isatty(sys.stdout) else "tsv"


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def stdout_console(state: State | None = None, *, titles: bool = True) -> Console:
    """The console of results: tables in table mode, TSV rows in tsv mode (``titles``: a
    table's title on a line above it; a list has none, its stdout is header and rows).

    In tsv mode it is a ``tsv.TsvConsole``: the commands only ``print`` to it, and it prints
    as ``ResultConsole(tsv=True)`` does, importing rich only for what is not a table."""
    if output_format(state) == "tsv":
        from arbiter_cli.cli.tsv import TsvConsole  # deferred: start-up of `arbiter --help`

        return cast("Console", TsvConsole(sys.stdout, titles=titles, fallback=_tsv_fallback))
    from arbiter_cli.cli.tables import ResultConsole  # deferred: start-up of `arbiter --help`

    return ResultConsole(sys.stdout, tsv=False, titles=titles)


def _tsv_fallback(tsv: TsvConsole) -> Console:
    """What a ``TsvConsole`` prints that is not a table: the rich console of tsv mode."""
    from arbiter_cli.cli.tables import ResultConsole  # deferred: rich only when needed

    return ResultConsole(tsv.file, tsv=True, titles=tsv.titles, tsv_out=tsv)


def stderr_console() -> Console:
    from rich.console import Console

    from arbiter_cli.observability.logging import colour  # deferred: start-up of `arbiter --help`

    return Console(file=sys.stderr, highlight=False, soft_wrap=True,
                   color_system="auto" if colour(sys.stderr) else None)


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
        human(stdout_console(state))


def emit_list(
    state: State, items: Sequence[dict[str, Any]], next_cursor: str | None,
    human: Callable[[Console], None], *, empty: str | None = None, **meta: Any,
) -> None:
    """A list result: ``{"items", "count", "next_cursor", "meta"}``, or the human rendering.

    ``empty`` is the one line an empty list prints instead of an empty table (on stdout in
    table mode; in tsv mode stdout keeps the header line alone and the line goes to stderr).
    The ``more: --cursor …`` hint goes to stderr.
    """
    if state.json:
        write_json({"items": list(items), "count": len(items), "next_cursor": next_cursor,
                    "meta": state.meta(**meta)})
        return
    console = stdout_console(state, titles=False)
    if not items and empty is not None:
        if output_format(state) == "table":
            console.print(empty, markup=False)
        else:
            human(console)
            hint(empty)
    else:
        human(console)
    if next_cursor:
        hint(f"more: --cursor {next_cursor}")


def hint(message: str) -> None:
    """A line for the operator, not the result: stderr, plain text."""
    sys.stdout.flush()
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


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


def table(title: str | None, columns: Iterable[str], rows: Iterable[Iterable[Any]]) -> Rows:
    """A result table; cells are text, ``None`` (empty) or a ``Stamp``. No cell is markup.

    Printed on a result console: TSV in tsv mode (no rich), else the rich table of
    ``tables.grid``; ages are counted from now."""
    from arbiter_cli.cli.tsv import Rows  # deferred: start-up of `arbiter --help`

    return Rows(title, list(columns), [list(row) for row in rows], now=datetime.now(UTC))


def percent(value: float) -> str:
    return f"{value * 100:.1f}%"
