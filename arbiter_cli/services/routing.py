"""Routing use cases (SPEC §3): route, outcome, reap, explain, history, stats.

Decision times and the reap cutoff are the database's (``UnitOfWork.now()``, SPEC §4.1): a
host whose clock runs ahead cannot expire another host's live decisions.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from arbiter_cli.domain import agents as rules
from arbiter_cli.domain import validation as v
from arbiter_cli.domain.agents import Agent, RegistryPolicy, Status, TaskResult
from arbiter_cli.domain.overlap import changed_flags
from arbiter_cli.domain.principal import Principal
from arbiter_cli.domain.results import Recorded, Routed
from arbiter_cli.domain.routing import (
    EXPIRED,
    OPEN,
    Arm,
    Decision,
    Outcome,
    RoutingPolicy,
    Task,
    choose,
    parse_seed,
    parse_strategy,
    reward,
    update_arm,
)
from arbiter_cli.errors import AtCapacity, Conflict, InvalidInput, NotFound
from arbiter_cli.ids import uuid7
from arbiter_cli.ports import UnitOfWork, UnitOfWorkFactory
from arbiter_cli.services import window
from arbiter_cli.services.audit import Auditor
from arbiter_cli.services.window import Since

REAP_BATCH = 100


def not_found(decision_ref: str) -> NotFound:
    """The same message whether the decision is missing or another tenant's (SPEC §4)."""
    return NotFound(f"decision {decision_ref!r} not found")


