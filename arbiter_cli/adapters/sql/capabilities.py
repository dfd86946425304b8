"""The agents row's ``capabilities`` column: its task types, languages and labels in one string.

A capability query used to narrow with ``EXISTS`` semi-joins on ``agent_task_types``,
``agent_languages`` and ``agent_specializations``: at 10 000 agents on PostgreSQL they were
most of the ranking statement (25.7 ms with, 5.2 ms without, in isolated timings). The row now
carries the same facts, written with the child rows by ``SqlAgents`` (register and update; a
remove deletes both) and backfilled by migration 0006, so that the ranking scan reads one row
per agent and joins nothing. Task types, languages and labels are open sets of strings: no
fixed bit mask can hold them, and a hashed one would need a recheck. The string is exact:

- one token per value: a kind letter (``t`` task type, ``l`` language, ``s`` specialization),
  the matching key (the task type; the lower-cased language or label), ``=``, the spelling
  shown (the canonical one kept by the child rows);
- tokens in that order of kinds, each kind's by key (Python's order, as migration 0006's
  backfill), between ``|`` separators, with ``|`` before the first and after the last;
- in keys and spellings ``%``, ``|`` and ``=`` are written ``%25``, ``%7C`` and ``%3D``.

So ``|`` occurs only as a separator and ``=`` only after the key: ``|`` + kind + key + ``=``
(:func:`needle`) occurs in the string exactly when the agent has that value, and the needles of
several values occur in the string's own order of tokens. A query's hard filters are therefore
one pattern (:func:`pattern`): its needles in that order with anything between them, which
matches exactly when every needle occurs; PostgreSQL tests it with ``LIKE`` and SQLite with
``GLOB``, both exact and case-sensitive (not SQLite's ``LIKE``, which ignores ASCII case). One
pattern reads the string once: at 10 000 agents on PostgreSQL it took 2 000 fewer instructions
per row than one ``strpos`` per needle (which also counts characters up to its match). The
preferred labels of the fit share are counted one by one with ``strpos``/``instr``
(:func:`holds`). The child tables stay the schema of SPEC §6 (routing pools,
``agents list --task-type`` and the snapshot use them); this column is a copy kept beside them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from sqlalchemy import func

TASK_TYPE, LANGUAGE, LABEL = "t", "l", "s"
_KINDS = {TASK_TYPE: 0, LANGUAGE: 1, LABEL: 2}  # the order of kinds in the string
_ESCAPED = re.compile(r"%(25|7C|3D)")


def _escape(value: str) -> str:
    return value.replace("%", "%25").replace("|", "%7C").replace("=", "%3D")


def _unescape(value: str) -> str:
    if "%" not in value:  # the common case: nothing escaped, no regex
        return value
    return _ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), value)


def encode(task_types: Iterable[str], languages: Iterable[str],
           specializations: Iterable[str]) -> str:
    """The ``capabilities`` value of an agent with these task types, languages and labels."""
    tokens = [f"{kind}{_escape(key)}={_escape(shown)}" for kind, values in (
        (TASK_TYPE, sorted((tt, tt) for tt in task_types)),
        (LANGUAGE, sorted((lang.lower(), lang) for lang in languages)),
        (LABEL, sorted((label.lower(), label) for label in specializations)))
        for key, shown in values]
    return "|" + "".join(f"{token}|" for token in tokens)


def decode(value: str) -> tuple[list[str], list[str], list[str]]:
    """Task types, languages and labels (their spellings) of a ``capabilities`` value."""
    found: dict[str, list[str]] = {TASK_TYPE: [], LANGUAGE: [], LABEL: []}
    for token in value.split("|"):
        if token:
            found[token[0]].append(_unescape(token.partition("=")[2]))
    return found[TASK_TYPE], found[LANGUAGE], found[LABEL]


def needle(kind: str, key: str) -> str:
    """What occurs in ``capabilities`` exactly when the agent has ``key`` (already matched
    case as the kind wants: the task type as is, a language or label lower-cased)."""
    return f"|{kind}{_escape(key)}="


def holds(column: Any, wanted: Any, dialect: str) -> Any:
    """SQL: ``column`` contains ``wanted`` (a needle), exactly and case-sensitively."""
    found = func.strpos(column, wanted) if dialect == "postgresql" else func.instr(column, wanted)
    return found > 0


def pattern(wanted: Iterable[tuple[str, str]], dialect: str) -> str:
    """A pattern (:func:`holds_all`) that a ``capabilities`` value matches exactly when it holds
    every ``(kind, key)`` of ``wanted`` (keys cased as :func:`needle` wants): their needles in
    the order their tokens take in the string (kinds in ``encode``'s order, each kind's by key
    as Python orders the unescaped keys), a wildcard around and between them."""
    needles = (needle(kind, key) for kind, key in sorted(set(wanted), key=_token_order))
    if dialect == "postgresql":  # LIKE, whose default escape is the backslash
        return "%" + "%".join(_like(n) for n in needles) + "%"
    return "*" + "*".join(_glob(n) for n in needles) + "*"


def holds_all(column: Any, wanted: Any, dialect: str) -> Any:
    """SQL: ``column`` matches ``wanted``, a :func:`pattern`, exactly and case-sensitively."""
    if dialect == "postgresql":
        return column.like(wanted)
    return column.op("GLOB", is_comparison=True)(wanted)


def _token_order(wanted: tuple[str, str]) -> tuple[int, str]:
    return _KINDS[wanted[0]], wanted[1]


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _glob(text: str) -> str:
    """GLOB's wildcards as themselves: one-character sets (``]`` alone is no wildcard)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)
