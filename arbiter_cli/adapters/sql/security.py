"""SQL storage of security: tokens, rate buckets (one atomic statement), the audit chain.

Every time stamp here is the database's (``clock.py``): token checks read it with the token,
a bucket refills and spends on it in its one statement, and an audit event is stamped with it
while the tenant's chain head is held.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    Float,
    String,
    bindparam,
    case,
    extract,
    false,
    func,
    insert,
    literal_column,
    select,
    text,
    true,
    type_coerce,
    update,
)
from sqlalchemy.engine import Connection, Row

from arbiter_cli.adapters.admission import admit_stepwise
from arbiter_cli.adapters.sql import tables as t
from arbiter_cli.adapters.sql.clock import DatabaseClock, EstimatedClock, epoch_expr, now_expr
from arbiter_cli.adapters.sql.deferred import DeferringConnection
from arbiter_cli.adapters.sql.types import UtcDateTime
from arbiter_cli.domain.security import (
    GENESIS,
    Anchor,
    AuditEvent,
    Bucket,
    TokenRecord,
    Undecodable,
    Verdict,
    seal,
    verify,
)
from arbiter_cli.errors import CheckFailed

k = t.tokens.c


def _token(row: Row[Any]) -> TokenRecord:
    return TokenRecord(id=row.id, tenant=row.tenant, name=row.name, role=row.role,
                       secret_hash=row.secret_hash, created_at=row.created_at,
                       expires_at=row.expires_at, revoked_at=row.revoked_at,
                       last_used_at=row.last_used_at, rate=row.rate, burst=row.burst)


class SqlTokens:
    def __init__(self, conn: Connection, clock: DatabaseClock | EstimatedClock) -> None:
        self._conn = conn
        self._clock = clock

    def add(self, token: TokenRecord) -> None:
        self._conn.execute(insert(t.tokens).values(
            id=token.id, tenant=token.tenant, name=token.name, role=token.role,
            secret_hash=token.secret_hash, created_at=token.created_at,
            expires_at=token.expires_at, revoked_at=token.revoked_at,
            last_used_at=token.last_used_at, rate=token.rate, burst=token.burst))

    def save(self, token: TokenRecord) -> None:
        self._conn.execute(_save_statement(), {"token_id": token.id,
                                               "token_revoked_at": token.revoked_at,
                                               "token_last_used_at": token.last_used_at})

    def get(self, token_id: str) -> TokenRecord | None:
        """The token, read with the database's time: checking it needs no extra round trip."""
        row = self._conn.execute(_get_statement(self._conn.dialect.name),
                                 {"token_id": token_id}).first()
        if row is None:
            return None
        self._clock.remember(row.database_now)
        return _token(row)

    def admit(self, token_id: str, *, secret_hash: str, roles: tuple[str, ...], rate: float,
              burst: int, last_used_resolution: timedelta
              ) -> tuple[TokenRecord | None, Bucket | None]:
        """On PostgreSQL one statement (``ADMIT``); elsewhere one step at a time."""
        if self._conn.dialect.name != "postgresql" or not isinstance(self._clock,
                                                                      DatabaseClock):
            return admit_stepwise(self, SqlRate(self._conn), self._clock, token_id,
                                  secret_hash=secret_hash, roles=roles, rate=rate,
                                  burst=burst, last_used_resolution=last_used_resolution)
        row = self._conn.execute(_admit_statement(), {
            "id": token_id, "secret_hash": secret_hash, "roles": list(roles),
            "rate": float(rate), "burst": float(burst),
            "resolution": last_used_resolution.total_seconds(),
        }).first()
        if row is None:
            return None, None
        self._clock.remember(row.database_now)
        bucket = (None if row.bucket_tokens is None else
                  Bucket(tokens=float(row.bucket_tokens), updated_at=float(row.bucket_updated_at)))
        return _token(row), bucket

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


@lru_cache(maxsize=1)
def _save_statement() -> Any:
    """A token's revocation and last use (built once; the parameters are named apart from the
    columns, which they would otherwise join in the SET)."""
    return update(t.tokens).where(k.id == bindparam("token_id")).values(
        revoked_at=bindparam("token_revoked_at", type_=k.revoked_at.type),
        last_used_at=bindparam("token_last_used_at", type_=k.last_used_at.type))


