"""What a data command loads and starts (SPEC §13.1, start-up; docs/performance.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import AGENT
from tests.helpers import cli

PROBE = ("import os, sys\nfrom arbiter_cli.cli.app import main\n"
         "code = main(sys.argv[1:])\nassert code == 0, code\n"
         "tasks = len(os.listdir('/proc/self/task')) if os.path.isdir('/proc/self/task') else 1\n"
         "print(tasks, sorted(m for m in sys.modules if m.split('.')[0] in "
         "('pydantic', 'pydantic_core')))")


def _probe(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                          check=False, env=env)
    assert done.returncode == 0, done.stderr
    tasks, modules = done.stdout.strip().splitlines()[-1].split(" ", 1)
    return int(tasks), modules


def test_a_data_command_imports_no_pydantic(initialized):
    """typer would build a pydantic TypeAdapter for --limit's 100 and --status (cli/coercion.py)."""
    assert cli("agents", "register", *AGENT).exit_code == 0
    assert _probe("agents", "list", "--limit", "5", "--status", "available")[1] == "[]"
    assert _probe("route", "task", "--task-type", "code-editing", "--dry-run")[1] == "[]"


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
def test_route_task_starts_no_blas_threads_unless_asked(initialized):
    """numpy's OpenBLAS would start a spinning thread per core; the caller's choice stays."""
    assert cli("agents", "register", *AGENT).exit_code == 0
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    route = ("route", "task", "--task-type", "code-editing", "--dry-run")
    assert _probe(*route, env=env)[0] == 1
    if (os.cpu_count() or 1) > 1:
        assert _probe(*route, env={**env, "OPENBLAS_NUM_THREADS": "2"})[0] == 2


