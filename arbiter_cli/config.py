"""Layered, validated configuration (SPEC §10): the only module that imports dynaconf.

Layers, lowest first; nested tables merge and lists or scalars replace:

1. packaged defaults (``KEYS`` below);
2. ``settings.toml`` ``[default]``;
3. ``settings.toml`` ``[<env>]``;
4. ``.secrets.toml`` (``[default]`` then ``[<env>]``);
5. the ``--config`` file (same sections);
6. ``ARBITER_*`` environment variables, nested with ``__``, values parsed as TOML by dynaconf;
7. command-line flags.

The files are looked up in ``ARBITER_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/arbiter``, else
``~/.config/arbiter``; never in the working directory. ``load_settings`` merges the layers,
remembers which layer set each key, runs every dynaconf validator with ``validate_all`` and
returns one frozen ``Settings``.

Code reads the values through typed sections built once with the ``Settings``:
``settings.routing.half_life``, ``settings.resilience.journal.max_entries``. Each section is a
frozen dataclass whose fields follow the keys of ``KEYS`` (``tests/unit/test_config_sections.py``
fails when a key has no field or a field no key); durations arrive as ``Seconds`` and sizes as
``Bytes``, already parsed.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

from arbiter_cli import dburl
from arbiter_cli.dburl import mask_url as mask_url  # re-exported: config.mask_url
from arbiter_cli.errors import ConfigInvalid
from arbiter_cli.units import MAX_DURATION_S as MAX_DURATION_S  # re-exported
from arbiter_cli.units import format_duration, format_size
from arbiter_cli.units import parse_duration as parse_duration  # re-exported: the one grammar
from arbiter_cli.units import parse_size as parse_size  # re-exported: the one grammar

RESERVED_ENV = frozenset(
    {
        "ARBITER_TOKEN",
        "ARBITER_ENV",
        "ARBITER_PROFILE",
        "ARBITER_CONFIG_DIR",
        "ARBITER_DATA_DIR",
        "ARBITER_CORRELATION_ID",
        "ARBITER_SERVER",  # remote mode (SPEC §15): the server's URL, not a setting
    }
)
RESERVED_PREFIXES = ("ARBITER_TEST_",)

DEFAULT_TASK_TYPES = [
    "code-editing", "file_editing", "research", "code-review", "documentation", "testing",
    "debugging", "refactoring", "api-design", "analysis", "validation", "general",
    "script-execution",
]  # fmt: skip
DEFAULT_LANGUAGES = ["TypeScript", "JavaScript", "Python", "Rust", "Go", "Java", "C++", "C#"]

AUDIT_KEY_MIN = 32
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class Key:
    """One settings key: its type, packaged default, allowed values and meaning."""

    name: str
    kind: str  # int | float | bool | str | duration | size | list | choice
    default: Any
    doc: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    secret: bool = False

    @property
    def env_var(self) -> str:
        return "ARBITER_" + self.name.upper().replace(".", "__").replace("-", "_")


KEYS: tuple[Key, ...] = (
    Key("database.url", "str", "", "SQLAlchemy URL of the primary store; empty means "
        "sqlite:///<data_dir>/arbiter.db. PostgreSQL: postgresql+psycopg2://user@host/db.",
        secret=True),
    Key("database.password", "str", "", "Password added to a PostgreSQL URL that has none "
        "(keep it in .secrets.toml or the environment).", secret=True),
    Key("database.pool_size", "int", 5, "PostgreSQL connection pool size.", 1, 100),
    Key("database.max_overflow", "int", 5, "Extra PostgreSQL connections above the pool.", 0, 100),
    Key("database.connect_timeout", "duration", "5s", "PostgreSQL connect timeout.", 1, 600),
    Key("database.statement_timeout", "duration", "30s", "PostgreSQL statement_timeout per "
        "statement.", 1, 86400),
    Key("database.command_timeout", "duration", "5s", "Database budget of one command, shared "
        "by all its calls.", 1, 3600),
    Key("database.per_item_timeout", "duration", "2ms", "Budget added to "
        "database.command_timeout per item of a batch write (`agents register --file`).",
        0, 60),
    Key("database.prepare_threshold", "int", 0, "PostgreSQL: prepare a statement on a "
        "connection once it ran there this many times (0, the default: never; keep 0 behind "
        "a transaction-mode pooler such as PgBouncer).", 0, 1000),
    Key("database.busy_timeout", "duration", "30s", "SQLite busy_timeout while another process "
        "writes.", 1, 3600),
    Key("registry.task_types", "list", DEFAULT_TASK_TYPES, "Task types agents may declare "
        "(slugs, at most 64).", 1, 64),
    Key("registry.languages", "list", DEFAULT_LANGUAGES, "Languages agents may declare (at most "
        "64); matching ignores case.", 1, 64),
    Key("registry.default_capacity", "int", 10, "Capacity of an agent registered without "
        "--capacity.", 1, 1000),
    Key("registry.max_agents", "int", 10_000, "Most agents per tenant.", 1, 1_000_000),
    Key("performance.window", "int", 100, "Tasks folded by cumulative mean before the EMA "
        "(alpha = 1/window) takes over.", 1, 1_000_000),
    Key("query.weights.fit", "float", 0.3, "Query score weight of preferred specializations.",
        0, 1),
    Key("query.weights.success", "float", 0.3, "Query score weight of the success rate.", 0, 1),
    Key("query.weights.quality", "float", 0.2, "Query score weight of average quality.", 0, 1),
    Key("query.weights.load", "float", 0.2, "Query score weight of free capacity.", 0, 1),
    Key("routing.strategy", "choice", "thompson", "Default routing strategy.",
        choices=("thompson", "ucb", "epsilon-greedy", "weighted", "thompson-stationary")),
    Key("routing.half_life", "float", 200.0, "Memory of the change detector: outcomes after "
        "which an arm's recent evidence weighs half.", 1, 1_000_000),
    Key("routing.latency_ref_ms", "float", 5000.0, "Latency at which latency_score is 0.5.",
        1, 3_600_000),
    Key("routing.assignment_ttl", "duration", "2h", "Open decisions older than this are "
        "expired.", 1, 365 * 86400),
    Key("routing.max_claim_attempts", "int", 5, "Candidates tried when a claim loses a race.",
        1, 100),
    Key("routing.record_candidates", "int", 20, "Candidates stored with each decision.", 1, 1000),
    Key("routing.weights.performance", "float", 0.6, "Routing score weight of the bandit "
        "value.", 0, 1),
    Key("routing.weights.load", "float", 0.2, "Routing score weight of free capacity.", 0, 1),
    Key("routing.weights.fit", "float", 0.1, "Routing score weight of preferred "
        "specializations.", 0, 1),
    Key("routing.weights.latency", "float", 0.1, "Routing score weight of latency.", 0, 1),
    Key("routing.epsilon.initial", "float", 0.2, "epsilon-greedy: starting epsilon.", 0, 1),
    Key("routing.epsilon.min", "float", 0.05, "epsilon-greedy: floor of epsilon.", 0, 1),
    Key("routing.epsilon.decay", "float", 0.995, "epsilon-greedy: decay per outcome.", 0, 1),
    Key("security.enabled", "bool", True, "Require tokens; false makes every command admin of "
        "'default', on a throwaway database without tokens only (refused, exit 3, on one "
        "that holds any)."),
    Key("security.audit_key", "str", "", "Secret that seals the audit chain with HMAC-SHA256 "
        "(empty: plain SHA-256); at least 32 characters; keep it in .secrets.toml.",
        secret=True),
    Key("security.max_input_bytes", "size", "64MiB", "Most bytes read from --file (or stdin) "
        "by one command.", 1, 2**40),
    Key("security.rate_limit.rate", "float", 50.0, "Token bucket refill per second, per token.",
        0.001, 1_000_000),
    Key("security.rate_limit.burst", "int", 200, "Token bucket size, per token.", 1, 10_000_000),
    Key("logging.level", "choice", "warning", "Log level on stderr.",
        choices=("debug", "info", "warning", "error")),
    Key("logging.format", "choice", "auto", "auto (console on a TTY, JSON otherwise), console "
        "or json.", choices=("auto", "console", "json")),
    Key("breaker.fail_max", "int", 5, "Consecutive counted database failures that open the "
        "circuit breaker.", 1, 1000),
    Key("breaker.reset_timeout", "duration", "10s", "How long the breaker stays open before one "
        "probe per host is let through.", 0.01, 3600),
    Key("resilience.snapshot_interval", "duration", "10s", "Least time between two refreshes of "
        "the local snapshot that serves reads and token checks during an outage.", 0, 86400),
    Key("resilience.snapshot_refresh", "choice", "auto", "Where a due snapshot refresh runs "
        "after a command: inline, background (a detached process) or auto (inline while a "
        "refresh takes under 50 ms).", choices=("auto", "inline", "background")),
    Key("resilience.replay_budget", "duration", "1s", "Time a command spends replaying the "
        "journal before its own work.", 0, 3600),
    Key("resilience.max_clock_skew", "duration", "30s", "How far this host's clock may be "
        "from the database's before `arbiter health` warns (clock:skew); arbiter stamps and "
        "expires by the database's time either way.", 0.001, 86400),
    Key("resilience.journal.max_entries", "int", 100_000, "Journal cap: past it, writes during "
        "an outage exit 10.", 1, 100_000_000),
    Key("observability.tracing.exporter", "choice", "none", "OpenTelemetry span exporter: none, "
        "console (stderr) or otlp (needs arbiter[otel]; OTEL_EXPORTER_OTLP_ENDPOINT).",
        choices=("none", "console", "otlp")),
    Key("serve.replay_interval", "duration", "1s", "How often `arbiter serve` drains the "
        "journal in the background.", 0.05, 3600),
    Key("serve.shutdown_timeout", "duration", "10s", "How long SIGTERM lets `arbiter serve` "
        "finish the requests in flight before it closes their connections and exits.", 1, 3600),
    Key("serve.read_timeout", "duration", "10s", "Time a client has to send its whole request, "
        "headers and body, from connecting or from its previous answer (idle and slow clients "
        "are cut off).", 1, 3600),
    Key("serve.max_connections", "int", 64, "Connections `arbiter serve` handles at once; "
        "more are answered 503 at once.", 1, 10_000),
    Key("serve.max_body", "size", "10MiB", "Largest request body `arbiter serve` accepts "
        "(by Content-Length or as it streams); larger ones are answered 413.", 1, 2**40),
    Key("serve.http", "choice", "auto", "HTTP/1.1 parser of `arbiter serve`: httptools (C), "
        "h11 (pure Python, more CPU per request) or auto (httptools when installed).",
        choices=("auto", "httptools", "h11")),
)
KEYS_BY_NAME = {k.name: k for k in KEYS}
WEIGHT_GROUPS = ("query.weights", "routing.weights")


# ---------------------------------------------------------------------------- typed sections

Seconds = float  # a duration key, parsed: "2h" -> 7200.0
Bytes = int  # a size key, parsed: "64MiB" -> 67108864


@dataclass(frozen=True)
class DatabaseSettings:
    """``database.*``: the primary store, its pool and its time budgets."""

    url: str = field(repr=False)  # raw; ``Settings.database_url`` is the URL to connect to
    password: str = field(repr=False)
    pool_size: int
    max_overflow: int
    connect_timeout: Seconds
    statement_timeout: Seconds
    command_timeout: Seconds
    per_item_timeout: Seconds
    busy_timeout: Seconds
    prepare_threshold: int


@dataclass(frozen=True)
class RegistrySettings:
    """``registry.*``: what agents may declare, and how many."""

    task_types: tuple[str, ...]
    languages: tuple[str, ...]
    default_capacity: int
    max_agents: int


@dataclass(frozen=True)
class PerformanceSettings:
    """``performance.*``: how outcomes fold into an agent's record."""

    window: int


