"""Time windows of the views (``--since``), on the database's clock (SPEC §4.1)."""

from __future__ import annotations

from datetime import datetime, timedelta

from arbiter_cli.ports import Since, UnitOfWork

__all__ = ["Since", "since"]


def since(uow: UnitOfWork, value: Since) -> datetime | None:
    """A lower time bound: a moment as given, or a duration back from the database's now."""
    if isinstance(value, timedelta):
        return uow.now() - value
    return value
