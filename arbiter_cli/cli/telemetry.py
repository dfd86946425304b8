"""One command run's telemetry, set up by the CLI boundary and torn down when the command ends.

``observe(state)`` (around the command body, inside the error boundary):

1. configures logging from ``logging.level``/``logging.format`` (flags are the top layer of
   the settings); if the settings cannot be read, from the flags alone, so the command can
   still report its configuration error in one line;
2. binds ``correlation_id`` and ``command`` to every log event;
3. builds the run's tracer provider (``observability.tracing.exporter``) and, with
   ``--metrics-file``, the run's metrics registry;
4. opens the command's span.

``finish(state, exit_code, duration_s)`` (in the boundary's ``finally``) logs the end of the
command, writes ``--metrics-file``, flushes the spans and puts logging back as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from arbiter_cli.errors import ArbiterError
from arbiter_cli.observability import logging as log
from arbiter_cli.observability.redact import make_redactor
from arbiter_cli.observability.runtime import Telemetry
from arbiter_cli.observability.tracing import build_provider

if TYPE_CHECKING:
    from arbiter_cli.cli.state import State
    from arbiter_cli.config import Settings

_log = log.get_logger()


def _settings(state: State) -> Settings | None:
    try:
        return state.settings
    except ArbiterError:
        return None  # the command reports it when it reads the settings


@contextmanager
def observe(state: State) -> Iterator[Telemetry]:
    """Logs, tracer and metrics for the command ``state`` runs; its span around the body."""
    settings = _settings(state)
    if settings is not None:
        level, fmt = settings.logging.level, settings.logging.format
        secrets = [*settings.secret_values(), state.token, *state.secrets]
    else:
        level = state.log_level if state.log_level in log.LEVELS else "warning"
        fmt = state.log_format if state.log_format in log.FORMATS else "auto"
        secrets = [state.token, *state.secrets]
    log.configure(level, fmt, secrets)
    log.bind(correlation_id=state.correlation_id, command=state.command)
    telemetry = Telemetry(correlation_id=state.correlation_id, command=state.command,
                          redact=make_redactor(secrets))
    state.telemetry = telemetry
    if state.metrics_file is not None:
        from arbiter_cli.observability.metrics import Metrics  # deferred: start-up of `arbiter agents list`

        telemetry.metrics = Metrics()
    if settings is not None:
        telemetry.provider = build_provider(settings.observability.tracing.exporter)
    _log.debug("command.start")
    with telemetry.span(f"arbiter {state.command}") as span:
        telemetry.command_span = span
        yield telemetry


def finish(state: State, exit_code: int, duration_s: float) -> None:
    """Log the end, write ``--metrics-file``, flush spans, restore logging. Never raises."""
    telemetry = state.telemetry
    try:
        _log.info("command.end", exit_code=exit_code, duration_ms=round(duration_s * 1000, 2))
        if state.metrics_file is not None:
            _write_metrics(state, telemetry, exit_code, duration_s)
        if telemetry is not None:
            telemetry.close()
    finally:
        log.reset()


def _write_metrics(state: State, telemetry: Telemetry | None, exit_code: int,
                   duration_s: float) -> None:
    from arbiter_cli.adapters.metrics import write_run_metrics  # deferred: start-up of `arbiter agents list`

    assert state.metrics_file is not None
    metrics = telemetry.metrics if telemetry is not None else None
    settings = state._settings
    if metrics is not None and settings is not None:
        # deferred: start-up of `arbiter agents list` (only --metrics-file needs these)
        from arbiter_cli.observability.fleet import read_resilience
        from arbiter_cli.observability.metrics import record_resilience
        from arbiter_cli.resilience.journal import resilience_status

        status = read_resilience(settings, resilience_status)
        if status is not None:
            record_resilience(metrics, status)
    try:
        write_run_metrics(state.metrics_file, command=state.command, exit_code=exit_code,
                          duration_s=duration_s, gauges=state.gauges, metrics=metrics)
    except OSError as exc:
        _log.warning("metrics_file.unwritable", path=str(state.metrics_file),
                     error=exc.strerror or str(exc))

