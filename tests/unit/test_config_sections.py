"""The typed settings sections follow ``config.KEYS`` one to one (issue 18).

Code reads ``settings.routing.half_life`` rather than ``settings["routing.half_life"]``; these
tests fail when a key is added without its field, a field without its key, or a field is
typed differently from its key's kind.
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError, fields, replace
from pathlib import Path
from typing import Any

import pytest

from arbiter_cli.config import KEYS, KEYS_BY_NAME, SECTIONS, Settings, load_settings

ANNOTATION_OF_KIND = {
    "int": "int", "float": "float", "bool": "bool", "str": "str", "choice": "str",
    "duration": "Seconds", "size": "Bytes", "list": "tuple[str, ...]",
}  # fmt: skip


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    path = tmp_path / "config"
    path.mkdir()
    return path


@pytest.fixture
def environ(tmp_path: Path, config_dir: Path) -> dict[str, str]:
    """An environment with nothing but HOME and the config and data directories."""
    return {"HOME": str(tmp_path / "home"), "ARBITER_CONFIG_DIR": str(config_dir),
            "ARBITER_DATA_DIR": str(tmp_path / "data")}


def typed_fields() -> dict[str, str]:
    """Every leaf field reachable from ``Settings`` by its dotted path, with its annotation."""
    found: dict[str, str] = {}

    def walk(cls: type[Any], prefix: str) -> None:
        for item in fields(cls):
            annotation = str(item.type)
            if annotation in SECTIONS:
                walk(SECTIONS[annotation], f"{prefix}{item.name}.")
            else:
                found[prefix + item.name] = annotation

    for item in fields(Settings):
        if not item.init:
            walk(SECTIONS[str(item.type)], item.name + ".")
    return found


def test_every_key_has_a_typed_field_and_every_field_a_key():
    """A KEYS entry without a section field, or a field without a key, fails here."""
    assert sorted(typed_fields()) == sorted(KEYS_BY_NAME)


def test_each_field_is_typed_as_its_key_kind():
    """Durations are Seconds, sizes Bytes, lists tuples of strings, choices strings."""
    wrong = {name: annotation for name, annotation in typed_fields().items()
             if name in KEYS_BY_NAME and annotation != ANNOTATION_OF_KIND[KEYS_BY_NAME[name].kind]}
    assert wrong == {}


def test_the_sections_hold_the_packaged_defaults(environ):
    """Each field equals its key's default, durations and sizes parsed."""
    settings = load_settings(environ=environ)
    assert settings.routing.half_life == 200.0
    assert settings.routing.epsilon.min == 0.05
    assert settings.resilience.journal.max_entries == 100_000
    assert settings.observability.tracing.exporter == "none"
    assert settings.security.max_input_bytes == 64 * 2**20
    assert settings.serve.replay_interval == 1.0
    assert settings.database.per_item_timeout == 0.002
    assert len(KEYS) == len(typed_fields())


def test_the_sections_hold_what_the_layers_set(environ, config_dir):
    """A file and an environment variable reach the typed fields, parsed by kind."""
    (config_dir / "settings.toml").write_text(
        '[default.security]\nmax_input_bytes = "1KiB"\n[default.routing]\nhalf_life = 50\n')
    environ["ARBITER_BREAKER__RESET_TIMEOUT"] = "2m"
    environ["ARBITER_REGISTRY__LANGUAGES"] = '["Go", "Zig"]'
    settings = load_settings(environ=environ, overrides={"resilience.journal.max_entries": 7})
    assert settings.security.max_input_bytes == 1024
    assert settings.routing.half_life == 50.0 and isinstance(settings.routing.half_life, float)
    assert settings.breaker.reset_timeout == 120.0
    assert settings.registry.languages == ("Go", "Zig")
    assert settings.resilience.journal.max_entries == 7


def test_replacing_the_values_rebuilds_the_sections(environ):
    """``replace(settings, values=...)`` (the tests' way to vary one key) updates its section."""
    settings = load_settings(environ=environ)
    changed = replace(settings, values={**settings.values, "breaker.fail_max": 2,
                                        "database.command_timeout": "7s"})
    assert (changed.breaker.fail_max, changed.database.command_timeout) == (2, 7.0)
    assert settings.breaker.fail_max == 5


def test_sections_are_frozen(environ):
    """A section cannot be changed after load_settings built it."""
    settings = load_settings(environ=environ)
    with pytest.raises(FrozenInstanceError):
        settings.routing.half_life = 1.0  # type: ignore[misc]


def test_secret_fields_stay_out_of_the_repr(environ):
    """repr() of a section never shows the database URL, its password or the audit key."""
    environ["ARBITER_DATABASE__URL"] = "postgresql+psycopg2://arb:pw-in-url@db/arbiter"
    environ["ARBITER_DATABASE__PASSWORD"] = "pw-s3cret"
    environ["ARBITER_SECURITY__AUDIT_KEY"] = "k" * 40
    settings = load_settings(environ=environ)
    shown = repr(settings.database) + repr(settings.security)
    assert "pw-s3cret" not in shown and "pw-in-url" not in shown and "k" * 40 not in shown
    assert settings.database.password == "pw-s3cret"
