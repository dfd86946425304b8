"""Security use cases (SPEC §4): admission (authenticate, authorize, rate-limit), tokens,
tenants, whoami and the audit log."""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from arbiter_cli.domain import validation as v
from arbiter_cli.domain.principal import DEFAULT_TENANT, Principal
from arbiter_cli.domain.results import Bootstrap, IssuedToken
from arbiter_cli.domain.security import (
    ADMIN,
    TOKEN_ID_RE,
    AuditEvent,
    TokenRecord,
    Verdict,
    allowed,
    authorize,
    check_role,
    check_token,
    format_token,
    hash_secret,
    is_last_admin,
    parse_anchor,
    parse_token,
    retry_after,
    roles_allowed,
)
from arbiter_cli.errors import Conflict, Forbidden, NotFound, RateLimited, Unauthenticated
from arbiter_cli.ports import UnitOfWork, UnitOfWorkFactory
from arbiter_cli.services import window
from arbiter_cli.services.audit import Auditor
from arbiter_cli.services.window import Since

TENANT_RE_TEXT = r"^[a-z0-9][a-z0-9_-]{0,63}$"
ID_ALPHABET = string.ascii_lowercase + string.digits
#: last_used_at is refreshed at most this often: one write per token per minute, not per call.
LAST_USED_RESOLUTION = timedelta(seconds=60)


@dataclass(frozen=True)
class RatePolicy:
    rate: float = 50.0
    burst: int = 200


def check_tenant_name(name: str) -> str:
    import re

    if not isinstance(name, str) or not re.fullmatch(TENANT_RE_TEXT, name):
        raise v.fail("name", "pattern", f"{name!r} is not a tenant name ({TENANT_RE_TEXT})")
    return name


def new_token_id() -> str:
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(12))


