"""Layered, validated configuration (SPEC §10), loaded from a temporary config directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from arbiter_cli.config import (
    DEFAULT_LANGUAGES,
    DEFAULT_TASK_TYPES,
    GRAMMAR,
    KEYS,
    KEYS_BY_NAME,
    Paths,
    load_settings,
    mask_url,
    parse_duration,
    resolve_paths,
)
from arbiter_cli.dburl import SHAPE
from arbiter_cli.errors import ConfigInvalid

DURATION_GRAMMAR, SIZE_GRAMMAR = GRAMMAR["duration"], GRAMMAR["size"]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    path = tmp_path / "config"
    path.mkdir()
    return path


@pytest.fixture
def environ(home: Path, config_dir: Path, tmp_path: Path) -> dict[str, str]:
    """An environment with nothing but HOME and the config and data directories."""
    return {"HOME": str(home), "ARBITER_CONFIG_DIR": str(config_dir),
            "ARBITER_DATA_DIR": str(tmp_path / "data")}


def problems_of(**kwargs) -> list[str]:
    with pytest.raises(ConfigInvalid) as caught:
        load_settings(**kwargs)
    error = caught.value
    assert error.exit_code == 3
    assert error.code == "config_invalid"
    assert error.details["problems"] == error.problems
    # each problem again with the key it is about and the rule it breaks (JSON consumers)
    assert [e["message"] for e in error.details["errors"]] == error.problems
    assert all(e["message"].startswith(e["field"] + ": ") and e["rule"]
               for e in error.details["errors"])
    return error.problems


# ---------------------------------------------------------------------------- defaults


def test_packaged_defaults_load_with_every_source_default(environ):
    """With no files or variables, every key has its packaged default from layer 'default'."""
    settings = load_settings(environ=environ)
    assert dict(settings.values) == {key.name: key.default for key in KEYS}
    assert set(settings.sources.values()) == {"default"}
    assert set(settings.sources) == set(KEYS_BY_NAME)
    assert settings.env == "development"
    assert settings.files == ()


def test_packaged_defaults_pass_every_validator(environ):
    """Restating each default as a flag forces validation, which finds nothing to report."""
    overrides = {key.name: key.default for key in KEYS}
    settings = load_settings(environ=environ, overrides=overrides)
    assert set(settings.sources.values()) == {"flag"}


def test_spec_defaults_of_the_registry_query_and_performance(environ):
    """SPEC §2: capacity 10, max_agents 10 000, window 100, query weights 0.3/0.3/0.2/0.2."""
    settings = load_settings(environ=environ)
    assert settings.registry.default_capacity == 10
    assert settings.registry.max_agents == 10_000
    assert settings.performance.window == 100
    assert settings.query.weights.as_dict() == {"fit": 0.3, "success": 0.3, "quality": 0.2,
                                                "load": 0.2}
    assert settings.registry.task_types == tuple(DEFAULT_TASK_TYPES)
    assert settings.registry.languages == tuple(DEFAULT_LANGUAGES)
    assert len(DEFAULT_TASK_TYPES) == 13
    assert DEFAULT_LANGUAGES == ["TypeScript", "JavaScript", "Python", "Rust", "Go", "Java",
                                 "C++", "C#"]


def test_key_environment_variable_names_nest_with_double_underscores():
    """database.url is ARBITER_DATABASE__URL."""
    assert KEYS_BY_NAME["database.url"].env_var == "ARBITER_DATABASE__URL"
    assert KEYS_BY_NAME["query.weights.fit"].env_var == "ARBITER_QUERY__WEIGHTS__FIT"


# ---------------------------------------------------------------------------- layer order


LAYERS = [
    (None, 10, "default"),
    ("settings:default", 2, "settings.toml [default]"),
    ("settings:development", 3, "settings.toml [development]"),
    ("secrets:default", 4, ".secrets.toml [default]"),
    ("secrets:development", 5, ".secrets.toml [development]"),
    ("config:default", 6, "--config [default]"),
    ("config:development", 7, "--config [development]"),
    ("environment", 8, "environment"),
    ("flag", 9, "flag"),
]


@pytest.mark.parametrize("top", range(len(LAYERS)), ids=[label for _, _, label in LAYERS])
def test_each_layer_overrides_every_layer_below_it(environ, config_dir, tmp_path, top):
    """Lowest first: defaults, settings.toml [default], [env], .secrets.toml, --config, env, flags."""
    files: dict[str, dict[str, int]] = {"settings": {}, "secrets": {}, "config": {}}
    overrides = {}
    env = dict(environ)
    for where, value, _ in LAYERS[1:top + 1]:
        if where == "environment":
            env["ARBITER_REGISTRY__DEFAULT_CAPACITY"] = str(value)
        elif where == "flag":
            overrides["registry.default_capacity"] = value
        else:
            name, section = where.split(":")
            files[name][section] = value
    paths = {"settings": config_dir / "settings.toml", "secrets": config_dir / ".secrets.toml",
             "config": tmp_path / "extra.toml"}
    for name, sections in files.items():
        body = "".join(f"[{s}.registry]\ndefault_capacity = {v}\n" for s, v in sections.items())
        paths[name].write_text(body)
    settings = load_settings(environ=env, config_file=paths["config"], overrides=overrides)
    _, value, source = LAYERS[top]
    assert settings.registry.default_capacity == value
    assert settings.sources["registry.default_capacity"] == source


def test_files_lists_the_files_read_in_layer_order(environ, config_dir, tmp_path):
    """Settings.files names settings.toml, .secrets.toml and the --config file that exist."""
    for name in ("settings.toml", ".secrets.toml"):
        (config_dir / name).write_text("[default]\n")
    extra = tmp_path / "extra.toml"
    extra.write_text("[default]\n")
    settings = load_settings(environ=environ, config_file=extra)
    assert settings.files == (str(config_dir / "settings.toml"), str(config_dir / ".secrets.toml"),
                              str(extra))


def test_the_env_argument_selects_the_section(environ, config_dir):
    """env='production' reads [production] and ignores [development]."""
    (config_dir / "settings.toml").write_text(
        '[production.logging]\nlevel = "error"\n[development.logging]\nlevel = "debug"\n')
    settings = load_settings(environ=environ, env="production")
    assert settings.logging.level == "error"
    assert settings.sources["logging.level"] == "settings.toml [production]"
    assert settings.env == "production"


def test_arbiter_env_selects_the_section_when_no_env_is_given(environ, config_dir):
    """ARBITER_ENV is the default environment name; the env argument beats it."""
    (config_dir / "settings.toml").write_text(
        '[staging.logging]\nlevel = "info"\n[production.logging]\nlevel = "error"\n')
    environ["ARBITER_ENV"] = "staging"
    assert load_settings(environ=environ).logging.level == "info"
    assert load_settings(environ=environ, env="production").logging.level == "error"


def test_environment_names_are_lower_cased(environ, config_dir):
    """--env PRODUCTION reads [production]."""
    (config_dir / "settings.toml").write_text('[production.logging]\nlevel = "error"\n')
    settings = load_settings(environ=environ, env="PRODUCTION")
    assert (settings.env, settings.logging.level) == ("production", "error")


# ---------------------------------------------------------------------------- merging


def test_nested_tables_merge_with_the_packaged_defaults(environ, config_dir):
    """A user's [default.routing] with one key keeps every other routing default."""
    (config_dir / "settings.toml").write_text('[default.routing]\nstrategy = "ucb"\n')
    settings = load_settings(environ=environ)
    assert settings.routing.strategy == "ucb"
    assert settings.sources["routing.strategy"] == "settings.toml [default]"
    assert settings.routing.half_life == 200.0
    assert settings.sources["routing.half_life"] == "default"
    assert settings.routing.weights.as_dict() == {"performance": 0.6, "load": 0.2, "fit": 0.1,
                                                  "latency": 0.1}


