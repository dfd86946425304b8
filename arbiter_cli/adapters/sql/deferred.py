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

A write is deferred as its *kind* (``UpdateOf``, ``InsertInto``, or any hashable callable that
builds its statement) and its values. The combined statement is built once per shape (the
kinds in order, whose rows are wanted, and ``main``'s kind), its parameters named after the
slot (``d0_…``, ``d1_…``, ``m_…`` for ``main``): building the expression tree cost more than
sending it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import Table, bindparam, func, insert, literal, select, true, update
from sqlalchemy.engine import Connection, Row

from arbiter_cli.errors import Conflict

#: A kind of write: called with a prefix, it builds its INSERT/UPDATE (deferred: with RETURNING
#: at least one column) with every parameter named ``prefix`` + its name. Hashable: it keys
#: the cache.
Kind = Callable[[str], Any]
OnRow = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class UpdateOf:
    """``UPDATE table SET columns WHERE`` each of ``where`` equals its value, ``RETURNING``
    ``returning`` if any. Its values are named after the columns, those of ``where`` prefixed
    ``where_`` (``status`` to set, ``where_status`` to match)."""

    table: Table
    where: tuple[str, ...]
    columns: tuple[str, ...]
    returning: tuple[str, ...] = ()

    def __call__(self, prefix: str) -> Any:
        c = self.table.c
        stmt = (update(self.table)
                .where(*(c[name] == bindparam(f"{prefix}where_{name}", type_=c[name].type)
                         for name in self.where))
                .values(_named(self.table, self.columns, prefix)))
        return stmt.returning(*(c[name] for name in self.returning)) if self.returning else stmt


@dataclass(frozen=True)
class InsertInto:
    """``INSERT INTO table (columns)``, ``RETURNING returning`` if any; its values named
    after the columns."""

    table: Table
    columns: tuple[str, ...]
    returning: tuple[str, ...] = ()

    def __call__(self, prefix: str) -> Any:
        stmt = insert(self.table).values(_named(self.table, self.columns, prefix))
        return (stmt.returning(*(self.table.c[name] for name in self.returning))
                if self.returning else stmt)


def _named(table: Table, columns: tuple[str, ...], prefix: str) -> dict[str, Any]:
    """Typed parameters (a column's processors still run), named apart from the columns: a
    parameter named like a column of an UPDATE would join its SET."""
    return {name: bindparam(prefix + name, type_=table.c[name].type) for name in columns}


@dataclass(frozen=True, slots=True)
class Deferred:
    kind: Kind
    params: Mapping[str, Any]
    failure: str  # the Conflict's message when it changed no row
    on_row: OnRow | None = None  # the returned row, when wanted


class _Combined(NamedTuple):
    statement: Any
    rows: tuple[tuple[tuple[str, str], ...] | None, ...]  # per slot: (label, column) wanted


MAIN = "m_"


def _slot(i: int) -> str:
    return f"d{i}_"


@lru_cache(maxsize=256)
def _combined(slots: tuple[tuple[Kind, bool], ...], main: Kind | None) -> _Combined:
    """The writes of ``slots`` (each: its kind, whether its row is wanted) as CTEs, each
    counted, with ``main`` if given, and the labels of each wanted row (built once)."""
    ctes = [kind(_slot(i)).cte(f"deferred_{i}") for i, (kind, _) in enumerate(slots)]
    columns: list[Any] = [
        select(func.count()).select_from(cte).scalar_subquery().label(f"deferred_{i}_n")
        for i, cte in enumerate(ctes)]
    joined: Any = select(literal(1).label("one")).subquery("one")
    if main is not None:
        returned = main(MAIN).cte("main")
        joined = joined.outerjoin(returned, true())
        columns += [select(func.count()).select_from(returned).scalar_subquery()
                    .label("main_n"), *(c.label(f"main_{c.name}") for c in returned.c)]
    rows: list[tuple[tuple[str, str], ...] | None] = []
    for i, ((_, wanted), cte) in enumerate(zip(slots, ctes, strict=True)):
        if not wanted:
            rows.append(None)
            continue
        joined = joined.outerjoin(cte, true())
        columns += [c.label(f"deferred_{i}_{c.name}") for c in cte.c]
        rows.append(tuple((f"deferred_{i}_{c.name}", c.name) for c in cte.c))
    return _Combined(select(*columns).select_from(joined).add_cte(*ctes), tuple(rows))


@lru_cache(maxsize=64)
def built(kind: Kind, prefix: str = "") -> Any:
    """``kind``'s statement, its parameters named ``prefix`` + name (built once): a write
    sent now rather than deferred."""
    return kind(prefix)


def _prefixed(prefix: str, params: Mapping[str, Any]) -> dict[str, Any]:
    return {prefix + name: value for name, value in params.items()}


class DeferringConnection:
    """A connection for the repositories of one PostgreSQL unit of work (see the module)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.dialect = conn.dialect
        self.pending: list[Deferred] = []

    def defer(self, kind: Kind, params: Mapping[str, Any], failure: str,
              on_row: OnRow | None = None) -> None:
        self.pending.append(Deferred(kind, params, failure, on_row))

    def execute(self, statement: Any, *args: Any, **kwargs: Any) -> Any:
        if self.pending:
            self.flush()
        return self._conn.execute(statement, *args, **kwargs)

    def flush(self, main: Kind | None = None, params: Mapping[str, Any] | None = None
              ) -> Row[Any] | None:
        """Send the deferred writes, with ``main`` (a kind whose statement has RETURNING, and
        its ``params``) if given: one round trip. Returns ``main``'s returned row, or None
        (none, or no ``main``)."""
        pending, self.pending = self.pending, []
        if not pending:
            return None if main is None else self._conn.execute(
                built(main, MAIN), _prefixed(MAIN, params or {})).first()
        combined = _combined(tuple((item.kind, item.on_row is not None) for item in pending),
                             main)
        values: dict[str, Any] = {} if main is None else _prefixed(MAIN, params or {})
        for i, item in enumerate(pending):
            values.update(_prefixed(_slot(i), item.params))
        row = self._conn.execute(combined.statement, values).one()
        found = row._mapping
        for i, (item, wanted) in enumerate(zip(pending, combined.rows, strict=True)):
            if found[f"deferred_{i}_n"] != 1:
                raise Conflict(item.failure)
            if item.on_row is not None and wanted is not None:
                item.on_row({name: found[label] for label, name in wanted})
        if main is None or not found["main_n"]:
            return None
        return row
