"""Security rules (SPEC §4): token format and checks, roles, the token bucket, the audit chain.

Pure functions: secrets come from the caller's random source, time from the caller's clock.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from arbiter_cli.domain.agents import rfc3339
from arbiter_cli.domain.principal import ROLES, Principal
from arbiter_cli.domain.validation import fail
from arbiter_cli.errors import CheckFailed, Forbidden, Unauthenticated

TOKEN_RE = re.compile(r"arb_([a-z0-9]{12})_([A-Za-z0-9_-]{43,})")
TOKEN_ID_RE = re.compile(r"^[a-z0-9]{12}$")
SECRET_BYTES = 32  # 256 bits; SPEC §4 asks for at least 192
GENESIS = "0" * 64

# ---------------------------------------------------------------------------- roles

VIEWER, ORCHESTRATOR, MANAGER, ADMIN = ROLES
RANK = {role: rank for rank, role in enumerate(ROLES)}

#: The least role each token-checked command needs (SPEC §4); absent means denied.
PERMISSIONS: Mapping[str, str] = {
    "whoami": VIEWER,
    "agents show": VIEWER, "agents list": VIEWER, "agents query": VIEWER,
    "agents stats": VIEWER,
    "route explain": VIEWER, "route history": VIEWER, "route stats": VIEWER,
    "route task": ORCHESTRATOR, "route outcome": ORCHESTRATOR, "route reap": ORCHESTRATOR,
    "agents heartbeat": ORCHESTRATOR, "agents status": ORCHESTRATOR,
    "agents register": MANAGER, "agents update": MANAGER, "agents remove": MANAGER,
    "agents record": MANAGER, "agents cleanup": MANAGER,
    "tokens create": ADMIN, "tokens list": ADMIN, "tokens revoke": ADMIN,
    "audit list": ADMIN, "audit verify": ADMIN,
}

#: Commands whose authority is local or direct database access (SPEC §4): no token.
NO_TOKEN = frozenset({
    "init", "demo", "login", "bench", "health", "serve", "soak", "mutate", "route simulate",
    "tenants create", "tenants list", "config show", "config validate", "db upgrade",
    "db downgrade", "db current", "db history", "db check", "journal status",
    "journal replay", "journal list", "journal resolve",
})


def authorize(principal: Principal, command: str) -> None:
    """Deny by default: a command without a permission entry is refused to everyone."""
    needed = PERMISSIONS.get(command)
    if needed is None or RANK.get(principal.role, -1) < RANK[needed]:
        raise Forbidden(f"role {principal.role!r} may not run `{command}`"
                        + (f" (needs {needed})" if needed else ""))


#: Fields of a command that need more than the command itself (SPEC §2.1: active_tasks changes
#: through claims and outcomes, and through admin correction only).
FIELD_PERMISSIONS: Mapping[tuple[str, str], str] = {
    ("agents update", "active_tasks"): ADMIN,
}


def roles_allowed(command: str) -> tuple[str, ...]:
    """The roles :func:`authorize` lets run ``command`` (none for a command without an entry)."""
    needed = PERMISSIONS.get(command)
    return () if needed is None else tuple(r for r in ROLES if RANK[r] >= RANK[needed])


def admissible(record: TokenRecord | None, secret_hash: str, roles: tuple[str, ...],
               now: datetime) -> bool:
    """Whether a store may spend the token's bucket in the statement that reads it: the same
    judgement as :func:`check_token` and :func:`authorize`, which the caller still makes (and
    which alone decide, with their constant-time comparison)."""
    return (record is not None and hmac.compare_digest(secret_hash, record.secret_hash)
            and record.revoked_at is None
            and (record.expires_at is None or now < record.expires_at)
            and record.role in roles)


def authorize_field(principal: Principal, command: str, field: str) -> None:
    """Refuse (exit 6) a field the caller's role may not set through ``command``."""
    needed = FIELD_PERMISSIONS.get((command, field))
    if needed is not None and RANK.get(principal.role, -1) < RANK[needed]:
        raise Forbidden(f"role {principal.role!r} may not set {field} through `{command}` "
                        f"(needs {needed}: it changes through claims and outcomes)")


