"""Small field validators that raise ``InvalidInput`` with a dotted ``field`` and a ``rule``."""

from __future__ import annotations

import functools
import json
import math
import re
import unicodedata
from collections.abc import Iterable
from typing import Any

from arbiter_cli.errors import InvalidInput

AGENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
TASK_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MODEL_FAMILY_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
METADATA_MAX_BYTES = 16 * 1024


def fail(field: str, rule: str, message: str) -> InvalidInput:
    return InvalidInput(f"{field}: {message}", field=field, rule=rule)


def pattern(value: Any, regex: re.Pattern[str], field: str, what: str) -> str:
    if not isinstance(value, str) or not regex.fullmatch(value):
        raise fail(field, "pattern", f"{_show(value)} is not a valid {what} ({regex.pattern})")
    return value


def text(value: Any, field: str, *, min_len: int = 1, max_len: int = 200) -> str:
    if not isinstance(value, str):
        raise fail(field, "type", "must be a string")
    if not min_len <= len(value) <= max_len:
        raise fail(field, "length", f"must be {min_len} to {max_len} characters")
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
        raise fail(field, "no_control_characters",
                   "must not contain control characters or lone surrogates")
    return value


def integer(value: Any, field: str, *, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and re.fullmatch(r"-?\d{1,19}", value.strip()):
            value = int(value)
        else:
            raise fail(field, "type", "must be an integer")
    if not low <= value <= high:
        raise fail(field, "range", f"must be from {low} to {high} (got {value})")
    return int(value)


def fraction(value: Any, field: str) -> float:
    number = finite(value, field)
    if not 0.0 <= number <= 1.0:
        raise fail(field, "range", f"must be in [0, 1] (got {number:g})")
    return number


def finite(value: Any, field: str, *, low: float = -math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise fail(field, "type", "must be a number")
    if isinstance(value, str) and "_" in value:  # float() accepts Python's 1_000
        raise fail(field, "type", "must be a number")
    try:
        number = float(value)
    except ValueError:
        raise fail(field, "type", "must be a number") from None
    except OverflowError:
        raise fail(field, "finite", "must be a finite number (too large)") from None
    if not math.isfinite(number):
        raise fail(field, "finite", "must be a finite number (NaN and infinity are rejected)")
    if number < low:
        raise fail(field, "range", f"must be >= {low:g} (got {number:g})")
    return number


def string_list(value: Any, field: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise fail(field, "type", "must be a list of strings")
    return list(value)


def choose(values: Iterable[str], allowed: Iterable[str], field: str) -> tuple[str, ...]:
    """Map each value to its canonical spelling in ``allowed`` (case-insensitive), deduplicated."""
    canonical = _canonical(tuple(allowed))
    chosen: dict[str, None] = {}
    for value in values:
        match = canonical.get(value.lower()) if isinstance(value, str) else None
        if match is None:
            shown = ", ".join(sorted(canonical.values()))
            raise fail(field, "allowed", f"unknown value {_show(value)} (allowed: {shown})")
        chosen[match] = None
    return tuple(sorted(chosen))


@functools.lru_cache(maxsize=64)
def _canonical(allowed: tuple[str, ...]) -> dict[str, str]:
    """Lower-cased spelling → canonical one; kept per tuple of allowed values (configured once,
    asked on every task and registration). Callers only read it."""
    return {a.lower(): a for a in allowed}


def labels(values: Iterable[str], field: str) -> tuple[str, ...]:
    """Free labels of 1–64 characters, deduplicated case-insensitively, first spelling kept."""
    seen: dict[str, str] = {}
    for value in values:
        text(value, field, max_len=64)
        if len(value.lower()) > 64:  # stored lower-cased for matching
            raise fail(field, "length", "must be 1 to 64 characters, also when lower-cased")
        seen.setdefault(value.lower(), value)
    return tuple(sorted(seen.values(), key=str.lower))


def metadata(value: Any, field: str = "metadata") -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except RecursionError:
            raise fail(field, "json", "is nested too deeply") from None
        except json.JSONDecodeError as exc:
            raise fail(field, "json", f"is not valid JSON ({exc.msg})") from None
        except ValueError as exc:  # e.g. an integer beyond Python's digit limit
            raise fail(field, "json", f"is not acceptable JSON ({exc})") from None
    if not isinstance(value, dict):
        raise fail(field, "object", "must be a JSON object")
    try:
        encoded = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except ValueError:
        raise fail(field, "finite", "must not contain NaN or infinity") from None
    except RecursionError:
        raise fail(field, "json", "is nested too deeply") from None
    if _has_nul(value):  # PostgreSQL's jsonb cannot store NUL: reject it on every backend
        raise fail(field, "no_nul", "must not contain NUL characters or lone surrogates")
    if len(encoded.encode()) > METADATA_MAX_BYTES:
        raise fail(field, "size", f"must be at most {METADATA_MAX_BYTES} bytes of JSON")
    return dict(value)


def _has_nul(value: Any) -> bool:
    """Whether any string in ``value`` holds NUL or a lone surrogate; iterative, so a nesting
    ``json.dumps`` accepted cannot exhaust the stack here."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item or any("\ud800" <= ch <= "\udfff" for ch in item):
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def _show(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."
