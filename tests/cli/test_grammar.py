"""One grammar for durations and sizes in every flag and setting, and a truthful ``config``
(SPEC §16 "One grammar", "Config"; §10).

A refused value is one line with an example: exit 2 with ``field`` and ``rule`` for a flag,
exit 3 with the key and rule of each problem for a setting.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import cli

#: Every flag read in the duration or size grammar: (command, the flag, a good value, field).
GRAMMAR_FLAGS = [
    (("agents", "cleanup", "--dry-run"), "--older-than", "1h30m", "older_than", "duration"),
    (("tokens", "create", "--role", "viewer", "--name", "ci"), "--expires-in", "1w2d",
     "expires_in", "duration"),
    (("route", "history"), "--since", "1h30m", "since", "duration"),
    (("journal", "replay"), "--budget", "500ms", "budget", "duration"),
    (("bench", "--workload", "route", "--agents", "5"), "--seconds", "500ms", "seconds",
     "duration"),
    (("soak",), "--duration", "1m30s", "duration", "duration"),
    (("soak",), "--sample-interval", "1s", "sample_interval", "duration"),
    (("soak",), "--warmup", "500ms", "warmup", "duration"),
    (("soak",), "--max-rss", "512M", "max_rss", "size"),
    (("soak",), "--max-slope", "1MB/h", "max_slope", "size"),
]
BAD = {"duration": "1h30", "size": "512XB"}
EXAMPLE = {"duration": "1h30m", "size": "512MiB"}


def _rule(field: str, kind: str) -> str:
    return "format" if field == "since" else kind  # --since is a duration or a timestamp


@pytest.mark.parametrize(("command", "flag", "good", "field", "kind"), GRAMMAR_FLAGS,
                         ids=[f"{c[0]} {f}" for c, f, *_ in GRAMMAR_FLAGS])
def test_a_flag_outside_the_grammar_is_one_line_with_an_example_and_exit_2(
        initialized, command, flag, good, field, kind):  # type: ignore[no-untyped-def]
    bad = BAD[kind] + ("/h" if flag == "--max-slope" else "")
    human = cli(*command, flag, bad)
    assert human.exit_code == 2, human.stderr
    assert human.stdout == "" and human.stderr.count("\n") == 1, human.stderr
    assert human.stderr.startswith(f"error: {field}:") or field in human.stderr
    assert EXAMPLE[kind] in human.stderr or "24h" in human.stderr
    machine = cli("--json", *command, flag, bad)
    assert machine.exit_code == 2
    details = machine.error()["details"]
    assert (details["field"], details["rule"]) == (field, _rule(field, kind))


@pytest.mark.parametrize(("command", "flag", "good"), [
    (("agents", "cleanup", "--dry-run"), "--older-than", "1h30m"),
    (("agents", "cleanup", "--dry-run"), "--older-than", "90"),
    (("tokens", "create", "--role", "viewer", "--name", "ci"), "--expires-in", "1w2d"),
    (("tokens", "create", "--role", "viewer", "--name", "ci"), "--expires-in", "0.5d"),
    (("route", "history"), "--since", "1h30m"),
    (("route", "history"), "--since", "500ms"),
])
def test_compound_and_plain_durations_are_accepted_by_flags(initialized, command, flag, good):  # type: ignore[no-untyped-def]
    result = cli(*command, flag, good)
    assert result.exit_code == 0, result.stderr


def test_a_token_expires_after_the_compound_duration(initialized):  # type: ignore[no-untyped-def]
    """--expires-in 1h30m is 5400 s: the token expires that long after it was made."""
    from datetime import UTC, datetime

    before = datetime.now(UTC)
    doc = cli("--json", "tokens", "create", "--role", "viewer", "--name", "ci",
              "--expires-in", "1h30m").json()
    after = datetime.now(UTC)
    expires = datetime.fromisoformat(doc["expires_at"].replace("Z", "+00:00"))
    assert 5400 - 1 <= (expires - after).total_seconds()
    assert (expires - before).total_seconds() <= 5400 + 1


def test_soak_reads_sizes_and_compound_durations_in_the_one_grammar(clean_env):  # type: ignore[no-untyped-def]
    """Parsed before anything runs: an impossible combination is refused naming the field,
    so the good values above were read (1m30s = 90 s > the 1m warm-up is fine, 2m is not)."""
    refused = cli("--json", "soak", "--duration", "1m30s", "--warmup", "2m", "--max-rss", "1TiB")
    assert refused.exit_code == 2
    assert refused.error()["details"] == {"field": "warmup", "rule": "range"}


# ---------------------------------------------------------------------------- settings


@pytest.mark.parametrize(("variable", "value", "field", "rule", "example"), [
    ("ARBITER_BREAKER__RESET_TIMEOUT", "1h30", "breaker.reset_timeout", "duration", "1m30s"),
    ("ARBITER_BREAKER__RESET_TIMEOUT", "2h", "breaker.reset_timeout", "range", "10ms to 1h"),
    ("ARBITER_BREAKER__RESET_TIMEOUT", "5ms", "breaker.reset_timeout", "range", "10ms to 1h"),
    ("ARBITER_SECURITY__MAX_INPUT_BYTES", "lots", "security.max_input_bytes", "size", "KiB"),
    ("ARBITER_SECURITY__MAX_INPUT_BYTES", "2TiB", "security.max_input_bytes", "range",
     "1B to 1TiB"),
])
def test_a_setting_outside_the_grammar_is_exit_3_with_its_key_rule_and_an_example(
        clean_env, variable, value, field, rule, example):  # type: ignore[no-untyped-def]
    human = cli("config", "validate", env={variable: value})
    assert human.exit_code == 3
    assert human.stderr.count("\n") == 1 and example in human.stderr, human.stderr
    machine = cli("--json", "config", "validate", env={variable: value})
    assert machine.exit_code == 3
    errors = machine.error()["details"]["errors"]
    assert [(e["field"], e["rule"]) for e in errors] == [(field, rule)]


@pytest.mark.parametrize(("variable", "value", "key", "shown"), [
    ("ARBITER_BREAKER__RESET_TIMEOUT", "10ms", "breaker.reset_timeout", "10ms"),
    ("ARBITER_BREAKER__RESET_TIMEOUT", "1m30s", "breaker.reset_timeout", "1m30s"),
    ("ARBITER_RESILIENCE__MAX_CLOCK_SKEW", "1ms", "resilience.max_clock_skew", "1ms"),
    ("ARBITER_ROUTING__ASSIGNMENT_TTL", "1w", "routing.assignment_ttl", "1w"),
    ("ARBITER_RESILIENCE__REPLAY_BUDGET", "90", "resilience.replay_budget", 90),
    ("ARBITER_SECURITY__MAX_INPUT_BYTES", "512M", "security.max_input_bytes", "512M"),
    ("ARBITER_SECURITY__MAX_INPUT_BYTES", "1TiB", "security.max_input_bytes", "1TiB"),
])
def test_settings_take_the_same_grammar_as_flags(clean_env, variable, value, key, shown):  # type: ignore[no-untyped-def]
    result = cli("--json", "config", "show", env={variable: value})
    assert result.exit_code == 0, result.stderr
    assert result.json()["settings"][key] == {"value": shown, "source": "environment"}


# ---------------------------------------------------------------------------- config show


def test_config_show_prints_the_effective_database_url_not_an_empty_one(clean_env):  # type: ignore[no-untyped-def]
    expected = f"sqlite:///{Path(clean_env['ARBITER_DATA_DIR']) / 'arbiter.db'}"
    doc = cli("--json", "config", "show").json()
    assert doc["settings"]["database.url"] == {"value": expected, "source": "default"}
    assert expected in cli("config", "show", env={"COLUMNS": "400"}).stdout


def test_config_show_masks_the_password_that_database_password_adds(clean_env):  # type: ignore[no-untyped-def]
    env = {"ARBITER_DATABASE__URL": "postgresql+psycopg2://app@db.example/arbiter",
           "ARBITER_DATABASE__PASSWORD": "canary-pw-1234"}
    result = cli("--json", "config", "show", env=env)
    assert "canary-pw-1234" not in result.stdout + result.stderr
    assert result.json()["settings"]["database.url"]["value"] == \
        "postgresql+psycopg2://app:***@db.example/arbiter"


def test_config_show_spells_booleans_as_toml_does(clean_env):  # type: ignore[no-untyped-def]
    human = cli("config", "show", env={"COLUMNS": "400"})
    line = next(line for line in human.stdout.splitlines() if "security.enabled" in line)
    assert "true" in line and "True" not in line
    assert cli("--json", "config", "show").json()["settings"]["security.enabled"]["value"] is True


def test_config_show_never_shortens_a_value_when_piped(clean_env):  # type: ignore[no-untyped-def]
    """CliRunner's stdout is not a terminal: every task type is printed, none cut off."""
    from arbiter_cli.config import DEFAULT_TASK_TYPES

    human = cli("config", "show")
    assert human.exit_code == 0
    assert "..." not in human.stdout and "…" not in human.stdout
    assert all(name in human.stdout for name in DEFAULT_TASK_TYPES)


