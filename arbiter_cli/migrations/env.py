"""Alembic environment: always online, batch mode everywhere, PostgreSQL upgrades serialised.

arbiter drives alembic from code (``arbiter_cli.adapters.migrations``) and passes a live
connection in ``config.attributes["connection"]``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from arbiter_cli.adapters.migrations import MIGRATION_LOCK_KEY
from arbiter_cli.adapters.sql.tables import postgresql_options


def run_migrations_online() -> None:
    connection = context.config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=postgresql_options(),
        render_as_batch=True,
        compare_type=True,
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                               {"key": MIGRATION_LOCK_KEY})
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("arbiter runs migrations online only")
run_migrations_online()
