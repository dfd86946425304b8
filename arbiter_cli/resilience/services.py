"""The services of a command on a network primary, routed through :class:`Resilience`.

``ResilientAgents``, ``ResilientRouting`` and ``ResilientSecurity`` implement the service
Protocols of ``ports.py`` with one explicit method per service method. Each method's policy
sits on the line above it (``resilience/policy.py``): ``@journaled(Kind.X)`` writes are
journaled when the primary cannot take them, ``@read`` calls fall back to the snapshot, and
``@needs_primary`` calls (tokens, tenants, cleanup, reap) exit 10 without the primary.

A write's :class:`~arbiter_cli.resilience.gateway.Durability` (committed, or journaled and
where) goes to the ``wrote`` callback the composition root passes in: the command renders
``meta.durability`` from it.
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from arbiter_cli.domain.principal import DEFAULT_TENANT
from arbiter_cli.errors import NotFound, StorageUnavailable
from arbiter_cli.ports import AgentsPort, RoutingPort, SecurityPort
from arbiter_cli.resilience.policy import journaled, needs_primary, read
from arbiter_cli.resilience.records import Kind, decision_record

if TYPE_CHECKING:
    from arbiter_cli.adapters.sql.repository import OpContext
    from arbiter_cli.domain.agents import Agent, FleetStats, RegistryPolicy, TaskResult
    from arbiter_cli.domain.principal import Principal
    from arbiter_cli.domain.results import Bootstrap, IssuedToken, Page, Recorded, Routed
    from arbiter_cli.domain.routing import Decision, Outcome, RoutingPolicy
    from arbiter_cli.domain.security import AuditEvent, TokenRecord, Verdict
    from arbiter_cli.ports import Since
    from arbiter_cli.resilience.gateway import Durability, Resilience

S = TypeVar("S")
S_co = TypeVar("S_co", covariant=True)
T = TypeVar("T")


@dataclass(frozen=True)
class Sides(Generic[S_co]):
    """One service area, built three ways by the composition root."""

    #: on the primary: reads and the calls that need it
    primary: S_co
    #: on the primary, its writes committed under the op (its id goes to ``applied_ops``)
    under: Callable[[OpContext], S_co]
    #: on the local snapshot (StorageUnavailable when there is none yet)
    local: Callable[[], S_co]


class _Resilient(Generic[S]):
    """The gateway calls behind each policy; subclasses name the kind and the arguments."""

    def __init__(self, gateway: Resilience, sides: Sides[S],
                 wrote: Callable[[Durability], None]) -> None:
        self._gateway = gateway
        self._sides = sides
        self._wrote = wrote
        self._local: S | None = None

    def _on_local(self) -> S:
        if self._local is None:
            self._local = self._sides.local()
        return self._local

    def _read(self, call: Callable[[S], T]) -> T:
        return self._gateway.read(lambda: call(self._sides.primary),
                                  lambda: call(self._on_local()))

    def _needs_primary(self, call: Callable[[S], T]) -> T:
        return self._gateway.guarded(lambda: call(self._sides.primary))

    def _write(self, kind: Kind, principal: Principal, call: Callable[[S], T],
               arguments: Mapping[str, Any], items: int = 0) -> T:
        def local() -> T:
            try:
                return call(self._on_local())
            except NotFound as exc:
                # The primary may hold it: the snapshot can be up to an interval behind.
                # "Not found" would tell the caller to give up; it must retry instead.
                raise StorageUnavailable(
                    f"database unavailable, and the local snapshot does not know this yet "
                    f"({exc.message}; it may be newer than the last refresh): the write was "
                    "not accepted, retry when the database is back") from None

        done = self._gateway.write(
            kind, principal, lambda op: call(self._sides.under(op)), local,
            lambda result: journal_args(kind, arguments, result), items=items)
        self._wrote(done.durability)
        return done.value


class ResilientAgents(_Resilient[AgentsPort]):
    """``AgentsPort`` on a network primary."""

    @property
    def policy(self) -> RegistryPolicy:
        return self._sides.primary.policy

    @journaled(Kind.AGENTS_REGISTER)
    def register(self, principal: Principal, raws: Sequence[Mapping[str, Any]],
                 progress: Callable[[int], None] | None = None,
                 uids: Sequence[str] | None = None) -> builtins.list[Agent]:
        return self._write(Kind.AGENTS_REGISTER, principal,
                           lambda s: s.register(principal, raws, progress=progress, uids=uids),
                           {"raws": raws, "uids": uids}, items=batch_size(raws))

    @journaled(Kind.AGENTS_UPDATE)
    def update(self, principal: Principal, agent_id: str, raw: Mapping[str, Any]) -> Agent:
        return self._write(Kind.AGENTS_UPDATE, principal,
                           lambda s: s.update(principal, agent_id, raw),
                           {"agent_id": agent_id, "raw": raw})

    @journaled(Kind.AGENTS_SET_STATUS)
    def set_status(self, principal: Principal, agent_id: str, status: str,
                   reason: str | None = None) -> Agent:
        return self._write(Kind.AGENTS_SET_STATUS, principal,
                           lambda s: s.set_status(principal, agent_id, status, reason),
                           {"agent_id": agent_id, "status": status, "reason": reason})

    @journaled(Kind.AGENTS_HEARTBEAT)
    def heartbeat(self, principal: Principal, agent_id: str) -> Agent:
        return self._write(Kind.AGENTS_HEARTBEAT, principal,
                           lambda s: s.heartbeat(principal, agent_id), {"agent_id": agent_id})

    @journaled(Kind.AGENTS_RECORD)
    def record(self, principal: Principal, agent_id: str, result: TaskResult) -> Agent:
        return self._write(Kind.AGENTS_RECORD, principal,
                           lambda s: s.record(principal, agent_id, result),
                           {"agent_id": agent_id, "result": result})

    @journaled(Kind.AGENTS_REMOVE)
    def remove(self, principal: Principal, agent_id: str) -> Agent:
        return self._write(Kind.AGENTS_REMOVE, principal,
                           lambda s: s.remove(principal, agent_id), {"agent_id": agent_id})

    @needs_primary
    def cleanup(self, principal: Principal, older_than_s: float, *,
                dry_run: bool) -> builtins.list[Agent]:
        return self._needs_primary(lambda s: s.cleanup(principal, older_than_s, dry_run=dry_run))

    @read
    def show(self, principal: Principal, agent_id: str) -> Agent:
        return self._read(lambda s: s.show(principal, agent_id))

    @read
    def list(self, principal: Principal, *, status: str | None = None,
             task_type: str | None = None, cursor: str | None = None,
             limit: int = 100) -> Page:
        return self._read(lambda s: s.list(principal, status=status, task_type=task_type,
                                           cursor=cursor, limit=limit))

    @read
    def query(self, principal: Principal,
              raw: Mapping[str, Any]) -> builtins.list[dict[str, Any]]:
        return self._read(lambda s: s.query(principal, raw))

    @read
    def stats(self, principal: Principal) -> FleetStats:
        return self._read(lambda s: s.stats(principal))


class ResilientRouting(_Resilient[RoutingPort]):
    """``RoutingPort`` on a network primary."""

    @property
    def policy(self) -> RoutingPolicy:
        return self._sides.primary.policy

    @property
    def registry(self) -> RegistryPolicy:
        return self._sides.primary.registry

    @journaled(Kind.ROUTING_ROUTE, read_when="dry_run")
    def route(self, principal: Principal, raw: Mapping[str, Any], *, strategy: str | None = None,
              seed: Any = None, dry_run: bool = False,
              correlation_id: str | None = None) -> Routed:
        def call(s: RoutingPort) -> Routed:
            return s.route(principal, raw, strategy=strategy, seed=seed, dry_run=dry_run,
                           correlation_id=correlation_id)

        if dry_run:  # a dry run decides without writing: a read (its policy says so)
            return self._read(call)
        return self._write(Kind.ROUTING_ROUTE, principal, call, {"raw": raw})

    @needs_primary
    def apply_decision(self, principal: Principal, decision: Decision) -> Routed:
        return self._needs_primary(lambda s: s.apply_decision(principal, decision))

    @journaled(Kind.ROUTING_OUTCOME)
    def outcome(self, principal: Principal, outcome: Outcome, *, decision_id: str | None = None,
                task_id: str | None = None) -> Recorded:
        return self._write(Kind.ROUTING_OUTCOME, principal,
                           lambda s: s.outcome(principal, outcome, decision_id=decision_id,
                                               task_id=task_id),
                           {"outcome": outcome, "decision_id": decision_id, "task_id": task_id})

    @needs_primary
    def apply_outcome(self, principal: Principal, outcome: Outcome, *, decision_id: str,
                      acknowledged_at: datetime) -> Recorded:
        return self._needs_primary(lambda s: s.apply_outcome(
            principal, outcome, decision_id=decision_id, acknowledged_at=acknowledged_at))

    @needs_primary
    def reap(self, principal: Principal, limit: int = 0) -> builtins.list[Decision]:
        return self._needs_primary(lambda s: s.reap(principal, limit))

    @read
    def explain(self, principal: Principal, decision_id: str) -> Decision:
        return self._read(lambda s: s.explain(principal, decision_id))

    @read
    def history(self, principal: Principal, *, agent_id: str | None = None,
                task_type: str | None = None, status: str | None = None, since: Since = None,
                cursor: str | None = None, limit: int = 100,
                over_capacity: bool = False) -> tuple[builtins.list[Decision], str | None]:
        return self._read(lambda s: s.history(
            principal, agent_id=agent_id, task_type=task_type, status=status, since=since,
            cursor=cursor, limit=limit, over_capacity=over_capacity))

    @read
    def stats(self, principal: Principal, *, since: Since = None,
              by: str = "agent") -> dict[str, Any]:
        return self._read(lambda s: s.stats(principal, since=since, by=by))


class ResilientSecurity(_Resilient[SecurityPort]):
    """``SecurityPort`` on a network primary: admission falls back to the snapshot (and fails
    closed without one); everything else needs the primary."""

    @read
    def admit(self, token: str | None, command: str) -> Principal:
        return self._read(lambda s: s.admit(token, command))

    @read
    def peek(self, token: str | None, command: str) -> Principal | None:
        return self._read(lambda s: s.peek(token, command))

    @needs_primary
    def readmit(self, tenant: str, token_id: str | None, command: str, at: datetime, *,
                seen: dict[str | None, Any] | None = None) -> Principal:
        return self._needs_primary(lambda s: s.readmit(tenant, token_id, command, at, seen=seen))

    @needs_primary
    def issue(self, principal: Principal, *, role: str, name: str, expires_in_s: float | None,
              rate: float | None = None, burst: int | None = None) -> IssuedToken:
        return self._needs_primary(lambda s: s.issue(principal, role=role, name=name,
                                                     expires_in_s=expires_in_s, rate=rate,
                                                     burst=burst))

    @needs_primary
    def tokens(self, principal: Principal, *, cursor: str | None = None,
               limit: int = 100) -> tuple[builtins.list[TokenRecord], str | None]:
        return self._needs_primary(lambda s: s.tokens(principal, cursor=cursor, limit=limit))

    @needs_primary
    def revoke(self, principal: Principal, token_id: str, *, force: bool = False) -> TokenRecord:
        return self._needs_primary(lambda s: s.revoke(principal, token_id, force=force))

    @needs_primary
    def login(self, token: str) -> Principal:
        return self._needs_primary(lambda s: s.login(token))

    @needs_primary
    def create_tenant(self, name: str) -> IssuedToken:
        return self._needs_primary(lambda s: s.create_tenant(name))

    @needs_primary
    def tenants(self) -> builtins.list[str]:
        return self._needs_primary(lambda s: s.tenants())

    @needs_primary
    def holds_tokens(self) -> bool:
        return self._needs_primary(lambda s: s.holds_tokens())

    @needs_primary
    def bootstrap(self, tenant: str = DEFAULT_TENANT, *, issue: bool = True,
                  before_issue: Callable[[], None] | None = None) -> Bootstrap:
        return self._needs_primary(lambda s: s.bootstrap(tenant, issue=issue,
                                                         before_issue=before_issue))

    @needs_primary
    def events(self, principal: Principal, *, since: Since = None, action: str | None = None,
               actor: str | None = None, cursor: int | None = None,
               limit: int = 100) -> tuple[builtins.list[AuditEvent], str | None]:
        return self._needs_primary(lambda s: s.events(principal, since=since, action=action,
                                                      actor=actor, cursor=cursor, limit=limit))

    @needs_primary
    def verify(self, principal: Principal, expect_head: str | None = None) -> Verdict:
        return self._needs_primary(lambda s: s.verify(principal, expect_head))


def batch_size(raws: object) -> int:
    """The items of a batch write (`agents register --file`): its budget grows with them."""
    return len(raws) if isinstance(raws, list | tuple) else 0


def journal_args(kind: Kind, arguments: Mapping[str, Any], result: Any) -> dict[str, Any] | None:
    """What replay needs for ``kind``; None when the local call changed nothing."""
    if kind == Kind.ROUTING_ROUTE:
        if result.already_routed:
            return None
        return {"decision": decision_record(result.decision)}
    if kind == Kind.ROUTING_OUTCOME:
        if result.already_recorded:
            return None
        return {"outcome": arguments["outcome"].to_dict(),
                "decision_id": result.decision.decision_id}
    args = {name: _plain(value) for name, value in arguments.items()}
    if kind == Kind.AGENTS_REGISTER:
        # the uids the agents got here: the journaled decisions that name them must find them
        args["uids"] = [agent.uid for agent in result]
    return args


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