# ---------------------------------------------------------------------------- config validate


def test_config_validate_prints_one_problem_per_line_with_did_you_mean(clean_env):  # type: ignore[no-untyped-def]
    config_dir = Path(clean_env["ARBITER_CONFIG_DIR"])
    (config_dir / "settings.toml").write_text('[default.routing]\nstrategi = "ucb"\n')
    env = {"ARBITER_DATABSE__URL": "sqlite:///x.db", "ARBITER_LOGGING__LEVEL": "loud",
           "ARBITER_BREAKER__RESET_TIMEOUT": "soon"}
    result = cli("config", "validate", env=env)
    assert result.exit_code == 3
    lines = result.stderr.splitlines()
    assert len(lines) == 4, lines
    assert all(line.startswith("error: ") for line in lines)
    assert "error: databse.url: unknown setting (from environment); did you mean " \
        "`database.url` (ARBITER_DATABASE__URL)?" in lines
    assert any("routing.strategi" in line and "did you mean `routing.strategy`?" in line
               for line in lines)
    assert any(line.startswith("error: logging.level: must be one of") for line in lines)
    assert any(line.startswith("error: breaker.reset_timeout:") for line in lines)


def test_config_validate_json_lists_every_problem_with_its_key_and_rule(clean_env):  # type: ignore[no-untyped-def]
    env = {"ARBITER_DATABSE__URL": "x", "ARBITER_BREAKER__RESET_TIMEOUT": "soon"}
    result = cli("--json", "config", "validate", env=env)
    assert result.exit_code == 3 and result.stdout == ""
    assert result.stderr.count("\n") == 1
    details = json.loads(result.stderr)["error"]["details"]
    assert [(e["field"], e["rule"]) for e in details["errors"]] == [
        ("databse.url", "unknown"), ("breaker.reset_timeout", "duration")]
    assert details["problems"] == [e["message"] for e in details["errors"]]


def test_an_unknown_key_far_from_any_known_one_gets_no_guess(clean_env):  # type: ignore[no-untyped-def]
    result = cli("config", "validate", env={"ARBITER_COLOUR": "blue"})
    assert result.stderr == "error: colour: unknown setting (from environment)\n"


def test_other_commands_still_report_an_invalid_configuration_on_one_line(clean_env):  # type: ignore[no-untyped-def]
    env = {"ARBITER_DATABSE__URL": "x", "ARBITER_BREAKER__RESET_TIMEOUT": "soon"}
    result = cli("agents", "list", env=env)
    assert result.exit_code == 3
    assert result.stderr.count("\n") == 1 and "did you mean `database.url`" in result.stderr
