"""One command run's telemetry: correlation id, tracer, metrics registry and redaction.

``Telemetry`` is what the services, the engine instrumentation and ``serve`` observe with;
``cli/telemetry.py`` sets it up around each command and tears it down when the command ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from arbiter_cli import __version__
from arbiter_cli.errors import ArbiterError
from arbiter_cli.observability import logging as log
from arbiter_cli.observability.redact import Redactor
from arbiter_cli.observability.tracing import close_provider

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

    from arbiter_cli.observability.metrics import Metrics


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


def bind_tenant(telemetry: Telemetry | None, tenant: str | None) -> None:
    """Admission (or the local admin) decided the tenant: logs and the command span learn it."""
    if telemetry is None:
        return
    log.bind(tenant=tenant)
    telemetry.set_tenant(tenant)
