"""The cells of result tables that read differently per output format (no rich here)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class Stamp:
    """A point in time in a table cell: its age in table mode (``3m ago``, ``in 5d``), the
    full RFC 3339 text in tsv mode. ``missing`` is what table mode shows for no time."""

    at: datetime | None
    missing: str = ""

    @classmethod
    def of(cls, value: str | float | datetime | None, missing: str = "") -> Stamp:
        """From an RFC 3339 string, epoch seconds or a datetime; unreadable → no time."""
        if isinstance(value, datetime):
            return cls(_aware(value), missing)
        try:
            if isinstance(value, str):
                return cls(_aware(datetime.fromisoformat(value)), missing)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return cls(datetime.fromtimestamp(value, UTC), missing)
        except (ValueError, OverflowError, OSError):
            pass
        return cls(None, missing)

    def text(self) -> str:
        """The full RFC 3339 time (tsv mode), or ``""``."""
        from arbiter_cli.domain.agents import rfc3339  # deferred: start-up of `arbiter --help`

        return "" if self.at is None else rfc3339(self.at)

    def age(self, now: datetime) -> str:
        """``3m ago`` or ``in 5d`` (table mode), or ``missing``."""
        if self.at is None:
            return self.missing
        seconds = (now - self.at).total_seconds()
        return f"{span(seconds)} ago" if seconds >= 0 else f"in {span(-seconds)}"


def span(seconds: float) -> str:
    """A length of time in its largest whole unit: ``45s``, ``3m``, ``2h``, ``5d``."""
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _aware(moment: datetime) -> datetime:
    """A time without a zone is UTC (every stored time is)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
