"""Every Prometheus metric arbiter exports, defined once (SPEC §9).

``SPECS`` is the single table of names, types, help texts, labels and buckets. ``Metrics`` is
one registry (one per command run, one for ``serve``) whose metrics are created from that
table on first use, so a run's textfile holds only what the run touched. The fleet collector
(``fleet.py``) exposes the database's view under the same names and labels.

Where each series comes from (``MetricSpec.source``):

- ``run``: a command's own figures: ``--metrics-file`` after a one-shot run, and ``serve``'s
  own database calls;
- ``fleet``: read from the database by ``serve`` at scrape time, so they show what *every*
  arbiter process did (one-shot processes cannot be scraped);
- ``resilience``: the breaker and journal state, read at the end of a run and at scrape time;
- ``serve``: the HTTP server and its background journal replay;
- ``soak``: written by ``arbiter soak`` (``--metrics-file``) and by ``serve`` while a soak runs.

Label values are bounded: command paths, strategies, ``true``/``false``, result codes, agent
statuses, SQL verbs and DBAPI error families. Never an agent, task or tenant id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

COMMAND_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
DECISION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                    0.25, 1.0)
DB_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
REQUEST_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)

#: ``arbiter_breaker_state`` values.
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


@dataclass(frozen=True)
class MetricSpec:
    name: str  # as exposed; counters end in _total
    kind: str  # counter | gauge | histogram
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    source: str = "run"

    def samples(self) -> tuple[str, ...]:
        """Every sample name this metric can expose (what PromQL refers to)."""
        if self.kind == "histogram":
            return tuple(f"{self.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        return (self.name,)


SPECS: tuple[MetricSpec, ...] = (
    # -- a command run (SPEC §9 list)
    MetricSpec("arbiter_commands_total", "counter", "Commands run, by command and result (ok or "
               "exit_<code>).", ("command", "result")),
    MetricSpec("arbiter_command_duration_seconds", "histogram", "Wall time of a command.",
               ("command",), COMMAND_BUCKETS),
    MetricSpec("arbiter_last_run_timestamp_seconds", "gauge", "When the command last ran "
               "(Unix time).", ("command",)),
    MetricSpec("arbiter_last_success_timestamp_seconds", "gauge", "When the command last "
               "succeeded (Unix time).", ("command",)),
    MetricSpec("arbiter_routing_decisions_total", "counter", "Routing decisions, by strategy, "
               "whether the choice explored, and result (routed, already_routed, dry_run, or "
               "an error code such as no_capable_agent).", ("strategy", "explored", "result"),
               source="run,fleet"),
    MetricSpec("arbiter_routing_decision_seconds", "histogram", "Time to decide a routing "
               "(pool, choose, claim), as stored in the decision.", (), DECISION_BUCKETS,
               source="run,fleet"),
    MetricSpec("arbiter_outcomes_total", "counter", "Decisions closed, by result (succeeded, "
               "failed, expired).", ("result",), source="run,fleet"),
    MetricSpec("arbiter_db_call_seconds", "histogram", "Database statement time, by SQL verb "
               "(select, insert, update, delete, begin, other).", ("operation",), DB_BUCKETS),
    MetricSpec("arbiter_db_errors_total", "counter", "Database errors, by DBAPI family "
               "(operational, integrity, programming, data, internal, interface, ...).",
               ("kind",)),
    # -- resilience (read from the breaker file and the journal)
    MetricSpec("arbiter_breaker_state", "gauge", "Circuit breaker of the primary: 0 closed, "
               "1 half-open, 2 open.", source="resilience"),
    MetricSpec("arbiter_journal_backlog", "gauge", "Journaled writes waiting for replay.",
               source="resilience"),
    MetricSpec("arbiter_journal_conflicts", "gauge", "Journal entries kept as conflicts.",
               source="resilience"),
    # -- the fleet, from the database (serve)
    MetricSpec("arbiter_agents", "gauge", "Registered agents, by status.", ("status",),
               source="fleet"),
    MetricSpec("arbiter_decisions_open", "gauge", "Decisions waiting for an outcome.",
               source="fleet"),
    MetricSpec("arbiter_decisions_over_capacity", "gauge", "Decisions flagged over_capacity: "
               "their agent held more tasks than its capacity at some moment of their interval "
               "(journaled writes replayed; docs/resilience.md).", source="fleet"),
    MetricSpec("arbiter_fleet_active_tasks", "gauge", "Tasks in progress on all agents.",
               source="fleet"),
    MetricSpec("arbiter_fleet_capacity", "gauge", "Total capacity (slots) of all agents.",
               source="fleet"),
    MetricSpec("arbiter_fleet_utilization", "gauge", "Active tasks / capacity over all agents "
               "(0 to 1).", source="fleet"),
    MetricSpec("arbiter_fleet_up", "gauge", "1 when the last read of the fleet from the "
               "database succeeded.", source="fleet"),
    # -- serve itself
    MetricSpec("arbiter_http_requests_total", "counter", "HTTP requests served, by route (the "
               "path template, e.g. /v1/agents/{agent_id}; other for unknown paths), method and "
               "status code.", ("route", "method", "status"), source="serve"),
    MetricSpec("arbiter_http_request_duration_seconds", "histogram", "HTTP request time, by "
               "route (the path template).", ("route",), REQUEST_BUCKETS, source="serve"),
    MetricSpec("arbiter_journal_replays_total", "counter", "Background journal replays, by "
               "result (ok, error, unavailable).", ("result",), source="serve"),
    MetricSpec("arbiter_journal_replayed_total", "counter", "Journal entries replayed in the "
               "background, by result (applied, conflict).", ("result",), source="serve"),
    # -- soak (SPEC §11)
    MetricSpec("arbiter_soak_rss_bytes", "gauge", "Resident set size of a soak run, by stat "
               "(baseline, final, peak from `arbiter soak --metrics-file`; current from serve "
               "while a soak runs).", ("stat",), source="soak"),
)
BY_NAME = {spec.name: spec for spec in SPECS}


def exposed_names() -> frozenset[str]:
    """Every sample name arbiter can expose (the dashboard test checks PromQL against it)."""
    return frozenset(name for spec in SPECS for name in spec.samples())


class Metrics:
    """A registry whose metrics come from ``SPECS``, created on first use."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        import prometheus_client

        # No *_created series: they double every counter and confuse textfile readers.
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry or prometheus_client.CollectorRegistry()
        self._made: dict[str, Any] = {}
        #: Each labelled child as prometheus-client made it, by name and label values: serve
        #: observes ``arbiter_db_call_seconds`` per statement, and ``labels()`` validates the
        #: names, builds the key and takes the metric's lock on every call. Children are never
        #: removed here, so the one kept is the one ``labels()`` would return.
        self._children: dict[tuple[str, tuple[tuple[str, str], ...]], Any] = {}

    def get(self, name: str) -> Any:
        """The prometheus-client metric for ``name`` (which must be in ``SPECS``)."""
        made = self._made.get(name)
        if made is None:
            made = self._made[name] = _make(BY_NAME[name], self.registry)
        return made

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        self._child(name, labels).inc(amount)

    def observe(self, name: str, value: float, **labels: str) -> None:
        self._child(name, labels).observe(value)

    def set(self, name: str, value: float, **labels: str) -> None:
        self._child(name, labels).set(value)

    def free_gauge(self, name: str, help: str, labels: tuple[str, ...]) -> Any:
        """A gauge outside ``SPECS`` (``State.gauge`` figures), made once per name."""
        if name in BY_NAME:
            return self.get(name)
        made = self._made.get(name)
        if made is None:
            from prometheus_client import Gauge

            made = self._made[name] = Gauge(name, help, list(labels), registry=self.registry)
        return made

    def _child(self, name: str, labels: dict[str, str]) -> Any:
        if not labels:
            return self.get(name)
        key = (name, tuple(labels.items()))
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.get(name).labels(**labels)
        return child


def _make(spec: MetricSpec, registry: CollectorRegistry) -> Any:
    from prometheus_client import Counter, Gauge, Histogram

    labels = list(spec.labels)
    if spec.kind == "counter":
        return Counter(spec.name, spec.help, labels, registry=registry)
    if spec.kind == "histogram":
        return Histogram(spec.name, spec.help, labels, registry=registry, buckets=spec.buckets)
    return Gauge(spec.name, spec.help, labels, registry=registry)


def record_resilience(metrics: Metrics, status: dict[str, Any]) -> None:
    """Breaker state and journal backlog from ``resilience_status(settings)``."""
    breaker = status.get("breaker") or {}
    metrics.set("arbiter_breaker_state", BREAKER_STATES.get(str(breaker.get("state")), 0))
    metrics.set("arbiter_journal_backlog", float(status.get("backlog") or 0))
    metrics.set("arbiter_journal_conflicts", float(status.get("conflicts") or 0))