@lru_cache(maxsize=4)
def _get_statement(dialect: str) -> Any:
    """A token with the database's time (built once per dialect)."""
    return (select(t.tokens, now_expr(dialect).label("database_now"))
            .where(k.id == bindparam("token_id")))


#: PostgreSQL: the token (with the transaction's time), its bucket spent only if the token is
#: admissible then (hash, revocation, expiry, role: ``domain.security.admissible``; the caller
#: still judges with ``check_token``'s constant-time comparison), and ``last_used_at`` stamped
#: when the spend was allowed and the last stamp is not within the resolution before now: one
#: round trip. The bucket arithmetic is ``SqlRate.spend``'s, at ``clock_timestamp()``. The
#: token's columns are named, not ``tokens.*``: the statement is prepared on long-lived
#: connections (``prepared.py``), and a column a migration adds would change its result type.
ADMIT = """
WITH tok AS (
    SELECT tokens.id, tokens.tenant, tokens.name, tokens.role, tokens.secret_hash,
           tokens.created_at, tokens.expires_at, tokens.revoked_at, tokens.last_used_at,
           tokens.rate, tokens.burst, now() AS database_now,
           CAST(coalesce(tokens.rate, :rate) AS FLOAT) AS eff_rate,
           CAST(coalesce(tokens.burst, :burst) AS FLOAT) AS eff_burst,
           (tokens.secret_hash = :secret_hash AND tokens.revoked_at IS NULL
            AND (tokens.expires_at IS NULL OR now() < tokens.expires_at)
            AND tokens.role = ANY(:roles)) AS admissible
    FROM tokens WHERE tokens.id = :id
), spent AS (
    INSERT INTO rate_buckets (token_id, tenant, tokens, updated_at)
    SELECT tok.id, tok.tenant, tok.eff_burst - 1.0,
           CAST(EXTRACT(epoch FROM clock_timestamp()) AS FLOAT)
    FROM tok WHERE tok.admissible
    ON CONFLICT (token_id) DO UPDATE SET
        tokens = greatest(-(SELECT eff_burst FROM tok), least((SELECT eff_burst FROM tok),
                 rate_buckets.tokens + greatest(0.0, excluded.updated_at
                 - rate_buckets.updated_at) * (SELECT eff_rate FROM tok)) - 1.0),
        updated_at = excluded.updated_at
    RETURNING rate_buckets.tokens, rate_buckets.updated_at
), used AS (
    UPDATE tokens SET last_used_at = tok.database_now FROM tok, spent
    WHERE tokens.id = tok.id AND spent.tokens >= 0.0
      AND (tok.last_used_at IS NULL OR tok.database_now < tok.last_used_at
           OR tok.database_now - tok.last_used_at >= make_interval(secs => :resolution))
    RETURNING tokens.id
)
SELECT tok.*, spent.tokens AS bucket_tokens, spent.updated_at AS bucket_updated_at
FROM tok LEFT JOIN spent ON true
"""

_ADMIT: list[Any] = []


def _admit_statement() -> Any:
    if not _ADMIT:  # built once; typed by name, so the time stamps come back aware (UTC)
        times = {name: t.tokens.c[name].type
                 for name in ("created_at", "expires_at", "revoked_at", "last_used_at")}
        _ADMIT.append(text(ADMIT).columns(database_now=UtcDateTime(), bucket_tokens=Float(),
                                          bucket_updated_at=Float(), **times))
    return _ADMIT[0]


class SqlRate:
    """The token bucket of ``domain.security.spend`` as one atomic upsert per check.

    The statement reads the database's clock once (the insert's value, reused through
    ``excluded``), so a caller's clock never moves a bucket shared by several hosts.
    """

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def spend(self, token_id: str, tenant: str, rate: float, burst: int) -> Bucket:
        row = self._conn.execute(_spend_statement(self._conn.dialect.name), {
            "bucket_token_id": token_id, "bucket_tenant": tenant,
            "bucket_fresh": float(burst) - 1.0, "bucket_rate": rate,
            "bucket_floor": -float(burst), "bucket_burst": float(burst),
        }).one()
        return Bucket(tokens=float(row[0]), updated_at=float(row[1]))


