"""Writes whose result is already known, sent with the next statement (PostgreSQL).

An outcome locks its decision and its agent, then updates the agent, the arm and the
decision, then appends its audit event: four writes, four round trips. Under the row locks
this transaction holds, whether an update matches is known before it is sent, so the
repositories *defer* it here instead: the next statement on the connection carries every
deferred write as a data-modifying CTE (PostgreSQL runs each exactly once, to completion,
whether or not the query reads it), and the audit append makes its insert that statement
(``DeferringConnection.flush``). Nothing is ever read before the writes it follows: any other
statement flushes them first, and so does the commit.

Each deferred write still says how many rows it changed; one that changed none (which the
locks rule out) raises ``Conflict``, as the write itself would have, and the transaction
rolls back. The rows a write returns go to its ``on_row`` (``written.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, literal, select, true
from sqlalchemy.engine import Connection, Row

from arbiter_cli.errors import Conflict


def bound(table: Any, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` as anonymous bound parameters: statements combined in one never share a
    parameter's name (``updated_at`` of an agent and of an arm)."""
    return {name: bindparam(None, value, type_=table.c[name].type, unique=True)
            for name, value in values.items()}


@dataclass(frozen=True)
class Deferred:
    statement: Any  # INSERT/UPDATE … RETURNING (at least one column)
    failure: str  # the Conflict's message when it changed no row
    on_row: Callable[[dict[str, Any]], None] | None = None  # the returned row, when wanted


class DeferringConnection:
    """A connection for the repositories of one PostgreSQL unit of work (see the module)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.dialect = conn.dialect
        self.pending: list[Deferred] = []

    def defer(self, statement: Any, failure: str,
              on_row: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.pending.append(Deferred(statement, failure, on_row))

    def execute(self, statement: Any, *args: Any, **kwargs: Any) -> Any:
        if self.pending:
            self.flush()
        return self._conn.execute(statement, *args, **kwargs)

    def flush(self, main: Any = None) -> Row[Any] | None:
        """Send the deferred writes, with ``main`` (a statement with RETURNING whose values
        are all bound in it: a parameter passed at execution and named like a column of a
        deferred UPDATE, ``tenant`` or ``status``, would join that UPDATE's SET) if given:
        one round trip. Returns ``main``'s returned row, or None (none, or no ``main``)."""
        pending, self.pending = self.pending, []
        if not pending:
            return None if main is None else self._conn.execute(main).first()
        ctes = [item.statement.cte(f"deferred_{i}") for i, item in enumerate(pending)]
        columns: list[Any] = [
            select(func.count()).select_from(cte).scalar_subquery().label(f"deferred_{i}_n")
            for i, cte in enumerate(ctes)]
        joined: Any = select(literal(1).label("one")).subquery("one")
        if main is not None:
            returned = main.cte("main")
            joined = joined.outerjoin(returned, true())
            columns += [select(func.count()).select_from(returned).scalar_subquery()
                        .label("main_n"), *(c.label(f"main_{c.name}") for c in returned.c)]
        for i, (item, cte) in enumerate(zip(pending, ctes, strict=True)):
            if item.on_row is not None:
                joined = joined.outerjoin(cte, true())
                columns += [c.label(f"deferred_{i}_{c.name}") for c in cte.c]
        row = self._conn.execute(select(*columns).select_from(joined).add_cte(*ctes)).one()
        values = row._mapping
        for i, item in enumerate(pending):
            if values[f"deferred_{i}_n"] != 1:
                raise Conflict(item.failure)
            if item.on_row is not None:
                prefix = f"deferred_{i}_"
                item.on_row({key[len(prefix):]: value for key, value in values.items()
                             if key.startswith(prefix) and key != f"{prefix}n"})
        if main is None or not values["main_n"]:
            return None
        return row
