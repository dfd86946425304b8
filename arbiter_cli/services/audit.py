"""Appending to the audit chain from a use case, in the transaction of its effect.

Events are stamped by the store with the database's time (SPEC §4.1), never the caller's.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from arbiter_cli.domain.principal import Principal
from arbiter_cli.domain.security import redact
from arbiter_cli.ports import UnitOfWork

#: What the caller's chain says when a globally unique id does not resolve in its tenant.
NOT_FOUND = {"reason": "not found"}

#: A refusal's aggregation key: (tenant, actor, action, reason).
RefusalKey = tuple[str, str | None, str, str | None]


class _Folds:
    """How many refusals this process folded into an earlier event, per store and key.

    The chain is append-only, so the count cannot go into the event it was folded into: it
    rides on the key's next event as ``folded``. Keys are bounded (the actor is a real token
    id or none, reasons are fixed texts), and the table is cleared past ``LIMIT`` anyway.
    """

    LIMIT = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_store: weakref.WeakKeyDictionary[Any, dict[RefusalKey, int]] = (
            weakref.WeakKeyDictionary())

    def _table(self, store: Any) -> dict[RefusalKey, int] | None:
        # The database behind the factory: a server builds a factory per request over one
        # engine (SQL) or store (memory), and the count must outlive the request.
        held = getattr(store, "engine", None) or getattr(store, "store", None) or store
        try:
            return self._by_store.setdefault(held, {})
        except TypeError:  # a store that cannot be weakly referenced: nothing is counted
            return None

    def add(self, store: Any, key: RefusalKey) -> None:
        with self._lock:
            table = self._table(store)
            if table is not None:
                if len(table) >= self.LIMIT and key not in table:
                    table.clear()
                table[key] = table.get(key, 0) + 1

    def take(self, store: Any, key: RefusalKey) -> int:
        with self._lock:
            table = self._table(store)
            return 0 if table is None else table.pop(key, 0)


_FOLDS = _Folds()


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

    def refuse(self, store: Any, uow: UnitOfWork, principal: Principal, action: str,
               details: Mapping[str, Any], now: datetime, target: str | None = None) -> bool:
        """One aggregated ``denied`` event per (tenant, actor, action, reason) per second of
        the database's clock (SPEC §4), so refused calls cannot flood the chain; whether one
        was appended. ``store`` is the unit-of-work factory the fold count is kept under.

        The event carries ``window_start`` (its second) and, when this process folded
        refusals of the same key into that key's previous event, their number as ``folded``.
        """
        second = int(now.timestamp())
        key: RefusalKey = (principal.tenant, principal.token_id, action, details.get("reason"))
        # The key's latest event, if it is recent: newest first, read through (tenant, at).
        latest = next((event for event in uow.audit.events(
            principal.tenant, since=now.replace(microsecond=0), action=action,
            actor=principal.token_id)
            if event.actor == principal.token_id and event.target == target
            and event.details.get("reason") == key[3]), None)
        if latest is not None and int(latest.at.timestamp()) == second:
            _FOLDS.add(store, key)
            return False
        folded = _FOLDS.take(store, key)
        self.record(uow, principal, action, target,
                    {**details, "window_start": second, **({"folded": folded} if folded else {})},
                    result="denied")
        return True

    def deny(self, uow_factory: Any, principal: Principal, action: str, target: str | None,
             details: Mapping[str, Any] | None = None) -> None:
        """Audit a refused attempt (``auth.denied``, ``authz.denied``) in its own committed
        transaction, aggregated per second like every refusal (``refuse``)."""
        with uow_factory(write=True) as uow:
            if uow.tenants.exists(principal.tenant) and self.refuse(
                    uow_factory, uow, principal, action, dict(details or {}), uow.now(), target):
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
