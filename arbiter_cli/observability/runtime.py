"""One command run's telemetry: set up by the CLI boundary, torn down when the command ends.

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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from arbiter_cli import __version__
from arbiter_cli.errors import ArbiterError
from arbiter_cli.observability import logging as log
from arbiter_cli.observability.redact import Redactor, make_redactor

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

    from arbiter_cli.cli.state import State
    from arbiter_cli.config import Settings
    from arbiter_cli.observability.metrics import Metrics

_log = log.get_logger()


def _same(text: str) -> str:
    return text


@dataclass
class Telemetry:
    """What one run observes with: correlation id, tracer, metrics registry, redaction."""

    correlation_id: str
    command: str = ""
    redact: Redactor = field(default=_same, repr=False)
    provider: TracerProvider | None = None
    metrics: Metrics | None = None
    tenant: str | None = None
    command_span: Span | None = field(default=None, repr=False)
    _tracer: Tracer | None = field(default=None, repr=False)

    @property
    def tracer(self) -> Tracer | None:
        if self._tracer is None and self.provider is not None:
            self._tracer = self.provider.get_tracer("arbiter_cli", __version__)
        return self._tracer

    @property
    def watches_database(self) -> bool:
        """Whether database calls need events (spans, metrics or debug lines)."""
        return self.provider is not None or self.metrics is not None or log.enabled("debug")

    def attributes(self, **extra: Any) -> dict[str, Any]:
        found = {"correlation_id": self.correlation_id, "command": self.command,
                 "tenant": self.tenant, **extra}
        return {k: v for k, v in found.items() if v is not None}

    @contextmanager
    def span(self, name: str, **attributes: Any) -> Iterator[Span | None]:
        """A span (child of the current one) that records failures, redacted."""
        tracer = self.tracer
        if tracer is None:
            yield None
            return
        with tracer.start_as_current_span(
                name, attributes=self.attributes(**attributes), record_exception=False,
                set_status_on_exception=False) as span:
            try:
                yield span
            except BaseException as exc:
                self.fail(span, exc)
                raise

    def fail(self, span: Span, exc: BaseException) -> None:
        from opentelemetry.trace import Status, StatusCode

        code, exit_code = error_code(exc)
        span.set_attribute("exit_code", exit_code)
        if exit_code == 0:
            return
        message = self.redact((str(exc).strip().splitlines() or [""])[0][:300])
        span.set_attribute("error.code", code)
        span.add_event("exception", {"exception.type": type(exc).__name__,
                                     "exception.message": message})
        span.set_status(Status(StatusCode.ERROR, f"{code}: {message}"))

    def set_tenant(self, tenant: str | None) -> None:
        self.tenant = tenant
        if tenant is not None and self.command_span is not None:
            self.command_span.set_attribute("tenant", tenant)

    def close(self) -> None:
        from arbiter_cli.observability.tracing import close_provider

        provider, self.provider, self._tracer = self.provider, None, None
        close_provider(provider)


def error_code(exc: BaseException) -> tuple[str, int]:
    """The error code string and exit code a failure ends a command with."""
    if isinstance(exc, ArbiterError):
        return exc.code, exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", 130
    exit_code = getattr(exc, "exit_code", None)  # typer.Exit
    if isinstance(exit_code, int):
        return ("ok" if exit_code == 0 else "exit"), exit_code
    return "internal_error", 70


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
        from arbiter_cli.observability.metrics import Metrics

        telemetry.metrics = Metrics()
    if settings is not None:
        from arbiter_cli.observability.tracing import build_provider

        telemetry.provider = build_provider(settings.observability.tracing.exporter)
    _log.debug("command.start")
    with telemetry.span(f"arbiter {state.command}") as span:
        telemetry.command_span = span
        yield telemetry


def bind_tenant(state: State) -> None:
    """Admission (or the local admin) decided the tenant: logs and the command span learn it."""
    if state.telemetry is None:
        return
    log.bind(tenant=state.tenant)
    state.telemetry.set_tenant(state.tenant)


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
    from arbiter_cli.adapters.metrics import write_run_metrics

    assert state.metrics_file is not None
    metrics = telemetry.metrics if telemetry is not None else None
    settings = state._settings
    if metrics is not None and settings is not None:
        from arbiter_cli.observability.fleet import read_resilience
        from arbiter_cli.observability.metrics import record_resilience

        status = read_resilience(settings)
        if status is not None:
            record_resilience(metrics, status)
    try:
        write_run_metrics(state.metrics_file, command=state.command, exit_code=exit_code,
                          duration_s=duration_s, gauges=state.gauges, metrics=metrics)
    except OSError as exc:
        _log.warning("metrics_file.unwritable", path=str(state.metrics_file),
                     error=exc.strerror or str(exc))