class RoutingService:
    def __init__(self, uow: UnitOfWorkFactory, registry: RegistryPolicy, policy: RoutingPolicy,
                 auditor: Auditor | None = None) -> None:
        self._uow = uow
        self.registry = registry
        self.policy = policy
        self._audit = auditor or Auditor()

    # ------------------------------------------------------------------ route

    def route(
        self, principal: Principal, raw: Mapping[str, Any], *, strategy: str | None = None,
        seed: Any = None, dry_run: bool = False, correlation_id: str | None = None,
    ) -> Routed:
        """Reap, check idempotency, choose, claim (falling back on lost races), record."""
        task = Task.parse(raw, self.registry, new_task_id=f"task-{uuid7()}")
        caller_named_it = raw.get("task_id") is not None
        chosen = parse_strategy(strategy, self.policy.strategy)
        seed_value = secrets.randbits(63) if seed is None else parse_seed(seed)
        try:
            with self._uow(write=not dry_run) as uow:
                if not dry_run and caller_named_it:  # a generated id cannot have a decision
                    # Looked up first: the lookup carries the database's time (no extra
                    # statement). An open decision the reap below would expire is not
                    # returned; one past the reap's batch meets the open-task key at the
                    # insert and comes back through _concurrent_duplicate, as before.
                    existing = uow.decisions.for_task(principal.tenant, task.task_id)
                    if (existing is not None and existing.status == OPEN
                            and existing.created_at >= self._cutoff(uow.now())):
                        return Routed(existing, already_routed=True)
                now = uow.now()
                if not dry_run:
                    self._reap(uow, principal.tenant, REAP_BATCH, now)
                decision = self._decide(uow, principal, task, chosen, seed_value, dry_run, now,
                                        correlation_id or self._audit.correlation_id)
                if dry_run:
                    return Routed(decision)
                self._audit.record(uow, principal, "route.task", decision.decision_id, {
                    "task_id": task.task_id, "agent_id": decision.agent_id,
                    "strategy": chosen, "seed": seed_value})
                uow.commit()
        except Conflict:
            return self._concurrent_duplicate(principal, task)
        return Routed(decision)

    def _decide(self, uow: UnitOfWork, principal: Principal, task: Task, strategy: str,
                seed: int, dry_run: bool, now: datetime, correlation_id: str | None
                ) -> Decision:
        """Pool, choose and (unless a dry run) claim and store: the decision.

        A claim that loses a race tries the next candidate, up to ``max_claim_attempts``;
        the store claims and inserts together (``DecisionRepository.claim_and_add``).
        """
        import numpy as np

        started = time.perf_counter_ns()
        pool = uow.routing.pool(principal.tenant, task)
        choice = choose(pool, self.policy, strategy, np.random.default_rng(seed))
        candidates = choice.candidates(pool, self.policy.record_candidates)

        if dry_run:  # no claim: the first choice, built without the claim loop's closure
            # One call, no dataclasses.replace. Not with exactly 20 keyword arguments: the
            # call packs their names into a 20-item tuple, and CPython 3.11 puts freed 20-item
            # tuples on a free list it never takes from (~200 B kept per decision, which
            # tests/unit/test_memory_limits.py catches); ``status`` is given to make it 21.
            row = choice.order[0]
            decision = Decision(
                decision_id=None, tenant=principal.tenant, task_id=task.task_id,
                task_type=task.task_type, requirements=task.requirements(),
                metadata=task.metadata, priority=task.priority, agent_id=pool.ids[row],
                agent_uid=pool.uids[row], strategy=strategy, seed=seed,
                explored=choice.explored, confidence=choice.confidence,
                candidates=candidates, excluded=choice.excluded, examples=choice.examples,
                config_hash=self.policy.config_hash,
                latency_us=(time.perf_counter_ns() - started) // 1000, created_at=now,
                correlation_id=correlation_id, status=OPEN)
            return decision

        def decision_for(row: int) -> Decision:
            return Decision(
                decision_id=None if dry_run else uuid7(), tenant=principal.tenant,
                task_id=task.task_id, task_type=task.task_type,
                requirements=task.requirements(), metadata=task.metadata,
                priority=task.priority, agent_id=pool.ids[row], agent_uid=pool.uids[row],
                strategy=strategy, seed=seed,
                explored=choice.explored or row != choice.order[0],
                confidence=choice.confidence, candidates=candidates,
                excluded=choice.excluded, examples=choice.examples,
                config_hash=self.policy.config_hash,
                latency_us=(time.perf_counter_ns() - started) // 1000,
                # The store stamps a claimed decision at the claim's moment, not at the start
                # of the transaction: a claim that waited for another transaction's release
                # (an outcome, a reap) must not begin before the interval that release ended
                # (the over_capacity rule).
                created_at=now, correlation_id=correlation_id,
            )

        attempts = choice.order[: self.policy.max_claim_attempts]
        for row in attempts:
            stored = uow.decisions.claim_and_add(decision_for(row))
            if stored is not None:
                return stored
        raise AtCapacity("every candidate's last slot was taken meanwhile; retry",
                         excluded={**choice.excluded, "capacity": choice.excluded.get(
                             "capacity", 0) + len(attempts)})

    def _concurrent_duplicate(self, principal: Principal, task: Task) -> Routed:
        """Another process opened a decision for this task id at the same moment."""
        with self._uow() as uow:
            existing = uow.decisions.for_task(principal.tenant, task.task_id)
        if existing is None or existing.status != OPEN:
            raise Conflict(f"task {task.task_id!r} was routed concurrently; retry")
        return Routed(existing, already_routed=True)

    def apply_decision(self, principal: Principal, decision: Decision) -> Routed:
        """Store a decision acknowledged while the primary was down (journal replay, SPEC §7).

        The assignment was promised, so it is never dropped: a claim over capacity is applied
        and audited. Its ``over_capacity`` flag, and that of every decision of the agent it
        overlaps, follows from the intervals (``domain/overlap.py``), not from the order of
        replay. A claim on an agent that is no longer available (draining, offline,
        maintenance) is applied too, flagged ``agent_unavailable`` and audited with the
        agent's status. An agent removed meanwhile, or removed and registered again (another
        uid: the decision was made for the earlier agent), or a task routed meanwhile, is a
        conflict (exit 5) that stays in the journal.
        """
        if decision.decision_id is None or decision.tenant != principal.tenant:
            raise InvalidInput("a journaled decision needs its id and its caller's tenant")
        with self._uow(write=True) as uow:
            existing = uow.decisions.get(decision.decision_id)
            if existing is not None and existing.tenant != principal.tenant:
                # The id is another tenant's: never show its decision; record the attempt.
                self._audit.missing(uow, principal, "route.task", decision.decision_id,
                                    existing.tenant)
                uow.commit()
                raise Conflict(f"the journaled decision id {decision.decision_id} is already "
                               "in use")
            if existing is not None:
                return Routed(existing, already_routed=True)
            agent = uow.agents.get(principal.tenant, decision.agent_id, for_update=True)
            if agent is None:
                raise Conflict(f"agent {decision.agent_id!r} was removed before the journaled "
                               f"decision {decision.decision_id} reached the database")
            if agent.uid != decision.agent_uid:
                raise Conflict(f"agent {decision.agent_id!r} was removed and registered again "
                               f"before the journaled decision {decision.decision_id} reached "
                               f"the database: it was made for the earlier agent (uid "
                               f"{decision.agent_uid}), not this one (uid {agent.uid})")
            unavailable = agent.status != Status.AVAILABLE
            claimed = not unavailable and uow.routing.claim(principal.tenant, agent.uid)
            if not claimed:
                uow.routing.force_claim(principal.tenant, agent.uid)
            # Acknowledged at the host's time; never later than the database's now (§4.1).
            applied = replace(decision, agent_uid=agent.uid, over_capacity=False,
                              agent_unavailable=unavailable,
                              created_at=min(decision.created_at, uow.now()))
            uow.decisions.add(applied)
            flags = self._reflag(uow, agent, applied.created_at)
            applied = replace(applied, over_capacity=flags.get(applied.decision_id or "", False))
            details: dict[str, Any] = {
                "task_id": applied.task_id, "agent_id": applied.agent_id,
                "strategy": applied.strategy, "seed": applied.seed, "journaled": True,
                "over_capacity": applied.over_capacity, "agent_unavailable": unavailable,
                **_flag_details(flags, applied)}
            if unavailable:
                details["agent_status"] = agent.status.value
            self._audit.record(uow, principal, "route.task", applied.decision_id, details)
            uow.commit()
        return Routed(applied, flags=flags)

    def _reflag_closed(self, uow: UnitOfWork, was: Decision, closed: Decision
                       ) -> dict[str, bool]:
        """After a replayed outcome moved the end of a decision's interval: from open, or
        from its expiry (earlier or later), to ``closed.closed_at``. An agent removed or
        registered again meanwhile keeps its flags: its capacity is not this one's."""
        agent = uow.agents.get(closed.tenant, closed.agent_id, for_update=True)
        if agent is None or agent.uid != closed.agent_uid or closed.closed_at is None:
            return {}
        since = closed.closed_at if was.closed_at is None else min(was.closed_at,
                                                                   closed.closed_at)
        return self._reflag(uow, agent, since)

    def _reflag(self, uow: UnitOfWork, agent: Agent, since: datetime) -> dict[str, bool]:
        """Decide again the flags of the agent's decisions that a change of intervals from
        ``since`` on may have changed; store and return the ones that did change.

        Runs under the agent's row lock, so two replays on one agent take turns.
        """
        among = uow.decisions.claims(agent.tenant, agent.id, agent.uid, since)
        if not among:
            return {}
        start = min(c.start for c in among)
        context = among if start >= since else uow.decisions.claims(
            agent.tenant, agent.id, agent.uid, start)  # everything that overlaps ``among``
        flags = changed_flags(context, agent.capacity, [c.decision_id for c in among])
        if flags:
            uow.decisions.flag(agent.tenant, flags)
        return flags

    # ------------------------------------------------------------------ outcome

    def outcome(
        self, principal: Principal, outcome: Outcome, *, decision_id: str | None = None,
        task_id: str | None = None,
    ) -> Recorded:
        """Close the decision, release the slot, fold performance, update the arm: one transaction."""
        return self._close(principal, outcome, decision_id, task_id, acknowledged_at=None)

    def apply_outcome(self, principal: Principal, outcome: Outcome, *, decision_id: str,
                      acknowledged_at: datetime) -> Recorded:
        """Store an outcome acknowledged while the primary was down (journal replay, SPEC §7).

        The decision closes at ``acknowledged_at`` (the host's time of the acknowledgement,
        kept between its creation and the database's now), not at the time of replay, and
        the ``over_capacity`` flags its shorter interval changes are decided again.
        """
        return self._close(principal, outcome, decision_id, None, acknowledged_at=acknowledged_at)

    def _close(self, principal: Principal, outcome: Outcome, decision_id: str | None,
               task_id: str | None, *, acknowledged_at: datetime | None) -> Recorded:
        with self._uow(write=True) as uow:
            decision = self._find(uow, principal, decision_id, task_id)  # row locked
            if decision.status not in (OPEN, EXPIRED):
                if dict(decision.outcome or {}) == outcome.to_dict():
                    return Recorded(decision, already_recorded=True)
                raise Conflict(f"decision {decision.decision_id} already has a different "
                               f"outcome ({decision.status})")
            now = uow.now()
            self._learn(uow, decision, outcome, now, release=decision.status == OPEN)
            at = now if acknowledged_at is None else min(max(acknowledged_at,
                                                             decision.created_at), now)
            closed = decision.close(outcome, at)
            if not uow.decisions.save(closed, was=decision.status):
                raise Conflict(f"decision {decision.decision_id} changed meanwhile; retry")
            flags: dict[str, bool] = {}
            if acknowledged_at is not None:
                flags = self._reflag_closed(uow, decision, closed)
                closed = replace(closed, over_capacity=flags.get(closed.decision_id or "",
                                                                 closed.over_capacity))
            details: dict[str, Any] = {
                "task_id": decision.task_id, "agent_id": decision.agent_id,
                "status": closed.status, "quality": outcome.quality}
            if acknowledged_at is not None:
                details.update(journaled=True, **_flag_details(flags, closed))
            self._audit.record(uow, principal, "route.outcome", decision.decision_id, details)
            uow.commit()
        return Recorded(closed, flags=flags)

    def _find(self, uow: UnitOfWork, principal: Principal, decision_id: str | None,
              task_id: str | None) -> Decision:
        if (decision_id is None) == (task_id is None):
            raise v.fail("decision_id", "required", "give a DECISION_ID or --task-id, not both")
        if decision_id is not None:
            found = uow.decisions.get(v.pattern(decision_id, v.TASK_ID_RE, "decision_id",
                                                "decision id"), for_update=True)
            if found is None or found.tenant != principal.tenant:
                # Missing or another tenant's: the same answer and the same audit (SPEC §4.1).
                self._audit.missing(uow, principal, "route.outcome", decision_id,
                                    None if found is None else found.tenant)
                uow.commit()
                raise not_found(decision_id)
            return found
        assert task_id is not None
        found = uow.decisions.for_task(principal.tenant,
                                       v.pattern(task_id, v.TASK_ID_RE, "task_id", "task id"),
                                       for_update=True)
        if found is None:
            raise NotFound(f"no decision for task {task_id!r}")
        return found

    def _learn(self, uow: UnitOfWork, decision: Decision, outcome: Outcome, now: datetime,
               *, release: bool) -> None:
        agent = uow.agents.get(decision.tenant, decision.agent_id, for_update=True)
        if agent is None or agent.uid != decision.agent_uid:
            return  # removed meanwhile: the outcome only closes the decision
        result = TaskResult(success=outcome.success, quality=outcome.quality,
                            latency_ms=outcome.latency_ms, task_type=decision.task_type)
        learned = rules.record(agent, result, self.registry.window, now)
        if release:
            learned = replace(learned, active_tasks=max(0, agent.active_tasks - 1))
        if not uow.agents.update(learned, expect_version=agent.version):
            raise Conflict(f"agent {agent.id!r} changed meanwhile; retry")
        arm = uow.routing.arm(decision.tenant, agent.uid, decision.task_type) or Arm()
        uow.routing.save_arm(decision.tenant, agent.uid, decision.task_type,
                             update_arm(arm, reward(outcome.success, outcome.quality),
                                        self.policy.gamma), now)

    # ------------------------------------------------------------------ expiry

    def reap(self, principal: Principal, limit: int = 0) -> list[Decision]:
        """Expire open decisions older than routing.assignment_ttl, releasing their slots."""
        with self._uow(write=True) as uow:
            expired = self._reap(uow, principal.tenant, limit, uow.now())
            if expired:
                self._audit.record(uow, principal, "route.reap", None, {
                    "count": len(expired), "decision_ids": [d.decision_id for d in expired][:100]})
            uow.commit()
        return expired

    def _cutoff(self, now: datetime) -> datetime:
        """Open decisions created before this are expired by a reap."""
        return now - timedelta(seconds=self.policy.assignment_ttl_s)

    def _reap(self, uow: UnitOfWork, tenant: str, limit: int, now: datetime) -> list[Decision]:
        """``now`` is the database's: the cutoff never follows a caller's clock."""
        cutoff = self._cutoff(now)
        expired = []
        for decision in uow.decisions.expired(tenant, cutoff, limit or 1_000_000):
            closed = decision.expire(now)
            if uow.decisions.save(closed, was=OPEN):  # only one reaper wins each decision
                uow.routing.release(tenant, decision.agent_uid)
                expired.append(closed)
        return expired

    # ------------------------------------------------------------------ views

    def explain(self, principal: Principal, decision_id: str) -> Decision:
        v.pattern(decision_id, v.TASK_ID_RE, "decision_id", "decision id")
        with self._uow() as uow:
            found = uow.decisions.get(decision_id)
        if found is None or found.tenant != principal.tenant:
            # Missing or another tenant's: the same answer and the same audit (SPEC §4.1).
            with self._uow(write=True) as uow:
                self._audit.missing(uow, principal, "route.explain", decision_id,
                                    None if found is None else found.tenant)
                uow.commit()
            raise not_found(decision_id)
        return found

    def history(
        self, principal: Principal, *, agent_id: str | None = None,
        task_type: str | None = None, status: str | None = None, since: Since = None,
        cursor: str | None = None, limit: int = 100, over_capacity: bool = False,
    ) -> tuple[list[Decision], str | None]:
        if status is not None and status not in ("open", "succeeded", "failed", "expired"):
            raise v.fail("status", "allowed", "must be open, succeeded, failed or expired")
        # Filters the stored data can never match are input errors (2), not a query: a NUL
        # would otherwise reach PostgreSQL, which refuses it (an internal error).
        if agent_id is not None:
            v.pattern(agent_id, v.AGENT_ID_RE, "agent", "agent id")
        if task_type is not None:
            v.pattern(task_type, v.SLUG_RE, "task_type", "task type")
        if cursor is not None:
            v.pattern(cursor, v.TASK_ID_RE, "cursor", "cursor")
        limit = v.integer(limit, "limit", low=0, high=1_000_000)
        with self._uow() as uow:
            found = uow.decisions.history(principal.tenant, agent_id=agent_id,
                                          task_type=task_type, status=status,
                                          since=window.since(uow, since),
                                          before=cursor, limit=limit + 1 if limit else 0,
                                          over_capacity=over_capacity)
        if limit and len(found) > limit:
            return found[:limit], found[limit - 1].decision_id
        return found, None

    def stats(self, principal: Principal, *, since: Since = None,
              by: str = "agent") -> dict[str, Any]:
        if by not in ("agent", "task-type", "strategy"):
            raise v.fail("by", "allowed", "must be agent, task-type or strategy")
        with self._uow() as uow:
            decisions = uow.decisions.history(principal.tenant, since=window.since(uow, since),
                                              limit=0)
        return summarize(decisions, by)


