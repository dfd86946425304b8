"""Result tables (rich) and their tab-separated form; imported only when a command renders.

``grid`` builds the table of table mode: each column is at least as wide as its longest word,
so ids, timestamps and numbers are never broken across lines (prose wraps at spaces; a table
wider than the terminal overflows rather than folding an id). ``ResultConsole`` prints tables
as TSV in tsv mode through ``cli/tsv.py``: a header line, one line per row, cells escaped; a
list prints its table alone, a single result (``demo``, ``route explain``) keeps each table's
title on a line of its own above it, and a blank line between tables. In tsv mode the commands
print through ``tsv.TsvConsole``, which imports this module only for what is not a table.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import IO, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from arbiter_cli.cli.cells import Stamp
from arbiter_cli.cli.tsv import Rows, TsvConsole
from arbiter_cli.cli.tsv import escape as escape  # re-exported: tables.escape
from arbiter_cli.cli.tsv import plain as _plain
from arbiter_cli.observability.logging import colour


class Grid(Table):
    """A rich table that also keeps its cells as plain text for tsv mode."""

    def __init__(self, title: str | None, headers: Sequence[str],
                 plain_rows: Sequence[Sequence[str]]) -> None:
        super().__init__(title=title, title_justify="left", header_style="bold")
        self.headers = list(headers)
        self.plain_rows = [list(row) for row in plain_rows]


def grid(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
         now: datetime) -> Grid:
    shown = [[_shown(cell, now) for cell in row] for row in rows]
    table = Grid(title, columns, [[_plain(cell) for cell in row] for row in rows])
    for index, name in enumerate(columns):
        cells = [name, *(row[index] for row in shown if index < len(row))]
        table.add_column(name, overflow="fold", min_width=max(map(_longest_word, cells)))
    for row in shown:
        table.add_row(*(Text(cell) for cell in row))
    return table


def _shown(cell: Any, now: datetime) -> str:
    if isinstance(cell, Stamp):
        return cell.age(now)
    return "" if cell is None else str(cell)


def _longest_word(text: str) -> int:
    return max((len(word) for word in text.split()), default=1)


class ResultConsole(Console):
    """The console of results on stdout: rich tables, or TSV rows when ``tsv`` is set.

    Colour follows NO_COLOR and TERM=dumb (``observability.logging.colour``), as logs do.
    """

    def __init__(self, file: IO[str], *, tsv: bool, titles: bool = True,
                 tsv_out: TsvConsole | None = None) -> None:
        super().__init__(file=file, highlight=False, soft_wrap=True,
                         color_system="auto" if colour(file) else None)
        self.tsv = tsv
        self.titles = titles
        self._tsv = tsv_out or TsvConsole(file, titles=titles)  # writes the TSV tables

    def print(self, *objects: Any, **options: Any) -> None:
        if not self.tsv:
            super().print(*(_drawn(obj) for obj in objects), **options)
            return
        for obj in objects:
            if isinstance(obj, Rows):
                self._tsv.print(obj)
            elif isinstance(obj, Table):
                self._write_tsv(obj)
            else:
                super().print(obj, **options)

    def _write_tsv(self, table: Table) -> None:
        if isinstance(table, Grid):
            headers, rows = table.headers, table.plain_rows
        else:  # a table built by hand (e.g. mutate's)
            headers = [_text(column.header) for column in table.columns]
            rows = [list(cells) for cells in zip(*([_text(c) for c in column.cells]
                                                   for column in table.columns), strict=True)]
        self._tsv.write(_text(table.title) if table.title else None, headers, rows)


def _drawn(obj: Any) -> Any:
    """A ``Rows`` (``render.table``) as its rich table; anything else as it is."""
    if isinstance(obj, Rows):
        return grid(obj.title, obj.headers, obj.rows, now=obj.now)
    return obj


def _text(cell: Any) -> str:
    if isinstance(cell, Text):
        return cell.plain
    return str(cell) if cell is not None else ""



