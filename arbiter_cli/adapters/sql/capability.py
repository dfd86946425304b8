"""Capability narrowing in SQL, shared by capability queries and routing pools.

One definition of "capable" for SQL: supports the task type, has every language (matched on
the lower-cased key) and every specialization. The memory store narrows with bit masks; the
parity tests hold the two to the same answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Select, and_, bindparam, exists, select
from sqlalchemy.engine import Connection

from arbiter_cli.adapters.sql import tables as t
from arbiter_cli.domain.query import fit_share


def has(table: Any, column: Any, value: Any) -> Any:
    """The agent row has a child row in ``table`` whose ``column`` is ``value`` (a string, or
    a bound parameter of a statement built once)."""
    return exists().where(and_(table.c.agent_uid == t.agents.c.uid, column == value))


def conditions(languages: int, labels: int) -> tuple[Any, Any, Any]:
    """SQL conditions: supports the type; also has the languages; also the specializations.

    Over bound parameters, for statements built once per shape: ``task_type``,
    ``language_0``… (``languages`` of them) and ``label_0``… (``labels``); their values are
    ``condition_params``'."""
    has_type = has(t.task_types, t.task_types.c.task_type, bindparam("task_type"))
    with_languages = and_(has_type, *(has(t.languages, t.languages.c.language_key,
                                          bindparam(f"language_{i}")) for i in range(languages)))
    capable = and_(with_languages, *(has(t.specializations, t.specializations.c.label_key,
                                         bindparam(f"label_{i}")) for i in range(labels)))
    return has_type, with_languages, capable


def condition_params(task_type: str, languages: Sequence[str], specializations: Sequence[str]
                     ) -> dict[str, str]:
    """The values of ``conditions``' parameters: languages and labels matched lower-cased."""
    return {"task_type": task_type,
            **{f"language_{i}": lang.lower() for i, lang in enumerate(languages)},
            **{f"label_{i}": label.lower() for i, label in enumerate(specializations)}}


def fit_shares(conn: Connection, uids: list[str], prefer: tuple[str, ...]) -> list[float]:
    """Share of the preferred labels each agent has (1.0 each when nothing is preferred)."""
    if not prefer:
        return [1.0] * len(uids)
    labels: dict[str, list[str]] = {}
    keys = [p.lower() for p in prefer]
    for start in range(0, len(uids), 900):
        for uid, label in conn.execute(_preferred_labels(),
                                       {"uids": uids[start:start + 900], "keys": keys}):
            labels.setdefault(uid, []).append(label)
    return [fit_share(labels.get(uid, []), prefer) for uid in uids]


@lru_cache(maxsize=1)
def _preferred_labels() -> Select[Any]:
    """The labels among ``keys`` the agents ``uids`` have (both expanding): built once."""
    sp = t.specializations.c
    return select(sp.agent_uid, sp.label).where(
        sp.agent_uid.in_(bindparam("uids", expanding=True)),
        sp.label_key.in_(bindparam("keys", expanding=True)))
