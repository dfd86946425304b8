"""What a database holds, as plain data: to prove that a refused command changed nothing."""

from __future__ import annotations

from typing import Any

#: Admission may spend a rate-limit token and refresh ``last_used_at`` before a command is
#: refused for a later reason; neither is data the command could destroy.
ADMISSION = {"rate_buckets": None, "tokens": {"last_used_at"}}


def dump(url: str, ignore: dict[str, set[str] | None] | None = None) -> dict[str, Any]:
    """Every table (name → sorted rows as text), the schema revision included."""
    from sqlalchemy import MetaData, create_engine, select

    skip = ADMISSION if ignore is None else ignore
    engine = create_engine(url)
    try:
        metadata = MetaData()
        metadata.reflect(engine)
        found: dict[str, Any] = {}
        with engine.connect() as conn:
            for name, table in sorted(metadata.tables.items()):
                if name in skip and skip[name] is None:
                    continue
                columns = [c for c in table.columns if c.name not in (skip.get(name) or ())]
                rows = conn.execute(select(*columns)).fetchall()
                found[name] = sorted(tuple(str(v) for v in row) for row in rows)
        return found
    finally:
        engine.dispose()
