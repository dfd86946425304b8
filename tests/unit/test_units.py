"""The one grammar of durations and sizes (SPEC §16), in ``arbiter_cli.units``.

Flags and settings parse through the same two functions, so each example of the SPEC is
checked here once; tests/cli/test_grammar.py checks that every flag and setting uses them and
that a refusal is one line with an example.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arbiter_cli.config import KEYS, load_settings
from arbiter_cli.errors import ConfigInvalid
from arbiter_cli.units import (
    MAX_DURATION_S,
    MAX_SIZE_BYTES,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)

MIB = 2**20


@pytest.mark.parametrize(("text", "seconds"), [
    # SPEC §16's examples
    ("500ms", 0.5), ("90s", 90.0), ("1h30m", 5400.0), ("2d", 172_800.0), ("1w", 604_800.0),
    # a plain number is seconds, fractions anywhere
    ("90", 90.0), ("0.5s", 0.5), ("0.5", 0.5), ("1.5h", 5400.0), ("0", 0.0),
    # every unit, largest first, each once
    ("1w2d3h4m5s6ms", 788_645.006), ("2d12h", 216_000.0), ("1m30s", 90.0), ("10ms", 0.01),
    ("1s500ms", 1.5), (" 7s ", 7.0), ("36500d", float(MAX_DURATION_S)),
])
def test_every_form_of_the_duration_grammar_parses_to_seconds(text: str, seconds: float) -> None:
    result = parse_duration(text)
    assert result == pytest.approx(seconds, abs=1e-9)
    assert type(result) is float


@pytest.mark.parametrize(("value", "seconds"), [(90, 90.0), (0.25, 0.25), (0, 0.0)])
def test_a_toml_number_is_a_duration_in_seconds(value: float, seconds: float) -> None:
    """``reset_timeout = 90`` in settings.toml, or ARBITER_…=90 (dynaconf reads an integer)."""
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", [
    "", "h", "5x", "5S", "1H", "5 s", "1h 30m", "-5s", "+5s", "30m1h", "1h1h", "1h30", "1:30",
    "1e3", "1e3s", ".5s", "1.", "nan", "inf", "1M", "1y", "1mo", "2 weeks", "36501d",
    "1" * 5000 + "s", "1\ns", True, -1, float("nan"), float("inf"), None,
])
def test_anything_else_is_refused_with_one_line_that_shows_an_example(value: object) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(value)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 200
    assert "1h30m" in message or "100 years" in message


@pytest.mark.parametrize(("text", "count"), [
    # SPEC §16's examples: M and MB are SI (10^6), MiB is IEC (2^20)
    ("512M", 512 * 10**6), ("512MiB", 512 * MIB), ("512MB", 512 * 10**6), ("1G", 10**9),
    ("1TiB", 2**40),
    # case, one space, fractions that come out whole, a plain number of bytes
    ("64mib", 64 * MIB), ("512 MiB", 512 * MIB), ("1.5GiB", 3 * 2**29), ("1.5KB", 1500),
    ("1024", 1024), ("1B", 1), ("0B", 0), ("1K", 1000), ("2KiB", 2048), ("1T", 10**12),
    ("1TB", 10**12), ("1GiB", 2**30), ("1GB", 10**9), ("1024TiB", MAX_SIZE_BYTES),
])
def test_every_form_of_the_size_grammar_parses_to_bytes(text: str, count: int) -> None:
    assert parse_size(text) == count


@pytest.mark.parametrize("value", [
    "", "MiB", "-1MiB", "1e3MB", "12XB", "512Mi", "nanGiB", "1.5B", "1025TiB", "1 000MB",
    "512  MiB", True, 1.5, None,
])
def test_a_size_outside_the_grammar_is_refused_with_an_example(value: object) -> None:
    with pytest.raises(ValueError) as caught:
        parse_size(value)
    message = str(caught.value)
    assert "\n" not in message
    assert any(example in message for example in ("512MiB", "1.5KiB", "1024TiB"))


DURATION_KEYS = [k for k in KEYS if k.kind == "duration"]
SIZE_KEYS = [k for k in KEYS if k.kind == "size"]


@pytest.mark.parametrize("key", DURATION_KEYS + SIZE_KEYS, ids=lambda k: k.name)
def test_every_documented_bound_can_be_written_and_is_the_edge(key, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """breaker.reset_timeout's 10ms, max_clock_skew's 1ms …: min and max written in the
    grammar load; a step past either is refused as out of range (exit 3)."""
    show = format_duration if key.kind == "duration" else format_size
    parse = parse_duration if key.kind == "duration" else parse_size
    step = 0.001 if key.kind == "duration" else 1
    environ = {"HOME": str(tmp_path), "ARBITER_CONFIG_DIR": str(tmp_path)}
    for bound in (key.minimum, key.maximum):
        assert bound is not None
        written = show(bound if key.kind == "duration" else int(bound))
        assert parse(written) == bound
        loaded = load_settings(environ=environ, overrides={key.name: written})
        assert loaded.values[key.name] == written
    for outside in (key.minimum - step, key.maximum + step):
        if outside < 0:
            continue  # below zero the grammar has no spelling at all
        written = show(round(outside, 3) if key.kind == "duration" else int(outside))
        with pytest.raises(ConfigInvalid) as caught:
            load_settings(environ=environ, overrides={key.name: written})
        assert [(e["field"], e["rule"]) for e in caught.value.details["errors"]] == [
            (key.name, "range")]


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(st.integers(min_value=0, max_value=999), min_size=6, max_size=6),
       present=st.lists(st.booleans(), min_size=6, max_size=6))
def test_a_compound_duration_is_the_sum_of_its_parts(parts: list[int], present: list[bool]) -> None:
    units = (("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1), ("ms", 0.001))
    chosen = [(n, unit, size) for n, (unit, size), on in zip(parts, units, present, strict=True)
              if on]
    if not chosen:
        return
    text = "".join(f"{n}{unit}" for n, unit, _ in chosen)
    assert parse_duration(text) == pytest.approx(sum(n * size for n, _, size in chosen))


@settings(max_examples=200, deadline=None)
@given(millis=st.integers(min_value=0, max_value=MAX_DURATION_S * 1000))
def test_a_formatted_duration_reads_back_exactly(millis: int) -> None:
    seconds = millis / 1000
    assert parse_duration(format_duration(seconds)) == seconds


@settings(max_examples=200, deadline=None)
@given(count=st.integers(min_value=0, max_value=MAX_SIZE_BYTES))
def test_a_formatted_size_reads_back_exactly(count: int) -> None:
    assert parse_size(format_size(count)) == count


@pytest.mark.parametrize(("seconds", "text"), [
    (0.01, "10ms"), (5400, "1h30m"), (0, "0s"), (14 * 86400, "2w"), (365 * 86400, "365d"),
    (0.0005, "0.5ms"),
])
def test_bounds_are_shown_in_the_shortest_grammar_form(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
