"""Appending to the audit chain from a use case, in the transaction of its effect.

Events are stamped by the store with the database's time (SPEC §4.1), never the caller's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from arbiter_cli.domain.principal import Principal
from arbiter_cli.domain.security import redact
from arbiter_cli.ports import UnitOfWork

#: What the caller's chain says when a globally unique id does not resolve in its tenant.
NOT_FOUND = {"reason": "not found"}


@dataclass(frozen=True)
class Auditor:
    """Under which correlation id a use case records what it does."""

    correlation_id: str | None = None

    def record(self, uow: UnitOfWork, principal: Principal, action: str, target: str | None,
               details: Mapping[str, Any] | None = None, *, result: str = "ok") -> None:
        """Append last, just before the commit: the chain head is held only for the insert."""
        uow.audit.append(principal.tenant, actor=principal.token_id, action=action,
                         target=target, result=result, correlation_id=self.correlation_id,
                         details=redact(details or {}))

    def deny(self, uow_factory: Any, principal: Principal, action: str, target: str | None,
             details: Mapping[str, Any] | None = None) -> None:
        """Audit a refused attempt in its own committed transaction."""
        with uow_factory(write=True) as uow:
            if uow.tenants.exists(principal.tenant):
                self.record(uow, principal, action, target, details, result="denied")
                uow.commit()

    def missing(self, uow: UnitOfWork, principal: Principal, action: str, target: str,
                owner: str | None) -> None:
        """A globally unique id (decision, token) that is not the caller's (SPEC §4.1).

        The caller's chain records the same ``denied {"reason": "not found"}`` whether the id
        exists nowhere or belongs to ``owner``, another tenant: no existence oracle. The
        owner's chain records the attempt on its object, with who made it. Chains are
        appended in tenant order, so two tenants probing each other cannot deadlock.
        """
        entries = [(principal.tenant, principal.token_id, dict(NOT_FOUND))]
        if owner is not None and owner != principal.tenant:
            entries.append((owner, principal.token_id,
                            {"reason": "cross-tenant", "caller_tenant": principal.tenant}))
        for tenant, actor, details in sorted(entries, key=lambda entry: entry[0]):
            uow.audit.append(tenant, actor=actor, action=action, target=target,
                             result="denied", correlation_id=self.correlation_id,
                             details=details)