class Weights:
    """A weight group (a frozen dataclass below); the services take it as a mapping."""

    def as_dict(self) -> dict[str, float]:
        return dict(vars(self))  # the fields, in their order


@dataclass(frozen=True)
class QueryWeights(Weights):
    """``query.weights.*``: the query score's weights (they sum to 1)."""

    fit: float
    success: float
    quality: float
    load: float


@dataclass(frozen=True)
class QuerySettings:
    """``query.*``."""

    weights: QueryWeights


@dataclass(frozen=True)
class RoutingWeights(Weights):
    """``routing.weights.*``: the routing score's weights (they sum to 1)."""

    performance: float
    load: float
    fit: float
    latency: float


@dataclass(frozen=True)
class EpsilonSettings:
    """``routing.epsilon.*``: the epsilon-greedy schedule."""

    initial: float
    min: float
    decay: float


@dataclass(frozen=True)
class RoutingSettings:
    """``routing.*``: strategy, evidence decay, claims and decisions."""

    strategy: str
    half_life: float
    latency_ref_ms: float
    assignment_ttl: Seconds
    max_claim_attempts: int
    record_candidates: int
    weights: RoutingWeights
    epsilon: EpsilonSettings


@dataclass(frozen=True)
class RateLimitSettings:
    """``security.rate_limit.*``: the token bucket of each token."""

    rate: float
    burst: int