def check_role(role: str) -> str:
    if role not in RANK:
        raise fail("role", "allowed", f"must be one of {', '.join(ROLES)}")
    return role


# ---------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class TokenRecord:
    id: str
    tenant: str
    name: str
    role: str
    secret_hash: str
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
    rate: float | None = None
    burst: int | None = None

    def to_dict(self) -> dict[str, Any]:
        def when(moment: datetime | None) -> str | None:
            return None if moment is None else rfc3339(moment)

        return {"id": self.id, "tenant": self.tenant, "name": self.name, "role": self.role,
                "created_at": when(self.created_at), "expires_at": when(self.expires_at),
                "revoked_at": when(self.revoked_at), "last_used_at": when(self.last_used_at),
                "rate": self.rate, "burst": self.burst}


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def format_token(token_id: str, secret: str) -> str:
    return f"arb_{token_id}_{secret}"


def parse_token(token: str) -> tuple[str, str]:
    """``arb_<id>_<secret>`` → (id, secret); anything else is not a token (exit 6)."""
    match = TOKEN_RE.fullmatch(token.strip()) if isinstance(token, str) else None
    if match is None:
        raise Unauthenticated("malformed token: expected arb_<id>_<secret>")
    return match.group(1), match.group(2)


def check_token(record: TokenRecord | None, secret: str, now: datetime) -> Principal:
    """The principal of a valid token; every failure is exit 6 with one message per cause."""
    if record is None:
        hmac.compare_digest(hash_secret(secret), GENESIS)  # same work for unknown ids
        raise Unauthenticated("invalid token")
    if not hmac.compare_digest(hash_secret(secret), record.secret_hash):
        raise Unauthenticated("invalid token")
    if record.revoked_at is not None:
        raise Unauthenticated("token revoked")
    if record.expires_at is not None and now >= record.expires_at:
        raise Unauthenticated("token expired")
    return Principal(tenant=record.tenant, role=record.role, token_id=record.id)


# ---------------------------------------------------------------------------- rate limits


@dataclass(frozen=True)
class Bucket:
    tokens: float
    updated_at: float  # seconds since the epoch


def spend(bucket: Bucket | None, now: float, rate: float, burst: int) -> Bucket:
    """Refill at ``rate``/s up to ``burst``, then spend one token, even on a refusal.

    A refusal leaves the bucket below zero (a debt), floored at −burst so that a client
    hammering in a loop is slowed, not locked out for ever. ``now`` is the database's time;
    the SQL adapters compute the same thing in one atomic statement, on the database's clock.
    """
    if bucket is None:
        bucket = Bucket(tokens=float(burst), updated_at=now)
    elapsed = max(0.0, now - bucket.updated_at)
    tokens = min(float(burst), bucket.tokens + elapsed * rate) - 1.0
    # The stamp is always the database's now: one stored from a clock that ran ahead (before
    # buckets used the database's time) refills nothing and is replaced at once, instead of
    # holding the bucket shut until real time catches up.
    return Bucket(tokens=max(tokens, -float(burst)), updated_at=now)


def allowed(bucket: Bucket) -> bool:
    return bucket.tokens >= 0.0


def retry_after(bucket: Bucket, rate: float) -> float:
    """Seconds until the next call would be admitted: a call needs one whole token.

    Rounded up to the millisecond, so waiting exactly this long is always enough.
    """
    missing = max(0.0, 1.0 - bucket.tokens)
    return math.ceil(round(missing / rate * 1000, 6)) / 1000


# ---------------------------------------------------------------------------- audit chain