def test_deeper_tables_merge_key_by_key_across_layers(environ, config_dir):
    """Two layers each setting one weight keep both, and the rest stay default."""
    (config_dir / "settings.toml").write_text(
        "[default.query.weights]\nfit = 0.1\nsuccess = 0.5\n")
    settings = load_settings(environ=environ, overrides={"query.weights.fit": 0.2,
                                                         "query.weights.success": 0.4})
    assert settings.query.weights.as_dict() == {"fit": 0.2, "success": 0.4, "quality": 0.2,
                                                "load": 0.2}
    assert settings.sources["query.weights.quality"] == "default"


def test_lists_replace_rather_than_extend(environ, config_dir):
    """A user's registry.languages is the whole list."""
    (config_dir / "settings.toml").write_text('[default.registry]\nlanguages = ["Python", "Zig"]\n')
    assert load_settings(environ=environ).registry.languages == ("Python", "Zig")


def test_dynaconf_merge_markers_are_ignored(environ, config_dir):
    """dynaconf_merge keys are not settings (merging is always on for tables)."""
    (config_dir / "settings.toml").write_text(
        '[default]\ndynaconf_merge = true\n[default.routing]\ndynaconf_merge = true\n'
        'strategy = "weighted"\n')
    assert load_settings(environ=environ).routing.strategy == "weighted"