@dataclass(frozen=True)
class SecuritySettings:
    """``security.*``: tokens, the audit seal, input and rate limits."""

    enabled: bool
    audit_key: str = field(repr=False)
    max_input_bytes: Bytes
    rate_limit: RateLimitSettings


@dataclass(frozen=True)
class LoggingSettings:
    """``logging.*``: the stderr log."""

    level: str
    format: str


@dataclass(frozen=True)
class BreakerSettings:
    """``breaker.*``: the circuit breaker in front of a network primary."""

    fail_max: int
    reset_timeout: Seconds


@dataclass(frozen=True)
class JournalSettings:
    """``resilience.journal.*``: the outage journal."""

    max_entries: int


@dataclass(frozen=True)
class ResilienceSettings:
    """``resilience.*``: the snapshot, replay and clock checks of an outage."""

    snapshot_interval: Seconds
    snapshot_refresh: str
    replay_budget: Seconds
    max_clock_skew: Seconds
    journal: JournalSettings


@dataclass(frozen=True)
class TracingSettings:
    """``observability.tracing.*``."""

    exporter: str


@dataclass(frozen=True)
class ObservabilitySettings:
    """``observability.*``."""

    tracing: TracingSettings


@dataclass(frozen=True)
class ServeSettings:
    """``serve.*``: the HTTP server of ``arbiter serve``."""

    replay_interval: Seconds
    shutdown_timeout: Seconds
    read_timeout: Seconds
    max_connections: int
    max_body: Bytes
    http: str


