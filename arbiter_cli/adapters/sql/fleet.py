"""The fleet's two aggregate reads for ``arbiter serve``'s ``/metrics`` (``FleetQuery``).

All tenants together: one scan of ``decisions`` grouped by strategy, explore flag and status,
and one of ``agents`` grouped by status.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.engine import Connection

from arbiter_cli.adapters.sql.tables import agents as a
from arbiter_cli.adapters.sql.tables import decisions as d


class SqlFleetQuery:
    """``observability.fleet.FleetQuery`` over the SQL tables."""

    def decisions(self, conn: Connection, bounds_us: Sequence[int]) -> Sequence[Sequence[Any]]:
        buckets = [func.sum(case((d.c.latency_us <= bound, 1), else_=0)) for bound in bounds_us]
        return conn.execute(
            select(d.c.strategy, d.c.explored, d.c.status, func.count(),
                   func.sum(d.c.latency_us), func.sum(case((d.c.over_capacity, 1), else_=0)),
                   *buckets)
            .group_by(d.c.strategy, d.c.explored, d.c.status)
        ).all()

    def agents(self, conn: Connection) -> Sequence[Sequence[Any]]:
        return conn.execute(
            select(a.c.status, func.count(), func.sum(a.c.active_tasks),
                   func.sum(a.c.capacity))
            .group_by(a.c.status)
        ).all()