@lru_cache(maxsize=4)
def _spend_statement(dialect: str) -> Any:
    """``SqlRate.spend``'s upsert (built once per dialect): a fresh bucket holds ``burst - 1``
    tokens; a known one refills at ``rate`` since its stamp, up to ``burst``, and spends one,
    down to ``-burst``. The values are computed as Python floats and sent as such."""
    upsert: Any
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as upsert
    else:
        from sqlalchemy.dialects.sqlite import insert as upsert
    hi, lo = (func.greatest, func.least) if dialect == "postgresql" else (func.max, func.min)
    b = t.rate_buckets.c
    fresh = upsert(t.rate_buckets).values(
        token_id=bindparam("bucket_token_id", type_=b.token_id.type),
        tenant=bindparam("bucket_tenant", type_=b.tenant.type),
        tokens=bindparam("bucket_fresh", type_=b.tokens.type),
        updated_at=epoch_expr(dialect))
    now = fresh.excluded.updated_at
    refill = b.tokens + hi(0.0, now - b.updated_at) * bindparam("bucket_rate", type_=Float())
    return fresh.on_conflict_do_update(
        index_elements=[b.token_id],
        set_={"tokens": hi(bindparam("bucket_floor", type_=Float()),
                           lo(bindparam("bucket_burst", type_=Float()), refill) - 1.0),
              "updated_at": now},
    ).returning(b.tokens, b.updated_at)


a = t.audit_events.c
UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TEXT_FIELDS = ("actor", "action", "target", "result", "correlation_id", "prev_hash", "hash")
NULLABLE = frozenset({"actor", "target", "correlation_id"})


def head_columns(tenant: Any) -> tuple[Any, Any]:
    """The chain head of ``tenant`` (a bound parameter or a correlated column) as two scalar
    subqueries, ``audit_head_seq`` and ``audit_head_hash`` (both NULL for an empty chain):
    another statement of the transaction may carry them (``SqlAudit.prime``)."""
    last = select(a.seq, a.hash).where(a.tenant == tenant).order_by(a.seq.desc()).limit(1)
    return (last.with_only_columns(a.seq).scalar_subquery().label("audit_head_seq"),
            last.with_only_columns(a.hash).scalar_subquery().label("audit_head_hash"))


#: The class of the audit chains' advisory locks (``pg_advisory_xact_lock(int4, int4)``,
#: 'audt'); the second key is ``hashtext(tenant)`` (a collision only makes two tenants wait
#: for each other).
CHAIN_LOCK_CLASS = 0x61756474


def chain_lock(tenant: Any) -> Any:
    """PostgreSQL: take ``tenant``'s chain lock until the end of the transaction, as a column
    of a statement that also reads the chain head (``head_columns``) and has taken its row
    locks before this column is evaluated. True when the lock was free: the head that
    statement read is then current, so the append is one insert, unless a holder committed
    between the statement's snapshot and this try (a narrow window: then the conditional
    insert inserts nothing and the append reads the head again, as without the lock). False
    after waiting for it: the head is as old as the wait, and the append reads it again,
    once, in a new statement (nobody else holding the lock can append meanwhile).

    Without it, appends of one tenant raced: each read the head, and every loser of a race
    for a ``seq`` (its conditional insert inserted nothing) read it again and retried; with 4
    processes routing for one tenant an append lost 1.35 times on average, two statements
    each. Correctness never rested on the lock: appends that do not take it (registrations,
    token changes, denials) still chain through the conditional insert.

    Deadlock-free because a holder never waits for a lock a waiter holds: a waiter holds only
    the row locks taken before it waits (the agent it claims or locks, the decision it
    closes), and no key of a unique index (a route's claim takes the chain lock before it
    inserts its decision: a replayed decision of the same task, inserted by a holder, would
    wait for that key); the holder took its own agent's lock before the chain lock, and
    afterwards writes only that agent, its arms and its decisions (a waiter's agent is
    another one, and a decision of the holder's agent can only be held by a transaction
    waiting for that agent, not for the chain lock), then inserts its event."""
    key = func.hashtext(tenant)
    cls: Any = literal_column(str(CHAIN_LOCK_CLASS))
    waited = select(false()).select_from(func.pg_advisory_xact_lock(cls, key)).scalar_subquery()
    return case((func.pg_try_advisory_xact_lock(cls, key), true()), else_=waited)


