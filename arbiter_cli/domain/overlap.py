"""Which decisions ran on an agent beyond its capacity: the ``over_capacity`` rule (pure).

Each decision holds one of its agent's slots over its *interval* ``[created_at, closed_at)``:
from the moment it was acknowledged until its outcome (or its expiry) was acknowledged; an
open decision holds it still. At an instant ``t`` the agent's *load* is the number of its
decisions whose interval contains ``t``.

**A decision is flagged ``over_capacity`` when, at some instant of its own interval, its
agent's load was greater than the agent's capacity.** Every decision that shared such a moment
is flagged (not only the one that arrived last), so the flag depends on the intervals alone:
never on the order in which hosts replayed them. A decision that closed before another began
never shares a moment with it (intervals are half-open), and one whose interval is empty
(closed at its creation) holds no slot.

Load only rises when an interval begins, so checking each beginning is enough: the sweep below
visits beginnings and ends in time order (an end before a beginning at the same instant), and
whenever a beginning takes the load above capacity, flags every interval then held.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Claim:
    """One decision's hold on its agent: ``end`` None while the decision is open."""

    decision_id: str
    start: datetime
    end: datetime | None = None
    flagged: bool = False

    @property
    def empty(self) -> bool:
        return self.end is not None and self.end <= self.start


def over_capacity(claims: Iterable[Claim], capacity: int) -> set[str]:
    """The ids of the claims that, at some instant of their interval, shared their agent with
    more than ``capacity`` claims in all (themselves included)."""
    _END, _START = 0, 1
    events: list[tuple[datetime, int, str]] = []
    for claim in claims:
        if claim.empty:
            continue
        events.append((claim.start, _START, claim.decision_id))
        if claim.end is not None:
            events.append((claim.end, _END, claim.decision_id))
    events.sort()
    held: set[str] = set()
    flagged: set[str] = set()
    for _, kind, decision_id in events:
        if kind == _END:
            held.discard(decision_id)
            continue
        held.add(decision_id)
        if len(held) > capacity:
            flagged |= held
    return flagged


def changed_flags(claims: Iterable[Claim], capacity: int, among: Iterable[str]
                  ) -> dict[str, bool]:
    """The new flag of each claim of ``among`` whose flag the rule changes: ``{id: flag}``.

    ``claims`` must hold every claim that overlaps any claim of ``among``; the flags of the
    others are not decided here (their context may be incomplete).
    """
    listed = list(claims)
    flagged = over_capacity(listed, capacity)
    wanted = set(among)
    return {c.decision_id: c.decision_id in flagged for c in listed
            if c.decision_id in wanted and (c.decision_id in flagged) != c.flagged}
