"""Timestamps and durations from input (SPEC §0, §16 "Input limits"): anything out of range is
exit 2 with ``field`` and ``rule``, never an OverflowError (exit 70).

Every place arbiter parses a time from input goes through ``parse_since`` (``--since``) or
``config.parse_duration`` (``--expires-in``, ``--older-than``, duration settings); both are
driven here with extreme values, and the durations are pushed through the arithmetic the
services do with them, on the extreme moments a database clock can give.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arbiter_cli.cli.inputs import parse_since
from arbiter_cli.config import MAX_DURATION_S, parse_duration
from arbiter_cli.errors import InvalidInput


@pytest.mark.parametrize("value", [
    "0001-01-01T00:00:00+14:00",  # the example: before year 1 in UTC
    "0001-01-01T13:59:59.999+14:00",
    "9999-12-31T23:59:59-14:00",  # after year 9999 in UTC
    "9999-12-31T12:00:00-12:00",
])
def test_a_since_outside_years_1_to_9999_in_utc_is_a_range_error(value):
    with pytest.raises(InvalidInput) as caught:
        parse_since(value)
    assert (caught.value.field, caught.value.rule) == ("since", "range")


@pytest.mark.parametrize(("value", "expected"), [
    ("0001-01-01T14:00:00+14:00", datetime(1, 1, 1, tzinfo=UTC)),
    ("9999-12-31T09:59:59-14:00", datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ("2026-03-01T12:00:00Z", datetime(2026, 3, 1, 12, tzinfo=UTC)),
    ("2026-03-01T13:30:00+01:30", datetime(2026, 3, 1, 12, tzinfo=UTC)),
])
def test_a_since_at_the_edges_is_kept_in_utc(value, expected):
    moment = parse_since(value)
    assert moment == expected and moment.tzinfo == UTC  # type: ignore[union-attr]


def test_a_since_duration_counts_back_from_the_databases_now():
    """A duration is returned as such: the service subtracts it from the database's now."""
    assert parse_since("90m") == timedelta(minutes=90)
    assert parse_since(None) is None


@pytest.mark.parametrize(("value", "rule"), [
    ("yesterday", "format"), ("2026-03-01T12:00:00", "format"), ("", "format"),
    ("1" * 5000 + "s", "format"), ("36501d", "format"), ("-1h", "format"),
])
def test_a_since_that_is_neither_is_a_format_error(value, rule):
    with pytest.raises(InvalidInput) as caught:
        parse_since(value)
    assert (caught.value.field, caught.value.rule) == ("since", rule)


FAR_PAST = datetime(1, 1, 1, tzinfo=UTC) + timedelta(days=365 * 100 + 30)
FAR_FUTURE = datetime(9999, 12, 31, tzinfo=UTC) - timedelta(days=365 * 100 + 30)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(
    st.text(max_size=40),
    st.from_regex(r"\A[0-9]{1,25}[smhdwy]\Z"),
    st.builds(lambda d, off: d.replace(tzinfo=None).isoformat() + off,
              st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),
              st.sampled_from(["Z", "+14:00", "-14:00", "+23:59", "-23:59", "+00:00", ""])),
))
def test_any_since_is_a_moment_a_duration_or_exit_2_never_a_crash(text):
    """Extreme years, offsets and digit strings: a value, or InvalidInput with field/rule."""
    try:
        value = parse_since(text)
    except InvalidInput as exc:
        assert exc.field == "since" and exc.rule in ("format", "range")
        return
    if isinstance(value, timedelta):
        assert timedelta(0) <= value <= timedelta(seconds=MAX_DURATION_S)
        # the service subtracts it from the database's now, whatever that is
        for now in (FAR_FUTURE, datetime(2026, 1, 1, tzinfo=UTC)):
            assert (now - value).tzinfo == UTC
    else:
        assert value is not None and value.tzinfo == UTC


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=30), st.from_regex(r"\A[0-9]{1,30}[smhd]\Z")))
def test_any_duration_is_seconds_within_100_years_or_a_value_error(text):
    """``--expires-in``, ``--older-than`` and duration settings: the arithmetic the services do
    with the result (now ± it) stays in range for any database clock of this century."""
    try:
        seconds = parse_duration(text)
    except ValueError:
        return
    assert 0 <= seconds <= MAX_DURATION_S
    delta = timedelta(seconds=seconds)
    assert (FAR_FUTURE + delta).year <= 9999 and (FAR_PAST - delta).year >= 1
