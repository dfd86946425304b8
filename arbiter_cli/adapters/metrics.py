"""Per-run metrics for node-exporter's textfile collector (``--metrics-file``, SPEC §9).

One-shot processes cannot be scraped, so a run writes its own figures atomically
(prometheus-client writes a temporary file and renames it).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class RunGauge:
    """A figure a command adds to its ``--metrics-file`` (e.g. soak's RSS)."""

    name: str
    help: str
    value: float
    labels: dict[str, str] = field(default_factory=dict)


def write_run_metrics(path: Path, *, command: str, exit_code: int, duration_s: float,
                      gauges: Sequence[RunGauge] = ()) -> None:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, write_to_textfile

    registry = CollectorRegistry()
    result = "ok" if exit_code == 0 else f"exit_{exit_code}"
    Counter("arbiter_commands", "Commands run, by result.", ["command", "result"],
            registry=registry).labels(command, result).inc()
    Histogram("arbiter_command_duration_seconds", "Wall time of the command.", ["command"],
              registry=registry).labels(command).observe(duration_s)
    now = time.time()
    Gauge("arbiter_last_run_timestamp_seconds", "When the command last ran.", ["command"],
          registry=registry).labels(command).set(now)
    last_success = now if exit_code == 0 else _previous_success(path, command)
    if last_success is not None:
        Gauge("arbiter_last_success_timestamp_seconds", "When the command last succeeded.",
              ["command"], registry=registry).labels(command).set(last_success)
    families: dict[str, Gauge] = {}
    for g in gauges:
        if g.name not in families:
            families[g.name] = Gauge(g.name, g.help, sorted(g.labels), registry=registry)
        family = families[g.name]
        (family.labels(**g.labels) if g.labels else family).set(g.value)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)


def _previous_success(path: Path, command: str) -> float | None:
    """Keep the last success of a previous run across a failing one (alerts key on its age)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = path.read_text()
    except OSError:
        return None
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if (sample.name == "arbiter_last_success_timestamp_seconds"
                        and sample.labels.get("command") == command):
                    return float(sample.value)
    except ValueError:
        return None
    return None