def test_flags_are_dotted_keys(environ):
    """Overrides use dotted names and are recorded as layer 'flag'."""
    settings = load_settings(environ=environ, overrides={"logging.level": "debug"})
    assert (settings.logging.level, settings.sources["logging.level"]) == ("debug", "flag")
    assert settings.sources["logging.format"] == "default"


# ---------------------------------------------------------------------------- environment


@pytest.mark.parametrize(("name", "raw", "key", "value"), [
    ("ARBITER_DATABASE__POOL_SIZE", "7", "database.pool_size", 7),
    ("ARBITER_SECURITY__ENABLED", "false", "security.enabled", False),
    ("ARBITER_ROUTING__HALF_LIFE", "12.5", "routing.half_life", 12.5),
    ("ARBITER_REGISTRY__LANGUAGES", '["Go", "Zig"]', "registry.languages", ["Go", "Zig"]),
    ("ARBITER_DATABASE__URL", "sqlite:////tmp/x.db", "database.url", "sqlite:////tmp/x.db"),
])
def test_environment_variables_nest_with_double_underscores_and_parse_as_toml(
    environ, name, raw, key, value
):
    """ARBITER_A__B sets a.b, with the value parsed into its TOML type."""
    environ[name] = raw
    settings = load_settings(environ=environ)
    assert settings.values[key] == value
    assert settings.sources[key] == "environment"


@pytest.mark.parametrize("name", ["ARBITER_TOKEN", "ARBITER_ENV", "ARBITER_PROFILE",
                                  "ARBITER_CONFIG_DIR", "ARBITER_DATA_DIR",
                                  "ARBITER_CORRELATION_ID", "ARBITER_TEST_DATABASE_URL",
                                  "ARBITER_TEST_ANYTHING"])
def test_reserved_variables_are_not_settings(environ, tmp_path, name):
    """Reserved names and ARBITER_TEST_* never become settings or unknown-key errors."""
    environ[name] = str(tmp_path / "value") if name.endswith("_DIR") else "x"
    settings = load_settings(environ=environ)
    assert set(settings.sources.values()) == {"default"}


def test_reserved_variables_do_not_hide_the_settings_after_them(home, config_dir):
    """A reserved variable listed first does not stop later ARBITER_* variables being read."""
    environ = {"ARBITER_TEST_X": "1", "ARBITER_TOKEN": "t", "HOME": str(home),
               "ARBITER_CONFIG_DIR": str(config_dir), "ARBITER_LOGGING__LEVEL": "debug"}
    assert load_settings(environ=environ).logging.level == "debug"