SECTIONS: dict[str, type[Any]] = {cls.__name__: cls for cls in (
    DatabaseSettings, RegistrySettings, PerformanceSettings, QueryWeights, QuerySettings,
    RoutingWeights, EpsilonSettings, RoutingSettings, RateLimitSettings, SecuritySettings,
    LoggingSettings, BreakerSettings, JournalSettings, ResilienceSettings, TracingSettings,
    ObservabilitySettings, ServeSettings,
)}  # fmt: skip
"""The section classes by the name a field annotation gives (annotations are strings here)."""

_CONVERT: dict[str, Any] = {
    "int": int, "float": float, "bool": bool, "str": str, "choice": str,
    "duration": parse_duration, "size": parse_size, "list": tuple,
}  # fmt: skip


def _section(cls: type[Any], values: Mapping[str, Any], prefix: str) -> Any:
    """``cls`` filled from the flat ``values`` under ``prefix``, each leaf converted by its kind."""
    found: dict[str, Any] = {}
    for item in fields(cls):
        name = prefix + item.name
        nested = SECTIONS.get(item.type) if isinstance(item.type, str) else None
        found[item.name] = (_section(nested, values, name + ".") if nested is not None
                            else _CONVERT[KEYS_BY_NAME[name].kind](values[name]))
    return cls(**found)


