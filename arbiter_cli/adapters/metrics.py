"""Per-run metrics for node-exporter's textfile collector (``--metrics-file``, SPEC §9).

One-shot processes cannot be scraped, so a run writes its own figures atomically
(prometheus-client writes a temporary file and renames it). The metric names, types and labels
live in ``arbiter_cli/observability/metrics.py``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from arbiter_cli.observability.metrics import BY_NAME, Metrics

if TYPE_CHECKING:
    from arbiter_cli.observability.metrics import Metrics


@dataclass(frozen=True)
class RunGauge:
    """A figure a command adds to its ``--metrics-file`` (e.g. soak's RSS)."""

    name: str
    help: str
    value: float
    labels: dict[str, str] = field(default_factory=dict)


def write_run_metrics(path: Path, *, command: str, exit_code: int, duration_s: float,
                      gauges: Sequence[RunGauge] = (), metrics: Metrics | None = None) -> None:
    """Write the run's registry (``metrics``, or a new one) with the command's own figures.

    The registry already holds what the run observed (routing decisions, outcomes, database
    calls, breaker and journal); this adds ``arbiter_commands_total``, the duration, the
    last-run and last-success timestamps and the ``State.gauge`` figures, then writes the file
    atomically (prometheus-client writes a temporary file and renames it).
    """
    from prometheus_client import write_to_textfile

    run = metrics if metrics is not None else Metrics()
    result = "ok" if exit_code == 0 else f"exit_{exit_code}"
    run.inc("arbiter_commands_total", command=command, result=result)
    run.observe("arbiter_command_duration_seconds", duration_s, command=command)
    now = time.time()
    run.set("arbiter_last_run_timestamp_seconds", now, command=command)
    last_success = now if exit_code == 0 else _previous_success(path, command)
    if last_success is not None:
        run.set("arbiter_last_success_timestamp_seconds", last_success, command=command)
    for g in gauges:
        spec = BY_NAME.get(g.name)
        names = spec.labels if spec is not None else tuple(sorted(g.labels))
        family = run.free_gauge(g.name, g.help, names)
        (family.labels(**g.labels) if g.labels else family).set(g.value)
    write_to_textfile(str(path), run.registry)  # never creates folders: see metrics_file_problem


#: How much of an existing file is read to recognise one arbiter wrote.
_SNIFF_BYTES = 65_536


def metrics_file_problem(path: Path) -> str | None:
    """Why ``--metrics-file PATH`` must be refused before the command runs, or None.

    The parent folder must exist (a typo must not grow a folder tree), and an existing PATH
    must be a regular file that is empty or was written by arbiter: the option replaces the
    file, and replacing someone else's file would destroy it without consent.
    """
    parent = path.parent
    if not parent.is_dir():
        return f"folder {parent} does not exist (create it first; arbiter does not)"
    if not path.exists():
        return None
    if not path.is_file():
        return f"{path} is not a regular file"
    try:
        with path.open("rb") as handle:
            head = handle.read(_SNIFF_BYTES)
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    if head.strip() and b"# HELP arbiter_" not in head:
        return f"{path} exists and is not a metrics file arbiter wrote: refusing to replace it"
    return None


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