def test_the_process_environment_is_read_when_none_is_given(home, config_dir, monkeypatch):
    """Without environ=, load_settings reads os.environ."""
    for name in list(os.environ):
        if name.startswith("ARBITER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("ARBITER_CONFIG_DIR", str(config_dir))
    monkeypatch.setenv("ARBITER_LOGGING__FORMAT", "json")
    settings = load_settings()
    assert (settings.logging.format, settings.sources["logging.format"]) == ("json", "environment")
    assert settings.paths.config_dir == config_dir


def test_other_variables_are_ignored(environ):
    """Only ARBITER_* variables are read."""
    environ.update({"DATABASE__URL": "x", "ARBITERX_LOGGING__LEVEL": "x", "arbiter_logging__level": "x"})
    assert set(load_settings(environ=environ).sources.values()) == {"default"}


def test_unknown_environment_setting_is_reported_with_its_source(environ):
    """ARBITER_COLOUR is not a setting."""
    environ["ARBITER_COLOUR"] = "blue"
    assert problems_of(environ=environ) == ["colour: unknown setting (from environment)"]


# ---------------------------------------------------------------------------- validation


def test_unknown_key_in_a_file_names_the_file_and_section(environ, config_dir):
    """A typo in settings.toml is reported, not ignored."""
    (config_dir / "settings.toml").write_text("[default.routing]\nstrategi = \"ucb\"\n")
    assert problems_of(environ=environ) == [
        "routing.strategi: unknown setting (from settings.toml [default]); did you mean "
        "`routing.strategy`?"]


def test_every_problem_is_listed_at_once(environ, config_dir):
    """Unknown keys and each bad value are all reported together, not just the first."""
    (config_dir / "settings.toml").write_text(
        '[default]\nbogus = 1\n[default.logging]\nlevel = "loud"\n'
        "[default.database]\npool_size = 0\n")
    environ["ARBITER_REGISTRY__DEFAULT_CAPACITY"] = "1001"
    problems = problems_of(environ=environ)
    assert problems == [
        "bogus: unknown setting (from settings.toml [default])",
        "database.pool_size: must be an integer from 1 to 100 (got 0)",
        "registry.default_capacity: must be an integer from 1 to 1000 (got 1001)",
        "logging.level: must be one of debug, info, warning, error (got 'loud')",
    ]


def test_config_invalid_message_joins_the_problems(environ):
    """The one-line message carries every problem."""
    with pytest.raises(ConfigInvalid) as caught:
        load_settings(environ=environ, overrides={"logging.level": "loud", "x": 1})
    assert caught.value.message == (
        "invalid configuration: x: unknown setting (from flag); "
        "logging.level: must be one of debug, info, warning, error (got 'loud')")


@pytest.mark.parametrize(("key", "value"), [
    ("database.pool_size", 1), ("database.pool_size", 100), ("database.max_overflow", 0),
    ("registry.default_capacity", 1), ("registry.default_capacity", 1000),
    ("registry.max_agents", 1_000_000), ("performance.window", 1),
    ("query.weights.fit", 0), ("routing.half_life", 1), ("routing.half_life", 1_000_000.0),
    ("database.connect_timeout", "1s"), ("database.connect_timeout", "10m"),
    ("routing.assignment_ttl", "365d"), ("security.enabled", False),
    ("database.password", ""), ("logging.format", "json"), ("routing.strategy", "epsilon-greedy"),
    ("registry.task_types", ["general"]),
    ("registry.task_types", [f"t{i}" for i in range(64)]),
])
def test_values_at_the_edges_of_their_range_are_accepted(environ, key, value):
    """Inclusive bounds: each minimum and maximum (and a one-item list) is valid."""
    balance = {"query.weights.fit": {"query.weights.success": 0.6}}  # keep the sum at 1
    overrides = {key: value, **balance.get(key, {})}
    assert load_settings(environ=environ, overrides=overrides).values[key] == value


@pytest.mark.parametrize(("key", "value", "problem"), [
    ("database.pool_size", 0, "must be an integer from 1 to 100 (got 0)"),
    ("database.pool_size", 101, "must be an integer from 1 to 100 (got 101)"),
    ("database.pool_size", True, "must be an integer from 1 to 100 (got True)"),
    ("database.pool_size", 5.0, "must be an integer from 1 to 100 (got 5.0)"),
    ("database.pool_size", "5", "must be an integer from 1 to 100 (got '5')"),
    ("registry.max_agents", 1_000_001, "must be an integer from 1 to 1e+06 (got 1000001)"),
    ("performance.window", 0, "must be an integer from 1 to 1e+06 (got 0)"),
    ("routing.half_life", 0.5, "must be a number from 1 to 1e+06 (got 0.5)"),
    ("routing.half_life", float("nan"), "must be a number from 1 to 1e+06 (got nan)"),
    ("routing.half_life", float("inf"), "must be a number from 1 to 1e+06 (got inf)"),
    ("routing.epsilon.decay", 1.5, "must be a number from 0 to 1 (got 1.5)"),
    ("routing.strategy", "random", "must be one of thompson, ucb, epsilon-greedy, weighted, "
     "thompson-stationary (got 'random')"),
    ("security.enabled", "yes", "must be true or false (got 'yes')"),
    ("security.enabled", 1, "must be true or false (got 1)"),
    ("database.url", 5, "must be " + SHAPE),
    ("database.url", "mysql://bob@db/arb", "must be " + SHAPE),
    ("database.connect_timeout", "0s", "must be from 1s to 10m (got '0s')"),
    ("database.connect_timeout", "601s", "must be from 1s to 10m (got '601s')"),
    ("database.connect_timeout", 601, "must be from 1s to 10m (got 601)"),
    ("database.connect_timeout", "5 minutes", "must be a duration such as 5s: " + DURATION_GRAMMAR
     + " (got '5 minutes')"),
    ("database.connect_timeout", True, "must be a duration such as 5s: " + DURATION_GRAMMAR
     + " (got True)"),
    ("security.max_input_bytes", "2TiB", "must be from 1B to 1TiB (got '2TiB')"),
    ("security.max_input_bytes", "lots", "must be a size such as 64MiB: " + SIZE_GRAMMAR
     + " (got 'lots')"),
    ("registry.task_types", [], "must be a list of 1 to 64 unique non-empty strings (got [])"),
    ("registry.task_types", ["Code"],
     "must be a list of 1 to 64 unique non-empty strings (got ['Code'])"),
    ("registry.task_types", "general",
     "must be a list of 1 to 64 unique non-empty strings (got 'general')"),
    ("registry.languages", ["Go", "go"],
     "must be a list of 1 to 64 unique non-empty strings (got ['Go', 'go'])"),
    ("registry.languages", ["Go", " "],
     "must be a list of 1 to 64 unique non-empty strings (got ['Go', ' '])"),
    ("registry.languages", ["Go", 3],
     "must be a list of 1 to 64 unique non-empty strings (got ['Go', 3])"),
])
def test_bad_values_are_rejected_with_what_was_expected(environ, key, value, problem):
    """Types, ranges, choices, durations and lists are each checked."""
    assert problems_of(environ=environ, overrides={key: value}) == [f"{key}: {problem}"]


def test_a_list_of_65_items_is_rejected(environ):
    """registry.languages holds at most 64 entries."""
    languages = [f"L{i}" for i in range(65)]
    assert len(problems_of(environ=environ, overrides={"registry.languages": languages})) == 1


def test_query_weights_must_sum_to_one(environ):
    """Weights 0.3/0.3/0.2/0.3 sum to 1.1 and are rejected."""
    assert problems_of(environ=environ, overrides={"query.weights.load": 0.3}) == [
        "query.weights: the weights must be numbers that sum to 1 (got {'fit': 0.3, "
        "'success': 0.3, 'quality': 0.2, 'load': 0.3})"]


def test_routing_weights_must_sum_to_one(environ):
    """The routing weight group is checked the same way."""
    problems = problems_of(environ=environ, overrides={"routing.weights.fit": 0.0})
    assert len(problems) == 1
    assert problems[0].startswith("routing.weights: the weights must be numbers that sum to 1")


def test_weights_that_sum_to_one_in_another_mix_are_accepted(environ):
    """Any non-negative mix summing to 1 is fine."""
    weights = {"query.weights.fit": 0.25, "query.weights.success": 0.25,
               "query.weights.quality": 0.25, "query.weights.load": 0.25}
    settings = load_settings(environ=environ, overrides=weights)
    assert settings.query.weights.as_dict() == {"fit": 0.25, "success": 0.25, "quality": 0.25,
                                                "load": 0.25}


def test_weight_sum_tolerance_is_one_millionth(environ):
    """A sum within 1e-6 of 1 passes; 2e-6 away fails."""
    assert load_settings(environ=environ, overrides={"query.weights.fit": 0.3000009})
    assert len(problems_of(environ=environ, overrides={"query.weights.fit": 0.300002})) == 1


def test_a_non_numeric_weight_fails_both_its_type_and_the_sum(environ):
    """A boolean weight is not a number, so the group cannot sum to 1."""
    environ["ARBITER_QUERY__WEIGHTS__FIT"] = "true"
    problems = problems_of(environ=environ)
    assert problems[0] == "query.weights.fit: must be a number from 0 to 1 (got True)"
    assert problems[1].startswith("query.weights: the weights must be numbers that sum to 1")


def test_a_flag_below_a_value_is_a_config_error(environ):
    """Overrides cannot treat a value as a table."""
    with pytest.raises(ConfigInvalid) as caught:
        load_settings(environ=environ, overrides={"logging.level": "info", "logging.level.x": 1})
    assert caught.value.message == "logging.level.x: level is a value, not a table"


def test_a_weight_group_that_is_not_a_table_cannot_sum_to_one(environ):
    """query.weights = 5 is reported by the sum check too."""
    problems = problems_of(environ=environ, overrides={"query.weights": 5})
    assert "query.weights: the weights must be numbers that sum to 1 (got 5)" in problems


def test_boolean_weights_are_not_numbers_even_when_they_sum_to_one(environ):
    """fit = true with the other weights 0 does not count as summing to 1."""
    problems = problems_of(environ=environ, overrides={
        "query.weights.fit": True, "query.weights.success": 0, "query.weights.quality": 0,
        "query.weights.load": 0})
    assert problems[0] == "query.weights.fit: must be a number from 0 to 1 (got True)"
    assert problems[1].startswith("query.weights: the weights must be numbers that sum to 1")


def test_a_scalar_where_a_table_belongs_is_invalid(environ, config_dir):
    """[default] routing = "fast" cannot replace the routing table."""
    (config_dir / "settings.toml").write_text('[default]\nrouting = "fast"\n')
    problems = problems_of(environ=environ)
    assert problems[0] == "routing: unknown setting (from settings.toml [default])"


def test_task_types_with_a_trailing_newline_are_rejected(environ):
    """Regression: registry.task_types entries must be whole slugs; 'general\\n' is not one."""
    assert len(problems_of(environ=environ, overrides={"registry.task_types": ["general\n"]})) == 1


def test_a_value_is_validated_as_it_will_be_stored(environ):
    """Regression: '@str debug' is not a log level, so it must not pass as 'debug'."""
    assert problems_of(environ=environ, overrides={"logging.level": "@str debug"}) == [
        "logging.level: must be one of debug, info, warning, error (got '@str debug')"]


@pytest.mark.parametrize("password", [
    "@format {x}", "@int 5", "@jinja {{ x }}", "@", "@str kept",
])
def test_a_password_starting_with_at_is_an_ordinary_string(environ, config_dir, password):
    """Regression: secrets are arbitrary strings; dynaconf '@' tokens in them are not evaluated."""
    (config_dir / ".secrets.toml").write_text(f"[default.database]\npassword = {password!r}\n")
    settings = load_settings(environ=environ)
    assert settings.database.password == password
    assert settings.display("database.password") == "***"


def test_literal_at_strings_inside_lists_are_kept(environ):
    """List items starting with '@' are validated and stored as written."""
    settings = load_settings(environ=environ, overrides={"registry.languages": ["@lang", "Go"]})
    assert settings.registry.languages == ("@lang", "Go")


@pytest.mark.parametrize("raw", ["@int abc", "@json {", "@format {x}"])
def test_a_malformed_converter_in_an_environment_variable_is_a_config_error(environ, raw):
    """SPEC §5.2: unreadable configuration is exit 3, naming the variable."""
    environ["ARBITER_DATABASE__PASSWORD"] = raw
    with pytest.raises(ConfigInvalid) as caught:
        load_settings(environ=environ)
    assert "ARBITER_DATABASE__PASSWORD" in caught.value.message


def test_environment_values_may_use_dynaconf_converters(environ):
    """An environment value is parsed once, so '@int 7' there is the integer 7."""
    environ["ARBITER_DATABASE__POOL_SIZE"] = "@int 7"
    assert load_settings(environ=environ).database.pool_size == 7


# ---------------------------------------------------------------------------- files


def test_missing_config_file_is_a_config_error(environ, tmp_path):
    """--config PATH that does not exist is exit 3."""
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigInvalid) as caught:
        load_settings(environ=environ, config_file=missing)
    assert caught.value.message == f"config file {missing} does not exist"
    assert caught.value.exit_code == 3


