"""A query's capability filters are one pattern (``capabilities.pattern``): ``LIKE`` on
PostgreSQL and ``GLOB`` on SQLite match a ``capabilities`` value exactly when it holds every
wanted value, whatever wildcards, escapes or separators the values hold and in whatever order
they are asked for (issue 13)."""

from __future__ import annotations

import random
import sqlite3
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arbiter_cli.adapters.sql.capabilities import LABEL, LANGUAGE, TASK_TYPE, encode, pattern
from tests.helpers import postgres_url

# the wildcards and escapes of LIKE and GLOB, the string's own separators and escapes
AWKWARD = ["py", "python", "a|b", "a=b", "%7C", "%", "|", "=", "_", "a_b", "a%b", "\\", "a\\%",
           "*", "?", "[", "]", "[a]", "a*", "^", "[^a]", "Ä", "é ö", "t", "l", "s", "%25", "Z",
           "z", "0"]
values = st.lists(st.sampled_from(AWKWARD) | st.text(min_size=1, max_size=5), max_size=4)


def wanted_of(task_types: list[str], languages: list[str], labels: list[str]
              ) -> list[tuple[str, str]]:
    """What a query asks for, keys cased as ``needle`` wants (the task type as is)."""
    return ([(TASK_TYPE, v) for v in task_types] + [(LANGUAGE, v.lower()) for v in languages]
            + [(LABEL, v.lower()) for v in labels])


def holds(held: tuple[list[str], list[str], list[str]], wanted: list[tuple[str, str]]) -> bool:
    task_types, languages, labels = held
    have = set(wanted_of(task_types, languages, labels))
    return all(w in have for w in wanted)


def case(rng: random.Random) -> tuple[str, list[tuple[str, str]], bool]:
    def pick() -> list[str]:
        return rng.sample(AWKWARD, rng.randint(0, 4))

    held = (pick(), pick(), pick())
    wanted = wanted_of(*held)
    wanted = rng.sample(wanted, rng.randint(0, len(wanted)))  # a subset, in any order
    if rng.random() < 0.5:  # and something the agent may not have
        wanted.append((rng.choice([TASK_TYPE, LANGUAGE, LABEL]), rng.choice(AWKWARD).lower()))
    if rng.random() < 0.2 and wanted:  # asked twice
        wanted.append(wanted[0])
    return encode(*held), wanted, holds(held, wanted)


@given(values, values, values, values, values, values)
def test_glob_matches_exactly_when_every_value_is_held(task_types, languages, labels,
                                                      want_types, want_languages, want_labels):
    held = encode(task_types, languages, labels)
    wanted = wanted_of(want_types, want_languages, want_labels)
    with sqlite3.connect(":memory:") as conn:
        (matched,), = conn.execute("SELECT ? GLOB ?", (held, pattern(wanted, "sqlite")))
    assert bool(matched) == holds((task_types, languages, labels), wanted)


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_the_pattern_matches_exactly_when_every_value_is_held(dialect: str) -> None:
    rng = random.Random(13)
    cases = [case(rng) for _ in range(3000)]
    values = [held for held, _, _ in cases]
    patterns = [pattern(wanted, dialect) for _, wanted, _ in cases]
    expected = [found for _, _, found in cases]
    assert 0.2 < sum(expected) / len(expected) < 0.8  # both answers are tried often
    assert matches(dialect, values, patterns) == expected


def matches(dialect: str, values: list[str], patterns: list[str]) -> list[bool]:
    if dialect == "sqlite":
        with sqlite3.connect(":memory:") as conn:
            return [bool(conn.execute("SELECT ? GLOB ?", (v, p)).fetchone()[0])
                    for v, p in zip(values, patterns, strict=True)]
    from sqlalchemy import create_engine, text

    engine = create_engine(postgres_url())
    try:
        with engine.connect() as conn:
            rows: Any = conn.execute(text(
                "SELECT v LIKE p FROM unnest(CAST(:v AS text[]), CAST(:p AS text[])) "
                "WITH ORDINALITY AS c(v, p, i) ORDER BY i"), {"v": values, "p": patterns})
            return [bool(found) for (found,) in rows]
    finally:
        engine.dispose()
