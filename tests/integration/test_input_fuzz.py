"""Every input model under generated garbage (SPEC §4 input validation).

Part 1, pure parsing: at least 1 000 generated inputs per model, mixing valid field values with
NUL, control and bidi characters, emoji, lone surrogates, huge and non-finite numbers and SQL
injection strings. Each input is either accepted, and then satisfies the model's rules, or
rejected with ``InvalidInput`` (exit 2) or ``Unauthenticated`` (exit 6); never anything else.

Part 2, storage: injection strings pushed through every accepted text field via the services,
on SQLite and PostgreSQL. The set of tables never changes, exactly the documented rows change,
and what is read back is byte for byte what was written.

Three input classes that once crashed are pinned by dedicated regression tests below rather
than generated: integers of more than 4 300 digits in JSON text, lone surrogates, and labels
whose lower case outgrows 64 characters.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from arbiter_cli.config import DEFAULT_LANGUAGES, DEFAULT_TASK_TYPES
from arbiter_cli.domain import validation as v
from arbiter_cli.domain.agents import Patch, Registration, RegistryPolicy, TaskResult
from arbiter_cli.domain.query import Query
from arbiter_cli.domain.routing import Outcome, Task
from arbiter_cli.domain.security import TOKEN_RE, parse_token
from arbiter_cli.errors import ArbiterError, InvalidInput, Unauthenticated
from tests.helpers import postgres_url

POLICY = RegistryPolicy(task_types=tuple(DEFAULT_TASK_TYPES), languages=tuple(DEFAULT_LANGUAGES))
FUZZ = settings(max_examples=1000, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

SQL_INJECTION = [
    "'; DROP TABLE agents;--", "' OR '1'='1", "' OR 1=1 --", '" OR ""="', "admin'--",
    "1; DELETE FROM tokens", "Robert'); DROP TABLE audit_events;--",
    "' UNION SELECT secret_hash, id FROM tokens --", "%' AND 1=0 UNION SELECT 1 --",
    "x'); UPDATE agents SET capacity = 1000; --", "\\'; TRUNCATE decisions; --",
    "$$; DROP SCHEMA public CASCADE; $$", "'||pg_sleep(5)||'", "*/ DROP TABLE arms /*",
    "1' AND (SELECT count(*) FROM tenants) > 0 --",
]
HOSTILE = [
    "", " ", "\t", "\n", "\x00", "a\x00b", "\x1b[31mred", "\r\n", "\u202e", "\u202egnp.exe",
    "\u200f\u200e", "\u2066isolate\u2069", "\ufeff", "💥", "👩‍💻", "🏳️‍🌈" * 10, "𝕏𝕐ℤ",
    "İ" * 64, "ß" * 200, "\ud800", "x\udfffy", "NaN", "nan", "Infinity", "-inf", "1e309",
    "-0", "0x10", "1_000", "١٢٣", "9" * 30, "9" * 400, "x" * 201, "x" * 65,
    "${jndi:ldap://x}", "{{7*7}}", "../../etc/passwd", "<script>alert(1)</script>",
]
NASTY_TEXT = st.one_of(st.sampled_from(SQL_INJECTION + HOSTILE),
                       st.text(max_size=80),
                       st.text(alphabet=st.characters(codec="utf-8"), max_size=300))
NUMBERS = st.one_of(
    st.integers(), st.integers(min_value=-(10**4000), max_value=10**4000),
    st.sampled_from([0, 1, -1, 2**31, 2**63 - 1, 2**63, -(2**63), 2**64, 10**19, 10**20]),
    st.floats(), st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324]),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, NASTY_TEXT)
JSONISH = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(NASTY_TEXT, inner, max_size=4)), max_leaves=12)


GARBAGE = st.one_of(SCALARS, JSONISH)


def field(valid: st.SearchStrategy[Any], *, absent: bool = True) -> st.SearchStrategy[Any]:
    """The field's own shape 7 times in 10, garbage 2 (or 3), absent (None) 1.

    Drawn by hand: ``st.one_of`` flattens nested ``one_of``s, so garbage would swamp it.
    """
    @st.composite
    def build(draw: st.DrawFn) -> Any:
        roll = draw(st.integers(0, 9))
        if roll == 0:
            return None if absent else draw(GARBAGE)
        return draw(GARBAGE) if roll <= 2 else draw(valid)

    return build()


def model(fields: dict[str, st.SearchStrategy[Any]], required: tuple[str, ...] = ()
          ) -> st.SearchStrategy[dict[str, Any]]:
    """A mostly well-formed input with 0 to 2 fields (or unknown keys) replaced by garbage."""
    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        raw = {name: draw(strategy) for name, strategy in fields.items()
               if name in required or draw(st.booleans())}
        names = sorted(fields) + ["owner", "version", "__proto__", "'; DROP TABLE agents;--"]
        for name in draw(st.lists(st.sampled_from(names), max_size=2, unique=True)):
            raw[name] = draw(GARBAGE)
        return raw

    return build()


JSON_SAFE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
              st.floats(allow_nan=False, allow_infinity=False), NASTY_TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(NASTY_TEXT, inner, max_size=3)), max_leaves=8)
TEXT = st.one_of(st.text(min_size=1, max_size=200), st.sampled_from(SQL_INJECTION + HOSTILE))
AGENT_IDS = st.from_regex(v.AGENT_ID_RE, fullmatch=True)
TASK_IDS = st.from_regex(v.TASK_ID_RE, fullmatch=True)
TASK_TYPES = st.lists(st.sampled_from(DEFAULT_TASK_TYPES + ["CODE-REVIEW"]), min_size=1,
                      max_size=3)
LANGUAGES = st.lists(st.sampled_from(DEFAULT_LANGUAGES + ["python", "rust"]), max_size=3)
LABELS = st.lists(st.one_of(st.text(min_size=1, max_size=64),
                            st.sampled_from(SQL_INJECTION + HOSTILE)), max_size=3)
FRACTIONS = st.one_of(st.floats(0, 1), st.floats(0, 1).map(str),
                      st.sampled_from([0, 1, "0", "1", "0.5", " 0.25 "]))
METADATA = st.one_of(st.dictionaries(NASTY_TEXT, JSON_SAFE, max_size=4),
                     st.dictionaries(NASTY_TEXT, JSON_SAFE, max_size=4).map(json.dumps),
                     st.dictionaries(NASTY_TEXT, JSONISH, max_size=3))
PERFORMANCE = model({"success_rate": FRACTIONS, "average_quality": FRACTIONS,
                     "average_latency_ms": st.floats(0, 1e6),
                     "task_count": st.integers(0, 10**6)})

REGISTRATIONS = model({
    "id": AGENT_IDS, "name": TEXT,
    "model_family": st.from_regex(v.MODEL_FAMILY_RE, fullmatch=True),
    "task_types": TASK_TYPES, "languages": LANGUAGES, "specializations": LABELS,
    "capacity": st.integers(1, 1000), "metadata": METADATA, "performance": PERFORMANCE},
    required=("id", "name", "model_family", "task_types"))
PATCHES = model({
    "name": TEXT, "task_types": TASK_TYPES, "languages": LANGUAGES, "specializations": LABELS,
    "capacity": st.integers(1, 1000), "metadata": METADATA,
    "active_tasks": st.integers(0, 10**6), "expect_version": st.integers(1, 99)})
QUERIES = model({
    "task_type": st.sampled_from(DEFAULT_TASK_TYPES + ["Code-Review"]), "languages": LANGUAGES,
    "specializations": LABELS, "prefer": LABELS, "max_utilization": FRACTIONS,
    "min_success_rate": FRACTIONS,
    "status": st.sampled_from(["available", "draining", "offline", "maintenance"]),
    "limit": st.integers(0, 100)}, required=("task_type",))
TASKS = model({
    "task_type": st.sampled_from(DEFAULT_TASK_TYPES), "task_id": TASK_IDS,
    "languages": LANGUAGES, "specializations": LABELS, "prefer": LABELS,
    "prefer_specializations": LABELS, "priority": st.integers(1, 10), "metadata": METADATA},
    required=("task_type",))


def rejected_cleanly(exc: ArbiterError) -> None:
    event(f"rejected: {type(exc).__name__}")
    assert isinstance(exc, InvalidInput | Unauthenticated), repr(exc)
    assert exc.exit_code in (2, 6)
    if isinstance(exc, InvalidInput):
        assert exc.field is not None and exc.rule, repr(exc)
    str(exc.message)  # the message renders


def clean_text(value: str, low: int, high: int) -> None:
    assert isinstance(value, str) and low <= len(value) <= high
    assert not any(ch in value for ch in "\x00\n\r\t\x1b")


def clean_metadata(value: Any) -> None:
    encoded = json.dumps(value, allow_nan=False)
    assert "\\u0000" not in encoded and len(encoded.encode()) <= v.METADATA_MAX_BYTES


def check_fraction(value: float) -> None:
    assert isinstance(value, float) and 0.0 <= value <= 1.0


# ---------------------------------------------------------------------------- part 1: parsing


@FUZZ
@given(REGISTRATIONS)
def test_registration_is_accepted_valid_or_rejected_cleanly(raw: dict[str, Any]):
    try:
        spec = Registration.parse(raw, POLICY)
    except ArbiterError as exc:
        rejected_cleanly(exc)
        return
    event("accepted")
    assert v.AGENT_ID_RE.fullmatch(spec.id) and v.MODEL_FAMILY_RE.fullmatch(spec.model_family)
    clean_text(spec.name, 1, 200)
    assert spec.task_types and set(spec.task_types) <= set(DEFAULT_TASK_TYPES)
    assert set(spec.languages) <= set(DEFAULT_LANGUAGES)
    for label in spec.specializations:
        clean_text(label, 1, 64)
    assert 1 <= spec.capacity <= 1000
    clean_metadata(spec.metadata)
    check_fraction(spec.performance.success_rate)
    check_fraction(spec.performance.average_quality)
    assert math.isfinite(spec.performance.average_latency_ms)
    assert spec.performance.average_latency_ms >= 0


@FUZZ
@given(PATCHES)
def test_patch_is_accepted_valid_or_rejected_cleanly(raw: dict[str, Any]):
    try:
        patch = Patch.parse(raw, POLICY)
    except ArbiterError as exc:
        rejected_cleanly(exc)
        return
    event("accepted")
    if patch.name is not None:
        clean_text(patch.name, 1, 200)
    if patch.task_types is not None:
        assert patch.task_types and set(patch.task_types) <= set(DEFAULT_TASK_TYPES)
    if patch.capacity is not None:
        assert 1 <= patch.capacity <= 1000
    if patch.metadata is not None:
        clean_metadata(patch.metadata)
    if patch.active_tasks is not None:
        assert 0 <= patch.active_tasks <= 1_000_000
    assert set(patch.changes()) <= {"name", "task_types", "languages", "specializations",
                                    "capacity", "metadata", "active_tasks"}


@FUZZ
@given(QUERIES)
def test_query_is_accepted_valid_or_rejected_cleanly(raw: dict[str, Any]):
    try:
        query = Query.parse(raw, POLICY)
    except ArbiterError as exc:
        rejected_cleanly(exc)
        return
    event("accepted")
    assert query.task_type in DEFAULT_TASK_TYPES
    check_fraction(query.max_utilization)
    check_fraction(query.min_success_rate)
    assert 0 <= query.limit <= 1_000_000
    assert query.status in (None, "available", "draining", "offline", "maintenance")
    for label in query.specializations + query.prefer:
        clean_text(label, 1, 64)


@FUZZ
@given(TASKS)
def test_task_is_accepted_valid_or_rejected_cleanly(raw: dict[str, Any]):
    try:
        task = Task.parse(raw, POLICY, new_task_id="task-generated")
    except ArbiterError as exc:
        rejected_cleanly(exc)
        return
    event("accepted")
    assert v.TASK_ID_RE.fullmatch(task.task_id)
    assert task.task_type in DEFAULT_TASK_TYPES
    assert 1 <= task.priority <= 10
    clean_metadata(task.metadata)


@FUZZ
@given(success=field(st.booleans(), absent=False), quality=field(FRACTIONS),
       latency_ms=field(st.floats(0, 1e7)), tokens=field(st.integers(0, 10**9)),
       error=field(st.one_of(TEXT, st.text(max_size=2000))))
def test_outcome_is_accepted_valid_or_rejected_cleanly(success: Any, quality: Any,
                                                       latency_ms: Any, tokens: Any, error: Any):
    try:
        outcome = Outcome.parse(success=success, quality=quality, latency_ms=latency_ms,
                                tokens=tokens, error=error)
    except ArbiterError as exc:
        rejected_cleanly(exc)
        return
    event("accepted")
    assert isinstance(outcome.success, bool)
    check_fraction(outcome.quality)
    assert outcome.latency_ms is None or (math.isfinite(outcome.latency_ms)
                                          and outcome.latency_ms >= 0)
    assert outcome.tokens is None or 0 <= outcome.tokens <= 2**62
    if outcome.error is not None:
        clean_text(outcome.error, 1, 2000)
    json.dumps(outcome.to_dict(), allow_nan=False)


@FUZZ
@given(success=st.booleans(), quality=field(FRACTIONS), latency_ms=field(st.floats(0, 1e7)),
       task_type=field(st.sampled_from(DEFAULT_TASK_TYPES + ["TESTING"])))
def test_task_result_is_accepted_valid_or_rejected_cleanly(success: bool, quality: Any,
                                                           latency_ms: Any, task_type: Any):
    try:
        result = TaskResult.parse(success=success, quality=quality, latency_ms=latency_ms,
                                  task_type=task_type, policy=POLICY)
    except ArbiterError as exc:
        rejected_cleanly(exc)
        return
    event("accepted")
    check_fraction(result.quality)
    assert result.latency_ms is None or (math.isfinite(result.latency_ms)
                                         and result.latency_ms >= 0)
    assert result.task_type is None or result.task_type in DEFAULT_TASK_TYPES


TOKENS = st.one_of(
    SCALARS,
    st.builds(lambda i, s: f"arb_{i}_{s}", st.from_regex(r"[a-z0-9]{12}", fullmatch=True),
              st.from_regex(r"[A-Za-z0-9_-]{43,60}", fullmatch=True)),
    st.builds(lambda i, s, pad: f"{pad}arb_{i}_{s}{pad}", st.text(max_size=14),
              st.one_of(NASTY_TEXT, st.text(min_size=40, max_size=50)), NASTY_TEXT),
)


@FUZZ
@given(TOKENS)
def test_parse_token_is_accepted_valid_or_rejected_cleanly(token: Any):
    try:
        token_id, secret = parse_token(token)
    except ArbiterError as exc:
        assert isinstance(exc, Unauthenticated) and exc.exit_code == 6
        return
    event("accepted")
    assert re.fullmatch(r"[a-z0-9]{12}", token_id) and re.fullmatch(r"[A-Za-z0-9_-]{43,}",
                                                                    secret)
    assert TOKEN_RE.fullmatch(f"arb_{token_id}_{secret}")


JSON_TEXTS = st.one_of(
    JSONISH.map(json.dumps),
    st.lists(JSONISH.map(json.dumps), min_size=1, max_size=4).map("\n".join),
    st.lists(REGISTRATIONS, min_size=1, max_size=3).map(json.dumps),
    st.lists(REGISTRATIONS.map(json.dumps), min_size=1, max_size=3).map("\n".join),
    NASTY_TEXT,
    st.sampled_from(["[", "{", "[]", "{}", "null", "[1, 2]", '{"a": NaN}', '{"a": -Infinity}',
                     "[" * 5000 + "]" * 5000, '{"a":' * 3000 + "1" + "}" * 3000,
                     '{"a": 1}\n[2]', '{"a": 1}\n\n{"b": 2}\n', "\ufeff{}", "{}\x00"]),
)
FILE_BYTES = st.one_of(JSON_TEXTS.map(lambda text: text.encode("utf-8", "surrogatepass")),
                       st.binary(max_size=200),
                       st.sampled_from([b"\xff\xfe{}", b"{\"a\": \"\xc3\x28\"}", b"\x00" * 10]))


@pytest.fixture(scope="module")
def scratch_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="arbiter-fuzz-") as folder:
        yield Path(folder)


@FUZZ
@given(content=FILE_BYTES)
def test_read_documents_accepts_objects_or_rejects_cleanly(scratch_dir: Path, content: bytes):
    from arbiter_cli.cli.inputs import read_documents

    path = scratch_dir / "input.json"
    path.write_bytes(content)
    try:
        documents = read_documents(str(path), max_bytes=2**26)
    except ArbiterError as exc:
        rejected_cleanly(exc)
        return
    event("accepted")
    assert documents and all(isinstance(document, dict) for document in documents)


def test_read_documents_rejects_a_missing_file(scratch_dir: Path):
    from arbiter_cli.cli.inputs import read_documents

    with pytest.raises(InvalidInput) as caught:
        read_documents(str(scratch_dir / "absent.json"), max_bytes=2**26)
    assert caught.value.rule == "exists"


HUGE = "1" + "0" * 5000  # more digits than Python's int/str conversion limit (4 300)


def test_read_documents_rejects_an_integer_beyond_the_digit_limit(scratch_dir: Path):
    from arbiter_cli.cli.inputs import read_documents

    path = scratch_dir / "huge.json"
    path.write_text('{"id": "a", "capacity": ' + HUGE + "}")
    with pytest.raises(InvalidInput):
        read_documents(str(path), max_bytes=2**26)


def test_metadata_text_rejects_an_integer_beyond_the_digit_limit():
    with pytest.raises(InvalidInput):
        v.metadata('{"n": ' + HUGE + "}")


# ---------------------------------------------------------------------------- part 2: storage


def _isolated_settings(folder: Path) -> Any:
    from arbiter_cli.config import load_settings

    return load_settings(environ={"HOME": str(folder), "ARBITER_CONFIG_DIR": str(folder / "c"),
                                  "ARBITER_DATA_DIR": str(folder / "d")})


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres",
                                                               marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, scratch_dir: Path) -> Iterator[Any]:
    """A migrated scratch store per backend, shared by every example of the module."""
    from arbiter_cli.bootstrap import scratch_app

    url = postgres_url() if request.param == "postgres" else None
    settings = _isolated_settings(scratch_dir / request.param)
    with scratch_app(settings, request.param, purpose="fuzz", database_url=url) as (app, _):
        yield app


def table_names(app: Any) -> set[str]:
    from sqlalchemy import inspect

    return set(inspect(app.engine).get_table_names())


def row_counts(app: Any) -> dict[str, int]:
    from sqlalchemy import text

    with app.engine.connect() as conn:
        return {name: conn.execute(text(f'SELECT count(*) FROM "{name}"')).scalar_one()
                for name in sorted(table_names(app))}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {name: after[name] - before[name] for name in before if after[name] != before[name]}


def storable(text: str) -> bool:
    """Inputs that reach the database without hitting a known bug (see the xfails)."""
    return not any(0xD800 <= ord(ch) <= 0xDFFF for ch in text) and len(text.lower()) == len(text)


INJECTED = st.one_of(st.sampled_from(SQL_INJECTION), st.sampled_from(SQL_INJECTION).map(
    lambda s: s + " 💥\u202e"), st.text(min_size=1, max_size=60)).filter(storable)
INJECTED_LABEL = INJECTED.filter(lambda s: len(s) <= 64)
INJECTED_TASK_ID = st.sampled_from(["1:--", "x.--DROP", "a--b", "0:0", "..", "-", "--",
                                    "OR-1", "select.1", "1.0E9", "a:b:c"]) | TASK_IDS
STORE_SETTINGS = settings(max_examples=40, derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.filter_too_much])


class Counter:
    value = 0


def _next_id(prefix: str) -> str:
    Counter.value += 1
    return f"{prefix}-{Counter.value}"


@STORE_SETTINGS
@given(name=INJECTED, label=INJECTED_LABEL, key=INJECTED, value=INJECTED, reason=INJECTED,
       token_name=INJECTED, task_id=INJECTED_TASK_ID, error=INJECTED)
def test_injection_strings_change_only_the_documented_rows(
        store: Any, name: str, label: str, key: str, value: str, reason: str, token_name: str,
        task_id: str, error: str):
    """Register, update, status, token, route and outcome: exact row deltas, exact read-back."""
    from arbiter_cli.domain.principal import Principal

    app, admin = store, Principal.local_admin()
    assume("\x00" not in name + label + key + value + reason + token_name + error)
    tables = table_names(app)
    pin = _next_id("fuzz")  # the agent's id and a label only it has, so routing picks it
    assume(label.lower() != pin)

    def step(expected: dict[str, int], action: Any) -> Any:
        before = row_counts(app)
        try:
            outcome = action()
        except InvalidInput:
            assert row_counts(app) == before
            return None
        changed = delta(before, row_counts(app))
        assert changed == expected, (changed, expected)
        assert table_names(app) == tables
        return outcome

    created = step({"agents": 1, "agent_task_types": 1, "agent_specializations": 2,
                    "audit_events": 1},
                   lambda: app.agents.register(admin, [{
                       "id": pin, "name": name, "model_family": "x",
                       "task_types": ["testing"], "specializations": [label, pin],
                       "metadata": {key: value}}]))
    if created is None:
        event("registration rejected")
        return
    event("registered")
    shown = app.agents.show(admin, pin)
    assert shown.name == name and dict(shown.metadata) == {key: value}
    assert set(shown.specializations) == {label, pin}
    if step({"audit_events": 1}, lambda: app.agents.update(admin, pin, {"name": value})):
        assert app.agents.show(admin, pin).name == value
    if step({"audit_events": 1}, lambda: app.agents.set_status(admin, pin, "available",
                                                               reason)):
        assert app.agents.show(admin, pin).status_reason == reason
    issued = step({"tokens": 1, "audit_events": 1},
                  lambda: app.security.issue(admin, role="viewer", name=token_name,
                                             expires_in_s=None))
    if issued is not None:
        assert issued.record.name == token_name
        assert [t.name for t in app.security.tokens(admin, limit=0)[0]
                if t.id == issued.record.id] == [token_name]
    routed = step({"decisions": 1, "audit_events": 1}, lambda: app.routing.route(
        admin, {"task_type": "testing", "task_id": f"{task_id[:100]}-{pin}",
                "specializations": [pin], "metadata": {key: value}}))
    assert routed is not None and routed.decision.agent_id == pin
    decision_id = routed.decision.decision_id
    assert app.routing.explain(admin, decision_id).metadata == {key: value}
    try:
        result = Outcome.parse(success=False, error=error)
    except InvalidInput:
        return
    event("outcome recorded")
    step({"arms": 1, "audit_events": 1},
         lambda: app.routing.outcome(admin, result, decision_id=decision_id))
    assert app.routing.explain(admin, decision_id).outcome["error"] == error


@STORE_SETTINGS
@given(hostile=INJECTED)
def test_injection_strings_in_filters_read_nothing_and_write_nothing(store: Any, hostile: str):
    """Filters and lookups treat hostile text as data: no rows read wrongly, none written."""
    from arbiter_cli.domain.principal import Principal
    from arbiter_cli.domain.query import Query
    from arbiter_cli.errors import NotFound

    assume("\x00" not in hostile)
    app, admin = store, Principal.local_admin()
    before, tables = row_counts(app), table_names(app)
    # A filter the stored data can never match is refused as input (exit 2), or reads nothing.
    for listing in (lambda: app.security.events(admin, action=hostile, actor=hostile),
                    lambda: app.routing.history(admin, agent_id=hostile, task_type=hostile)):
        with contextlib.suppress(InvalidInput):
            assert listing()[0] == []
    raw = {"task_type": "testing", "specializations": [hostile], "limit": 0}
    try:
        Query.parse(raw, app.agents.policy)
    except InvalidInput:
        pass
    else:
        for item in app.agents.query(admin, raw):
            labels = {label.lower() for label in item["agent"]["specializations"]}
            assert hostile.lower() in labels, item
    lookups = [lambda: app.agents.show(admin, hostile),
               lambda: app.agents.heartbeat(admin, hostile),
               lambda: app.routing.explain(admin, hostile),
               lambda: app.security.revoke(admin, hostile)]
    if hostile not in ("available", "draining", "offline", "maintenance"):
        lookups.append(lambda: app.agents.list(admin, status=hostile))
    if not v.SLUG_RE.fullmatch(hostile):
        lookups.append(lambda: app.security.create_tenant(hostile))
    misses = 0  # a well-formed global id that resolves nowhere is audited (SPEC §4.1)
    for attempt in lookups:
        with pytest.raises((InvalidInput, NotFound)) as caught:
            attempt()
        misses += isinstance(caught.value, NotFound) and attempt in lookups[2:4]
    after = row_counts(app)
    audited = after.pop("audit_events") - before.pop("audit_events")
    assert after == before and table_names(app) == tables
    assert audited == misses
    for logged in app.security.events(admin, limit=audited)[0] if audited else []:
        assert (logged.result, logged.details, logged.target) == (
            "denied", {"reason": "not found"}, hostile)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres",
                                                            marks=pytest.mark.postgres)])
def test_lone_surrogates_are_rejected_as_invalid_input(backend: str, scratch_dir: Path):
    from arbiter_cli.bootstrap import scratch_app
    from arbiter_cli.domain.principal import Principal

    url = postgres_url() if backend == "postgres" else None
    settings = _isolated_settings(scratch_dir / f"surrogate-{backend}")
    with scratch_app(settings, backend, purpose="fuzz", database_url=url) as (app, _):
        raw = {"id": "s-1", "name": "n\ud800", "model_family": "x", "task_types": ["testing"],
               "metadata": {"k": "\udc00"}}
        with pytest.raises(InvalidInput):
            app.agents.register(Principal.local_admin(), [raw])


@pytest.mark.postgres
def test_a_label_whose_lower_case_outgrows_64_characters_is_rejected(scratch_dir: Path):
    from arbiter_cli.bootstrap import scratch_app
    from arbiter_cli.domain.principal import Principal

    settings = _isolated_settings(scratch_dir / "label-postgres")
    with scratch_app(settings, "postgres", purpose="fuzz", database_url=postgres_url()) as (
            app, _):
        raw = {"id": "l-1", "name": "n", "model_family": "x", "task_types": ["testing"],
               "specializations": ["İ" * 64]}
        try:
            app.agents.register(Principal.local_admin(), [raw])
        except InvalidInput:
            return
        assert app.agents.show(Principal.local_admin(), "l-1").specializations == ("İ" * 64,)
