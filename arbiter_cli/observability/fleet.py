"""Collectors ``arbiter serve`` adds to its registry, evaluated at each scrape.

One-shot commands reset their counters when they exit, so ``serve`` reads what every arbiter
process did from the shared database (SPEC §9):

- ``FleetCollector``: decisions by strategy, explore flag and outcome, decision latency as a
  histogram, open decisions, decisions flagged ``over_capacity``, agents by status, and
  utilization. Two aggregate queries behind the ``FleetQuery`` port (``adapters/sql/fleet.py``),
  one scan of ``decisions`` and one of ``agents``, all tenants together;
- ``ResilienceCollector``: breaker state and journal backlog (the ``resilience_status`` that
  ``serve`` hands it);
- ``SoakCollector``: the RSS of soak runs alive on this host (the state files that the
  ``live_states`` it is handed reads).

A failing read never fails the scrape: the collector reports ``arbiter_fleet_up 0`` and logs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from arbiter_cli.domain.agents import STATUSES
from arbiter_cli.observability import logging as log
from arbiter_cli.observability.metrics import BY_NAME, DECISION_BUCKETS, Metrics, record_resilience

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from arbiter_cli.config import Settings

_log = log.get_logger()
OUTCOMES = ("succeeded", "failed", "expired")
ResilienceStatus = Callable[["Settings"], Mapping[str, Any]]
LiveStates = Callable[[Path], list[dict[str, Any]]]


class FleetQuery(Protocol):
    """The two aggregate reads of the fleet (``adapters/sql/fleet.py`` implements them)."""

    def decisions(self, conn: Connection, bounds_us: Sequence[int]) -> Sequence[Sequence[Any]]:
        """Per (strategy, explored, status): count, latency sum, over_capacity count, and the
        count at or under each bound of ``bounds_us``."""
        ...

    def agents(self, conn: Connection) -> Sequence[Sequence[Any]]:
        """Per status: count, active tasks, capacity."""
        ...


def read_resilience(settings: Settings, status: ResilienceStatus) -> dict[str, Any] | None:
    """``status(settings)`` (the journal's ``resilience_status``), or None when it fails."""
    try:
        return dict(status(settings))
    except Exception as exc:  # noqa: BLE001 - metrics must not take the command down
        _log.warning("resilience.status_unreadable", error=f"{type(exc).__name__}: {exc}")
        return None


class FleetCollector:
    """The fleet's state from the database, under the names of ``metrics.SPECS``."""

    def __init__(self, engine: Callable[[], Engine], query: FleetQuery,
                 guard: Callable[[Callable[[], Any]], Any] = lambda read: read()) -> None:
        self._engine_factory = engine
        self._query = query
        self._engine: Engine | None = None
        self._guard = guard  # serve passes the breaker and the command budget for PostgreSQL
        self._last_problem: str | None = None

    def describe(self) -> list[Any]:
        return []  # names may overlap a run registry's; nothing to pre-register

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily("arbiter_fleet_up", BY_NAME["arbiter_fleet_up"].help)
        try:
            if self._engine is None:
                self._engine = self._engine_factory()
            families = self._guard(self._read)
        except Exception as exc:  # noqa: BLE001 - a down database must not fail the scrape
            problem = _one_line(exc)
            if problem != self._last_problem:  # once per outage, not at every scrape
                _log.warning("fleet.unreadable", error=problem)
                self._last_problem = problem
            up.add_metric([], 0)
            yield up
            return
        if self._last_problem is not None:
            _log.info("fleet.readable_again")
            self._last_problem = None
        up.add_metric([], 1)
        yield up
        yield from families

    def _read(self) -> list[Any]:
        assert self._engine is not None
        with self._engine.connect() as conn:
            bounds_us = [int(bound * 1_000_000) for bound in DECISION_BUCKETS]
            return [*_decision_families(self._query.decisions(conn, bounds_us)),
                    *_agent_families(self._query.agents(conn))]

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def _one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return f"{type(exc).__name__}: {(text.splitlines() or [''])[0][:200]}"


def _decision_families(rows: Sequence[Sequence[Any]]) -> list[Any]:
    from prometheus_client.core import (  # prometheus_client: only when serve scrapes
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    routed: dict[tuple[str, str], float] = defaultdict(float)
    outcomes: dict[str, float] = dict.fromkeys(OUTCOMES, 0.0)
    open_ = 0.0
    total_us = 0.0
    count = 0.0
    in_bucket = [0.0] * len(DECISION_BUCKETS)
    flagged = 0.0
    for strategy, explored, status, n, latency_sum, over, *counts in rows:
        flagged += float(over or 0)
        routed[(str(strategy), "true" if explored else "false")] += n
        if status in outcomes:
            outcomes[status] += n
        elif status == "open":
            open_ += n
        count += n
        total_us += float(latency_sum or 0)
        in_bucket = [a + float(b or 0) for a, b in zip(in_bucket, counts, strict=True)]
    spec = BY_NAME["arbiter_routing_decisions_total"]
    decided = CounterMetricFamily(spec.name, spec.help, labels=list(spec.labels))
    for (strategy, explored), n in sorted(routed.items()):
        decided.add_metric([strategy, explored, "routed"], n)
    spec = BY_NAME["arbiter_outcomes_total"]
    closed = CounterMetricFamily(spec.name, spec.help, labels=list(spec.labels))
    for result, n in outcomes.items():
        closed.add_metric([result], n)
    spec = BY_NAME["arbiter_routing_decision_seconds"]
    latency = HistogramMetricFamily(spec.name, spec.help)
    latency.add_metric([], [*((_le(b), n) for b, n in zip(DECISION_BUCKETS, in_bucket,
                                                          strict=True)), ("+Inf", count)],
                       sum_value=total_us / 1_000_000)
    waiting = GaugeMetricFamily("arbiter_decisions_open", BY_NAME["arbiter_decisions_open"].help)
    waiting.add_metric([], open_)
    spec = BY_NAME["arbiter_decisions_over_capacity"]
    over_capacity = GaugeMetricFamily(spec.name, spec.help)
    over_capacity.add_metric([], flagged)
    return [decided, closed, latency, waiting, over_capacity]


def _le(bound: float) -> str:
    return repr(float(bound))


def _agent_families(rows: Sequence[Sequence[Any]]) -> list[Any]:
    from prometheus_client.core import GaugeMetricFamily

    by_status = dict.fromkeys(STATUSES, 0.0)
    active = capacity = 0.0
    for status, n, busy, slots in rows:
        by_status[str(status)] = by_status.get(str(status), 0.0) + n
        active += float(busy or 0)
        capacity += float(slots or 0)
    spec = BY_NAME["arbiter_agents"]
    agents = GaugeMetricFamily(spec.name, spec.help, labels=list(spec.labels))
    for status, n in by_status.items():
        agents.add_metric([status], n)
    found = [agents]
    for name, value in (("arbiter_fleet_active_tasks", active),
                        ("arbiter_fleet_capacity", capacity),
                        ("arbiter_fleet_utilization", active / capacity if capacity else 0.0)):
        family = GaugeMetricFamily(name, BY_NAME[name].help)
        family.add_metric([], value)
        found.append(family)
    return found


class ResilienceCollector:
    """``arbiter_breaker_state`` and ``arbiter_journal_*`` at scrape time."""

    def __init__(self, settings: Settings, status: ResilienceStatus) -> None:
        self._settings = settings
        self._status = status

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        status = read_resilience(self._settings, self._status)
        if status is None:
            return
        scratch = Metrics()
        record_resilience(scratch, status)
        yield from scratch.registry.collect()


class SoakCollector:
    """``arbiter_soak_rss_bytes{stat="current"}``: the largest RSS of the soaks alive here."""

    def __init__(self, data_dir: Path, live_states: LiveStates) -> None:
        self._data_dir = data_dir
        self._live_states = live_states

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        try:
            states = self._live_states(self._data_dir)
        except OSError as exc:
            _log.warning("soak.state_unreadable", error=str(exc))
            return
        if not states:
            return
        spec = BY_NAME["arbiter_soak_rss_bytes"]
        family = GaugeMetricFamily(spec.name, spec.help, labels=list(spec.labels))
        family.add_metric(["current"], max(float(s.get("rss_bytes") or 0) for s in states))
        yield family