# ---------------------------------------------------------------------------- paths


@dataclass(frozen=True)
class Paths:
    config_dir: Path
    data_dir: Path

    @property
    def credentials_file(self) -> Path:
        return self.config_dir / "credentials.toml"


def resolve_paths(environ: Mapping[str, str]) -> Paths:
    """Where settings and data live (reserved variables, XDG, then home)."""
    home = Path(environ.get("HOME") or Path.home())
    if environ.get("ARBITER_CONFIG_DIR"):
        config_dir = Path(environ["ARBITER_CONFIG_DIR"])
    else:
        xdg = environ.get("XDG_CONFIG_HOME") or str(home / ".config")
        config_dir = Path(xdg) / "arbiter"
    if environ.get("ARBITER_DATA_DIR"):
        data_dir = Path(environ["ARBITER_DATA_DIR"])
    else:
        xdg_data = environ.get("XDG_DATA_HOME") or str(home / ".local" / "share")
        data_dir = Path(xdg_data) / "arbiter"
    return Paths(config_dir=config_dir.expanduser(), data_dir=data_dir.expanduser())


# ---------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """The effective, validated configuration. Build it with ``load_settings``.

    ``values`` and ``sources`` hold the flat keys as the layers gave them (``config show``);
    code reads the typed sections below, which are built from ``values`` once, here.
    """

    values: Mapping[str, Any]
    sources: Mapping[str, str]
    env: str
    paths: Paths
    files: tuple[str, ...] = field(default=())
    token: str | None = field(default=None, repr=False)  # ARBITER_TOKEN
    profile: str = "default"  # ARBITER_PROFILE
    server: str | None = None  # ARBITER_SERVER: remote mode (SPEC §15)
    database: DatabaseSettings = field(init=False, repr=False, compare=False)
    registry: RegistrySettings = field(init=False, repr=False, compare=False)
    performance: PerformanceSettings = field(init=False, repr=False, compare=False)
    query: QuerySettings = field(init=False, repr=False, compare=False)
    routing: RoutingSettings = field(init=False, repr=False, compare=False)
    security: SecuritySettings = field(init=False, repr=False, compare=False)
    logging: LoggingSettings = field(init=False, repr=False, compare=False)
    breaker: BreakerSettings = field(init=False, repr=False, compare=False)
    resilience: ResilienceSettings = field(init=False, repr=False, compare=False)
    observability: ObservabilitySettings = field(init=False, repr=False, compare=False)
    serve: ServeSettings = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for item in fields(self):
            if not item.init:  # a section: one per top-level group of KEYS
                section = _section(SECTIONS[str(item.type)], self.values, item.name + ".")
                object.__setattr__(self, item.name, section)

    @property
    def database_url(self) -> str:
        url = self.database.url
        if not url:
            return f"sqlite:///{self.paths.data_dir / 'arbiter.db'}"
        return dburl.with_password(url, self.database.password)

    def display(self, name: str) -> Any:
        """A value as ``config show`` prints it: secrets masked, ``database.url`` the URL
        arbiter connects to (the SQLite file of an empty one, with database.password)."""
        value = self.values[name]
        key = KEYS_BY_NAME[name]
        if name == "database.url":
            return mask_url(self.database_url)
        if key.secret and value:
            return "***"
        return value

    def secret_values(self) -> list[str]:
        """Secret strings that must never appear in output (for redaction)."""
        found = [str(self.values[k.name]) for k in KEYS if k.secret and k.name != "database.url"]
        found += dburl.passwords(str(self.values["database.url"]))
        if self.token:
            found.append(self.token)
        return list(dict.fromkeys(s for s in found if s))


def load_settings(
    *,
    environ: Mapping[str, str] | None = None,
    env: str | None = None,
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Merge the layers, validate everything at once, and return frozen ``Settings``.

    Raises ``ConfigInvalid`` (exit 3) listing every problem.
    """
    environ = os.environ if environ is None else environ
    env_name = (env or environ.get("ARBITER_ENV") or "development").lower()
    paths = resolve_paths(environ)
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    _merge(merged, sources, _defaults(), "default")
    files: list[str] = []
    for label, path in (
        ("settings.toml", paths.config_dir / "settings.toml"),
        (".secrets.toml", paths.config_dir / ".secrets.toml"),
        ("--config", config_file),
    ):
        if path is None:
            continue
        if label == "--config" and not path.is_file():
            raise ConfigInvalid(f"config file {path} does not exist")
        if not path.is_file():
            continue
        files.append(str(path))
        document = _read_toml(path)
        _merge(merged, sources, document.get("default", {}), f"{label} [default]")
        _merge(merged, sources, document.get(env_name, {}), f"{label} [{env_name}]")
    from_environment, problems = _environment(environ)
    _merge(merged, sources, from_environment, "environment")
    _merge(merged, sources, _unflatten(overrides or {}), "flag")
    flat = _flatten(merged)
    problems += [_unknown(k, sources.get(k, "?")) for k in sorted(flat) if k not in KEYS_BY_NAME]
    if set(sources.values()) != {"default"}:
        # The packaged defaults alone are validated by the test suite; anything a user
        # supplied goes through every dynaconf validator.
        problems += _validate(merged)
    if problems:
        raise ConfigInvalid("invalid configuration: " + "; ".join(p.message for p in problems),
                            problems=[p.message for p in problems],
                            errors=[p._asdict() for p in problems])
    values = {k.name: flat[k.name] for k in KEYS}
    return Settings(values=values, sources=sources, env=env_name, paths=paths, files=tuple(files),
                    # Set but empty stays "": an explicitly empty token never falls back to a
                    # profile, and an empty profile name is refused (SPEC §4.1).
                    token=environ.get("ARBITER_TOKEN"),
                    profile=environ.get("ARBITER_PROFILE", "default"),
                    server=environ.get("ARBITER_SERVER"))


