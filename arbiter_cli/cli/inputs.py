"""Reading structured input (``--file PATH|-``, ``--metadata JSON``) into plain dicts."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from arbiter_cli.domain.validation import fail


def read_documents(source: str, field: str = "file") -> list[dict[str, Any]]:
    """One JSON object, a JSON array of objects, or JSON lines; ``-`` reads stdin."""
    if source == "-":
        text = sys.stdin.read()
    else:
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise fail(field, "exists", f"{source} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise fail(field, "readable", f"cannot read {source}: {exc}") from None
    stripped = text.strip()
    if not stripped:
        raise fail(field, "json", "is empty: expected a JSON object or JSON lines")
    try:
        whole = json.loads(stripped)
    except RecursionError:
        raise fail(field, "json", "is nested too deeply") from None
    except json.JSONDecodeError:
        return [_line(line, number, field) for number, line in enumerate(stripped.splitlines(), 1)
                if line.strip()]
    except ValueError as exc:  # e.g. an integer beyond Python's digit limit
        raise fail(field, "json", f"is not acceptable JSON ({exc})") from None
    documents = whole if isinstance(whole, list) else [whole]
    if not documents:
        raise fail(field, "json", "holds no JSON object")
    for index, document in enumerate(documents):
        if not isinstance(document, dict):
            raise fail(f"{field}[{index}]", "object", "must be a JSON object")
    return documents


def _line(line: str, number: int, field: str) -> dict[str, Any]:
    try:
        document = json.loads(line)
    except RecursionError:
        raise fail(field, "json", f"line {number}: nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise fail(field, "json", f"line {number}: invalid JSON ({exc.msg} at column {exc.colno})"
                   ) from None
    except ValueError as exc:
        raise fail(field, "json", f"line {number}: not acceptable JSON ({exc})") from None
    if not isinstance(document, dict):
        raise fail(field, "object", f"line {number}: must be a JSON object")
    return document


def parse_since(value: str | None) -> datetime | timedelta | None:
    """``--since``: a duration (meaning the database's now minus it) or an RFC 3339 timestamp
    with a zone."""
    from arbiter_cli.config import parse_duration

    if value is None:
        return None
    try:
        return timedelta(seconds=parse_duration(value))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise fail("since", "format", "must be a duration like 24h or an RFC 3339 timestamp"
                   ) from None
    if moment.tzinfo is None:
        raise fail("since", "format", "an RFC 3339 timestamp needs a time zone (e.g. Z)")
    return moment