@dataclass(frozen=True)
class AuditEvent:
    tenant: str
    seq: int
    at: datetime
    actor: str | None
    action: str
    target: str | None
    result: str
    correlation_id: str | None
    details: Mapping[str, Any]
    prev_hash: str
    hash: str

    def body(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "seq": self.seq, "at": rfc3339(self.at),
                "actor": self.actor, "action": self.action, "target": self.target,
                "result": self.result, "correlation_id": self.correlation_id,
                "details": dict(self.details)}

    def to_dict(self) -> dict[str, Any]:
        return {**self.body(), "prev_hash": self.prev_hash, "hash": self.hash}


@dataclass(frozen=True)
class Undecodable:
    """A stored audit row that cannot be read back as an event: it was altered outside arbiter.

    ``seq`` is None when the seq itself is not an integer.
    """

    tenant: str
    seq: int | None
    reason: str


def canonical(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str).encode()


def chain_hash(body: Mapping[str, Any], prev_hash: str, key: bytes | None = None) -> str:
    """SHA-256(canonical JSON of the entry ‖ prev_hash); HMAC-SHA256 under ``key`` if given."""
    message = canonical(body) + prev_hash.encode()
    if key:
        return hmac.new(key, message, hashlib.sha256).hexdigest()
    return hashlib.sha256(message).hexdigest()


def seal(tenant: str, seq: int, at: datetime, prev_hash: str, *, actor: str | None,
         action: str, target: str | None, result: str, correlation_id: str | None,
         details: Mapping[str, Any], key: bytes | None = None) -> AuditEvent:
    draft = AuditEvent(tenant, seq, at, actor, action, target, result, correlation_id,
                       dict(details), prev_hash, "")
    return AuditEvent(**{**draft.__dict__, "hash": chain_hash(draft.body(), prev_hash, key)})


ANCHOR_RE = re.compile(r"(\d{1,18}):([0-9a-f]{64})")


@dataclass(frozen=True)
class Anchor:
    """``SEQ:HASH``: the chain held ``hash`` at ``seq`` when the anchor was taken."""

    seq: int
    hash: str

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"


def parse_anchor(text: str, field: str = "expect_head") -> Anchor:
    """``"42:3f5a…"`` → Anchor(42, "3f5a…"); anything else is exit 2."""
    match = ANCHOR_RE.fullmatch(text.strip().lower()) if isinstance(text, str) else None
    if match is None:
        raise fail(field, "format", "must be SEQ:HASH as printed by `arbiter audit verify` "
                   "(e.g. 42:3f5a…, 64 hex digits)")
    return Anchor(int(match.group(1)), match.group(2))


@dataclass(frozen=True)
class Verdict:
    ok: bool
    events: int
    head_seq: int
    head_hash: str
    first_bad_seq: int | None = None
    reason: str | None = None

    @property
    def head(self) -> str:
        """``SEQ:HASH`` of the last event that verified (``0:000…0`` for none)."""
        return f"{self.head_seq}:{self.head_hash}"

    def document(self, *, keyed: bool) -> dict[str, Any]:
        """The ``audit verify`` document (CLI and API alike); ``CheckFailed`` (exit 1, HTTP
        409) carrying it when the chain is broken."""
        document = {"ok": self.ok, "events": self.events, "head": self.head,
                    "head_seq": self.head_seq, "head_hash": self.head_hash, "keyed": keyed,
                    "first_bad_seq": self.first_bad_seq, "reason": self.reason}
        if not self.ok:
            raise CheckFailed(f"audit chain broken at seq {self.first_bad_seq}: {self.reason} "
                              f"(last good head {self.head})", details=document)
        return document


def verify(events: Iterable[AuditEvent | Undecodable], anchor: Anchor | None = None,
           key: bytes | None = None) -> Verdict:
    """Walk the chain in seq order from 1; name the first seq that breaks it.

    ``anchor``: the chain must still hold that hash at that seq (a chain that grew since
    passes; a truncated or rewritten one fails). ``key``: events are HMAC-sealed; an unkeyed
    prefix (written before the key was set) is accepted only before the first keyed event,
    and the head must be keyed, so a chain recomputed without the key fails.
    """
    walk = _Walk(key)
    for item in events:
        broken = walk.step(item, anchor)
        if broken is not None:
            return broken
    return walk.end(anchor)