class SecurityService:
    """Tokens, admission, tenants and the audit log, on the database's clock (SPEC §4.1)."""

    def __init__(self, uow: UnitOfWorkFactory, rates: RatePolicy,
                 correlation_id: str | None = None) -> None:
        self._uow = uow
        self._rates = rates
        self._audit = Auditor(correlation_id)

    # ------------------------------------------------------------------ admission

    def admit(self, token: str | None, command: str) -> Principal:
        """Authenticate (6), authorize (6), then rate-limit (7); every refusal is audited, as
        one aggregated event per (tenant, actor, reason) per second (``Auditor.refuse``)."""
        nobody = Principal(tenant=DEFAULT_TENANT, role="none")
        if not token:
            empty = token == ""  # given explicitly, but empty: never a fall-back (SPEC §4.1)
            self._audit.deny(self._uow, nobody, "auth.denied", None,
                             {"reason": "empty token" if empty else "missing token",
                              "command": command})
            raise Unauthenticated(
                "empty token: --token or ARBITER_TOKEN is set but empty (no profile is used "
                "instead)" if empty else
                "no token: pass --token, set ARBITER_TOKEN, or run `arbiter login`")
        try:
            token_id, secret = parse_token(token)
        except Unauthenticated:
            self._audit.deny(self._uow, nobody, "auth.denied", None,
                             {"reason": "malformed token", "command": command})
            raise
        with self._uow(write=True) as uow:
            # One statement on PostgreSQL: the token, its bucket spent only if it is
            # admissible, and its last use; the checks below still decide (constant-time).
            record, bucket = uow.tokens.admit(
                token_id, secret_hash=hash_secret(secret), roles=roles_allowed(command),
                rate=self._rates.rate, burst=self._rates.burst,
                last_used_resolution=LAST_USED_RESOLUTION)
            now = uow.now()  # the database's: a client clock set back revives nothing
            try:
                principal = check_token(record, secret, now)
                authorize(principal, command)
            except (Unauthenticated, Forbidden) as exc:
                who = nobody if record is None else Principal(record.tenant, record.role,
                                                               record.id)
                action = "authz.denied" if isinstance(exc, Forbidden) else "auth.denied"
                if uow.tenants.exists(who.tenant):
                    self._audit.refuse(self._uow, uow, who, action, {
                        "reason": exc.message, "command": command,
                        **({"token_id": token_id} if record is None else {})}, now)
                    uow.commit()
                raise
            assert record is not None
            rate = record.rate if record.rate is not None else self._rates.rate
            burst = record.burst if record.burst is not None else self._rates.burst
            if bucket is None:  # the store judged the token otherwise: it cannot, but spend
                bucket = uow.rate.spend(record.id, record.tenant, rate, burst)
            if not allowed(bucket):
                self._audit_refusal(uow, principal, now, command)
                uow.commit()
                raise RateLimited(f"rate limited: token {record.id} may make {rate:g} calls/s "
                                  f"(burst {burst})", retry_after_s=retry_after(bucket, rate))
            uow.commit()
        return principal

    def peek(self, token: str | None, command: str) -> Principal | None:
        """The principal ``token`` would be admitted as for ``command``, or None; reads only.

        For shell completion, which answers a key press and runs no command: it spends no
        rate-limit token, stamps no ``last_used_at`` and audits nothing, and a missing, refused
        or unknown token yields None alike (docs/security.md, "Shell completion").
        """
        if not token:
            return None
        try:
            token_id, secret = parse_token(token)
            with self._uow() as uow:
                record = uow.tokens.get(token_id)
                now = uow.now()
            principal = check_token(record, secret, now)
            authorize(principal, command)
        except (Unauthenticated, Forbidden):
            return None
        return principal

    def readmit(self, tenant: str, token_id: str | None, command: str, at: datetime, *,
                seen: dict[str | None, Any] | None = None) -> Principal:
        """Admit a journaled write again on *this* database, before replay applies it
        (SPEC §4.1 "Replay re-admits"); the principal to apply it as, or Unauthenticated /
        Forbidden (the caller keeps the entry as a conflict and audits it).

        The token must still exist here, belong to ``tenant``, and not have been revoked or
        expired at ``at`` (the write's time); its role is this database's, never the journal's,
        and must allow ``command``. A write made without a token (``security.enabled = false``)
        is admitted as admin of ``tenant`` only while this database holds no token at all.

        ``seen`` keeps what earlier calls of one replay read (token rows, the token count), so
        a replay reads each token once: every entry it replays was written before it started,
        so a revocation made meanwhile is later than any entry's time and changes no decision.
        """
        seen = {} if seen is None else seen
        if token_id not in seen:
            with self._uow() as uow:
                seen[token_id] = (uow.tokens.count() if token_id is None
                                  else uow.tokens.get(token_id))
        found = seen[token_id]
        if token_id is None:
            if found:
                raise Unauthenticated(
                    "written without a token (security.enabled = false), but the database "
                    "holds tokens: only a token it knows can vouch for a write")
            return Principal(tenant=tenant, role=ADMIN, token_id=None)
        record: TokenRecord | None = found
        if record is None or record.tenant != tenant:
            raise Unauthenticated(f"token {token_id} does not exist in tenant {tenant!r} on the "
                                  "database")
        if record.revoked_at is not None and record.revoked_at <= at:
            raise Unauthenticated(f"token {token_id} was revoked before the write")
        if record.expires_at is not None and record.expires_at <= at:
            raise Unauthenticated(f"token {token_id} had expired before the write")
        principal = Principal(tenant=record.tenant, role=record.role, token_id=record.id)
        authorize(principal, command)
        return principal

    def _audit_refusal(self, uow: UnitOfWork, principal: Principal, now: datetime,
                       command: str) -> None:
        """One aggregated event per token per second, so refusals cannot flood the chain."""
        self._audit.refuse(self._uow, uow, principal, "rate_limit.denied", {"command": command},
                           now)

    # ------------------------------------------------------------------ tokens

    def issue(self, principal: Principal, *, role: str, name: str, expires_in_s: float | None,
              rate: float | None = None, burst: int | None = None) -> IssuedToken:
        check_role(role)
        v.text(name, "name")
        if rate is not None:
            rate = v.finite(rate, "rate", low=0.001)
        if burst is not None:
            burst = v.integer(burst, "burst", low=1, high=10_000_000)
        if expires_in_s is not None and not expires_in_s > 0:  # a token born expired (L7)
            raise v.fail("expires_in", "positive", "must be a positive duration, e.g. 30d "
                         "(leave it out for a token that never expires)")
        with self._uow(write=True) as uow:
            issued = self._mint(uow, principal, role=role, name=name, expires_in_s=expires_in_s,
                                rate=rate, burst=burst)
            uow.commit()
        return issued

    def _mint(self, uow: UnitOfWork, principal: Principal, *, role: str, name: str,
              expires_in_s: float | None, rate: float | None = None, burst: int | None = None
              ) -> IssuedToken:
        """Add a token (and its audit event) in the caller's unit of work; not committed."""
        now = uow.now()
        secret = secrets.token_urlsafe(32)
        record = TokenRecord(
            id=new_token_id(), tenant=principal.tenant, name=name, role=role,
            secret_hash=hash_secret(secret), created_at=now,
            expires_at=None if expires_in_s is None else now + timedelta(seconds=expires_in_s),
            rate=rate, burst=burst)
        uow.tokens.add(record)
        self._audit.record(uow, principal, "token.create", record.id,
                           {"role": role, "name": name, "expires_at":
                            record.to_dict()["expires_at"], "rate": rate, "burst": burst})
        return IssuedToken(record, format_token(record.id, secret))

    def tokens(self, principal: Principal, *, cursor: str | None = None, limit: int = 100
               ) -> tuple[list[TokenRecord], str | None]:
        if cursor is not None:  # a token id, as the previous page returned it
            v.pattern(cursor, TOKEN_ID_RE, "cursor", "cursor")
        limit = v.integer(limit, "limit", low=0, high=1_000_000)
        with self._uow() as uow:
            found = uow.tokens.list(principal.tenant, after=cursor, limit=limit + 1 if limit else 0)
        if limit and len(found) > limit:
            return found[:limit], found[limit - 1].id
        return found, None

    def revoke(self, principal: Principal, token_id: str, *, force: bool = False) -> TokenRecord:
        """Revoke a token of the caller's tenant; the last active admin token only with
        ``force`` (exit 5 otherwise), so a tenant is never left without an admin by mistake."""
        v.pattern(token_id, TOKEN_ID_RE, "token_id", "token id")  # input (2) before lookup (4)
        with self._uow(write=True) as uow:
            record = uow.tokens.get(token_id)
            if record is None or record.tenant != principal.tenant:
                # Missing or another tenant's: the same answer and the same audit (SPEC §4.1).
                self._audit.missing(uow, principal, "token.revoke", token_id,
                                    None if record is None else record.tenant)
                uow.commit()
                raise NotFound(f"token {token_id!r} not found")
            if record.revoked_at is None:
                now = uow.now()
                uow.tenants.lock(record.tenant)  # two revokes cannot each spare the other
                if not force and is_last_admin(record, uow.tokens.list(record.tenant, limit=0),
                                               now):
                    raise Conflict(f"token {token_id!r} is the last active admin token of tenant "
                                   f"{record.tenant!r}: create another admin token first, or "
                                   "pass --force to leave the tenant without one")
                record = replace(record, revoked_at=now)
                uow.tokens.save(record)
                self._audit.record(uow, principal, "token.revoke", token_id)
                uow.commit()
        return record

    def login(self, token: str) -> Principal:
        """Check a token without spending a rate-limit token (used by `arbiter login`).

        A refused token is audited like any authentication failure.
        """
        nobody = Principal(tenant=DEFAULT_TENANT, role="none")
        try:
            token_id, secret = parse_token(token)
        except Unauthenticated:
            self._audit.deny(self._uow, nobody, "auth.denied", None,
                             {"reason": "malformed token", "command": "login"})
            raise
        with self._uow() as uow:
            record = uow.tokens.get(token_id)
            now = uow.now()
        try:
            return check_token(record, secret, now)
        except Unauthenticated as exc:
            who = nobody if record is None else Principal(record.tenant, record.role, record.id)
            self._audit.deny(self._uow, who, "auth.denied", None, {
                "reason": exc.message, "command": "login",
                **({"token_id": token_id} if record is None else {})})
            raise

    # ------------------------------------------------------------------ tenants

    def create_tenant(self, name: str) -> IssuedToken:
        """A tenant and its first admin token, in one transaction: never one without the other."""
        check_tenant_name(name)
        with self._uow(write=True) as uow:
            if not uow.tenants.add(name, uow.now()):
                raise Conflict(f"tenant {name!r} already exists")
            admin = Principal(tenant=name, role=ADMIN, token_id=None)
            issued = self._mint(uow, admin, role=ADMIN, name=f"{name} admin", expires_in_s=None)
            uow.commit()
        return issued

    def tenants(self) -> list[str]:
        with self._uow() as uow:
            return uow.tenants.list()

    def holds_tokens(self) -> bool:
        """True when any tenant has a token, revoked or not (security may not be switched off)."""
        with self._uow() as uow:
            return uow.tokens.count() > 0

    def bootstrap(self, tenant: str = DEFAULT_TENANT, *, issue: bool = True,
                  before_issue: Callable[[], None] | None = None) -> Bootstrap:
        """``arbiter init``: create ``tenant`` and, on a database without any token, its first
        admin token, in one write transaction.

        ``before_issue`` runs inside it just before the token is made (e.g. to check where
        the token will be saved); raising there commits nothing. Counting and adding in one
        transaction is atomic on SQLite (``BEGIN IMMEDIATE``); on PostgreSQL the caller holds
        the migration lock around this call, so concurrent inits issue exactly one token.
        """
        with self._uow(write=True) as uow:
            created = uow.tenants.add(tenant, uow.now())
            issued = None
            if issue and uow.tokens.count() == 0:
                if before_issue is not None:
                    before_issue()
                admin = Principal(tenant=tenant, role=ADMIN, token_id=None)
                issued = self._mint(uow, admin, role=ADMIN, name="bootstrap admin",
                                    expires_in_s=None)
            uow.commit()
        return Bootstrap(created=created, issued=issued)

    # ------------------------------------------------------------------ audit

    def events(self, principal: Principal, *, since: Since = None,
               action: str | None = None, actor: str | None = None, cursor: int | None = None,
               limit: int = 100) -> tuple[list[AuditEvent], str | None]:
        for name, value in (("action", action), ("actor", actor)):
            if value is not None:  # never a NUL or control character into a query
                v.text(value, name)
        limit = v.integer(limit, "limit", low=0, high=1_000_000)
        with self._uow() as uow:
            found = uow.audit.events(principal.tenant, since=window.since(uow, since),
                                     action=action, actor=actor,
                                     before=cursor, limit=limit + 1 if limit else 0)
        if limit and len(found) > limit:
            return found[:limit], str(found[limit - 1].seq)
        return found, None

    def verify(self, principal: Principal, expect_head: str | None = None) -> Verdict:
        """Walk the tenant's chain; ``expect_head`` is an anchor ``SEQ:HASH`` taken earlier."""
        anchor = None if expect_head is None else parse_anchor(expect_head)
        with self._uow() as uow:
            return uow.audit.verify(principal.tenant, anchor)
