"""The database's clock (SPEC §4.1): time stamps and expiry checks use the database's time.

- PostgreSQL: ``now()``, the time the transaction began (the same value for every statement
  of one transaction), and ``clock_timestamp()`` where a stamp must follow the order of
  serialised writes (the audit chain, the rate buckets).
- SQLite: its own ``'now'`` (millisecond resolution). SQLite runs in the caller's process, so
  this is the host's clock by nature, but not the clock the process injects: patching the
  application's clock changes nothing.

A unit of work reads the time at most once (``DatabaseClock``), and a statement that already
runs for another reason (the token lookup of an admission) may carry it, so asking for the
time costs no extra round trip there.

While the primary is out of reach, the local snapshot (SQLite) stands in for it, and SQLite's
``'now'`` is this host's clock, which may be hours off. A unit of work on the snapshot therefore
uses ``EstimatedClock``: this host's clock corrected by the offset between the primary's clock
and this host's, measured at the snapshot's last refresh (``measure_offset``). A host whose
clock is 3 h ahead then neither expires other hosts' live decisions on its snapshot nor stamps
its journaled decisions 3 h ahead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Float, cast, extract, func, select, type_coerce
from sqlalchemy.engine import Connection

from arbiter_cli.adapters.sql.types import UtcDateTime

UNIX_EPOCH_JULIAN_DAY = 2440587.5


def now_expr(dialect: str, *, statement: bool = False) -> Any:
    """The database's time as an aware UTC datetime column.

    ``statement``: the time of this statement (``clock_timestamp()``) rather than of the
    transaction (``now()``) on PostgreSQL; SQLite always gives the statement's.
    """
    if dialect == "postgresql":
        return type_coerce(func.clock_timestamp() if statement else func.now(), UtcDateTime())
    return type_coerce(func.strftime("%Y-%m-%d %H:%M:%f", "now"), UtcDateTime())


def epoch_expr(dialect: str) -> Any:
    """The database's time of this statement, in seconds since the Unix epoch (a float)."""
    if dialect == "postgresql":
        return cast(extract("epoch", func.clock_timestamp()), Float)
    return (func.julianday("now") - UNIX_EPOCH_JULIAN_DAY) * 86400.0


@lru_cache(maxsize=2)
def _now_select(dialect: str) -> Any:
    """The database's time (``now_expr``) as a one-row select: built once per dialect."""
    return select(now_expr(dialect))


class DatabaseClock:
    """The database's time for one transaction, read at most once."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._now: datetime | None = None

    def __call__(self) -> datetime:
        if self._now is None:
            self._now = self._conn.execute(_now_select(self._conn.dialect.name)).scalar_one()
        return self._now

    def remember(self, moment: datetime) -> None:
        """Keep the time a statement of this transaction already read (no extra round trip)."""
        if self._now is None:
            self._now = moment


class EstimatedClock:
    """The primary's time without asking it: this host's clock plus ``offset_s``, read at most
    once per unit of work. Times that a local statement carries (SQLite's ``'now'``, this
    host's clock) are not remembered: they are what the offset corrects."""

    def __init__(self, offset_s: float, wall: Callable[[], float] = time.time) -> None:
        self.offset_s = offset_s
        self._wall = wall
        self._now: datetime | None = None

    def __call__(self) -> datetime:
        if self._now is None:
            self._now = datetime.fromtimestamp(self._wall() + self.offset_s, UTC)
        return self._now

    def remember(self, moment: datetime) -> None:
        """A local statement's time is this host's own: ignored."""


def measure_offset(conn: Connection, wall: Callable[[], float] = time.time) -> float:
    """The database's clock minus this host's, in seconds (positive: the database is ahead).

    One ``SELECT`` of the database's statement time, compared with the midpoint of the host's
    clock around the round trip, so the round trip's own length cancels out to half of it."""
    before = wall()
    database = float(conn.execute(select(epoch_expr(conn.dialect.name))).scalar_one())
    after = wall()
    return database - (before + after) / 2
