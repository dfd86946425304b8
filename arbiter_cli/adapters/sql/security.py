"""SQL storage of security: tokens, rate buckets (one atomic statement), the audit chain.

Every time stamp here is the database's (``clock.py``): token checks read it with the token,
a bucket refills and spends on it in its one statement, and an audit event is stamped with it
while the tenant's chain head is held.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection, Row

from arbiter_cli.adapters.sql import tables as t
from arbiter_cli.adapters.sql.clock import DatabaseClock, epoch_expr, now_expr
from arbiter_cli.domain.security import GENESIS, AuditEvent, Bucket, TokenRecord, seal

k = t.tokens.c


def _token(row: Row[Any]) -> TokenRecord:
    return TokenRecord(id=row.id, tenant=row.tenant, name=row.name, role=row.role,
                       secret_hash=row.secret_hash, created_at=row.created_at,
                       expires_at=row.expires_at, revoked_at=row.revoked_at,
                       last_used_at=row.last_used_at, rate=row.rate, burst=row.burst)


class SqlTokens:
    def __init__(self, conn: Connection, clock: DatabaseClock) -> None:
        self._conn = conn
        self._clock = clock

    def add(self, token: TokenRecord) -> None:
        self._conn.execute(insert(t.tokens).values(
            id=token.id, tenant=token.tenant, name=token.name, role=token.role,
            secret_hash=token.secret_hash, created_at=token.created_at,
            expires_at=token.expires_at, revoked_at=token.revoked_at,
            last_used_at=token.last_used_at, rate=token.rate, burst=token.burst))

    def save(self, token: TokenRecord) -> None:
        self._conn.execute(update(t.tokens).where(k.id == token.id).values(
            revoked_at=token.revoked_at, last_used_at=token.last_used_at))

    def get(self, token_id: str) -> TokenRecord | None:
        """The token, read with the database's time: checking it needs no extra round trip."""
        stmt = select(t.tokens, now_expr(self._conn.dialect.name).label("database_now"))
        row = self._conn.execute(stmt.where(k.id == token_id)).first()
        if row is None:
            return None
        self._clock.remember(row.database_now)
        return _token(row)

    def list(self, tenant: str, *, after: str | None = None, limit: int = 100
             ) -> builtins.list[TokenRecord]:
        stmt = select(t.tokens).where(k.tenant == tenant).order_by(k.id)
        if after is not None:
            stmt = stmt.where(k.id > after)
        if limit:
            stmt = stmt.limit(limit)
        return [_token(row) for row in self._conn.execute(stmt)]

    def count(self) -> int:
        return int(self._conn.execute(select(func.count()).select_from(t.tokens)).scalar_one())


class SqlRate:
    """The token bucket of ``domain.security.spend`` as one atomic upsert per check.

    The statement reads the database's clock once (the insert's value, reused through
    ``excluded``), so a caller's clock never moves a bucket shared by several hosts.
    """

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def spend(self, token_id: str, tenant: str, rate: float, burst: int) -> Bucket:
        dialect = self._conn.dialect.name
        upsert: Any
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as upsert
        else:
            from sqlalchemy.dialects.sqlite import insert as upsert
        hi, lo = (func.greatest, func.least) if dialect == "postgresql" else (func.max, func.min)
        b = t.rate_buckets.c
        fresh = upsert(t.rate_buckets).values(token_id=token_id, tenant=tenant,
                                               tokens=float(burst) - 1.0,
                                               updated_at=epoch_expr(dialect))
        now = fresh.excluded.updated_at
        refill = b.tokens + hi(0.0, now - b.updated_at) * rate
        stmt = fresh.on_conflict_do_update(
            index_elements=[b.token_id],
            set_={"tokens": hi(-float(burst), lo(float(burst), refill) - 1.0),
                  "updated_at": now},
        ).returning(t.rate_buckets.c.tokens, t.rate_buckets.c.updated_at)
        row = self._conn.execute(stmt).one()
        return Bucket(tokens=float(row[0]), updated_at=float(row[1]))


a = t.audit_events.c


def _event(row: Row[Any]) -> AuditEvent:
    return AuditEvent(tenant=row.tenant, seq=row.seq, at=row.at, actor=row.actor,
                      action=row.action, target=row.target, result=row.result,
                      correlation_id=row.correlation_id, details=row.details,
                      prev_hash=row.prev_hash, hash=row.hash)


class SqlAudit:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._dialect = conn.dialect.name

    def append(self, tenant: str, *, actor: str | None, action: str, target: str | None,
               result: str, correlation_id: str | None, details: Mapping[str, object]
               ) -> AuditEvent:
        """Stamp with the database's time and chain at the head, both read under the lock."""
        if self._dialect == "postgresql":
            # Serialise appends per tenant. NO KEY UPDATE, not UPDATE: the foreign keys to
            # tenants take KEY SHARE locks, which FOR UPDATE would wait on (a deadlock). The
            # head is read by a second statement: under READ COMMITTED only a new statement
            # sees what the previous lock holder committed.
            self._conn.execute(select(t.tenants.c.name).where(t.tenants.c.name == tenant)
                               .with_for_update(key_share=True))
        last = select(a.seq, a.hash).where(a.tenant == tenant).order_by(a.seq.desc()).limit(1)
        at, head_seq, head_hash = self._conn.execute(select(
            now_expr(self._dialect, statement=True),
            last.with_only_columns(a.seq).scalar_subquery(),
            last.with_only_columns(a.hash).scalar_subquery(),
        )).one()
        seq, prev = (1, GENESIS) if head_seq is None else (int(head_seq) + 1, str(head_hash))
        event = seal(tenant, seq, at, prev, actor=actor, action=action, target=target,
                     result=result, correlation_id=correlation_id, details=details)
        self._conn.execute(insert(t.audit_events).values(
            tenant=tenant, seq=seq, at=at, actor=actor, action=action, target=target,
            result=result, correlation_id=correlation_id, details=dict(event.details),
            prev_hash=prev, hash=event.hash))
        return event

    def events(self, tenant: str, *, since: datetime | None = None, action: str | None = None,
               actor: str | None = None, before: int | None = None, limit: int = 0,
               ascending: bool = False) -> builtins.list[AuditEvent]:
        stmt = select(t.audit_events).where(a.tenant == tenant)
        stmt = stmt.order_by(a.seq if ascending else a.seq.desc())
        for column, value in ((a.action, action), (a.actor, actor)):
            if value is not None:
                stmt = stmt.where(column == value)
        if since is not None:
            stmt = stmt.where(a.at >= since)
        if before is not None:
            stmt = stmt.where(a.seq < before)
        if limit:
            stmt = stmt.limit(limit)
        return [_event(row) for row in self._conn.execute(stmt)]

    def last(self, tenant: str, action: str, actor: str | None) -> AuditEvent | None:
        found = self.events(tenant, action=action, actor=actor, limit=1)
        return found[0] if found else None
