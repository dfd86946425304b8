"""The over_capacity rule (domain/overlap.py): a decision is flagged when, at some instant of
its interval [created_at, closed_at), its agent held more claims than its capacity."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from arbiter_cli.domain.overlap import Claim, changed_flags, over_capacity

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def claim(decision_id: str, start: float, end: float | None = None,
          flagged: bool = False) -> Claim:
    return Claim(decision_id, at(start), None if end is None else at(end), flagged)


def test_two_open_claims_on_a_capacity_one_agent_are_both_flagged() -> None:
    """Both tasks ran while the agent held two: both decisions say so."""
    assert over_capacity([claim("a", 0), claim("b", 5)], 1) == {"a", "b"}


def test_a_claim_closed_before_the_next_began_shares_no_moment() -> None:
    """Half-open intervals: a task finished at 5 and one routed at 5 never overlapped."""
    assert over_capacity([claim("a", 0, 5), claim("b", 5)], 1) == set()
    assert over_capacity([claim("a", 0, 4), claim("b", 5)], 1) == set()


def test_only_the_claims_that_shared_an_overloaded_moment_are_flagged() -> None:
    """a [0,10) and b [2,4) overlap; c [20,…) overlaps nobody on capacity 1."""
    assert over_capacity([claim("a", 0, 10), claim("b", 2, 4), claim("c", 20)], 1) == {"a", "b"}


def test_capacity_is_respected_up_to_its_value() -> None:
    claims = [claim("a", 0), claim("b", 1), claim("c", 2, 3)]
    assert over_capacity(claims, 3) == set()
    assert over_capacity(claims, 2) == {"a", "b", "c"}
    assert over_capacity([claim("a", 0), claim("b", 1), claim("c", 4, 6)], 2) == {"a", "b", "c"}
    assert over_capacity([claim("a", 0, 2), claim("b", 1), claim("c", 4, 6)], 2) == set()


def test_claims_beginning_at_the_same_instant_overlap() -> None:
    assert over_capacity([claim("a", 0, 1), claim("b", 0, 1)], 1) == {"a", "b"}


def test_an_empty_interval_holds_no_slot() -> None:
    """Closed at its creation (or earlier, by a skewed clock): it never shared the agent."""
    assert over_capacity([claim("a", 0), claim("b", 3, 3), claim("c", 4, 2)], 1) == set()


def test_changed_flags_reports_only_the_wanted_claims_whose_flag_changes() -> None:
    claims = [claim("a", 0, flagged=True), claim("b", 5), claim("c", -2, -1, flagged=True)]
    assert changed_flags(claims, 1, ["b", "c"]) == {"b": True, "c": False}
    assert changed_flags(claims, 1, ["a"]) == {}


intervals = st.lists(st.tuples(st.integers(0, 20), st.one_of(st.none(), st.integers(0, 20))),
                     min_size=1, max_size=6)


@given(intervals, st.integers(1, 3))
def test_the_flags_are_the_brute_force_overlap_in_every_order(spans, capacity) -> None:
    """Whatever the order the claims arrive in, the flags are those of a minute-by-minute
    count of the load: no replay order can change them."""
    claims = [claim(f"d{i}", s, e) for i, (s, e) in enumerate(spans)]
    expected = set()
    for minute in range(0, 22):
        t = at(minute)
        held = [c.decision_id for c in claims
                if c.start <= t and (c.end is None or t < c.end)]
        if len(held) > capacity:
            expected |= set(held)
    for order in itertools.islice(itertools.permutations(claims), 24):
        assert over_capacity(order, capacity) == expected
