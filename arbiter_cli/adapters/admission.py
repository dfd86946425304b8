"""An admission's reads and writes one step at a time (``TokenRepository.admit``), for the
stores that cannot do them in one statement: the memory store, and SQLite (no
data-modifying ``WITH``; its round trips stay in the process)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Protocol

from arbiter_cli.domain.security import Bucket, TokenRecord, admissible, allowed


class _Tokens(Protocol):
    def get(self, token_id: str) -> TokenRecord | None: ...

    def save(self, token: TokenRecord) -> None: ...


class _Rate(Protocol):
    def spend(self, token_id: str, tenant: str, rate: float, burst: int) -> Bucket: ...


def admit_stepwise(
    tokens: _Tokens, rate_limiter: _Rate, now: Callable[[], datetime], token_id: str, *,
    secret_hash: str, roles: tuple[str, ...], rate: float, burst: int,
    last_used_resolution: timedelta,
) -> tuple[TokenRecord | None, Bucket | None]:
    record = tokens.get(token_id)
    moment = now()
    if record is None or not admissible(record, secret_hash, roles, moment):
        return record, None
    bucket = rate_limiter.spend(record.id, record.tenant,
                                record.rate if record.rate is not None else rate,
                                record.burst if record.burst is not None else burst)
    last = record.last_used_at
    if allowed(bucket) and (last is None
                            or not timedelta(0) <= moment - last < last_used_resolution):
        tokens.save(replace(record, last_used_at=moment))  # a future stamp heals too
    return record, bucket