def summarize(decisions: list[Decision], by: str) -> dict[str, Any]:
    """`route stats`: counts, explore share, per-group and per-arm results, latency, starvation."""
    import numpy as np

    keys: dict[str, Callable[[Decision], str]] = {
        "agent": lambda d: d.agent_id, "task-type": lambda d: d.task_type,
        "strategy": lambda d: d.strategy}
    key = keys[by]
    groups: dict[str, Counter[str]] = defaultdict(Counter)
    arms: dict[tuple[str, str], list[tuple[bool, float]]] = defaultdict(list)
    eligible: set[str] = set()
    chosen: set[str] = set()
    for decision in decisions:
        group = groups[key(decision)]
        group["decisions"] += 1
        group[decision.status] += 1
        group["explored"] += int(decision.explored)
        chosen.add(decision.agent_id)
        eligible.update(c["agent_id"] for c in decision.candidates)
        if decision.outcome is not None:
            arms[(decision.agent_id, decision.task_type)].append(
                (bool(decision.outcome["success"]), float(decision.outcome["quality"])))
            group["successes"] += int(bool(decision.outcome["success"]))
    latencies = np.array([d.latency_us for d in decisions], dtype=np.float64) / 1000.0
    total = len(decisions)
    return {
        "decisions": total,
        "explored_share": round(sum(d.explored for d in decisions) / total, 4) if total else 0.0,
        "without_outcome": sum(1 for d in decisions if d.outcome is None),
        "open": sum(1 for d in decisions if d.status == OPEN),
        "expired": sum(1 for d in decisions if d.status == EXPIRED),
        "latency_ms": {f"p{q}": round(float(np.percentile(latencies, q)), 4) if total else None
                       for q in (50, 95, 99)},
        "by": by,
        "groups": {name: dict(counts) for name, counts in sorted(groups.items())},
        "arms": [{"agent_id": agent, "task_type": task_type, "outcomes": len(values),
                  "success_rate": round(sum(s for s, _ in values) / len(values), 4),
                  "mean_quality": round(sum(q for _, q in values) / len(values), 4)}
                 for (agent, task_type), values in sorted(arms.items())],
        "starved": sorted(eligible - chosen),
    }


def _flag_details(flags: Mapping[str, bool], decision: Decision) -> dict[str, Any]:
    """The other decisions whose ``over_capacity`` flag a replayed write changed (audit)."""
    others = {k: v for k, v in sorted(flags.items()) if k != decision.decision_id}
    return {"over_capacity_changed": dict(list(others.items())[:100])} if others else {}