def _defaults() -> dict[str, Any]:
    return _unflatten({k.name: k.default for k in KEYS})


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigInvalid(f"cannot read {path}: {exc}") from None
    groups = {k.name.split(".", 1)[0] for k in KEYS}
    for section, body in document.items():
        if not isinstance(body, dict):
            raise ConfigInvalid(
                f"{path}: top-level key {section!r} must be an environment table such as "
                "[default] or [production]"
            )
        if section in groups:
            raise ConfigInvalid(
                f"{path}: [{section}] is a settings group, not an environment: write "
                f"[default.{section}] (or [<env>.{section}])"
            )
    return document


PLAIN = (str, int, float, bool, list, dict)


def _environment(environ: Mapping[str, str]) -> tuple[dict[str, Any], list[Problem]]:
    """``ARBITER_*`` variables parsed by dynaconf (TOML values, ``@int``-style casts)."""
    found: dict[str, Any] = {}
    problems: list[Problem] = []
    for name, raw in environ.items():
        if not name.startswith("ARBITER_") or name in RESERVED_ENV:
            continue
        if name.startswith(RESERVED_PREFIXES):
            continue
        _import_dynaconf()
        from dynaconf.utils.parse_conf import parse_conf_data

        dotted = name[len("ARBITER_"):].lower().replace("__", ".")
        try:
            value = parse_conf_data(raw, tomlfy=True, box_settings={})
        except Exception as exc:  # noqa: BLE001 - dynaconf's casts raise many kinds
            problems.append(Problem(dotted, "parse",
                                    f"{dotted}: cannot parse {name} ({type(exc).__name__})"))
            continue
        if not isinstance(value, PLAIN):  # lazy tokens such as @format, @jinja
            problems.append(Problem(dotted, "parse",
                                    f"{dotted}: {name} uses an unsupported dynaconf token"))
            continue
        found[dotted] = value
    return _unflatten(found), problems


