"""SPEC §16 "Completion": values complete through the shell-completion protocol.

Every test runs the CLI as the shell does: ``_ARBITER_COMPLETE=complete_bash`` with
``COMP_WORDS`` and ``COMP_CWORD`` (in process through ``main()``, and once as a real
``arbiter`` process), and reads the candidates from stdout, one per line.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import typer.main

from arbiter_cli.cli import completion
from arbiter_cli.cli.app import build_app
from tests.dbstate import dump
from tests.helpers import cli, fresh_postgres_database

AGENT = ["--name", "A", "--model-family", "claude-3.5", "--task-type", "code-editing",
         "--language", "python", "--capacity", "4"]


def complete(line: str, env: dict[str, str] | None = None) -> list[str]:
    """The candidates for the last word of ``line`` (a trailing space: a new, empty word)."""
    from typer.testing import CliRunner

    from arbiter_cli.cli.app import main

    words = shlex.split(line)
    cword = len(words) + (1 if line.endswith(" ") else 0)
    shell = {"_ARBITER_COMPLETE": "complete_bash", "COMP_WORDS": shlex.join(["arbiter", *words]),
             "COMP_CWORD": str(cword), **(env or {})}
    with CliRunner().isolation(env=shell) as (out, _err, _mixed):
        with pytest.raises(SystemExit) as done:
            main([])
        sys.stdout.flush()
        text = out.getvalue().decode()
    assert done.value.code in (0, None)
    return [line for line in text.splitlines() if line]


# ------------------------------------------------------------------ closed sets


def test_the_closed_sets_are_their_sources():
    """The sets are written out so that a key press imports no numpy; they must not drift."""
    from arbiter_cli.adapters.scratch import BACKENDS
    from arbiter_cli.config import KEYS
    from arbiter_cli.domain import routing
    from arbiter_cli.domain.agents import STATUSES
    from arbiter_cli.domain.principal import ROLES
    from arbiter_cli.domain.scenarios import SCENARIOS
    from arbiter_cli.tools import bench, demo
    from arbiter_cli.tools.soak import options

    keys = {k.name: k for k in KEYS}
    assert completion.STRATEGIES == routing.STRATEGIES
    assert completion.AGENT_STATUSES == STATUSES
    assert completion.DECISION_STATUSES == (routing.OPEN, routing.SUCCEEDED, routing.FAILED,
                                            routing.EXPIRED)
    assert completion.ROLES == ROLES
    assert completion.SCENARIOS == SCENARIOS
    assert completion.DEMO_SCENARIOS == demo.DEMO_SCENARIOS
    assert completion.BACKENDS == BACKENDS
    assert completion.BENCH_WORKLOADS == bench.WORKLOADS
    assert completion.SOAK_WORKLOADS == options.WORKLOADS
    assert completion.LOG_LEVELS == keys["logging.level"].choices
    assert completion.LOG_FORMATS == keys["logging.format"].choices


@pytest.mark.parametrize(("line", "expected"), [
    ("route task --strategy ", list(completion.STRATEGIES)),
    ("route task --strategy e", ["epsilon-greedy"]),
    ("route simulate --strategy a", ["all"]),
    ("route simulate --scenario n", ["newcomer"]),
    ("route history --status ", list(completion.DECISION_STATUSES)),
    ("route stats --by t", ["task-type"]),
    ("agents list --status d", ["draining"]),
    ("agents query --task-type code-review --status m", ["maintenance"]),
    ("agents status coder-1 ", list(completion.AGENT_STATUSES)),
    ("tokens create --role ", ["viewer", "orchestrator", "manager", "admin"]),
    ("demo --scenario ", ["steady", "drift"]),
    ("bench --workload registry", ["registry-v1", "registry-v2"]),
    ("bench --backend p", ["postgres"]),
    ("soak --backend s", ["sqlite"]),
    ("soak --workload ", ["normal", "leaky"]),
    ("--log-level w", ["warning"]),
    ("--log-format ", ["auto", "console", "json"]),
    ("db downgrade head", ["head", "head-1"]),
    ("agents register --task-type code-", ["code-editing", "code-review"]),
    ("route task --language Py", ["Python"]),
])
def test_a_closed_set_completes_what_starts_with_the_word(clean_env: Any, line: str,
                                                          expected: list[str]):
    assert complete(line) == expected


def test_the_settings_decide_the_task_types(clean_env: Any):
    env = {"ARBITER_REGISTRY__TASK_TYPES": '["triage", "code-editing"]'}
    assert complete("agents list --task-type ", env) == ["triage", "code-editing"]


#: Options whose values form a closed set wherever they appear (ids complete from the store).
CLOSED = {"--strategy", "--status", "--role", "--backend", "--workload", "--scenario", "--by",
          "--log-level", "--log-format", "--task-type", "--language"}


def _closed_options() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []

    root = typer.main.get_command(build_app())
    ctx = root.make_context("arbiter", [], resilient_parsing=True)

    def walk(command: Any, path: tuple[str, ...]) -> None:
        for param in command.params:
            for opt in set(param.opts) & CLOSED:
                found.append((" ".join(path), opt))
        if hasattr(command, "list_commands"):  # the root loads its lazy modules here
            for name in command.list_commands(ctx):
                walk(command.get_command(ctx, name), (*path, name))

    walk(root, ())
    return sorted(found)


def test_the_walk_finds_the_closed_options():
    assert len(_closed_options()) >= 25


@pytest.mark.parametrize(("path", "option"), _closed_options())
def test_every_option_with_a_closed_set_completes(clean_env: Any, path: str, option: str):
    """A new option named like these completes too, or fails here."""
    offered = complete(f"{path} {option} ".lstrip())
    assert offered, f"`arbiter {path} {option}` completes nothing"


def test_completion_through_the_installed_entry_point(clean_env: Any):
    """The real process, as the installed bash function runs it."""
    arbiter = Path(sys.executable).with_name("arbiter")
    env = {**os.environ, "_ARBITER_COMPLETE": "complete_bash",
           "COMP_WORDS": "arbiter route task --strategy u", "COMP_CWORD": "4"}
    done = subprocess.run([str(arbiter)], env=env, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.split()) == (0, ["ucb"]), done.stderr


# ------------------------------------------------------------------ ids from the database


def _seed(env: dict[str, str] | None = None) -> dict[str, str]:
    """Tenant default (profile default) with coder-1, coder-2 and a decision; tenant team-b
    with b-agent. Returns the tokens and the decision id."""
    assert cli("init", env=env).exit_code == 0
    for agent in ("coder-1", "coder-2"):
        assert cli("agents", "register", "--id", agent, *AGENT, env=env).exit_code == 0
    routed = cli("--json", "route", "task", "--task-type", "code-editing", "--task-id", "T1",
                 env=env)
    team_b = cli("--json", "tenants", "create", "team-b", env=env).json()["admin_token"]
    assert cli("--token", team_b, "agents", "register", "--id", "b-agent", *AGENT,
               env=env).exit_code == 0
    viewer = cli("--json", "tokens", "create", "--role", "viewer", "--name", "v",
                 env=env).json()["token"]
    return {"decision": routed.json()["decision_id"], "team_b": team_b, "viewer": viewer}


def _database_url(env: dict[str, str]) -> str:
    return env.get("ARBITER_DATABASE__URL") or f"sqlite:///{env['ARBITER_DATA_DIR']}/arbiter.db"


def _check_ids(env: dict[str, str]) -> None:
    seeded = _seed(env)
    before = dump(_database_url(env), ignore={})
    decision = seeded["decision"]

    assert complete("agents show ", env) == ["coder-1", "coder-2"]
    assert complete("agents show coder-2", env) == ["coder-2"]
    assert complete("route history --agent c", env) == ["coder-1", "coder-2"]
    assert complete("route explain ", env) == [decision]
    assert complete("route outcome ", env) == [decision]
    # the tenant of the token given, before or after the command; never another tenant's
    assert complete(f"--token {seeded['team_b']} agents show ", env) == ["b-agent"]
    assert complete(f"agents remove --token {seeded['team_b']} ", env) == ["b-agent"]
    assert complete(f"--token {seeded['team_b']} route explain ", env) == []
    assert complete(f"--token {seeded['viewer']} agents heartbeat ", env) == ["coder-1",
                                                                               "coder-2"]
    # a token that is wrong, unknown or absent offers nothing: the same as an empty tenant
    assert complete("--token arb_abcdefghijkl_nope agents show ", env) == []
    assert complete("--profile nobody agents show ", env) == []
    assert complete("--token '' agents show ", env) == []
    # completion read only: no audit event, no rate-limit spent, no last_used_at stamped
    assert dump(_database_url(env), ignore={}) == before

    assert cli("route", "outcome", decision, "--success", env=env).exit_code == 0
    assert complete("route outcome ", env) == []  # only open decisions take an outcome
    assert complete("route explain ", env) == [decision]


@pytest.mark.slow
def test_ids_complete_from_sqlite_for_the_tokens_tenant_only(clean_env: dict[str, str]):
    _check_ids(clean_env)


@pytest.mark.slow
@pytest.mark.postgres
def test_ids_complete_from_postgresql_for_the_tokens_tenant_only(clean_env: dict[str, str]):
    with fresh_postgres_database("complete") as url:
        _check_ids({**clean_env, "ARBITER_DATABASE__URL": url})


def test_no_database_yet_completes_nothing_and_creates_nothing(clean_env: dict[str, str]):
    assert complete("agents show ") == []
    assert not (Path(clean_env["ARBITER_DATA_DIR"]) / "arbiter.db").exists()


def test_an_unreachable_database_completes_nothing_at_once(clean_env: Any):
    """A refused connection (nothing listens on port 9 here) answers nothing, and fast."""
    started = time.monotonic()
    url = "postgresql+psycopg2://arbiter:secret@127.0.0.1:9/arbiter"
    assert complete("agents show ", {"ARBITER_DATABASE__URL": url}) == []
    assert time.monotonic() - started < completion.DEADLINE_S + 1


def test_a_database_that_never_answers_is_cut_off_at_the_deadline():
    started = time.monotonic()
    assert completion._guarded(lambda: time.sleep(5) or ["late"], 0.2) == []
    assert time.monotonic() - started < 1


def test_a_failing_lookup_offers_nothing():
    def broken() -> list[str]:
        raise RuntimeError("boom")

    assert completion._guarded(broken) == [] and completion._guarded(broken, 1.0) == []


@pytest.mark.slow
def test_with_security_off_ids_complete_as_the_commands_act(clean_env: dict[str, str]):
    """security.enabled = false on a throwaway database (no token): admin of default."""
    env = {"ARBITER_SECURITY__ENABLED": "false"}
    assert cli("init", env=env).exit_code == 0
    assert cli("agents", "register", "--id", "coder-1", *AGENT, env=env).exit_code == 0
    assert complete("agents show ", env) == ["coder-1"]


@pytest.mark.slow
def test_profiles_complete_from_the_credentials_file_without_their_tokens(initialized: Any):
    assert cli("login", "--token", cli("--json", "tokens", "create", "--role", "viewer",
                                        "--name", "ci").json()["token"],
               "--profile", "ci").exit_code == 0
    assert complete("--profile ") == ["ci", "default"]
    assert complete("--profile d") == ["default"]
    assert complete("login --token arb_x --profile c") == ["ci"]
    assert complete("--profile nobody") == []