class _Walk:
    """The state of one verification: the last good link, and where keyed sealing began."""

    def __init__(self, key: bytes | None) -> None:
        self.key = key
        self.prev, self.seq, self.count = GENESIS, 0, 0
        self.keyed_from: int | None = None

    def bad(self, seq: int, reason: str) -> Verdict:
        return Verdict(False, self.count, self.seq, self.prev, seq, reason)

    def step(self, item: AuditEvent | Undecodable, anchor: Anchor | None) -> Verdict | None:
        self.count += 1
        expected = self.seq + 1
        if isinstance(item, Undecodable):
            return self.bad(expected if item.seq is None else item.seq,
                            f"the row cannot be decoded ({item.reason}): it was altered "
                            "outside arbiter")
        if item.seq != expected:
            return self.bad(expected, f"seq {expected} missing (found {item.seq})")
        if item.prev_hash != self.prev:
            return self.bad(item.seq, "prev_hash does not link")
        body = item.body()
        if self.key and item.hash == chain_hash(body, self.prev, self.key):
            self.keyed_from = item.seq if self.keyed_from is None else self.keyed_from
        elif item.hash != chain_hash(body, self.prev):
            return self.bad(item.seq, "hash does not match the entry" + (
                "" if self.key else " (a chain sealed with security.audit_key verifies only "
                "with that key)"))
        elif self.keyed_from is not None:
            return self.bad(item.seq, f"not sealed with security.audit_key although seq "
                            f"{self.keyed_from} was: the chain was recomputed without the key")
        if anchor is not None and item.seq == anchor.seq and item.hash != anchor.hash:
            return self.bad(item.seq, f"differs from the anchor {anchor}: the chain was "
                            "rewritten")
        self.prev, self.seq = item.hash, item.seq
        return None

    def end(self, anchor: Anchor | None) -> Verdict:
        if anchor is not None and anchor.seq > self.seq:
            return self.bad(anchor.seq, f"the chain ends at seq {self.seq}, before the "
                            f"anchored seq {anchor.seq}: entries were removed from the tail")
        if anchor is not None and anchor.seq == 0 and anchor.hash != GENESIS:
            return self.bad(0, f"differs from the anchor {anchor}: seq 0 is always genesis")
        if self.key and self.seq and self.keyed_from is None:
            return self.bad(self.seq, "no event is sealed with security.audit_key: the chain "
                            "was recomputed without the key (or nothing was written since "
                            "the key was set)")
        return Verdict(True, self.count, self.seq, self.prev)


def redact(details: Mapping[str, Any], secrets_: Sequence[str] = ()) -> dict[str, Any]:
    """Details for audit and logs: never a secret."""
    hidden = {"token", "secret", "password", "secret_hash", "admin_token"}
    cleaned: dict[str, Any] = {}
    for key, value in details.items():
        if key in hidden:
            continue
        if isinstance(value, Mapping):
            value = redact(value, secrets_)
        elif isinstance(value, str) and any(s and s in value for s in secrets_):
            value = "***"
        cleaned[key] = value
    return cleaned


# ---------------------------------------------------------------------------- last admin


def is_active(record: TokenRecord, now: datetime) -> bool:
    """Neither revoked nor expired at ``now``."""
    return record.revoked_at is None and (record.expires_at is None or now < record.expires_at)


def is_last_admin(record: TokenRecord, tenant_tokens: Iterable[TokenRecord],
                  now: datetime) -> bool:
    """True when revoking ``record`` would leave its tenant without an active admin token."""
    if record.role != ADMIN or not is_active(record, now):
        return False
    return not any(t.id != record.id and t.role == ADMIN and is_active(t, now)
                   for t in tenant_tokens)