def test_unparsable_toml_is_a_config_error(environ, config_dir):
    """A syntax error in settings.toml is exit 3 naming the file."""
    (config_dir / "settings.toml").write_text("[default\n")
    with pytest.raises(ConfigInvalid) as caught:
        load_settings(environ=environ)
    assert caught.value.message.startswith(f"cannot read {config_dir / 'settings.toml'}: ")


def test_top_level_values_must_be_environment_tables(environ, config_dir):
    """A bare key at the top of settings.toml is rejected with a hint."""
    (config_dir / ".secrets.toml").write_text('password = "x"\n')
    with pytest.raises(ConfigInvalid) as caught:
        load_settings(environ=environ)
    assert caught.value.message == (
        f"{config_dir / '.secrets.toml'}: top-level key 'password' must be an environment table "
        "such as [default] or [production]")


def test_settings_are_never_read_from_the_working_directory(environ, tmp_path, monkeypatch):
    """A settings.toml in the current directory is not a layer."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "settings.toml").write_text('[default.logging]\nlevel = "loud"\n')
    monkeypatch.chdir(cwd)
    assert load_settings(environ=environ).logging.level == "warning"


def test_settings_are_found_under_xdg_config_home(home, tmp_path):
    """Without ARBITER_CONFIG_DIR, $XDG_CONFIG_HOME/arbiter/settings.toml is read."""
    xdg = tmp_path / "xdg"
    (xdg / "arbiter").mkdir(parents=True)
    (xdg / "arbiter" / "settings.toml").write_text('[default.logging]\nlevel = "info"\n')
    settings = load_settings(environ={"HOME": str(home), "XDG_CONFIG_HOME": str(xdg)})
    assert settings.logging.level == "info"
    assert settings.paths.config_dir == xdg / "arbiter"


def test_settings_are_found_under_home_config(home):
    """Without ARBITER_CONFIG_DIR or XDG_CONFIG_HOME, ~/.config/arbiter is read."""
    (home / ".config" / "arbiter").mkdir(parents=True)
    (home / ".config" / "arbiter" / "settings.toml").write_text(
        '[default.logging]\nlevel = "error"\n')
    assert load_settings(environ={"HOME": str(home)}).logging.level == "error"


# ---------------------------------------------------------------------------- paths


@pytest.mark.parametrize(("environ", "config_dir", "data_dir"), [
    ({"HOME": "/h"}, "/h/.config/arbiter", "/h/.local/share/arbiter"),
    ({"HOME": "/h", "XDG_CONFIG_HOME": "/x/c", "XDG_DATA_HOME": "/x/d"}, "/x/c/arbiter",
     "/x/d/arbiter"),
    ({"HOME": "/h", "XDG_CONFIG_HOME": "/x/c", "XDG_DATA_HOME": "/x/d",
      "ARBITER_CONFIG_DIR": "/a/c", "ARBITER_DATA_DIR": "/a/d"}, "/a/c", "/a/d"),
    ({"HOME": "/h", "ARBITER_CONFIG_DIR": "", "ARBITER_DATA_DIR": "", "XDG_CONFIG_HOME": ""},
     "/h/.config/arbiter", "/h/.local/share/arbiter"),
])
def test_paths_prefer_arbiter_dirs_then_xdg_then_home(environ, config_dir, data_dir):
    """ARBITER_CONFIG_DIR/ARBITER_DATA_DIR, else XDG_*_HOME/arbiter, else under HOME."""
    assert resolve_paths(environ) == Paths(config_dir=Path(config_dir), data_dir=Path(data_dir))


# ---------------------------------------------------------------------------- durations / urls


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30.0), ("5m", 300.0), ("2h", 7200.0),
                                               ("1d", 86400.0), ("0s", 0.0), (" 7s ", 7.0)])
def test_parse_duration_converts_to_seconds(text, seconds):
    """A duration is a number of seconds, as a float (the grammar: tests/unit/test_units.py)."""
    result = parse_duration(text)
    assert result == seconds
    assert type(result) is float


def test_duration_keys_arrive_in_seconds(environ):
    """A duration setting reaches its section parsed: routing.assignment_ttl 2h is 7200.0."""
    settings = load_settings(environ=environ)
    assert settings.routing.assignment_ttl == 7200.0
    assert settings.database.connect_timeout == 5.0


@pytest.mark.parametrize(("url", "masked"), [
    ("postgresql://bob:hunter2@db/arb", "postgresql://bob:***@db/arb"),
    ("postgresql+psycopg2://bob:p%40ss@db:5432/arb", "postgresql+psycopg2://bob:***@db:5432/arb"),
    ("postgresql://bob@db/arb", "postgresql://bob@db/arb"),
    ("sqlite:////var/lib/arbiter.db", "sqlite:////var/lib/arbiter.db"),
    ("", ""),
])
def test_mask_url_hides_only_the_password(url, masked):
    """The password of a DSN becomes ***; URLs without one are unchanged."""
    assert mask_url(url) == masked


def test_default_database_is_sqlite_in_the_data_dir(environ, tmp_path):
    """An empty database.url means sqlite:///<data_dir>/arbiter.db."""
    settings = load_settings(environ=environ)
    assert settings.database_url == f"sqlite:///{tmp_path / 'data' / 'arbiter.db'}"


