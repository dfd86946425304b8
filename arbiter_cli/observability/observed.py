"""The services of an observed command: a span around each call, and the routing metrics.

``ObservedAgents``, ``ObservedRouting`` and ``ObservedSecurity`` implement the service
Protocols of ``ports.py`` with one explicit method per service method, in the style of
``resilience/services.py``. The composition root (the ``App`` properties of ``bootstrap.py``)
wraps a service in one when the run has telemetry; the services and the domain stay unaware
of it, and their signatures are unchanged.

- every method opens the span ``<area>.<method>`` (``routing.route``, ``agents.show``);
- ``routing.route`` feeds ``arbiter_routing_decisions_total``, ``arbiter_routing_decision_seconds``
  and a ``route.decided`` event, or on a refusal (nobody could take the task) the decisions
  counter and ``route.refused``;
- ``routing.outcome`` feeds ``arbiter_outcomes_total{result=<status>}`` and ``route.outcome``;
- ``routing.reap`` feeds ``arbiter_outcomes_total{result="expired"}`` and ``route.reaped``.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from arbiter_cli.domain.principal import DEFAULT_TENANT
from arbiter_cli.errors import ArbiterError
from arbiter_cli.observability import logging as log
from arbiter_cli.ports import AgentsPort, RoutingPort, SecurityPort

if TYPE_CHECKING:
    from arbiter_cli.domain.agents import Agent, FleetStats, RegistryPolicy, TaskResult
    from arbiter_cli.domain.principal import Principal
    from arbiter_cli.domain.results import Bootstrap, IssuedToken, Page, Recorded, Routed
    from arbiter_cli.domain.routing import Decision, Outcome, RoutingPolicy
    from arbiter_cli.domain.security import AuditEvent, TokenRecord, Verdict
    from arbiter_cli.observability.runtime import Telemetry
    from arbiter_cli.ports import Since

S = TypeVar("S")
T = TypeVar("T")
_log = log.get_logger()

#: Routing errors that are decisions too (nobody could take the task).
REFUSALS = frozenset({"no_capable_agent", "at_capacity"})


class _Observed(Generic[S]):
    """A service and the run's telemetry; subclasses name each call's span."""

    def __init__(self, service: S, telemetry: Telemetry) -> None:
        self._service = service
        self._telemetry = telemetry

    def _span(self, name: str, call: Callable[[S], T]) -> T:
        with self._telemetry.span(name):
            return call(self._service)


class ObservedAgents(_Observed[AgentsPort]):
    """``AgentsPort`` with a span per call."""

    @property
    def policy(self) -> RegistryPolicy:
        return self._service.policy

    def register(self, principal: Principal, raws: Sequence[Mapping[str, Any]],
                 progress: Callable[[int], None] | None = None,
                 uids: Sequence[str] | None = None) -> builtins.list[Agent]:
        return self._span("agents.register",
                          lambda s: s.register(principal, raws, progress=progress, uids=uids))

    def update(self, principal: Principal, agent_id: str, raw: Mapping[str, Any]) -> Agent:
        return self._span("agents.update", lambda s: s.update(principal, agent_id, raw))

    def set_status(self, principal: Principal, agent_id: str, status: str,
                   reason: str | None = None) -> Agent:
        return self._span("agents.set_status",
                          lambda s: s.set_status(principal, agent_id, status, reason))

    def heartbeat(self, principal: Principal, agent_id: str) -> Agent:
        return self._span("agents.heartbeat", lambda s: s.heartbeat(principal, agent_id))

    def record(self, principal: Principal, agent_id: str, result: TaskResult) -> Agent:
        return self._span("agents.record", lambda s: s.record(principal, agent_id, result))

    def remove(self, principal: Principal, agent_id: str) -> Agent:
        return self._span("agents.remove", lambda s: s.remove(principal, agent_id))

    def cleanup(self, principal: Principal, older_than_s: float, *,
                dry_run: bool) -> builtins.list[Agent]:
        return self._span("agents.cleanup",
                          lambda s: s.cleanup(principal, older_than_s, dry_run=dry_run))

    def show(self, principal: Principal, agent_id: str) -> Agent:
        return self._span("agents.show", lambda s: s.show(principal, agent_id))

    def list(self, principal: Principal, *, status: str | None = None,
             task_type: str | None = None, cursor: str | None = None,
             limit: int = 100) -> Page:
        return self._span("agents.list", lambda s: s.list(
            principal, status=status, task_type=task_type, cursor=cursor, limit=limit))

    def query(self, principal: Principal,
              raw: Mapping[str, Any]) -> builtins.list[dict[str, Any]]:
        return self._span("agents.query", lambda s: s.query(principal, raw))

    def stats(self, principal: Principal) -> FleetStats:
        return self._span("agents.stats", lambda s: s.stats(principal))


class ObservedRouting(_Observed[RoutingPort]):
    """``RoutingPort`` with a span per call; decisions, outcomes and reaps are counted and
    logged (the metric table: ``observability/metrics.py``)."""

    @property
    def policy(self) -> RoutingPolicy:
        return self._service.policy

    @property
    def registry(self) -> RegistryPolicy:
        return self._service.registry

    def route(self, principal: Principal, raw: Mapping[str, Any], *, strategy: str | None = None,
              seed: Any = None, dry_run: bool = False,
              correlation_id: str | None = None) -> Routed:
        with self._telemetry.span("routing.route"):
            try:
                routed = self._service.route(principal, raw, strategy=strategy, seed=seed,
                                             dry_run=dry_run, correlation_id=correlation_id)
            except ArbiterError as exc:
                self._refused(exc, strategy)
                raise
        self._decided(routed)
        return routed

    def apply_decision(self, principal: Principal, decision: Decision) -> Routed:
        return self._span("routing.apply_decision",
                          lambda s: s.apply_decision(principal, decision))

    def outcome(self, principal: Principal, outcome: Outcome, *, decision_id: str | None = None,
                task_id: str | None = None) -> Recorded:
        recorded = self._span("routing.outcome", lambda s: s.outcome(
            principal, outcome, decision_id=decision_id, task_id=task_id))
        self._recorded(recorded)
        return recorded

    def apply_outcome(self, principal: Principal, outcome: Outcome, *, decision_id: str,
                      acknowledged_at: datetime) -> Recorded:
        return self._span("routing.apply_outcome", lambda s: s.apply_outcome(
            principal, outcome, decision_id=decision_id, acknowledged_at=acknowledged_at))

    def reap(self, principal: Principal, limit: int = 0) -> builtins.list[Decision]:
        expired = self._span("routing.reap", lambda s: s.reap(principal, limit))
        self._reaped(expired)
        return expired

    def explain(self, principal: Principal, decision_id: str) -> Decision:
        return self._span("routing.explain", lambda s: s.explain(principal, decision_id))

    def history(self, principal: Principal, *, agent_id: str | None = None,
                task_type: str | None = None, status: str | None = None, since: Since = None,
                cursor: str | None = None, limit: int = 100,
                over_capacity: bool = False) -> tuple[builtins.list[Decision], str | None]:
        return self._span("routing.history", lambda s: s.history(
            principal, agent_id=agent_id, task_type=task_type, status=status, since=since,
            cursor=cursor, limit=limit, over_capacity=over_capacity))

    def stats(self, principal: Principal, *, since: Since = None,
              by: str = "agent") -> dict[str, Any]:
        return self._span("routing.stats", lambda s: s.stats(principal, since=since, by=by))

    def _refused(self, error: ArbiterError, strategy: str | None) -> None:
        """A refusal is a decision too: counted and logged (inside the span)."""
        if error.code not in REFUSALS:
            return
        name = strategy or self._service.policy.strategy
        metrics = self._telemetry.metrics
        if metrics is not None:
            metrics.inc("arbiter_routing_decisions_total", strategy=name, explored="false",
                        result=error.code)
        _log.info("route.refused", code=error.code, strategy=name)

    def _decided(self, routed: Routed) -> None:
        decision = routed.decision
        if routed.already_routed:
            result = "already_routed"
        else:
            result = "dry_run" if decision.decision_id is None else "routed"
        explored = "true" if decision.explored else "false"
        metrics = self._telemetry.metrics
        if metrics is not None:
            metrics.inc("arbiter_routing_decisions_total", strategy=decision.strategy,
                        explored=explored, result=result)
            if not routed.already_routed:
                metrics.observe("arbiter_routing_decision_seconds", decision.latency_us / 1e6)
        _log.info("route.decided", result=result, decision_id=decision.decision_id,
                  task_id=decision.task_id, agent_id=decision.agent_id,
                  strategy=decision.strategy, explored=decision.explored,
                  latency_us=decision.latency_us)

    def _recorded(self, recorded: Recorded) -> None:
        decision = recorded.decision
        metrics = self._telemetry.metrics
        if metrics is not None and not recorded.already_recorded:
            metrics.inc("arbiter_outcomes_total", result=decision.status)
        _log.info("route.outcome", decision_id=decision.decision_id, task_id=decision.task_id,
                  agent_id=decision.agent_id, status=decision.status,
                  already_recorded=recorded.already_recorded)

    def _reaped(self, expired: builtins.list[Decision]) -> None:
        metrics = self._telemetry.metrics
        if metrics is not None and expired:
            metrics.inc("arbiter_outcomes_total", float(len(expired)), result="expired")
        _log.info("route.reaped", count=len(expired))


class ObservedSecurity(_Observed[SecurityPort]):
    """``SecurityPort`` with a span per call."""

    def admit(self, token: str | None, command: str) -> Principal:
        return self._span("security.admit", lambda s: s.admit(token, command))

    def peek(self, token: str | None, command: str) -> Principal | None:
        return self._span("security.peek", lambda s: s.peek(token, command))

    def readmit(self, tenant: str, token_id: str | None, command: str, at: datetime, *,
                seen: dict[str | None, Any] | None = None) -> Principal:
        return self._span("security.readmit",
                          lambda s: s.readmit(tenant, token_id, command, at, seen=seen))

    def issue(self, principal: Principal, *, role: str, name: str, expires_in_s: float | None,
              rate: float | None = None, burst: int | None = None) -> IssuedToken:
        return self._span("security.issue", lambda s: s.issue(
            principal, role=role, name=name, expires_in_s=expires_in_s, rate=rate, burst=burst))

    def tokens(self, principal: Principal, *, cursor: str | None = None,
               limit: int = 100) -> tuple[builtins.list[TokenRecord], str | None]:
        return self._span("security.tokens",
                          lambda s: s.tokens(principal, cursor=cursor, limit=limit))

    def revoke(self, principal: Principal, token_id: str, *, force: bool = False) -> TokenRecord:
        return self._span("security.revoke", lambda s: s.revoke(principal, token_id, force=force))

    def login(self, token: str) -> Principal:
        return self._span("security.login", lambda s: s.login(token))

    def create_tenant(self, name: str) -> IssuedToken:
        return self._span("security.create_tenant", lambda s: s.create_tenant(name))

    def tenants(self) -> builtins.list[str]:
        return self._span("security.tenants", lambda s: s.tenants())

    def holds_tokens(self) -> bool:
        return self._span("security.holds_tokens", lambda s: s.holds_tokens())

    def bootstrap(self, tenant: str = DEFAULT_TENANT, *, issue: bool = True,
                  before_issue: Callable[[], None] | None = None) -> Bootstrap:
        return self._span("security.bootstrap", lambda s: s.bootstrap(
            tenant, issue=issue, before_issue=before_issue))

    def events(self, principal: Principal, *, since: Since = None, action: str | None = None,
               actor: str | None = None, cursor: int | None = None,
               limit: int = 100) -> tuple[builtins.list[AuditEvent], str | None]:
        return self._span("security.events", lambda s: s.events(
            principal, since=since, action=action, actor=actor, cursor=cursor, limit=limit))

    def verify(self, principal: Principal, expect_head: str | None = None) -> Verdict:
        return self._span("security.verify", lambda s: s.verify(principal, expect_head))
