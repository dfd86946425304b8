"""The documents a user reads stay true: README commands, settings.toml, docs/configuration.md."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from arbiter_cli.config import KEYS, _defaults, _validate

ROOT = Path(__file__).resolve().parents[2]
TEST_COMMAND = ("python3 -m venv .venv && .venv/bin/pip install -e '.[test,soak,mutate,dev]' "
                "&& scripts/check && .venv/bin/pytest")
DEMO_COMMAND = "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/arbiter demo"


def test_readme_starts_with_the_two_commands_and_ci_runs_the_test_command():
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```bash", 1)[1].split("```", 1)[0]
    assert DEMO_COMMAND in first_block and TEST_COMMAND in first_block
    assert TEST_COMMAND in (ROOT / ".ci" / "run").read_text()


def test_packaged_defaults_pass_every_validator():
    """Runs without user configuration skip the validator pass, so the defaults must be valid."""
    assert _validate(_defaults()) == []


def test_repository_settings_toml_documents_every_default():
    document = tomllib.loads((ROOT / "settings.toml").read_text())["default"]
    for key in KEYS:
        table, leaf = key.name.rsplit(".", 1)
        node = document
        for part in table.split("."):
            node = node[part]
        if key.secret and key.name != "database.url":
            assert leaf not in node  # secrets never live in settings.toml
            continue
        assert node[leaf] == key.default, key.name


def test_configuration_doc_lists_every_key_with_its_variable_and_default():
    doc = (ROOT / "docs" / "configuration.md").read_text()
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([a-z_.]+)` \|.*$", doc, re.M)}
    assert set(rows) == {k.name for k in KEYS}
    for key in KEYS:
        assert f"`{key.env_var}`" in rows[key.name]
        assert key.doc in rows[key.name]


def test_readme_lists_every_exit_code():
    from arbiter_cli import errors

    readme = (ROOT / "README.md").read_text()
    classes = [c for c in vars(errors).values()
               if isinstance(c, type) and issubclass(c, errors.ArbiterError)]
    for cls in classes:
        assert re.search(rf"^\| {cls.exit_code} \|", readme, re.M), cls.__name__
        if cls.exit_code not in (130,):
            assert f"`{cls.code}`" in readme, cls.__name__
