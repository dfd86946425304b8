"""Result tables off a terminal and on one (SPEC §16): TSV cells, ages, unbroken ids; log colour."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest

from arbiter_cli.cli.cells import Stamp, span
from arbiter_cli.cli.tables import ResultConsole, escape, grid
from arbiter_cli.observability import logging as log

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
ANSI = "\x1b["
BOX = set("┏┓┗┛┃━│─┌┐└┘├┤┬┴┼╇┡┩╋")


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def printed(tsv: bool, *tables_rows: list[tuple[object, ...]], titles: bool = False,
            width: int | None = None) -> str:
    out = Tty() if width else io.StringIO()
    console = ResultConsole(out, tsv=tsv, titles=titles)
    if width:
        console.width = width
    for rows in tables_rows:
        console.print(grid("a title", ("id", "time", "why"), rows, now=NOW))
    return out.getvalue()


@pytest.mark.parametrize(("cell", "escaped"), [
    ("plain text", "plain text"), ("a\tb", "a\\tb"), ("two\nlines", "two\\nlines"),
    ("cr\rlf", "cr\\rlf"), ("back\\slash", "back\\\\slash"), ("\\t", "\\\\t"),
])
def test_a_tsv_cell_escapes_tab_newline_return_and_backslash(cell: str, escaped: str):
    assert escape(cell) == escaped


def test_tsv_is_a_header_and_one_line_per_row_whatever_the_cells_hold():
    at = NOW - timedelta(minutes=3)
    text = printed(True, [("coder-1", Stamp.of(at), "line one\nline two\tand a tab"),
                          ("coder-2", Stamp.of(None), None)])
    assert text == ("id\ttime\twhy\n"
                    "coder-1\t2026-12-07T08:57:00.000Z\tline one\\nline two\\tand a tab\n"
                    "coder-2\t\t\n")


def test_tsv_of_a_list_has_no_title_and_of_a_single_result_keeps_each_title():
    rows = [("x", None, "y")]
    assert printed(True, rows, rows) == "id\ttime\twhy\nx\t\ty\n\nid\ttime\twhy\nx\t\ty\n"
    assert printed(True, rows, titles=True) == "a title\nid\ttime\twhy\nx\t\ty\n"


def test_table_mode_shows_ages_and_tsv_the_full_timestamp():
    rows = [("a", Stamp.of((NOW - timedelta(hours=2)).isoformat()), ""),
            ("b", Stamp.of(NOW + timedelta(days=5, minutes=1), missing="never"), ""),
            ("c", Stamp.of(None, missing="never"), "")]
    table = printed(False, rows)
    assert "2h ago" in table and "in 5d" in table and "never" in table
    assert "2026-" not in table
    assert "2026-12-07T07:00:00.000Z" in printed(True, rows)


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (59.9, "59s"), (60, "1m"), (3599, "59m"), (3600, "1h"), (86_399, "23h"),
    (86_400, "1d"), (40 * 86_400, "40d"),
])
def test_a_span_is_its_largest_whole_unit(seconds: float, text: str):
    assert span(seconds) == text


@pytest.mark.parametrize("value", ["not a time", float("nan"), float("inf"), None, True])
def test_an_unreadable_time_is_no_time(value: object):
    stamp = Stamp.of(value, missing="?")  # type: ignore[arg-type]
    assert stamp.text() == "" and stamp.age(NOW) == "?"


def test_a_time_without_a_zone_is_utc():
    assert Stamp.of("2026-12-07T08:00:00").age(NOW) == "1h ago"


def test_ids_and_timestamps_are_never_broken_in_a_narrow_table():
    """A 40-column terminal: prose wraps at spaces, ids and times stay whole on one line."""
    long_id = "01a24fd4-e139-715b-bbc4-6e675facafbc"
    stamp = "2026-12-07T09:20:19.123Z"
    out = Tty()
    console = ResultConsole(out, tsv=False)
    console.width = 40
    console.print(grid(None, ("id", "at", "why"), [(long_id, stamp, "a long reason " * 6)],
                       now=NOW))
    text = out.getvalue()
    assert any(ch in text for ch in BOX)
    assert long_id in text and stamp in text


def test_a_hand_built_rich_table_prints_as_tsv_too():
    from rich.table import Table

    table = Table(title="t")
    table.add_column("module")
    table.add_column("score")
    table.add_row("arbiter_cli.domain", "97.0%")
    out = io.StringIO()
    ResultConsole(out, tsv=True, titles=False).print(table)
    assert out.getvalue() == "module\tscore\narbiter_cli.domain\t97.0%\n"


@pytest.mark.parametrize("environ", [{"NO_COLOR": "1"}, {"NO_COLOR": "yes"}, {"TERM": "dumb"}])
def test_no_color_and_a_dumb_terminal_turn_colour_off_in_tables(environ: dict[str, str],
                                                                monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    assert ANSI in printed(False, [("x", None, "y")], width=80)  # a terminal: colour
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    text = printed(False, [("x", None, "y")], width=80)
    assert ANSI not in text and any(ch in text for ch in BOX)


def test_an_empty_no_color_leaves_colour_on():
    assert log.colour(Tty(), {"NO_COLOR": "", "TERM": "xterm"})
    assert not log.colour(io.StringIO(), {"TERM": "xterm"})  # not a terminal


@pytest.mark.parametrize("environ", [{"NO_COLOR": "1"}, {"TERM": "dumb"}])
def test_no_color_and_a_dumb_terminal_turn_colour_off_in_console_logs(
        environ: dict[str, str], monkeypatch: pytest.MonkeyPatch):
    def logged(env: dict[str, str]) -> str:
        stderr = Tty()
        monkeypatch.setattr("sys.stderr", stderr)
        log.configure("info", "console", environ=env)
        try:
            log.get_logger().warning("disk.low", free="3 GiB")
        finally:
            log.reset()
        return stderr.getvalue()

    assert ANSI in logged({"TERM": "xterm-256color"})  # a terminal: colour
    text = logged({"TERM": "xterm-256color", **environ})
    assert "disk.low" in text and ANSI not in text


def test_tsv_console_prints_as_the_rich_result_console_does(monkeypatch: pytest.MonkeyPatch):
    """cli/tsv.TsvConsole (no rich) against ResultConsole(tsv=True): tables, titles, blank lines
    between tables, messages between them, stamps as full times."""
    from arbiter_cli.cli.render import stdout_console, table
    from arbiter_cli.cli.state import State

    rows = [("a\tb", Stamp.of(NOW), None), ("c", Stamp(None, "never"), "x\ny")]
    for titles in (True, False):
        outs = []
        for rich in (True, False):
            out = io.StringIO()
            if rich:
                console = ResultConsole(out, tsv=True, titles=titles)
            else:
                monkeypatch.setattr("sys.stdout", out)
                console = stdout_console(State(format="tsv"), titles=titles)
                assert type(console).__name__ == "TsvConsole"
            console.print(table("first  table", ("id", "at", "why"), rows))
            console.print("a [bold]message[/] between")
            console.print(table(None, ("one",), [("1",)]), table("third", ("two",), []))
            outs.append(out.getvalue())
        assert outs[0] == outs[1]
        assert outs[1].startswith(("first table\n" if titles else "") + "id\tat\twhy\n"
                                  "a\\tb\t2026-12-07T09:00:00")
        assert "\na message between\n" in outs[1] and "\n\none\n1\n" in outs[1]


def test_render_table_draws_the_grid_on_a_terminal():
    from arbiter_cli.cli.render import table

    stamp = datetime.now(UTC) - timedelta(minutes=3)
    for rows in ([("coder-1", stamp, "why")], []):
        drawn, direct = Tty(), Tty()
        ResultConsole(drawn, tsv=False).print(table("t", ("id", "at", "why"), rows))
        ResultConsole(direct, tsv=False).print(grid("t", ("id", "at", "why"), rows,
                                                    now=datetime.now(UTC)))
        assert drawn.getvalue() == direct.getvalue() and any(ch in drawn.getvalue() for ch in BOX)