@pytest.mark.parametrize(("url", "password", "expected"), [
    ("postgresql+psycopg2://bob@db:5432/arb", "p@ss/w:rd",
     "postgresql+psycopg2://bob:p%40ss%2Fw%3Ard@db:5432/arb"),
    ("postgresql://bob:kept@db/arb", "other", "postgresql://bob:kept@db/arb"),
    ("postgresql://db/arb", "secret", "postgresql://db/arb"),
    ("postgresql://bob@db/arb", "", "postgresql://bob@db/arb"),
    ("sqlite:////tmp/a.db", "secret", "sqlite:////tmp/a.db"),
])
def test_database_password_is_added_to_a_postgres_url_without_one(environ, url, password, expected):
    """database.password fills in a PostgreSQL URL's missing password, URL-quoted."""
    settings = load_settings(environ=environ, overrides={"database.url": url,
                                                         "database.password": password})
    assert settings.database_url == expected


def test_display_masks_secrets(environ):
    """config show prints the URL with its password masked and the password as ***."""
    settings = load_settings(environ=environ, overrides={
        "database.url": "postgresql://bob:hunter2@db/arb", "database.password": "s3cret"})
    assert settings.display("database.url") == "postgresql://bob:***@db/arb"
    assert settings.display("database.password") == "***"
    assert settings.display("logging.level") == "warning"
    assert settings.secret_values() == ["s3cret", "hunter2"]


