"""Alembic, driven from code: ``db upgrade|downgrade|current|history|check`` (SPEC §6).

No ``alembic.ini``: the script location is the package's ``migrations`` folder. Every command
runs inside one transaction on a connection we open, so PostgreSQL's advisory lock in
``env.py`` serialises concurrent upgrades and SQLite's ``BEGIN IMMEDIATE`` does the same.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

from sqlalchemy import func, inspect, select, table, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from arbiter_cli.adapters.sql.engine import WRITE_OPTION, unavailable
from arbiter_cli.adapters.sql.schema_version import HEAD
from arbiter_cli.adapters.sql.tables import postgresql_options
from arbiter_cli.errors import InvalidInput, SchemaOutdated

#: PostgreSQL advisory-lock key shared by every arbiter process: migrations (``env.py``) and
#: ``init``'s bootstrap of the first admin token (:func:`setup_lock`) take it.
MIGRATION_LOCK_KEY = 0x61726269746572  # "arbiter"


def _config(connection: Connection | None, stdout: TextIO) -> Any:
    from alembic.config import Config

    config = Config(stdout=stdout)
    config.set_main_option("script_location", "arbiter_cli:migrations")
    config.attributes["connection"] = connection
    return config


def _run(engine: Engine, action: Any, stdout: TextIO) -> None:
    from alembic.util.exc import CommandError

    try:
        with engine.connect() as conn:
            conn = conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                action(_config(conn, stdout))
    except CommandError as exc:
        raise InvalidInput(f"alembic: {exc}", field="revision", rule="known_revision") from None
    except DBAPIError as exc:
        raise unavailable(engine, exc) from None


def current(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except DBAPIError as exc:
        raise unavailable(engine, exc) from None


def upgrade(engine: Engine, revision: str, stdout: TextIO) -> tuple[str | None, str | None]:
    from alembic import command

    before = current(engine)
    _run(engine, lambda cfg: command.upgrade(cfg, revision), stdout)
    return before, current(engine)


def downgrade(engine: Engine, revision: str, stdout: TextIO) -> tuple[str | None, str | None]:
    from alembic import command

    before = current(engine)
    _run(engine, lambda cfg: command.downgrade(cfg, revision), stdout)
    return before, current(engine)


@contextmanager
def setup_lock(engine: Engine) -> Iterator[None]:
    """Hold the migration lock while ``init`` bootstraps (SPEC §4.1), on a side connection.

    On PostgreSQL two ``init`` runs would otherwise both count zero tokens and both issue a
    bootstrap token. On SQLite the bootstrap's own ``BEGIN IMMEDIATE`` serialises it already.
    Do not migrate inside this block: the migration takes the same lock on another connection.
    """
    if engine.dialect.name != "postgresql":
        yield
        return
    try:
        conn = engine.connect()
    except DBAPIError as exc:
        raise unavailable(engine, exc) from None
    try:
        with conn.begin():  # the transaction-scoped lock is released when this block ends
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            yield
    except DBAPIError as exc:
        raise unavailable(engine, exc) from None
    finally:
        conn.close()


@dataclass(frozen=True)
class DowngradePlan:
    """What ``db downgrade REV`` would undo and drop, measured by a rolled-back dry run."""

    before: str | None
    after: str | None
    revisions: list[str] = field(default_factory=list)  # undone, newest first
    tables: dict[str, int] = field(default_factory=dict)  # dropped table → rows it holds
    columns: list[str] = field(default_factory=list)  # dropped ``table.column``

    @property
    def empty(self) -> bool:
        return not self.revisions

    def to_dict(self) -> dict[str, Any]:
        return {"revisions": self.revisions, "tables": self.tables, "columns": self.columns}


def plan_downgrade(engine: Engine, revision: str) -> DowngradePlan:
    """Run the downgrade in a transaction, look at what it removed, and roll it back.

    Both backends have transactional DDL, so the plan is exact and nothing changes.
    """
    from alembic import command
    from alembic.util.exc import CommandError

    before = current(engine)
    try:
        with engine.connect() as conn:
            conn = conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin() as tx:
                shape = _shape(conn)
                command.downgrade(_config(conn, io.StringIO()), revision)
                after = _revision_on(conn)
                remaining = _shape(conn)
                tx.rollback()
            tables = sorted(set(shape) - set(remaining))
            rows = {name: _rows(conn, name) for name in tables}
    except CommandError as exc:
        raise InvalidInput(f"alembic: {exc}", field="revision", rule="known_revision") from None
    except DBAPIError as exc:
        raise unavailable(engine, exc) from None
    columns = sorted(f"{name}.{column}" for name in remaining
                     for column in set(shape[name]) - set(remaining[name]))
    return DowngradePlan(before=before, after=after, revisions=_between(before, after),
                         tables=rows, columns=columns)


def _shape(conn: Connection) -> dict[str, list[str]]:
    inspector = inspect(conn)
    return {name: [c["name"] for c in inspector.get_columns(name)]
            for name in inspector.get_table_names()}


def _revision_on(conn: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    revision = MigrationContext.configure(conn).get_current_revision()
    return None if revision is None else str(revision)


def _rows(conn: Connection, name: str) -> int:
    return int(conn.execute(select(func.count()).select_from(table(name))).scalar_one())


def _between(upper: str | None, lower: str | None) -> list[str]:
    """Revisions from ``upper`` down to, but not including, ``lower`` (a linear history)."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(_config(None, io.StringIO()))
    found: list[str] = []
    revision = upper
    while revision is not None and revision != lower:
        found.append(revision)
        down = scripts.get_revision(revision).down_revision
        revision = down if isinstance(down, str) or down is None else down[0]
    return found


@dataclass(frozen=True)
class Revision:
    revision: str
    down_revision: str | None
    message: str
    is_head: bool

    def to_dict(self) -> dict[str, Any]:
        return {"revision": self.revision, "down_revision": self.down_revision,
                "message": self.message, "is_head": self.is_head}


def history(stdout: TextIO) -> list[Revision]:
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(_config(None, stdout))
    heads = set(scripts.get_heads())
    found = []
    for script in scripts.walk_revisions():
        down = script.down_revision
        found.append(Revision(
            revision=script.revision,
            down_revision=down if isinstance(down, str) or down is None else ",".join(down),
            message=(script.doc or "").strip(),
            is_head=script.revision in heads,
        ))
    return found


def head(stdout: TextIO) -> str:
    from alembic.script import ScriptDirectory

    return str(ScriptDirectory.from_config(_config(None, stdout)).get_current_head())


def check(engine: Engine) -> list[str]:
    """Differences between the database and the models; ``SchemaOutdated`` if not at head."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    revision = current(engine)
    if revision != HEAD:
        raise SchemaOutdated(
            f"database schema is at {revision or 'base'}, not at head {HEAD}: "
            "run `arbiter db upgrade`"
        )
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diffs = compare_metadata(context, postgresql_options())
    except DBAPIError as exc:
        raise unavailable(engine, exc) from None
    return [_describe(diff) for diff in diffs]


def _describe(diff: Any) -> str:
    if isinstance(diff, list):  # column modifications come grouped
        return "; ".join(_describe(item) for item in diff)
    kind, *rest = diff
    named = [part for part in rest if getattr(part, "name", None)]
    if not named:
        return f"{kind} {' '.join(str(p) for p in rest if isinstance(p, str))}".strip()
    names = []
    for part in named:
        table = getattr(getattr(part, "table", None), "name", None)
        names.append(f"{table}.{part.name}" if table and table != part.name else str(part.name))
    return f"{kind} {' '.join(names)}"