def _import_dynaconf() -> None:
    """Import dynaconf without jinja2, which it loads only for ``@jinja`` values.

    arbiter refuses those tokens (``_environment``), and jinja2 (installed with the soak
    extra) was about 40 % of dynaconf's import, paid by every command that sees one
    ``ARBITER_*`` variable or a settings file. A later ``import jinja2`` works as usual.
    """
    if "dynaconf" in sys.modules or "jinja2" in sys.modules:
        return
    sys.modules["jinja2"] = None  # type: ignore[assignment]  # `import jinja2` fails here
    try:
        import dynaconf  # noqa: F401
    finally:
        del sys.modules["jinja2"]


def _unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = tree
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigInvalid(f"{dotted}: {part} is a value, not a table")
        node[leaf] = value
    return tree


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and dotted not in KEYS_BY_NAME:
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _merge(
    target: dict[str, Any], sources: dict[str, str], layer: Mapping[str, Any], label: str,
    prefix: str = "",
) -> None:
    """Deep-merge ``layer`` into ``target``: tables merge, everything else replaces."""
    for key, value in layer.items():
        if key == "dynaconf_merge":
            continue
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and dotted not in KEYS_BY_NAME:
            existing = target.get(key)
            node = existing if isinstance(existing, dict) else {}
            target[key] = node
            _merge(node, sources, value, label, dotted + ".")
        else:
            target[key] = value
            sources[dotted] = label


# ---------------------------------------------------------------------------- validation


class Problem(NamedTuple):
    """One thing wrong with the configuration: the key, the rule it breaks, one line."""

    field: str
    rule: str
    message: str


def _unknown(name: str, source: str) -> Problem:
    """An unknown key, with the closest known one when there is one."""
    close = difflib.get_close_matches(name, KEYS_BY_NAME, n=1, cutoff=0.75)
    hint = f"; did you mean `{close[0]}`" if close else ""
    if close and source == "environment":
        hint += f" ({KEYS_BY_NAME[close[0]].env_var})"
    hint += "?" if close else ""
    return Problem(name, "unknown", f"{name}: unknown setting (from {source}){hint}")


def _validate(tree: dict[str, Any]) -> list[Problem]:
    """Run every dynaconf validator and collect every problem.

    The validators check a flat mapping of the merged values rather than a ``Dynaconf``
    object: storing into one would evaluate ``@`` tokens a second time (a password such as
    ``@format {x}`` would crash), so this checks exactly the values arbiter will use.
    """
    _import_dynaconf()
    from dynaconf import ValidationError

    flat: dict[str, Any] = _flatten(tree)
    for group in WEIGHT_GROUPS:
        node: Any = tree
        for part in group.split("."):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        flat[group] = node
    problems: list[Problem] = []
    for rule, validator in _validators():
        try:
            validator.validate(flat)
        except ValidationError as exc:
            name = validator.names[0]
            problems += [Problem(name, "required" if message.endswith(MISSING) else rule, message)
                         for _validator, message in exc.details] or [Problem(name, rule, str(exc))]
    url = flat.get("database.url")
    reason = dburl.problem(url) if isinstance(url, str) and url else None
    if reason is not None:  # why, in one line that never echoes the URL or its password
        problems.append(Problem("database.url", "url", f"database.url: {reason}"))
    return problems


MISSING = "has no value (a value stands where its table belongs)"
RULES = {"int": "number", "float": "number", "bool": "type", "str": "type", "choice": "allowed"}
"""The ``rule`` of a refused value, by kind of key (duration, size and list are their own)."""


def _validators() -> list[tuple[str, Any]]:
    """Every dynaconf validator, each with the ``rule`` its refusal reports."""
    from dynaconf import Validator

    validators = [pair for key in KEYS for pair in _validators_for(Validator, key)]
    for group in WEIGHT_GROUPS:
        names = [k.name for k in KEYS if k.name.startswith(group + ".")]
        validators.append(("weights", Validator(
            group,
            condition=lambda table, names=names: _weights_sum_to_one(table, names),
            messages={"condition": f"{group}: the weights must be numbers that sum to 1 "
                      "(got {value})"},
        )))
    return validators


