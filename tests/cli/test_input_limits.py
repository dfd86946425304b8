"""Input limits (SPEC §16): ``--file`` reads at most ``security.max_input_bytes`` and only
regular files or stdin; timestamps out of range are exit 2 with ``field`` and ``rule``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import cli, cli_commands

AGENT_LINE = json.dumps({"id": "a1", "name": "A", "model_family": "x", "task_types": ["testing"]})
TASK = json.dumps({"task_type": "testing"})
#: Every command that reads --file (or a file option), with the file's place as {file}.
FILE_COMMANDS = {
    "agents register": ("agents", "register", "--file", "{file}"),
    "route task": ("route", "task", "--file", "{file}"),
    "route simulate": ("route", "simulate", "--truth", "{file}"),
}


def arbiter() -> list[str]:
    exe = Path(sys.executable).with_name("arbiter")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "arbiter_cli"]


def refusal(result) -> tuple[int, str, dict[str, str]]:  # type: ignore[no-untyped-def]
    """The exit code, error code and details of a refused ``--json`` command, whose only output
    is its one JSON error line on stderr."""
    assert (result.stdout, result.stderr.count("\n")) == ("", 1), result
    error = result.error()
    return result.exit_code, error["code"], error["details"]


def invalid(field: str, rule: str) -> tuple[int, str, dict[str, str]]:
    """The refusal of invalid input (exit 2) on ``field`` by ``rule``."""
    return 2, "invalid_input", {"field": field, "rule": rule}


def test_every_file_option_is_walked_here():
    """A new command option that reads a file must be added to FILE_COMMANDS."""
    reading = {path for path, command in cli_commands().items()
               if any(param.name in ("file", "truth") for param in command.params)}
    assert reading == set(FILE_COMMANDS)


@pytest.mark.parametrize("command", FILE_COMMANDS)
@pytest.mark.parametrize("kind", ["folder", "fifo", "device"])
def test_only_regular_files_are_read(initialized, tmp_path, command, kind):
    """A folder, a FIFO with no writer (which would block for ever) and /dev/zero are refused
    before anything is read."""
    if kind == "folder":
        path = str(tmp_path)
    elif kind == "fifo":
        path = str(tmp_path / "pipe")
        os.mkfifo(path)
    else:
        path = "/dev/zero"
    argv = [part.replace("{file}", path) for part in FILE_COMMANDS[command]]
    field = "truth" if command == "route simulate" else "file"
    assert refusal(cli("--json", *argv)) == invalid(field, "regular_file")


@pytest.mark.parametrize("command", FILE_COMMANDS)
def test_a_file_over_the_limit_is_refused_and_one_at_it_is_read(initialized, tmp_path, command):
    """security.max_input_bytes bounds what one command reads; the limit itself is allowed."""
    body = {"agents register": AGENT_LINE, "route task": TASK,
            "route simulate": json.dumps({"a": 0.5, "b": 0.6})}[command]
    exact = tmp_path / "exact.json"
    exact.write_text(body)
    over = tmp_path / "over.json"
    over.write_text(body + " ")
    env = {"ARBITER_SECURITY__MAX_INPUT_BYTES": f"{len(body)}B"}
    field = "truth" if command == "route simulate" else "file"
    argv = [part.replace("{file}", str(over)) for part in FILE_COMMANDS[command]]
    assert refusal(cli("--json", *argv, env=env)) == invalid(field, "size")
    if command == "route task":
        assert cli("agents", "register", "--id", "a1", "--name", "A", "--model-family", "x",
                   "--task-type", "testing").exit_code == 0
    argv = [part.replace("{file}", str(exact)) for part in FILE_COMMANDS[command]]
    result = cli("--json", *argv, "--tasks", "10", env=env) if command == "route simulate" \
        else cli("--json", *argv, env=env)
    assert result.exit_code == 0, result


def test_oversized_stdin_stops_at_the_limit(initialized):
    """stdin is read up to the limit and no further: exit 2, nothing registered."""
    lines = "\n".join([AGENT_LINE] * 50)
    result = cli("--json", "agents", "register", "--file", "-", input=lines,
                 env={"ARBITER_SECURITY__MAX_INPUT_BYTES": "1KiB"})
    assert refusal(result) == invalid("file", "size")
    assert "stdin" in result.error()["message"]
    assert cli("--json", "agents", "list").json()["count"] == 0


def test_bytes_that_are_not_utf8_are_refused(initialized, tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"id": "caf\xe9"}')
    assert refusal(cli("--json", "agents", "register", "--file", str(path))) == invalid(
        "file", "utf8")


def test_the_limit_is_a_validated_size_setting(clean_env):
    """A size like 64MiB; anything else is a configuration error (exit 3)."""
    bad = cli("--json", "config", "validate", env={"ARBITER_SECURITY__MAX_INPUT_BYTES": "lots"})
    assert bad.exit_code == 3
    assert "security.max_input_bytes" in bad.stderr + bad.stdout
    shown = cli("--json", "config", "show").json()
    assert json.dumps(shown).count("64MiB") >= 1


@pytest.mark.parametrize("source", ["/dev/zero", "stdin"])
def test_register_from_an_endless_source_exits_2_quickly_with_bounded_memory(initialized,
                                                                             source):
    """The attack of the issue (4.4 GB of RSS): a real process, watched while it runs."""
    import psutil

    env = {**os.environ, "ARBITER_SECURITY__MAX_INPUT_BYTES": "8MiB"}
    argv = [*arbiter(), "--json", "agents", "register", "--file",
            "/dev/zero" if source == "/dev/zero" else "-"]
    started = time.monotonic()
    with open("/dev/zero", "rb") as zeros:
        child = subprocess.Popen(argv, stdin=zeros if source == "stdin" else subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        watched = psutil.Process(child.pid)
        peak = 0
        while child.poll() is None and time.monotonic() - started < 60:
            try:
                peak = max(peak, watched.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            time.sleep(0.02)
        stdout, stderr = child.communicate(timeout=60)
    assert child.returncode == 2, stderr
    error = json.loads(stderr)["error"]
    assert error["details"]["rule"] == ("regular_file" if source == "/dev/zero" else "size")
    assert stdout == b""
    assert time.monotonic() - started < 30
    assert peak < 400 * 2**20, f"peak RSS {peak / 2**20:.0f} MiB"


@pytest.mark.parametrize("argv", [
    ("route", "history", "--since", "{since}"),
    ("route", "stats", "--since", "{since}"),
    ("audit", "list", "--since", "{since}"),
])
@pytest.mark.parametrize("since", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
def test_a_since_out_of_range_is_exit_2_with_field_and_rule(initialized, argv, since):
    """The issue's OverflowError (exit 70) is an input error on every --since."""
    filled = [part.replace("{since}", since) for part in argv]
    assert refusal(cli("--json", *filled)) == invalid("since", "range")
    human = cli(*filled)
    assert human.exit_code == 2 and human.stderr.startswith("error: since:")
    assert "Traceback" not in human.stderr
