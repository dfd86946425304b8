"""SPEC §16 "Help": every command's ``--help`` is true for the user who reads it.

The commands are enumerated from the Typer/Click tree, so a new command is checked the day it
lands: its help runs (exit 0), shows an example, never cites the spec (users do not have it),
prints no ``<bool>`` next to a flag, keeps its summary on one line of text, and offers
``--token`` only where a token is used.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
import typer.main

from arbiter_cli.cli.app import build_app
from arbiter_cli.domain.security import NO_TOKEN, PERMISSIONS
from tests.helpers import cli

ROOT = Path(__file__).resolve().parents[2]
WIDE = {"COLUMNS": "200"}  # one help line per option: nothing a wrap could split or hide


def _tree() -> dict[tuple[str, ...], Any]:
    """Every command and group by its path (the root is ``()``)."""
    found: dict[tuple[str, ...], Any] = {}

    root = typer.main.get_command(build_app())
    ctx = root.make_context("arbiter", [], resilient_parsing=True)

    def walk(command: Any, path: tuple[str, ...]) -> None:
        found[path] = command
        if hasattr(command, "list_commands"):  # the root loads its lazy modules here
            for name in command.list_commands(ctx):
                walk(command.get_command(ctx, name), (*path, name))

    walk(root, ())
    return found


TREE = _tree()
LEAVES = sorted(" ".join(p) for p, c in TREE.items() if p and not hasattr(c, "list_commands"))


def _options(path: str) -> set[str]:
    command = TREE[tuple(path.split())]
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}


def test_the_tree_has_every_command():
    assert len(LEAVES) > 40
    assert {"init", "agents list", "route simulate", "journal resolve"} <= set(LEAVES)


@pytest.mark.parametrize("path", sorted(TREE), ids=lambda p: " ".join(p) or "arbiter")
def test_help_runs_shows_an_example_and_no_spec_or_bool(path: tuple[str, ...]):
    result = cli(*path, "--help", env=WIDE)
    assert result.exit_code == 0, result
    assert "Example:" in result.stdout
    assert "SPEC" not in result.stdout and "§" not in result.stdout
    assert "<bool>" not in result.stdout


@pytest.mark.parametrize("path", sorted(TREE), ids=lambda p: " ".join(p) or "arbiter")
def test_the_summary_is_one_line_of_text(path: tuple[str, ...]):
    """The summary (first paragraph) is listed under the parent's Commands: a hard line break in
    it broke the listing wherever the terminal was not exactly as wide as the source."""
    summary = (TREE[path].help or "").split("\n\n")[0]
    assert summary and "\n" not in summary


@pytest.mark.parametrize("path", sorted(NO_TOKEN - {"login"}))
def test_no_token_commands_offer_no_token_option(path: str):
    assert "--token" not in _options(path)
    result = cli(*path.split(), "--help", env=WIDE)
    assert "--token" not in result.stdout


def test_login_offers_the_token_it_saves():
    """`login --token T` is the token to check and save, not the caller's credential."""
    option = next(p for p in TREE[("login",)].params if "--token" in p.opts)
    assert option.required and "save" in (option.help or "")


@pytest.mark.parametrize("path", sorted(PERMISSIONS))
def test_token_checked_commands_offer_the_token_after_the_command(path: str):
    assert {"--token", "--json"} <= _options(path)  # SPEC §5.1: before and after the command


def test_the_token_still_works_before_a_no_token_command(clean_env):  # type: ignore[no-untyped-def]
    """SPEC §5.1: `--token` before the subcommand stays a root option, even where it is unused."""
    result = cli("--token", "arb_x_y", "--json", "config", "validate")
    assert result.exit_code == 0, result
    after = cli("config", "validate", "--token", "arb_x_y")
    assert after.exit_code == 2 and "--token" in after.stderr


def test_every_leaf_is_in_the_token_tables():
    assert set(LEAVES) == set(PERMISSIONS) | NO_TOKEN


def test_the_cli_uses_only_typers_public_api():
    """typer vendors Click as the private ``typer._click``: importing it ties arbiter to one
    typer release. ``click`` itself is no dependency of arbiter."""
    offenders = []
    for path in sorted((ROOT / "arbiter_cli").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                if name.startswith("typer._") or name.split(".")[0] == "click":
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    assert offenders == []


def test_readme_names_every_no_token_command():
    """README's sentence lists the no-token commands (a group by its name when all of it is)."""
    import re

    readme = " ".join((ROOT / "README.md").read_text().split())
    sentence = readme.split(" need no token", 1)[0].rsplit(". ", 1)[1]
    expected = set()
    for path in NO_TOKEN:
        group = path.split()[0]
        whole = all(leaf in NO_TOKEN for leaf in LEAVES if leaf.split()[0] == group)
        expected.add(group if whole else path)
    assert set(re.findall(r"`([a-z ]+)`", sentence)) == expected
