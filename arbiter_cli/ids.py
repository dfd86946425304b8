"""Identifiers: UUIDv7 (time-ordered, RFC 9562) for uids, decisions and operations.

Within one process the ids are strictly increasing: ids minted in the same millisecond take
the next value of the 12-bit ``rand_a`` counter (RFC 9562 §6.2, method 1), so sorting by id
sorts by creation. Across processes, ids of the same millisecond may interleave.
"""

from __future__ import annotations

import os
import threading
import time

_lock = threading.Lock()
_last = [-1, 0]  # [millisecond, counter]


def uuid7(now_ms: int | None = None) -> str:
    """A UUIDv7 string: 48 bits of Unix milliseconds, a 12-bit counter, 62 random bits."""
    millis = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    with _lock:
        if millis <= _last[0]:
            millis = _last[0]
            counter = _last[1] + 1
            if counter > 0xFFF:  # counter exhausted: borrow the next millisecond
                millis, counter = millis + 1, 0
        else:
            counter = int.from_bytes(os.urandom(2), "big") & 0x3FF  # leave room to count up
        _last[0], _last[1] = millis, counter
    tail = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (millis & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | tail
    # str(uuid.UUID(int=value)), without building the UUID object (a route mints one per task)
    digits = f"{value:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"
