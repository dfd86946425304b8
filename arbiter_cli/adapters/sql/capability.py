"""Capability narrowing in SQL, shared by capability queries and routing pools.

One definition of "capable" for SQL: supports the task type, has every language (matched on
the lower-cased key) and every specialization. The memory store narrows with bit masks; the
parity tests hold the two to the same answers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, exists, select
from sqlalchemy.engine import Connection

from arbiter_cli.adapters.sql import tables as t
from arbiter_cli.domain.query import fit_share


def has(table: Any, column: Any, value: Any) -> Any:
    """The agent row has a child row in ``table`` whose ``column`` is ``value`` (a string, or
    a bound parameter of a statement built once)."""
    return exists().where(and_(table.c.agent_uid == t.agents.c.uid, column == value))


def conditions(task_type: str, languages: Iterable[str], specializations: Iterable[str]
               ) -> tuple[Any, Any, Any]:
    """SQL conditions: supports the type; also has the languages; also the specializations."""
    has_type = has(t.task_types, t.task_types.c.task_type, task_type)
    with_languages = and_(has_type, *(has(t.languages, t.languages.c.language_key, lang.lower())
                                      for lang in languages))
    capable = and_(with_languages, *(has(t.specializations, t.specializations.c.label_key,
                                         label.lower()) for label in specializations))
    return has_type, with_languages, capable


def fit_shares(conn: Connection, uids: list[str], prefer: tuple[str, ...]) -> list[float]:
    """Share of the preferred labels each agent has (1.0 each when nothing is preferred)."""
    if not prefer:
        return [1.0] * len(uids)
    labels: dict[str, list[str]] = {}
    keys = [p.lower() for p in prefer]
    sp = t.specializations.c
    for start in range(0, len(uids), 900):
        stmt = select(sp.agent_uid, sp.label).where(sp.agent_uid.in_(uids[start:start + 900]),
                                                    sp.label_key.in_(keys))
        for uid, label in conn.execute(stmt):
            labels.setdefault(uid, []).append(label)
    return [fit_share(labels.get(uid, []), prefer) for uid in uids]
