"""Resolving journal conflicts (SPEC §7.1 "Conflicts can be resolved"): drop one, or retry it.

A conflict waits in the journal until an operator decides. ``drop`` deletes it for good (the
write is never applied); ``retry`` puts it back to pending with its attempts reset and signs it
again with this host's key (the operator vouches for it), so the next replay re-admits its
token on the primary and applies it, or keeps it as a conflict again. Either way the decision
is audited first, as ``journal.resolve`` in the tenant's chain on the primary, with no actor
(the authority is local: whoever can run arbiter on this host); without the primary nothing
changes (exit 10).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from arbiter_cli.domain.principal import DEFAULT_TENANT, Principal
from arbiter_cli.errors import Conflict, NotFound
from arbiter_cli.resilience.journal import CONFLICT, Entry
from arbiter_cli.services.audit import Auditor

if TYPE_CHECKING:
    from arbiter_cli.ports import UnitOfWorkFactory
    from arbiter_cli.resilience.gateway import Resilience

DROP = "drop"
RETRY = "retry"


def find_conflict(res: Resilience, op_id: str) -> Entry:
    """The conflict of ``op_id``: NotFound (4) if the journal has no such entry, Conflict (5)
    if it is pending (it has not conflicted: it replays with the next replay)."""
    entry = res.journal.by_op(op_id)
    if entry is None:
        raise NotFound(f"no journal entry with op id {op_id!r} (see `arbiter journal list "
                       "--conflicts`)")
    if entry.state != CONFLICT:
        raise Conflict(f"op {op_id} is {entry.state}, not a conflict: it is applied by the next "
                       "replay (`arbiter journal replay`)")
    return entry


def resolve(res: Resilience, uow: UnitOfWorkFactory, entry: Entry,
            resolution: str) -> dict[str, Any]:
    """Audit the decision on the primary (``uow``: its unit of work, sealing with
    ``security.audit_key``), then drop or retry the entry; the result document."""
    if resolution not in (DROP, RETRY):
        raise ValueError(f"unknown resolution {resolution!r}")
    res.guarded(lambda: _audit(res, uow, entry, resolution))
    if resolution == DROP:
        res.journal.drop(entry.seq)
    else:
        res.journal.retry(entry.seq)
    return {"op_id": entry.op_id, "seq": entry.seq, "kind": entry.kind, "tenant": entry.tenant,
            "resolution": resolution, "state": None if resolution == DROP else "pending",
            "was": entry.error}


def _audit(res: Resilience, uow: UnitOfWorkFactory, entry: Entry, resolution: str) -> None:
    with uow(write=True) as work:
        tenant = entry.tenant if work.tenants.exists(entry.tenant) else DEFAULT_TENANT
        details: dict[str, Any] = {"resolution": resolution, "kind": entry.kind,
                                   "seq": entry.seq, "error": (entry.error or "")[:500]}
        if tenant != entry.tenant:
            details["claimed_tenant"] = entry.tenant[:64]
        local = Principal(tenant=tenant, role="admin", token_id=None)
        Auditor(res.correlation_id).record(work, local, "journal.resolve", entry.op_id, details)
        work.commit()
