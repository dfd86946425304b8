"""Replaying the journal into the primary, in order and idempotently (SPEC §7, §4.1).

Replay trusts nothing the journal says about who asked. Before an entry is applied:

1. its HMAC must verify under this host's key (a row written into ``journal.db`` by anything
   but arbiter, or copied from another host, does not);
2. it is *re-admitted on the primary*: its token must still exist there, in the entry's tenant,
   not revoked or expired before the write's time, and the role of the primary's token row
   (never the journal's) must allow the write (``SecurityService.readmit``).

Each entry then runs the service call it records, as the re-admitted principal, with its op id
in ``applied_ops`` in the same transaction, so replaying after an ambiguous commit is harmless:
the op id is found and the entry is dropped. An entry that fails a check, or whose effect the
primary refuses (the agent was created or removed meanwhile, a different outcome was recorded),
becomes a *conflict*: it stays in the journal, is audited in its tenant's chain, and is never
applied over what the primary holds. A database failure stops the replay; the rest waits.

Replay builds nothing itself: the composition root hands it a :data:`PrimaryFactory`
(``bootstrap.replay_services``), which gives the plain services on the primary for an op (its
units of work commit the op's id with its effect) and a correlation id.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from arbiter_cli.adapters.sql.deadline import Deadline
from arbiter_cli.adapters.sql.repository import OpContext, already_applied
from arbiter_cli.domain.principal import Principal
from arbiter_cli.domain.results import Recorded, Routed
from arbiter_cli.errors import (
    ArbiterError,
    ConfigInvalid,
    Conflict,
    InvalidInput,
    StorageUnavailable,
    Unauthenticated,
)
from arbiter_cli.resilience.gateway import Resilience
from arbiter_cli.resilience.journal import MAX_ATTEMPTS, Entry
from arbiter_cli.resilience.records import (
    KIND_COMMANDS,
    Kind,
    decision_from,
    kind_of,
    outcome_from,
    task_result_from,
)
from arbiter_cli.resilience.retry import PrimarySlow
from arbiter_cli.resilience.snapshot import file_lock
from arbiter_cli.services.audit import Auditor

if TYPE_CHECKING:
    from arbiter_cli.config import Settings
    from arbiter_cli.ports import AgentsPort, RoutingPort, SecurityPort, UnitOfWorkFactory

APPLIED = "applied"
CONFLICT = "conflict"
MIN_START_S = 0.2  # an entry is not started with less time than this left (or than it needs)


@dataclass(frozen=True)
class Primary:
    """The plain services replay runs on the primary, and their unit of work."""

    agents: AgentsPort
    routing: RoutingPort
    security: SecurityPort
    uow: UnitOfWorkFactory


#: For an op (None: outside any op) and a correlation id, the services on the primary.
PrimaryFactory = Callable[[OpContext | None, str | None], Primary]


def replay(res: Resilience, services: PrimaryFactory, *, budget_s: float | None,
           blocking: bool = False,
           progress: Callable[[int], None] | None = None,
           within: Deadline | None = None) -> dict[str, Any]:
    """Apply pending entries in order until the journal is empty, the primary fails, or the
    budget is spent (SPEC §7.1: replay has its own budget).

    Each entry may take what its original command had on a healthy primary
    (:func:`entry_budget`). Without ``within`` (``serve``, ``journal replay``) ``budget_s``
    only bounds when a new entry may start, so a large entry still drains; with ``within``
    (a command's own deadline, replaying before its work) every entry also stops at the end of
    ``budget_s`` and of ``within``, and an entry cut short there is simply left for later. An
    entry that runs out of its *full* budget on a healthy primary counts a failed replay; at
    three it becomes a conflict, so it cannot hold its tenant's writes back for ever.
    """
    report: dict[str, Any] = {"applied": 0, "conflicts": 0, "remaining": 0, "stopped": None,
                              "over_capacity": 0}
    with file_lock(res.directory / "replay.lock", blocking=blocking) as locked:
        if not locked:
            report["stopped"] = "another process is replaying"
            report["remaining"] = res.journal.pending()
            return report
        total = None if budget_s is None else Deadline(budget_s)
        deletes = AppliedBatch(res)
        flags: dict[str, bool] = {}
        try:
            _replay_entries(res, services, report, total, within, deletes, progress, flags)
        finally:
            deletes.flush()
            report["over_capacity"] = sum(flags.values())
        report["remaining"] = res.journal.pending()
    return report


def _replay_entries(res: Resilience, services: PrimaryFactory, report: dict[str, Any],
                    total: Deadline | None,
                    within: Deadline | None, deletes: AppliedBatch,
                    progress: Callable[[int], None] | None, flags: dict[str, bool]) -> None:
    after = 0
    seen: dict[str | None, Any] = {}  # token rows read once per replay
    while total is None or not total.expired():
        entry = res.journal.next_pending(after)
        if entry is None:
            return
        needed = entry_budget(res.settings, entry)
        limit = needed
        for bound in ((total, within) if within is not None else ()):
            if bound is not None:
                limit = min(limit, bound.remaining())
        if limit < min(needed, MIN_START_S):
            # Too little left to even connect: starting would only cut the handshake, which
            # the breaker would count as the primary's failure.
            report["stopped"] = "the replay budget is spent"
            return
        try:
            applied = apply_entry(res, services, entry, Deadline(limit), seen)
            status = applied.status
            flags.update(applied.flags)
        except PrimarySlow as exc:
            if limit < needed:  # cut by this replay's budget, not by its own: try later
                report["stopped"] = f"entry {entry.seq} did not finish within the replay budget"
                return
            if not _failed(res, services, entry, exc.message):
                report["stopped"] = exc.message
                return
            status = CONFLICT
        except StorageUnavailable as exc:
            report["stopped"] = exc.message
            return
        except ConfigInvalid:
            raise
        except Exception as exc:
            # A bug in applying this entry must not make every command fail for ever: count
            # it like any non-transient failure (a conflict at the third), and still report it.
            _failed(res, services, entry, f"internal error: {type(exc).__name__}: {exc}")
            raise
        if status == APPLIED:
            deletes.add(entry.seq)
        report["applied" if status == APPLIED else "conflicts"] += 1
        after = entry.seq
        if progress is not None:
            progress(1)


def entry_budget(settings: Settings, entry: Entry) -> float:
    """What the entry's command had on a healthy primary: ``database.command_timeout``, plus
    ``database.per_item_timeout`` per item of a batch (SPEC §7.1)."""
    raws = entry.args.get("raws") if entry.kind == Kind.AGENTS_REGISTER else None
    items = len(raws) if isinstance(raws, list) else 0
    return (settings.database.command_timeout
            + items * settings.database.per_item_timeout)


def _failed(res: Resilience, services: PrimaryFactory, entry: Entry, message: str) -> bool:
    """Count a non-transient failure; True (and audited) when it made the entry a conflict."""
    if not res.journal.failed(entry.seq, message):
        return False
    _audit_conflict(res, services(None, entry.correlation_id), entry, None,
                    Conflict(f"failed {MAX_ATTEMPTS} replays: {message}"))
    return True


class AppliedBatch:
    """Applied entries are deleted from the journal in batches, not one fsync'd transaction
    each (660 deletes took 25.7 s). Nothing acknowledged can be lost by the delay: an entry
    whose effect committed on the primary has its op id in ``applied_ops`` (same transaction),
    so if the process dies before the batch is deleted, the next replay finds the op id and
    drops the entry without applying it again."""

    SIZE = 100
    EVERY_S = 0.5

    def __init__(self, res: Resilience) -> None:
        self._res = res
        self._seqs: list[int] = []
        self._since: Deadline | None = None

    def add(self, seq: int) -> None:
        self._seqs.append(seq)
        if self._since is None:
            self._since = Deadline(self.EVERY_S)
        if len(self._seqs) >= self.SIZE or self._since.expired():
            self.flush()

    def flush(self) -> None:
        if self._seqs:
            self._res.journal.applied_many(self._seqs)
        self._seqs = []
        self._since = None


def apply_entry(res: Resilience, services: PrimaryFactory, entry: Entry,
                budget: Deadline | None = None,
                seen: dict[str | None, Any] | None = None) -> Applied:
    """Check, re-admit and apply one entry: APPLIED (also when an earlier replay or the
    original command already committed it) or CONFLICT (kept, audited), with the
    ``over_capacity`` flags it set or cleared. ``seen``: the token rows this replay has read
    (``SecurityService.readmit``)."""
    app = services(None, entry.correlation_id)
    op = OpContext(op_id=entry.op_id, tenant=entry.tenant, kind=entry.kind, now=res.clock)
    if budget is None:
        budget = Deadline(res.settings.database.command_timeout)
    admitted: Principal | None = None

    def run() -> Any:
        if already_applied(res.primary, entry.op_id):
            return None  # an earlier replay or the original command committed it
        return dispatch(services(op, entry.correlation_id), entry, admitted)

    try:
        check_signed(res, entry)
        _check_not_dependent(res, entry)
        admitted = res.guarded(lambda: readmit(app, entry, seen), deadline=budget)
        result = res.guarded(run, may_retry=lambda: not op.ambiguous, deadline=budget)
    except (StorageUnavailable, ConfigInvalid):
        raise  # the database, not the entry: the replay stops and the entry waits
    except ArbiterError as exc:
        res.journal.conflict(entry.seq, f"{exc.code}: {exc.message}")
        _audit_conflict(res, app, entry, admitted, exc)
        return Applied(CONFLICT)
    return Applied(APPLIED, _flags_of(result))  # the caller deletes it (in a batch)


def _flags_of(result: Any) -> dict[str, bool]:
    """The ``over_capacity`` flags a replayed route or outcome changed (none for the rest)."""
    return dict(result.flags) if isinstance(result, Routed | Recorded) else {}


@dataclass(frozen=True)
class Applied:
    """What applying one entry did: its status, and the ``over_capacity`` flags it changed."""

    status: str
    flags: Mapping[str, bool] = field(default_factory=dict)


def check_signed(res: Resilience, entry: Entry) -> None:
    """Only what this host journaled is replayed: the entry's HMAC must verify."""
    if not res.journal.verify(entry):
        raise Unauthenticated(
            "the entry's HMAC does not verify under this host's journal key: it was not "
            "written by arbiter on this host (or was changed since), so it is not applied")


def readmit(app: Primary, entry: Entry, seen: dict[str | None, Any] | None = None) -> Principal:
    """The entry's caller, admitted again on the primary (``SecurityService.readmit``)."""
    claimed = entry.principal
    token_id = claimed.get("token_id")
    if claimed.get("tenant") != entry.tenant or not (token_id is None
                                                     or isinstance(token_id, str)):
        raise Unauthenticated("the entry's principal does not belong to its tenant")
    kind = kind_of(entry.kind)
    command = None if kind is None else KIND_COMMANDS.get(kind)
    if command is None:
        raise InvalidInput(f"journal entry {entry.seq} has an unknown kind {entry.kind!r}")
    if not isinstance(entry.created_at, int | float) or not math.isfinite(entry.created_at):
        raise InvalidInput(f"journal entry {entry.seq} has no valid time")
    try:
        at = datetime.fromtimestamp(entry.created_at, UTC)
    except (OverflowError, OSError, ValueError):
        raise InvalidInput(f"journal entry {entry.seq} has no valid time") from None
    return app.security.readmit(entry.tenant, token_id, command, at, seen=seen)


def _check_not_dependent(res: Resilience, entry: Entry) -> None:
    """An op on an agent whose journaled registration conflicted conflicts too, and so does
    the outcome of a decision whose journaled route conflicted."""
    if entry.kind == Kind.AGENTS_REGISTER:
        return
    if entry.kind == Kind.ROUTING_OUTCOME:
        decision_id = entry.args.get("decision_id")
        if isinstance(decision_id, str) and decision_id in res.journal.conflicting_decision_ids(
                entry.tenant, entry.seq):
            raise Conflict(f"decision {decision_id}: its journaled route conflicted, so this "
                           "outcome is about a decision the database does not hold")
        return
    if entry.kind == Kind.ROUTING_ROUTE:
        decision = entry.args.get("decision")
        target = decision.get("agent_id") if isinstance(decision, dict) else None
    elif entry.kind.startswith("agents."):
        target = entry.args.get("agent_id")
    else:
        return
    if isinstance(target, str) and target in res.journal.conflicting_agent_ids(entry.tenant,
                                                                               entry.seq):
        raise Conflict(f"agent {target!r}: its journaled registration conflicted, so this op "
                       "was made to an agent the database does not hold")


#: The service method each journaled agent write replays through.
AGENT_WRITES: dict[Kind, Callable[[AgentsPort], Callable[..., Any]]] = {
    Kind.AGENTS_REGISTER: lambda agents: agents.register,
    Kind.AGENTS_UPDATE: lambda agents: agents.update,
    Kind.AGENTS_SET_STATUS: lambda agents: agents.set_status,
    Kind.AGENTS_HEARTBEAT: lambda agents: agents.heartbeat,
    Kind.AGENTS_RECORD: lambda agents: agents.record,
    Kind.AGENTS_REMOVE: lambda agents: agents.remove,
}


def dispatch(app: Primary, entry: Entry, principal: Principal | None) -> Any:
    """Run the service call an entry records, on ``app`` (the primary)."""
    method, args = decode(app, entry)
    if principal is None:
        raise Unauthenticated("journal entry not admitted")  # apply_entry re-admits first
    return method(principal, **args)


def decode(app: Primary, entry: Entry) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The service method of an entry and its keyword arguments.

    An entry that does not fit its kind (written by another version, or damaged) is refused
    with ``InvalidInput``, so replay keeps it as a conflict instead of failing every command
    that replays first.
    """
    kind = kind_of(entry.kind)
    if kind is None:
        raise ArbiterError(f"journal entry {entry.seq} has an unknown kind {entry.kind!r}")
    args = dict(entry.args)
    try:
        if kind == Kind.ROUTING_ROUTE:
            method: Callable[..., Any] = app.routing.apply_decision
            args = {"decision": decision_from(args["decision"])}
        elif kind == Kind.ROUTING_OUTCOME:
            # The decision closes when the outcome was acknowledged: the entry's time, the
            # host's clock at the acknowledgement (signed with the entry), not replay time.
            method = app.routing.apply_outcome
            args = {"outcome": outcome_from(args["outcome"]), "decision_id": args["decision_id"],
                    "acknowledged_at": datetime.fromtimestamp(entry.created_at, UTC)}
        else:
            if kind == Kind.AGENTS_RECORD:
                args["result"] = task_result_from(args["result"])
            method = AGENT_WRITES[kind](app.agents)
        inspect.signature(method).bind(None, **args)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"journal entry {entry.seq} ({entry.kind}) is malformed: "
                           f"{type(exc).__name__}: {exc}") from None
    return method, args


def _audit_conflict(res: Resilience, app: Primary, entry: Entry, admitted: Principal | None,
                    exc: ArbiterError) -> None:
    """``journal.conflict`` (denied) in the entry's tenant's chain. Its actor is the
    re-admitted token, or nobody when the entry was not admitted: a claimed token never
    becomes an actor (it is named in the details)."""
    actor = admitted or Principal(tenant=entry.tenant, role="none", token_id=None)
    details: dict[str, Any] = {"kind": entry.kind, "seq": entry.seq, "error": exc.message[:500]}
    if admitted is None:
        claimed = entry.principal.get("token_id")
        details["claimed_token_id"] = str(claimed)[:64] if claimed is not None else None

    def record() -> None:
        with app.uow(write=True) as uow:
            if uow.tenants.exists(actor.tenant):
                Auditor(entry.correlation_id).record(
                    uow, actor, "journal.conflict", entry.op_id, details, result="denied")
                uow.commit()

    # The entry is kept as a conflict either way; an unrecorded audit is not worth failing for.
    with contextlib.suppress(ArbiterError):
        res.guarded(record)
