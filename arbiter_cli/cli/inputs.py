"""Reading structured input (``--file PATH|-``, ``--metadata JSON``) into plain dicts."""

from __future__ import annotations

import json
import os
import stat
import sys
from typing import Any, BinaryIO

from arbiter_cli.domain.validation import fail
from arbiter_cli.inputs import parse_since

__all__ = ["duration_at_least", "parse_since", "read_documents", "read_text"]


def read_documents(source: str, field: str = "file", *, max_bytes: int) -> list[dict[str, Any]]:
    """One JSON object, a JSON array of objects, or JSON lines; ``-`` reads stdin.

    At most ``max_bytes`` are read (``security.max_input_bytes``), and only from a regular
    file or stdin: a device, a FIFO or a folder is refused before anything is read.
    """
    text = read_text(source, field, max_bytes=max_bytes)
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


def read_text(source: str, field: str, *, max_bytes: int) -> str:
    """The UTF-8 text of a regular file or of stdin (``-``), at most ``max_bytes`` of it."""
    if source == "-":
        data = _read_bounded(sys.stdin.buffer, max_bytes, field, "stdin")
    else:
        data = _read_file(source, field, max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail(field, "utf8", f"is not UTF-8 text (byte {exc.start})") from None


def _read_file(source: str, field: str, max_bytes: int) -> bytes:
    # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(source, flags)
    except FileNotFoundError:
        raise fail(field, "exists", f"{source} does not exist") from None
    except OSError as exc:
        raise fail(field, "readable", f"cannot read {source}: {exc.strerror}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise fail(field, "regular_file", f"{source} is {kind}: give a file, or - for stdin")
    with os.fdopen(fd, "rb") as handle:
        return _read_bounded(handle, max_bytes, field, source)


def _read_bounded(handle: BinaryIO, max_bytes: int, field: str, what: str) -> bytes:
    """Read at most ``max_bytes``; one byte more means the input is too large (exit 2)."""
    try:
        data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise fail(field, "readable", f"cannot read {what}: {exc.strerror}") from None
    if len(data) > max_bytes:
        raise fail(field, "size", f"{what} is larger than security.max_input_bytes "
                   f"({max_bytes} bytes)")
    return data


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


def duration_at_least(value: str, field: str, low: float) -> float:
    """A duration flag in the one grammar (``90s``, ``1h30m``, ``500ms``, ``5``), in seconds;
    exit 2 with ``field`` and ``rule`` when it is not one, or is shorter than ``low``."""
    from arbiter_cli.units import format_duration, parse_duration  # deferred: start-up

    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise fail(field, "duration", str(exc)) from None
    if seconds < low:
        raise fail(field, "range", f"must be at least {format_duration(low)}, such as "
                   f"{format_duration(max(low, 5))}")
    return seconds
