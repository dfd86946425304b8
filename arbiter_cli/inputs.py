"""Parsing of the inputs the CLI and the API server share: what a caller types or sends is
read by the same rules, so both reject the same value with the same ``field`` and ``rule``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from arbiter_cli.domain.validation import fail


def parse_since(value: str | None) -> datetime | timedelta | None:
    """``--since``: a duration (meaning the database's now minus it) or an RFC 3339 timestamp
    with a zone, in UTC. Anything else, or a time outside years 1–9999 in UTC, is exit 2."""
    from arbiter_cli.config import parse_duration  # deferred: start-up of `arbiter --help`

    if value is None:
        return None
    try:
        return timedelta(seconds=parse_duration(value))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise fail("since", "format", "must be a duration such as 24h, 1h30m or 90s, or an "
                   "RFC 3339 timestamp such as 2026-01-31T00:00:00Z") from None
    if moment.tzinfo is None:
        raise fail("since", "format", "an RFC 3339 timestamp needs a time zone (e.g. Z)")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise fail("since", "range", "must fall between 0001-01-01 and 9999-12-31 in UTC"
                   ) from None