def _head(dialect: str) -> Any:
    """The database's time of this statement and the chain head, in one round trip."""
    return select(now_expr(dialect, statement=True), *head_columns(bindparam("tenant")))


def _append(dialect: str, prefix: str = "") -> Any:
    """Insert the event at ``seq`` unless that ``seq`` exists (then: no row returned), its
    values the parameters named ``prefix`` + their column's name."""
    upsert: Any
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as upsert
    else:
        from sqlalchemy.dialects.sqlite import insert as upsert
    columns = ("tenant", "seq", "at", "actor", "action", "target", "result", "correlation_id",
               "details", "prev_hash", "hash")
    return (upsert(t.audit_events)
            .values({name: bindparam(prefix + name, type_=t.audit_events.c[name].type)
                     for name in columns})
            .on_conflict_do_nothing(index_elements=["tenant", "seq"])
            .returning(a.seq))


def _append_deferred(prefix: str) -> Any:
    """The append as the ``main`` of a deferring flush (PostgreSQL; built once per shape)."""
    return _append("postgresql", prefix)


#: Statements built once per dialect (SQLAlchemy then reuses their compiled form).
_HEAD: dict[str, Any] = {}
_APPEND: dict[str, Any] = {}


class SqlAudit:
    def __init__(self, conn: Connection, key: bytes | None = None,
                 deferring: DeferringConnection | None = None) -> None:
        self._conn = conn
        self._key = key
        self._deferring = deferring  # the insert carries the writes deferred before it
        self._dialect = conn.dialect.name
        self._primed: tuple[str, datetime, Any, Any] | None = None

    def prime(self, tenant: str, at: datetime, head_seq: Any, head_hash: Any) -> None:
        """The head and a time of ``tenant``'s chain, read by an earlier statement of this
        transaction (``head_columns``, with the statement's time): the next append of that
        tenant starts from them instead of reading them (one round trip less).

        Safe for the same reason as a fresh read: the insert is conditional on ``(tenant,
        seq)``, so a head that moved meanwhile (another commit, or an append of this very
        transaction) inserts nothing and the append reads the head again. ``at`` was read
        with the head in one statement, so it is after the commit of that head's event."""
        self._primed = (tenant, at, head_seq, head_hash)

    def append(self, tenant: str, *, actor: str | None, action: str, target: str | None,
               result: str, correlation_id: str | None, details: Mapping[str, object]
               ) -> AuditEvent:
        """Stamp with the database's time and chain at the head: two statements.

        The head and the time are read together; the insert of ``seq = head + 1`` is
        conditional on the primary key ``(tenant, seq)`` (``ON CONFLICT DO NOTHING``). Appends
        are thereby serialised per tenant by the key itself: an append racing another for
        the same ``seq`` waits for that transaction (PostgreSQL's speculative insertion), and
        if it committed, inserts nothing; this one then reads the new head in a new statement
        (READ COMMITTED: a new snapshot) and chains again. No event is ever chained to a head
        that is not the committed predecessor of its ``seq``, and no lock is held longer than
        the insert. SQLite's write transaction (``BEGIN IMMEDIATE``) never races here.

        On PostgreSQL the head often came with an earlier statement (``prime``), and the
        insert carries the writes the transaction deferred (``deferred.py``): then the append
        is one statement, or part of one.
        """
        primed, self._primed = self._primed, None
        while True:
            if primed is not None and primed[0] == tenant:
                _, at, head_seq, head_hash = primed
                primed = None
            else:
                at, head_seq, head_hash = self._conn.execute(self._head_statement(),
                                                             {"tenant": tenant}).one()
            seq, prev = (1, GENESIS) if head_seq is None else (int(head_seq) + 1,
                                                               str(head_hash))
            event = seal(tenant, seq, at, prev, actor=actor, action=action, target=target,
                         result=result, correlation_id=correlation_id, details=details,
                         key=self._key)
            params = {
                "tenant": tenant, "seq": seq, "at": at, "actor": actor, "action": action,
                "target": target, "result": result, "correlation_id": correlation_id,
                "details": dict(event.details), "prev_hash": prev, "hash": event.hash,
            }
            inserted = (self._conn.execute(self._insert_statement(), params).first()
                        if self._deferring is None or not self._deferring.pending
                        else self._deferring.flush(_append_deferred, params))
            if inserted is not None:
                return event

    def _head_statement(self) -> Any:
        if self._dialect not in _HEAD:
            _HEAD[self._dialect] = _head(self._dialect)
        return _HEAD[self._dialect]

    def _insert_statement(self) -> Any:
        if self._dialect not in _APPEND:
            _APPEND[self._dialect] = _append(self._dialect)
        return _APPEND[self._dialect]

    def events(self, tenant: str, *, since: datetime | None = None, action: str | None = None,
               actor: str | None = None, before: int | None = None, limit: int = 0,
               ascending: bool = False) -> builtins.list[AuditEvent]:
        """Events as stored; a row that cannot be read back is exit 1, never a crash."""
        found = []
        for item in self._rows(tenant, since=since, action=action, actor=actor, before=before,
                               limit=limit, ascending=ascending):
            if isinstance(item, Undecodable):
                raise CheckFailed(
                    f"audit event seq {item.seq} of tenant {tenant!r} cannot be decoded "
                    f"({item.reason}): the log was altered outside arbiter; run "
                    "`arbiter audit verify`", details={"first_bad_seq": item.seq})
            found.append(item)
        return found

    def last(self, tenant: str, action: str, actor: str | None) -> AuditEvent | None:
        found = self._rows(tenant, action=action, actor=actor, limit=1)
        return found[0] if found and isinstance(found[0], AuditEvent) else None

    def verify(self, tenant: str, anchor: Anchor | None = None) -> Verdict:
        return verify(self._rows(tenant, ascending=True), anchor, self._key)

    # ------------------------------------------------------------------ reading rows back

    def _rows(self, tenant: str, *, since: datetime | None = None, action: str | None = None,
              actor: str | None = None, before: int | None = None, limit: int = 0,
              ascending: bool = False) -> builtins.list[AuditEvent | Undecodable]:
        stmt = select(*self._raw_columns()).where(a.tenant == tenant)
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
        return [self._decode(tenant, row) for row in self._conn.execute(stmt)]

    def _raw_columns(self) -> builtins.list[Any]:
        """Columns as the database holds them, so that a row altered by hand is decoded (and
        judged) here, not by a type processor that would fail the whole query."""
        at: Any
        details: Any
        if self._dialect == "postgresql":
            at = extract("epoch", a.at).label("at")  # exact numeric; 'infinity' included
            details = a.details
        else:
            at = type_coerce(a.at, String()).label("at")
            details = type_coerce(a.details, String()).label("details")
        return [a.seq, at, *(getattr(a, name) for name in TEXT_FIELDS), details]

    def _decode(self, tenant: str, row: Row[Any]) -> AuditEvent | Undecodable:
        seq = row.seq
        if isinstance(seq, bool) or not isinstance(seq, int):
            return Undecodable(tenant, None, f"seq {str(seq)[:40]!r} is not an integer")
        try:
            at = self._moment(row.at)
            details = row.details
            if isinstance(details, str):
                details = json.loads(details)
            if not isinstance(details, dict):
                raise ValueError("details is not a JSON object")
            texts = {name: getattr(row, name) for name in TEXT_FIELDS}
            for name, value in texts.items():
                if not (isinstance(value, str) or value is None and name in NULLABLE):
                    raise ValueError(f"{name} is not text")
            return AuditEvent(tenant=tenant, seq=seq, at=at, details=details, **texts)
        except (ValueError, TypeError, OverflowError, ArithmeticError, RecursionError) as exc:
            return Undecodable(tenant, seq, str(exc).splitlines()[0][:200] if str(exc)
                               else type(exc).__name__)

    def _moment(self, raw: Any) -> datetime:
        if self._dialect == "postgresql":
            micros = (Decimal(raw) * 1_000_000).to_integral_value()  # exact, or an error
            return UNIX_EPOCH + timedelta(microseconds=int(micros))
        if not isinstance(raw, str):
            raise ValueError("at is not a time stamp")
        moment = datetime.fromisoformat(raw)
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)

