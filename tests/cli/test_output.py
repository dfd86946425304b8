"""Output that pipes cleanly (SPEC §16, §0): every list command off a terminal is a header and one
tab-separated line per row; `--format table|tsv|json` chooses; hints go to stderr; NO_COLOR and
TERM=dumb turn colour off in tables and logs alike, on a real terminal too."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import cli

BOX = set("┏┓┗┛┃━│─┌┐└┘├┤┬┴┼╇┡┩╋╭╮╰╯")
ANSI = "\x1b["

# Every list command, the header of its TSV, and its arguments.
LISTS: dict[str, tuple[list[str], str]] = {
    "agents list": (["agents", "list"],
                    "id\tname\tstatus\tutil\tsuccess\tquality\ttask types"),
    "agents query": (["agents", "query", "--task-type", "code-editing", "--limit", "0"],
                     "#\tid\tscore\tsuccess\tquality\tutil\twhy"),
    "agents cleanup": (["agents", "cleanup", "--older-than", "1s", "--dry-run"],
                       "id\tlast active"),
    "route history": (["route", "history"],
                      "time\ttask\ttype\tagent\tstrategy\tstatus\texplored\tover capacity"),
    "tokens list": (["tokens", "list"], "id\tname\trole\texpires\trevoked\tlast used"),
    "audit list": (["audit", "list"], "seq\ttime\tactor\taction\ttarget\tresult"),
    "tenants list": (["tenants", "list"], "tenant"),
    "db history": (["db", "history"], "revision\tdown\tmessage"),
    "journal list": (["journal", "list"], "seq\top id\tkind\ttenant\twritten\tstate\twhy"),
}
# Single results drawn as tables: TSV too off a terminal (with the tables' titles).
TABLES: dict[str, list[str]] = {
    "agents stats": ["agents", "stats"],
    "agents show": ["agents", "show", "coder-1"],
    "route stats": ["route", "stats"],
    "config show": ["config", "show"],
}


def ok(*args: str, env: dict[str, str] | None = None) -> str:
    result = cli(*args, env=env)
    assert result.exit_code == 0, result
    return result.stdout


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """One SQLite store for the module: agents, decisions (one with an outcome), tokens."""
    root = tmp_path_factory.mktemp("output")
    env = {"HOME": str(root / "home"), "ARBITER_DATA_DIR": str(root / "data"),
           "ARBITER_CONFIG_DIR": str(root / "config"),
           "XDG_CONFIG_HOME": str(root / "xdg-config"), "XDG_DATA_HOME": str(root / "xdg-data")}
    (root / "config").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("ARBITER_") and not name.startswith("ARBITER_TEST_"):
                mp.delenv(name)
        for name, value in env.items():
            mp.setenv(name, value)
        ok("init")
        for i, name in enumerate(["Coder One", "Coder Two with a rather long name", "Idle"]):
            ok("agents", "register", "--id", f"coder-{i + 1}", "--name", name,
               "--model-family", "claude-3.5", "--task-type", "code-editing",
               "--task-type", "code-review", "--language", "python", "--capacity", "4")
        for task in ("PR-1", "PR-2"):
            ok("route", "task", "--task-type", "code-editing", "--task-id", task)
        ok("route", "outcome", "--task-id", "PR-1", "--success", "--quality", "0.9")
        ok("tokens", "create", "--role", "viewer", "--name", "read only dashboards")
        time.sleep(1.1)  # `agents cleanup --older-than 1s` finds the idle agent
        yield env


def count(args: list[str]) -> int:
    return int(json.loads(ok("--json", *args))["count"])


@pytest.mark.parametrize("name", sorted(LISTS))
def test_every_list_off_a_terminal_is_a_header_and_one_tab_separated_line_per_row(fleet, name):
    args, header = LISTS[name]
    result = cli(*args)
    assert result.exit_code == 0, result
    lines = result.stdout.splitlines()
    assert lines[0] == header
    assert len(lines) - 1 == count(args), result.stdout  # one line per row: nothing wrapped
    assert all(line.count("\t") == header.count("\t") for line in lines), result.stdout
    assert not BOX & set(result.stdout) and ANSI not in result.stdout
    assert "more:" not in result.stdout


@pytest.mark.slow
def test_the_lists_have_rows_and_timestamps_stay_full_rfc3339_in_tsv(fleet):
    for name in ("agents list", "agents query", "agents cleanup", "route history", "tokens list",
                 "audit list", "tenants list", "db history"):
        assert count(LISTS[name][0]) > 0, name  # the parametrized test above checked real rows
    history = ok("route", "history").splitlines()[1:]
    assert all(line.split("\t")[0].endswith("Z") and "T" in line for line in history)
    assert "read only dashboards" in ok("tokens", "list")  # spaces kept, one cell


@pytest.mark.parametrize("name", sorted(TABLES))
def test_single_results_drawn_as_tables_are_tab_separated_off_a_terminal(fleet, name):
    out = ok(*TABLES[name])
    assert not BOX & set(out) and ANSI not in out
    assert any("\t" in line for line in out.splitlines()), out


@pytest.mark.parametrize("where", ["before", "after"])
def test_format_table_forces_the_table_when_piped_and_ids_stay_whole(fleet, where):
    args = ["agents", "query", "--task-type", "code-editing"]
    argv = ["--format", "table", *args] if where == "before" else [*args, "--format", "table"]
    out = ok(*argv, env={"COLUMNS": "60"})
    assert BOX & set(out) and "\t" not in out
    assert "coder-1" in out and "coder-2" in out and ANSI not in out  # not a terminal: no colour


def test_route_history_in_table_mode_shows_ages_never_a_timestamp_split_over_lines(fleet):
    out = ok("--format", "table", "route", "history", env={"COLUMNS": "80"})
    assert BOX & set(out) and " ago" in out
    assert "2026-" not in out and "T0" not in out  # no (broken) timestamp left in the table


def test_format_tsv_and_json_and_json_is_the_alias_of_format_json(fleet):
    assert ok("--format", "tsv", "agents", "list") == ok("agents", "list", "--format", "tsv")
    as_json = json.loads(ok("--format", "json", "agents", "list"))
    alias = json.loads(ok("agents", "list", "--json"))
    assert as_json["items"] == alias["items"] and as_json["count"] == 3


def test_two_different_formats_are_a_usage_error_in_one_line(fleet):
    result = cli("--json", "agents", "list", "--format", "tsv")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.error()["code"] == "invalid_input" and result.stderr.count("\n") == 1
    plain = cli("--format", "table", "agents", "list", "--format", "tsv")
    assert plain.exit_code == 2 and plain.stderr.startswith("error: ")
    assert plain.stderr.count("\n") == 1
    unknown = cli("--format", "csv", "agents", "list")
    assert unknown.exit_code == 2 and unknown.stderr.startswith("error: ")


@pytest.mark.parametrize("argv", [["--format", "json", "agents", "list", "--limit", "x"],
                                  ["agents", "list", "--limit", "x", "--format=json"]])
def test_a_usage_error_under_format_json_is_the_json_error_object(fleet, argv):
    result = cli(*argv)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.error()["code"] == "invalid_input"


@pytest.mark.parametrize("args", [["agents", "list"], ["route", "history"], ["tokens", "list"],
                                  ["audit", "list"]], ids=" ".join)
@pytest.mark.parametrize("fmt", ["table", "tsv"])
def test_the_more_cursor_hint_goes_to_stderr_never_stdout(fleet, args, fmt):
    result = cli("--format", fmt, *args, "--limit", "1")
    assert result.exit_code == 0, result
    cursor = json.loads(ok("--json", *args, "--limit", "1"))["next_cursor"]
    assert cursor and result.stderr == f"more: --cursor {cursor}\n"
    assert "more:" not in result.stdout and "--cursor" not in result.stdout


def test_an_empty_query_prints_one_line_or_the_header_or_the_empty_document(fleet):
    args = ["agents", "query", "--task-type", "testing"]
    table = cli("--format", "table", *args)
    assert table.exit_code == 0
    assert table.stdout == "no agent matches task type 'testing' and these filters\n"
    tsv = cli(*args)
    assert tsv.exit_code == 0 and tsv.stdout == LISTS["agents query"][1] + "\n"
    assert tsv.stderr == "no agent matches task type 'testing' and these filters\n"
    doc = json.loads(ok("--json", *args))
    assert (doc["items"], doc["count"], doc["next_cursor"]) == ([], 0, None)


def test_other_empty_lists_print_one_line_instead_of_an_empty_table(fleet):
    for args, line in [
        (["agents", "list", "--status", "maintenance"], "no agent matches these filters"),
        (["route", "history", "--agent", "nobody"], "no decision matches"),
        (["audit", "list", "--action", "no.such"], "no audit event matches"),
        (["journal", "list"], "no journal: the primary is a local SQLite file"),
    ]:
        assert ok("--format", "table", *args) == line + "\n", args


def _arbiter() -> list[str]:
    exe = Path(sys.executable).with_name("arbiter")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "arbiter_cli"]


@pytest.mark.slow
def test_a_real_process_piped_through_cut_gives_the_ids(fleet):
    with subprocess.Popen([*_arbiter(), "agents", "list"], stdout=subprocess.PIPE,
                          env=os.environ) as producer:
        cut = subprocess.run(["cut", "-f1"], stdin=producer.stdout, capture_output=True,
                             text=True, timeout=120)
    assert producer.returncode == 0
    assert cut.stdout.splitlines() == ["id", "coder-1", "coder-2", "coder-3"]


def _on_a_terminal(args: list[str], env: dict[str, str]) -> str:
    """Run arbiter with stdout and stderr on a pseudo-terminal; everything it wrote."""
    main, child = pty.openpty()
    import fcntl
    import struct
    import termios

    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen([*_arbiter(), *args], stdin=subprocess.DEVNULL, stdout=child,
                               stderr=child, env=env, close_fds=True)
    os.close(child)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 1)
        if ready:
            try:
                data = os.read(main, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif process.poll() is not None:
            break
    os.close(main)
    assert process.wait(timeout=30) == 0, b"".join(chunks)
    return b"".join(chunks).decode()


@pytest.mark.slow
@pytest.mark.parametrize("switch", [{}, {"NO_COLOR": "1"}, {"TERM": "dumb"}],
                         ids=["colour", "NO_COLOR", "TERM=dumb"])
def test_on_a_real_terminal_a_table_with_colour_unless_no_color_or_a_dumb_terminal(fleet, switch):
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    env.update({"TERM": "xterm-256color", **switch})
    out = _on_a_terminal(["--log-level", "info", "agents", "list"], env)
    assert BOX & set(out) and "coder-1" in out and "\t" not in out  # the table, not TSV
    assert "command.end" in out  # a console log line on the same terminal
    if switch:
        assert ANSI not in out, out
    else:
        assert ANSI in out



@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(LISTS))
@pytest.mark.parametrize("no_color", [False, True], ids=["colour", "NO_COLOR"])
def test_every_list_on_a_terminal_has_colour_only_without_no_color(fleet, name, no_color):
    """Every list command on a real (pseudo-)terminal: NO_COLOR removes every ANSI escape, in
    the table and in the log lines; without it the same run has colour."""
    args, _ = LISTS[name]
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    env.update({"TERM": "xterm-256color", **({"NO_COLOR": "1"} if no_color else {})})
    out = _on_a_terminal(["--log-level", "info", *args], env)
    assert "command.end" in out  # a console log line on the same terminal
    if name != "journal list":  # SQLite has no journal: one line, no table
        assert BOX & set(out) and "\t" not in out, out
    if no_color:
        assert ANSI not in out, out
    else:
        assert ANSI in out, out
