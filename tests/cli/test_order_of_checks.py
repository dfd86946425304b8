"""SPEC §0: usage 2 → config 3 → database 10 → authentication 6 → permission 6 → rate 7 →
input 2 → lookup 4 → conflict 5. When several checks would fail, the earliest one answers."""

from __future__ import annotations

import pytest

from tests.helpers import cli

BAD_INPUT = [
    ["agents", "record", "x"],  # neither --success nor --failure
    ["route", "outcome", "--task-id", "x"],
    ["agents", "register", "--file", "/nonexistent/agents.json"],
    ["agents", "cleanup", "--older-than", "soon"],
    ["route", "history", "--since", "yesterday"],
]


@pytest.mark.parametrize("args", BAD_INPUT, ids=[" ".join(a) for a in BAD_INPUT])
def test_database_missing_comes_before_input(clean_env, args):
    assert cli(*args).exit_code == 10


@pytest.mark.parametrize("args", BAD_INPUT, ids=[" ".join(a) for a in BAD_INPUT])
def test_config_comes_before_database_and_input(clean_env, args):
    assert cli(*args, env={"ARBITER_ROUTING__STRATEGY": "bogus"}).exit_code == 3


@pytest.mark.parametrize("args", BAD_INPUT, ids=[" ".join(a) for a in BAD_INPUT])
def test_authentication_comes_before_input(initialized, args):
    result = cli(*args, "--token", "arb_notavalidtoken")
    assert result.exit_code == 6 and "token" in result.stderr


def test_permission_comes_before_input_and_lookup(initialized):
    viewer = cli("--json", "tokens", "create", "--role", "viewer", "--name", "v").json()["token"]
    denied = cli("--token", viewer, "agents", "record", "ghost")  # bad input, missing agent
    assert denied.exit_code == 6 and "may not run" in denied.stderr


def test_usage_comes_first_of_all(clean_env):
    result = cli("agents", "record", "--bogus", env={"ARBITER_ROUTING__STRATEGY": "bogus"})
    assert result.exit_code == 2


def test_input_comes_before_lookup(initialized):
    assert cli("agents", "record", "ghost", "--success", "--quality", "2").exit_code == 2
    assert cli("agents", "record", "ghost", "--success").exit_code == 4
