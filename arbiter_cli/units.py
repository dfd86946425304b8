"""One grammar for durations and sizes, in flags and settings alike (SPEC §16).

Durations::

    duration := number                      a plain number is seconds: 90, 0.5
              | part part ...               each unit at most once, largest first: 1h30m, 2d12h
    part     := number unit
    unit     := w | d | h | m | s | ms      week, day, hour, minute, second, millisecond
    number   := digits [. digits]           0.5s, 1.5h (up to 15 digits, 9 after the point)

Sizes::

    size := number [unit]                   a plain number is bytes: 1024
    unit := B
          | K | KB | M | MB | G | GB | T | TB     decimal (SI): M = MB = 1 000 000 bytes
          | KiB | MiB | GiB | TiB                binary (IEC): MiB = 1 048 576 bytes

Size units ignore case (``64mib``) and may follow one space (``512 MiB``); duration units are
lower case (``M`` would read as a month to some). A size must come out a whole number of bytes.

Why not a library: ``pytimeparse2`` 1.7 also takes ``1yrsX``, ``|5s``, ``1e3``, ``1:30``
and signed values, and ``1M`` is a minute to it; ``humanfriendly.parse_timespan`` refuses
``1h30m``, and importing ``humanfriendly`` costs about 70 ms at the start of every command
(its ``parse_size`` has the same decimal/binary rule as this module). Each value here is
exact (``decimal.Decimal``) until it is handed over as float seconds or int bytes.

Every refusal is a ``ValueError`` whose one-line message shows an example of the grammar.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

MAX_DURATION_S = 100 * 365 * 86400
"""The longest duration: 100 years (``now ± it`` stays within years 1–9999 on any clock)."""
MAX_SIZE_BYTES = 2**50
"""The largest size: 1024TiB."""

DURATION_EXAMPLES = "90s, 1h30m, 500ms or 2d"
SIZE_EXAMPLES = "512MiB, 512M, 64KiB or 1TiB"

_NUMBER = r"\d{1,15}(?:\.\d{1,9})?"
_DURATION_UNITS = {unit: Decimal(size) for unit, size in (
    ("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1), ("ms", "0.001"))}
_DURATION_RE = re.compile(
    "".join(rf"(?:(?P<{unit}>{_NUMBER}){unit})?" for unit in _DURATION_UNITS), re.ASCII)
_PLAIN_RE = re.compile(_NUMBER, re.ASCII)
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
    "t": 10**12, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}  # fmt: skip
_SIZE_RE = re.compile(rf"({_NUMBER}) ?([a-z]{{0,3}})", re.ASCII | re.IGNORECASE)
_BINARY_NAMES = (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))
_DECIMAL_NAMES = (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3))


def parse_duration(value: object) -> float:
    """``"1h30m"`` → 5400.0, ``"500ms"`` → 0.5, ``"90"`` → 90.0 (a TOML number too).

    Raises ``ValueError`` with an example when ``value`` is not a duration of at most 100 years.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{_shown(value)} is not a duration: {_DURATION_HINT}")
        seconds = Decimal(str(value))
    else:
        seconds = _duration_seconds(str(value).strip())
    if seconds > MAX_DURATION_S:
        raise ValueError(f"{_shown(value)} is longer than 100 years (36500d)")
    return float(seconds)


_DURATION_HINT = (f"write a number with units w, d, h, m, s or ms, largest first, such as "
                  f"{DURATION_EXAMPLES} (a plain number is seconds)")


def _duration_seconds(text: str) -> Decimal:
    if _PLAIN_RE.fullmatch(text):
        return Decimal(text)
    match = _DURATION_RE.fullmatch(text) if text else None
    if match is None:
        raise ValueError(f"{_shown(text)} is not a duration: {_DURATION_HINT}")
    return sum((Decimal(number) * _DURATION_UNITS[unit]
                for unit, number in match.groupdict().items() if number is not None),
               Decimal(0))


def parse_size(value: object) -> int:
    """``"512MiB"`` → 536870912, ``"512M"`` → 512000000, ``"1TiB"``, ``1024`` (bytes).

    Raises ``ValueError`` with an example when ``value`` is not a whole number of bytes up to
    1024TiB.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        count = Decimal(value)
    else:
        match = _SIZE_RE.fullmatch(str(value).strip())
        unit = _SIZE_UNITS.get(match.group(2).lower()) if match else None
        if match is None or unit is None:
            raise ValueError(f"{_shown(value)} is not a size: write a number with a unit B, K, KB, "
                             f"KiB, M, MB, MiB, G, GB, GiB, T, TB or TiB, such as "
                             f"{SIZE_EXAMPLES} (M = MB = 10^6 bytes, MiB = 2^20)")
        count = Decimal(match.group(1)) * unit
    if count != count.to_integral_value():
        raise ValueError(f"{_shown(value)} is not a whole number of bytes (such as 1536B or 1.5KiB)")
    if count < 0 or count > MAX_SIZE_BYTES:
        raise ValueError(f"{_shown(value)} is larger than 1024TiB")
    return int(count)


def format_duration(seconds: float) -> str:
    """The grammar's form of ``seconds``: 0.01 → ``10ms``, 5400 → ``1h30m``, 0 → ``0s``;
    weeks only when they are whole (``2w``, but ``365d``)."""
    rest = Decimal(str(seconds))
    parts: list[str] = []
    for unit, size in _DURATION_UNITS.items():
        if unit == "w" and rest % size:
            continue
        count = rest // size if unit != "ms" else rest / size
        if count:
            parts.append(f"{format(count.normalize(), 'f')}{unit}")
            rest -= count * size
    return "".join(parts) or "0s"


def format_size(count: int) -> str:
    """The shortest exact form: 2**40 → ``1TiB``, 64 * 2**20 → ``64MiB``, 10**6 → ``1MB``."""
    for name, size in _BINARY_NAMES + _DECIMAL_NAMES:
        if count and count % size == 0:
            return f"{count // size}{name}"
    return f"{count}B"


def _shown(value: object) -> str:
    """``value`` as an error quotes it: ``repr`` (one line), at most 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:36] + "...'"