def test_empty_secrets_display_as_empty(environ):
    """An unset password shows as empty, not ***, and there are no secret values to redact."""
    settings = load_settings(environ=environ)
    assert settings.display("database.password") == ""
    assert settings.secret_values() == []


def test_an_empty_database_url_displays_as_the_sqlite_file_it_means(environ):
    """config show prints the URL arbiter connects to, not the empty setting (SPEC §16)."""
    settings = load_settings(environ=environ)
    assert settings.display("database.url") == f"sqlite:///{settings.paths.data_dir}/arbiter.db"


def test_a_url_completed_by_database_password_displays_masked(environ):
    """database.password joins the URL that is shown, as ***."""
    settings = load_settings(environ=environ, overrides={
        "database.url": "postgresql://bob@db/arb", "database.password": "s3cret"})
    assert settings.display("database.url") == "postgresql://bob:***@db/arb"


def test_an_invalid_database_url_is_not_echoed_with_its_password(tmp_path: Path) -> None:
    """A rejected URL can still hold a password: the problem names the key, not the value."""
    with pytest.raises(ConfigInvalid) as caught:
        load_settings(environ={"ARBITER_CONFIG_DIR": str(tmp_path),
                               "ARBITER_DATABASE__URL": "mysql://bob:S3cretPw@db/arb"})
    assert "S3cretPw" not in str(caught.value)
    assert "database.url" in str(caught.value)


def test_an_arbiter_variable_does_not_import_jinja2_with_dynaconf(tmp_path: Path) -> None:
    """dynaconf imports jinja2 only for @jinja values, which arbiter refuses: with one
    ARBITER_* variable, load_settings leaves jinja2 out (about 40 % of dynaconf's import),
    and a later ``import jinja2`` (memray's reports) still works."""
    import subprocess
    import sys

    pytest.importorskip("jinja2")
    probe = (
        "import sys\n"
        "from arbiter_cli.config import load_settings\n"
        f"load_settings(environ={{'HOME': {str(tmp_path)!r}, 'ARBITER_CONFIG_DIR': "
        f"{str(tmp_path)!r}, 'ARBITER_ROUTING__HALF_LIFE': '50'}})\n"
        "assert 'dynaconf' in sys.modules and 'jinja2' not in sys.modules, 'jinja2 imported'\n"
        "import jinja2\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=False, timeout=60)
    assert result.returncode == 0, result.stderr
