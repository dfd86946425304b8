"""The top K of a capability query, picked in the database (SPEC §2.2, §13.1).

Fetching every capable agent to rank it in Python cost 6.7 ms (SQLite) and 11.5 ms
(PostgreSQL) per query at 1 000 agents. Here the database evaluates the one formula,
``domain.query.match_score``, over SQL column expressions, orders by it descending and by
``id`` ascending, and returns only the top K agent rows. The repository then scores and orders
those rows with ``domain.query.rank``: every score the caller sees is the one scorer's.

Why the database's order is the scorer's, bit for bit: SQLite and PostgreSQL compute in IEEE
doubles, one operation at a time (no fused multiply-add), in the order ``match_score`` writes;
the weights travel as doubles (on PostgreSQL cast to ``FLOAT``, as psycopg2 sends a Python
float as a ``numeric`` literal; SQLite binds them as REAL); utilization is ``active_tasks`` as
a double divided by ``capacity`` (Python's ``int / int`` rounds the exact quotient the same
way); the fit share is a count divided by the number of preferred labels (``fit_share``). The
property test in ``tests/integration/test_query_ranking.py`` holds the two to the same bits on
random fleets.

The capability filters (task type, languages, specializations) and the fit share test the
row's own ``capabilities`` string (``capabilities.py``): the scan joins no child table, and the
filters are one pattern matched once per row (``LIKE`` / ``GLOB``). The
``EXISTS`` semi-joins on the three child tables they replace were most of the statement (at
10 000 agents on PostgreSQL, 25.7 ms with them against 5.2 ms without).

The statements are built once per shape (dialect, how many preferred labels, whether a status
or a limit is given) with bound parameters: building the
expression tree costs more than running it.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from sqlalchemy import Float, Select, bindparam, case, cast, func, literal, select, true

from arbiter_cli.adapters.sql import tables as t
from arbiter_cli.adapters.sql.capabilities import (
    LABEL,
    LANGUAGE,
    TASK_TYPE,
    holds,
    holds_all,
    needle,
    pattern,
)
from arbiter_cli.domain.query import COMPONENTS, Query, match_score


def top(tenant: str, query: Query, weights: Mapping[str, float], dialect: str
        ) -> tuple[Select[Any], dict[str, Any]]:
    """Agent rows of ``tenant`` that pass every hard filter of ``query``, with their rounded
    ``score``, best ``query.limit`` first (0 = all): the statement and its parameters."""
    stmt = _statement(dialect, len(query.prefer), query.status is not None, query.limit > 0,
                      query.max_utilization > 1.0)
    params: dict[str, Any] = {
        "tenant": tenant,
        "capabilities": pattern(
            [(TASK_TYPE, query.task_type), *((LANGUAGE, lang.lower()) for lang in query.languages),
             *((LABEL, label.lower()) for label in query.specializations)], dialect),
        "max_utilization": query.max_utilization, "min_success_rate": query.min_success_rate,
        **{f"w_{name}": float(weights[name]) for name in COMPONENTS},
        **{f"prefer_{i}": needle(LABEL, label.lower()) for i, label in enumerate(query.prefer)},
    }
    if query.prefer:
        params["prefer_count"] = float(len(query.prefer))
    if query.status is not None:
        params["status"] = query.status
    if query.limit:
        params["limit"] = query.limit
    return stmt, params


@lru_cache(maxsize=128)
def _statement(dialect: str, prefer: int, status: bool, limited: bool, clamped: bool
               ) -> Select[Any]:
    a = t.agents.c
    double = _Doubles(dialect)
    utilization = _divide(cast(a.active_tasks, Float), a.capacity)
    # the load is 1 - min(utilization, 1); a row that passed ``utilization <= max_utilization``
    # with ``max_utilization`` at most 1 (always, for a parsed query) has utilization <= 1, and
    # min() returns it unchanged (the same bits): the clamp is only written for a larger bound
    load = double(1.0) - (_least(utilization, double(1.0), dialect) if clamped else utilization)
    score = match_score(
        {name: double(f"w_{name}") for name in COMPONENTS}, a.success_rate, a.average_quality,
        load,
        _fit(double, prefer, dialect) if prefer else None).label("score")
    narrow = dialect == "postgresql"
    best = (
        select(*((a.id,) if narrow else (t.agents,)), score)
        .where(a.tenant == bindparam("tenant"),
               holds_all(a.capabilities, bindparam("capabilities"), dialect),
               utilization <= double("max_utilization"),
               a.success_rate >= double("min_success_rate"))
        .order_by(score.desc(), a.id)
    )
    if status:
        best = best.where(a.status == bindparam("status"))
    if limited:
        best = best.limit(bindparam("limit", type_=t.agents.c.capacity.type))
    if not narrow:
        return best
    # PostgreSQL ranks narrow rows, then joins the winners' full rows: hashing and sorting the
    # wide rows took a third of the statement at 10 000 agents (SQLite was faster in one pass).
    # The narrow row is the id alone (the uid too cost 8 % of the statement at 10 000 agents,
    # copied into the sort for every row), and each winner's row is one lookup by
    # (tenant, id), kept a lateral subquery so that the plan is a nested loop in the winners'
    # order (a join let the planner hash a scan of the whole tenant: 17 % of the statement at
    # 1 000 agents).
    ranked = best.subquery("best")
    row = (select(t.agents).where(a.tenant == bindparam("tenant"), a.id == ranked.c.id)
           .limit(1).lateral("agent"))
    return (select(*row.c, ranked.c.score).select_from(ranked).join(row, true())
            .order_by(ranked.c.score.desc(), ranked.c.id))


def _fit(double: _Doubles, prefer: int, dialect: str) -> Any:
    """Share of the preferred labels the agent has (``domain.query.fit_share``): a count of
    the labels held, over the number preferred, both doubles."""
    held = sum((case((holds(t.agents.c.capabilities, bindparam(f"prefer_{i}"), dialect), 1),
                     else_=0) for i in range(1, prefer)),
               start=case((holds(t.agents.c.capabilities, bindparam("prefer_0"), dialect), 1),
                          else_=0))
    return _divide(cast(held, Float), double("prefer_count"))


def _least(value: Any, bound: Any, dialect: str) -> Any:
    """The smaller of two doubles (``numpy.minimum``: one of them, so the same bits), with
    ``value`` computed once (``CASE WHEN u < 1 THEN u ELSE 1`` computed it twice per row)."""
    return (func.least if dialect == "postgresql" else func.min)(value, bound, type_=Float())


def _divide(numerator: Any, denominator: Any) -> Any:
    """``/`` as the database does it on doubles (SQLAlchemy would add casts of its own)."""
    return numerator.op("/", return_type=Float())(denominator)


class _Doubles:
    """Doubles for ``dialect``, a constant or a named parameter: cast on PostgreSQL (folded
    once, at planning), bare on SQLite (which would cast them again on every row)."""

    def __init__(self, dialect: str) -> None:
        self._cast = dialect == "postgresql"

    def __call__(self, value: float | str) -> Any:
        bound = (bindparam(value, type_=Float()) if isinstance(value, str)
                 else literal(value, Float()))
        return cast(bound, Float) if self._cast else bound
