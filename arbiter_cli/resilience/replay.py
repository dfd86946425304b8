"""Replaying the journal into the primary, in order and idempotently (SPEC §7).

Each entry runs the service call it records, with its op id in ``applied_ops`` in the same
transaction, so replaying after an ambiguous commit is harmless: the op id is found and the
entry is dropped. A caller-level failure (the agent was created or removed meanwhile, a
different outcome was recorded) turns the entry into a *conflict*: it stays in the journal,
is audited, and is never applied over what the primary holds. A database failure stops the
replay; the rest waits for the next one.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from arbiter_cli.errors import ArbiterError, Conflict, InvalidInput, StorageUnavailable
from arbiter_cli.resilience.deadline import Deadline
from arbiter_cli.resilience.gateway import Resilience
from arbiter_cli.resilience.journal import Entry
from arbiter_cli.resilience.records import (
    decision_from,
    outcome_from,
    principal_from,
    task_result_from,
)
from arbiter_cli.resilience.snapshot import file_lock

if TYPE_CHECKING:
    from arbiter_cli.bootstrap import App
    from arbiter_cli.config import Settings
    from arbiter_cli.domain.principal import Principal

APPLIED = "applied"
CONFLICT = "conflict"


def replay(res: Resilience, *, budget_s: float | None, blocking: bool = False,
           progress: Callable[[int], None] | None = None,
           within: Deadline | None = None) -> dict[str, Any]:
    """Apply pending entries in order for at most ``budget_s`` (None: until empty or failure).

    Every entry's database calls stop at the end of the budget, and within ``within`` (the
    command's own deadline, when a command replays before its work).
    """
    report: dict[str, Any] = {"applied": 0, "conflicts": 0, "remaining": 0, "stopped": None}
    with file_lock(res.directory / "replay.lock", blocking=blocking) as locked:
        if not locked:
            report["stopped"] = "another process is replaying"
            report["remaining"] = res.journal.pending()
            return report
        total = None if budget_s is None else Deadline(budget_s)
        after = 0
        per_entry = res.settings.seconds("database.command_timeout")
        while total is None or not total.expired():
            entry = res.journal.next_pending(after)
            if entry is None:
                break
            limit = per_entry
            for bound in (total, within):
                if bound is not None:
                    limit = min(limit, bound.remaining())
            if limit <= 0:
                break
            try:
                status = apply_entry(res, entry, Deadline(limit))
            except StorageUnavailable as exc:
                report["stopped"] = exc.message
                break
            report["applied" if status == APPLIED else "conflicts"] += 1
            after = entry.seq
            if progress is not None:
                progress(1)
        report["remaining"] = res.journal.pending()
    return report


def apply_entry(res: Resilience, entry: Entry, budget: Deadline | None = None) -> str:
    from arbiter_cli.adapters.sql.repository import OpContext, already_applied, current_op

    principal = principal_from(entry.principal)
    app = _primary_app(res, entry.correlation_id)
    op = OpContext(op_id=entry.op_id, tenant=entry.tenant, kind=entry.kind, now=res.clock)

    def run() -> None:
        if already_applied(res.primary, entry.op_id):
            return  # an earlier replay or the original command committed it
        token = current_op.set(op)
        try:
            dispatch(app, entry, principal)
        finally:
            current_op.reset(token)

    if budget is None:
        budget = Deadline(res.settings.seconds("database.command_timeout"))
    try:
        _check_not_dependent(res, entry)
        res.guarded(run, may_retry=lambda: not op.ambiguous, deadline=budget)
    except StorageUnavailable:
        raise
    except ArbiterError as exc:
        res.journal.conflict(entry.seq, f"{exc.code}: {exc.message}")
        _audit_conflict(res, app, principal, entry, exc)
        return CONFLICT
    res.journal.applied(entry.seq)
    return APPLIED


def _check_not_dependent(res: Resilience, entry: Entry) -> None:
    """An op on an agent whose journaled registration conflicted conflicts too."""
    if entry.kind == "agents.register":
        return
    if entry.kind == "routing.route":
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


AGENT_WRITES = ("register", "update", "set_status", "heartbeat", "record", "remove")


def dispatch(app: App, entry: Entry, principal: Principal) -> Any:
    """Run the service call an entry records, on ``app`` (the primary)."""
    method, args = decode(app, entry)
    return method(principal, **args)


def decode(app: App, entry: Entry) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The service method of an entry and its keyword arguments.

    An entry that does not fit its kind (written by another version, or damaged) is refused
    with ``InvalidInput``, so replay keeps it as a conflict instead of failing every command
    that replays first.
    """
    domain, _, name = entry.kind.partition(".")
    if not (domain == "agents" and name in AGENT_WRITES
            or domain == "routing" and name in ("route", "outcome")):
        raise ArbiterError(f"journal entry {entry.seq} has an unknown kind {entry.kind!r}")
    args = dict(entry.args)
    try:
        if entry.kind == "routing.route":
            method: Callable[..., Any] = app.routing.apply_decision
            args = {"decision": decision_from(args["decision"])}
        elif entry.kind == "routing.outcome":
            method = app.routing.outcome
            args = {"outcome": outcome_from(args["outcome"]), "decision_id": args["decision_id"]}
        else:
            if entry.kind == "agents.record":
                args["result"] = task_result_from(args["result"])
            method = getattr(app.agents, name)
        inspect.signature(method).bind(None, **args)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"journal entry {entry.seq} ({entry.kind}) is malformed: "
                           f"{type(exc).__name__}: {exc}") from None
    return method, args


def _primary_app(res: Resilience, correlation_id: str | None) -> App:
    from arbiter_cli.bootstrap import App, sql_unit_of_work

    return App(settings=res.settings, uow=sql_unit_of_work(res.settings, res.primary),
               clock=res.clock, engine=res.primary, correlation_id=correlation_id)


def _audit_conflict(res: Resilience, app: App, principal: Principal, entry: Entry,
                    exc: ArbiterError) -> None:
    from arbiter_cli.services.audit import Auditor

    def record() -> None:
        with app.uow(write=True) as uow:
            if uow.tenants.exists(principal.tenant):
                Auditor(entry.correlation_id).record(
                    uow, principal, "journal.conflict", entry.op_id,
                    {"kind": entry.kind, "seq": entry.seq, "error": exc.message[:500]},
                    result="denied")
                uow.commit()

    # The entry is kept as a conflict either way; an unrecorded audit is not worth failing for.
    with contextlib.suppress(ArbiterError):
        res.guarded(record)


def replay_pending(settings: Settings, *, budget_s: float | None) -> dict[str, Any]:
    """Drain the journal of ``database.url`` (serve's background loop, and health)."""
    from arbiter_cli.bootstrap import build

    app = build(settings, check_schema=False, resilient=True)
    try:
        if app.resilience is None:
            return {"applied": 0, "conflicts": 0, "remaining": 0, "stopped": None}
        return replay(app.resilience, budget_s=budget_s)
    finally:
        app.close()