def test_help_loads_no_markdown_and_rich_markdown_stays_importable():
    """cli/helptext.load_rich_help: stand-ins for typer's help import only, then the real ones."""
    code = ("import sys\nfrom arbiter_cli.cli.app import main\n"
            "assert main(['agents', '--help']) == 0\n"
            "heavy = sorted(m for m in ('rich.markdown', 'rich.traceback', 'rich.syntax', "
            "'markdown_it', 'pygments') if m in sys.modules)\n"
            "import rich.markdown, rich.traceback\n"
            "real = rich.markdown.Markdown('*x*') is not None and "
            "hasattr(rich.traceback.Traceback, 'from_exception')\n"
            "print(heavy, real)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, env={**os.environ, "COLUMNS": "100"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[] True"


def test_a_tsv_list_imports_no_rich_console(initialized):
    """tsv mode writes render.table's rows itself (cli/tsv.py); table mode still draws them."""
    assert cli("agents", "register", *AGENT).exit_code == 0
    probe = ("import sys\nfrom arbiter_cli.cli.app import main\n"
             "assert main(sys.argv[1:]) == 0\n"
             "print(sorted(m for m in ('rich.console', 'rich.table', 'rich.text', "
             "'arbiter_cli.cli.tables') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe, "agents", "list"], capture_output=True,
                          text=True, check=True)
    lines = done.stdout.splitlines()
    assert lines[0].split("\t")[:2] == ["id", "name"] and lines[1].startswith("coder-1\t")
    assert lines[-1] == "[]"
    table = cli("--format", "table", "agents", "list")
    assert table.exit_code == 0 and "1 agents" in table.stdout and "┃" in table.stdout


def test_a_sqlite_command_loads_no_breaker(initialized):
    """resilience/identity.py imports the breaker only for a PostgreSQL store's key."""
    probe = ("import sys\nfrom arbiter_cli.cli.app import main\n"
             "assert main(sys.argv[1:]) == 0\n"
             "print('arbiter_cli.resilience.breaker' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe, "agents", "list"], capture_output=True,
                          text=True, check=True)
    assert done.stdout.splitlines()[-1] == "False"


#: What `agents list` and `route task` on SQLite never need (SPEC §13.1, start-up): the
#: PostgreSQL driver and dialect, the ORM, migrations, the HTTP client, rich in tsv mode, the
#: breaker, pydantic; and numpy outside routing.
NOT_ON_SQLITE = ("psycopg2", "sqlalchemy.dialects.postgresql", "sqlalchemy.orm", "alembic",
                 "httpx", "rich", "arbiter_cli.resilience.breaker", "pydantic", "fastapi",
                 "opentelemetry.sdk", "memray")


def _loaded(*args: str) -> set[str]:
    probe = ("import sys\nfrom arbiter_cli.cli.app import main\n"
             "assert main(sys.argv[1:]) == 0\nprint(','.join(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True,
                          text=True, check=True)
    return set(done.stdout.strip().splitlines()[-1].split(","))


def _any_of(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if any(m == n or m.startswith(n + ".") for m in modules))


def test_sqlite_commands_import_only_what_they_need(initialized):
    assert cli("agents", "register", *AGENT).exit_code == 0
    assert _any_of(_loaded("agents", "list"), (*NOT_ON_SQLITE, "numpy")) == []
    routed = _loaded("route", "task", "--task-type", "code-editing", "--dry-run")
    assert _any_of(routed, NOT_ON_SQLITE) == [] and "numpy" in routed


def test_a_command_group_builds_only_the_subcommand_that_runs():
    """cli/lazy.LazyCommands: names in typer's order without building; one lookup, one build."""
    import typer.main

    from arbiter_cli.cli import agents
    from arbiter_cli.cli.app import build_app

    root = typer.main.get_group(build_app())
    group = root.get_command(None, "agents")  # type: ignore[arg-type]
    scratch = typer.Typer()
    agents.add_commands(scratch)
    eager = typer.main.get_group(scratch).commands["agents"]
    assert list(group.commands) == list(eager.commands) and "list" in group.commands
    assert group.commands._built == {}
    listed = group.get_command(None, "list")
    assert list(group.commands._built) == ["list"]
    assert listed.params[-1].name == eager.commands["list"].params[-1].name
    assert [p.opts for p in listed.params] == [p.opts for p in eager.commands["list"].params]
    assert dict(group.commands.items()).keys() == eager.commands.keys()  # help: all built


GC_PROBE = (
    "import gc, sys\nfrom arbiter_cli.cli import app\n"
    "seen = [0, 0, 0]\n"
    "gc.callbacks.append(lambda phase, info: phase == 'start' and seen.__setitem__("
    "info['generation'], seen[info['generation']] + 1))\n"
    "code = (app.main() if sys.argv.pop(1) == 'console' else app.main(sys.argv[1:]))\n"
    "assert code == 0, code\n"
    "print(seen[0], seen[2], gc.isenabled(), gc.get_freeze_count() > 0)")


def _gc_probe(entry: str, *args: str) -> tuple[int, int, bool, bool]:
    done = subprocess.run([sys.executable, "-c", GC_PROBE, entry, *args], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr
    young, full, enabled, frozen = done.stdout.strip().splitlines()[-1].split()
    return int(young), int(full), enabled == "True", frozen == "True"


def test_the_console_script_collects_nothing_during_start_up(initialized):
    """cli/state.console_start: the imports' objects are never garbage; the collector used to
    run about 90 young and one full collection over them in every `agents list`. ``main()``
    without ``argv`` is the console script (and ``python -m arbiter_cli``); the command body
    collects again (enabled, start-up frozen)."""
    assert cli("agents", "register", *AGENT).exit_code == 0
    young, full, enabled, frozen = _gc_probe("console", "agents", "list")
    assert (full, enabled, frozen) == (0, True, True)
    assert young < 20, young
    in_process = _gc_probe("argv", "agents", "list")
    assert in_process[0] > young and in_process[2:] == (True, False)


def test_an_in_process_main_leaves_the_collector_as_it_was(initialized):
    """Only the console script pauses and freezes: a test or a program calling ``main(argv)``
    many times would otherwise keep every call's start-up garbage (the reverted first
    attempt)."""
    import gc

    assert cli("agents", "register", *AGENT).exit_code == 0
    from arbiter_cli.cli.app import main

    frozen = gc.get_freeze_count()
    assert main(["agents", "list"]) == 0
    assert gc.isenabled() and gc.get_freeze_count() == frozen
    assert main(["--help"]) == 0
    assert gc.isenabled() and gc.get_freeze_count() == frozen
