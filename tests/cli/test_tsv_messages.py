"""cli/tsv.unmarked: a message written without rich is byte for byte what rich prints."""

from __future__ import annotations

import io

import pytest

from arbiter_cli.cli.tables import ResultConsole
from arbiter_cli.cli.tsv import TsvConsole, unmarked

MESSAGES = [
    "would route task [bold]task-1[/] to [bold]coder-1[/] (thompson, seed 12, explored, "
    "confidence 20%)", "decision 01a2-b3", "", "  spaces  around  ", "µ → 漢字 " * 40,
    "x" * 400, "[bold][/]", "é combining e\u0301", "a [bold]b[/] c [bold]d[/] e",
    # rich reads these (markup, escapes, emoji codes, tabs, control and format characters):
    "tab\tx", "[x]", "co:lon :smile:", "back\\slash", "\u200b", "nbsp\u00a0x", "soft\u00adh",
    "bell\x07", "[bold]unclosed", "a[bold]b[bold]c[/]d[/]", "[/]", "[red]x[/]",
]


@pytest.mark.parametrize("message", MESSAGES)
def test_a_message_is_printed_as_rich_prints_it(message: str):
    drawn = io.StringIO()
    try:
        ResultConsole(drawn, tsv=True).print(message)
    except Exception:  # noqa: BLE001 - rich refuses the markup: so must the fast path
        assert unmarked(message) is None
        return
    written = unmarked(message)
    assert written is None or written + "\n" == drawn.getvalue()
    plain = io.StringIO()
    TsvConsole(plain, fallback=lambda tsv: ResultConsole(tsv.file, tsv=True)).print(message)
    assert plain.getvalue() == drawn.getvalue()


def test_the_common_messages_need_no_rich():
    assert unmarked(MESSAGES[0]) == ("would route task task-1 to coder-1 (thompson, seed 12, "
                                     "explored, confidence 20%)")
    assert all(unmarked(m) is None for m in MESSAGES[9:])
