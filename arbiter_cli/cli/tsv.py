"""Result tables as data, and their tab-separated form without rich (SPEC §16, tsv mode).

``render.table`` returns a ``Rows``: the title, the headers and the cells as given. Off a
terminal, ``TsvConsole`` writes it as TSV without importing rich (≈ 45 modules, rich's
console and table); anything else it is asked to print (a message, a hand-built rich table)
goes to the console ``fallback`` builds on first use (``render``: a ``ResultConsole`` sharing
this one's table count, for the blank line between tables), except a message whose only
markup is ``[bold]…[/]`` and that rich would print as its bare text (``unmarked``): written
here, so ``route task`` needs no rich either. On a terminal, ``ResultConsole``
draws a ``Rows`` as the rich table of ``tables.grid``. This module imports no rich and no
``cli.tables``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import IO, Any, Protocol

from arbiter_cli.cli.cells import Stamp

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
#: What rich reads in a message (markup, escapes, ``:emoji:`` codes) besides ``[bold]…[/]``.
_RICH_SYNTAX = frozenset("[]:\\")


def escape(cell: str) -> str:
    """One TSV cell on one line: backslash, tab, newline and carriage return escaped."""
    return cell.translate(_ESCAPES)


def plain(cell: Any) -> str:
    """A cell in tsv mode: a ``Stamp``'s full time, ``None`` empty, else its text."""
    if isinstance(cell, Stamp):
        return cell.text()
    return "" if cell is None else str(cell)


class Rows:
    """A result table as data (cells are text, ``None`` or a ``Stamp``; never markup)."""

    def __init__(self, title: str | None, headers: Sequence[str],
                 rows: Sequence[Sequence[Any]], *, now: datetime) -> None:
        self.title = title
        self.headers = list(headers)
        self.rows = rows
        self.now = now

    @property
    def plain_rows(self) -> list[list[str]]:
        return [[plain(cell) for cell in row] for row in self.rows]



def unmarked(message: str) -> str | None:
    """``message`` as rich prints it without colour and with soft wrap (the result console
    off a terminal), when that is certain: its only markup is balanced ``[bold]…[/]`` and the
    rest is printable text with no ``[``, ``]``, ``:`` or backslash. Otherwise None."""
    parts = message.split("[bold]")
    text = [parts[0]]
    for part in parts[1:]:  # each opens a [bold], closed once in it
        inside, closed, after = part.partition("[/]")
        if not closed:
            return None
        text += (inside, after)
    if "[/]" in parts[0]:
        return None
    plain = "".join(text)
    if not plain.isprintable() or not _RICH_SYNTAX.isdisjoint(plain):
        return None
    return plain


class Printer(Protocol):
    def print(self, *objects: Any, **options: Any) -> None: ...


class TsvConsole:
    """The console of results in tsv mode: ``print`` as ``ResultConsole(tsv=True)`` does."""

    def __init__(self, file: IO[str], *, titles: bool = True,
                 fallback: Callable[[TsvConsole], Printer] | None = None) -> None:
        self.file = file
        self.titles = titles
        self.tables = 0
        self._fallback = fallback
        self._rich: Printer | None = None
        self._colour: bool | None = None

    def print(self, *objects: Any, **options: Any) -> None:
        for obj in objects:
            if isinstance(obj, Rows):
                self.write(obj.title, obj.headers, obj.plain_rows)
                continue
            plain = unmarked(obj) if type(obj) is str and not options else None
            if plain is not None and not self.colour():
                self.file.write(plain + "\n")
                self.file.flush()
            else:
                self.rich().print(obj, **options)

    def colour(self) -> bool:
        """Whether the result console would colour ``file`` (then rich prints the messages)."""
        if self._colour is None:
            # deferred: start-up of `arbiter --help`
            from arbiter_cli.observability.logging import colour

            self._colour = colour(self.file)
        return self._colour

    def write(self, title: str | None, headers: Sequence[str],
              rows: Sequence[Sequence[str]]) -> None:
        """A header line, one line per row, cells escaped; the title on a line above it
        (``titles``), and a blank line before every table but the first."""
        lines = ["\t".join(escape(cell) for cell in row) for row in [headers, *rows]]
        if self.titles and title:
            lines.insert(0, " ".join(title.split()))
        self.file.write(("\n" if self.tables else "") + "\n".join(lines) + "\n")
        self.file.flush()
        self.tables += 1

    def rich(self) -> Printer:
        """The console behind this one, for what is not a ``Rows``."""
        if self._rich is None:
            if self._fallback is None:
                raise TypeError("this TsvConsole prints tables only (no fallback console)")
            self._rich = self._fallback(self)
        return self._rich