def _validators_for(validator_cls: Any, key: Key) -> list[tuple[str, Any]]:
    """A key's validator; a duration or size key has two: its grammar, then its range."""
    checks = {
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool) and _in_range(v, key),
        "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool)
        and math.isfinite(v) and _in_range(v, key),
        "bool": lambda v: isinstance(v, bool),
        "str": lambda v: isinstance(v, str) and (
            key.name != "security.audit_key" or v == "" or len(v) >= AUDIT_KEY_MIN),
        "choice": lambda v: v in key.choices,
        "list": lambda v: _valid_list(v, key),
    }
    # A URL or a secret is never echoed: it can hold a password.
    got = "" if key.secret or key.name == "database.url" else " (got {value!r})"
    missing = f"{key.name}: {MISSING}"
    if key.kind not in UNITS:
        return [(RULES.get(key.kind, key.kind), validator_cls(
            key.name, must_exist=True, condition=checks[key.kind],
            messages={"condition": f"{key.name}: must be {_describe(key)}{got}",
                      "must_exist_true": missing}))]
    parse, show = UNITS[key.kind]
    low, high = show(key.minimum or 0), show(key.maximum or 0)
    return [
        (key.kind, validator_cls(
            key.name, must_exist=True, condition=lambda v: _parses(parse, v),
            messages={"condition": f"{key.name}: must be a {key.kind} such as {key.default}: "
                      f"{GRAMMAR[key.kind]}{got}", "must_exist_true": missing})),
        ("range", validator_cls(
            key.name,
            condition=lambda v: not _parses(parse, v) or _in_range(parse(v), key),
            messages={"condition": f"{key.name}: must be from {low} to {high}{got}"})),
    ]


UNITS: dict[str, tuple[Any, Any]] = {
    "duration": (parse_duration, format_duration),
    "size": (parse_size, lambda count: format_size(int(count))),
}
"""The kinds of key written in the grammar of ``arbiter_cli.units``: parse, and show a bound."""
GRAMMAR = {
    "duration": "units w, d, h, m, s, ms, largest first (2d12h, 1m30s, 250ms); "
                "a plain number is seconds",
    "size": "units B, KB, MB, GB, TB (powers of 1000; K, M, G, T alike) or KiB, MiB, GiB, TiB "
            "(powers of 1024); a plain number is bytes",
}
"""The grammar of a kind of key, with examples, as its error states it."""


def _parses(parse: Any, value: Any) -> bool:
    try:
        parse(value)
    except ValueError:
        return False
    return True


def _describe(key: Key) -> str:
    if key.kind == "choice":
        return "one of " + ", ".join(key.choices)
    if key.kind in UNITS:
        _parse, show = UNITS[key.kind]
        return f"a {key.kind} from {show(key.minimum or 0)} to {show(key.maximum or 0)}"
    if key.name == "security.audit_key":
        return f"empty, or a secret of at least {AUDIT_KEY_MIN} characters"
    if key.kind == "list":
        return f"a list of 1 to {key.maximum:g} unique non-empty strings"
    if key.kind in ("int", "float") and key.minimum is not None:
        return f"{'an integer' if key.kind == 'int' else 'a number'} from {key.minimum:g} " \
            f"to {key.maximum:g}"
    if key.name == "database.url":
        return dburl.SHAPE
    return {"bool": "true or false", "str": "a string"}.get(key.kind, key.kind)


def _in_range(value: float, key: Key) -> bool:
    low = -math.inf if key.minimum is None else key.minimum
    high = math.inf if key.maximum is None else key.maximum
    return low <= value <= high


def _valid_list(value: Any, key: Key) -> bool:
    if not isinstance(value, list) or not _in_range(len(value), key):
        return False
    if not all(isinstance(item, str) and item.strip() for item in value):
        return False
    lowered = [item.lower() for item in value]
    if len(set(lowered)) != len(lowered):
        return False
    if key.name == "registry.task_types":
        return all(SLUG_RE.fullmatch(item) for item in value)
    return True


def _weights_sum_to_one(table: Any, names: list[str]) -> bool:
    if not isinstance(table, Mapping):
        return False
    values = [table.get(name.rsplit(".", 1)[1]) for name in names]
    numbers = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return len(numbers) == len(values) and abs(sum(numbers) - 1.0) <= 1e-6
