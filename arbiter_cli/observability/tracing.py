"""OpenTelemetry tracing (SPEC §9): the tracer provider of one run, never set globally.

``observability.tracing.exporter`` chooses where spans go:

- ``none`` (default): no provider at all; the SDK is not even imported;
- ``console``: one JSON document per span on **stderr** (the SDK's default is stdout, which
  would corrupt ``--json`` output);
- ``otlp``: OTLP over HTTP, batched, configured by the standard ``OTEL_EXPORTER_OTLP_*``
  variables; it needs the ``otel`` extra, and without it the command exits 2 with
  "install arbiter[otel]".

The provider is built per command run by ``build_provider`` and flushed and shut down when the
command ends. ``trace.set_tracer_provider`` is never called: it can be set once per process,
and tests build many providers.

Tests inject an exporter: set ``INJECTED_EXPORTER`` (e.g. an ``InMemorySpanExporter``) and
every provider built afterwards also sends its spans there, whatever the configured exporter.
The injected exporter is never shut down by arbiter, so it collects across several ``main()``
calls.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from arbiter_cli import __version__
from arbiter_cli.errors import MissingExtra

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

EXPORTERS = ("none", "console", "otlp")
SERVICE_NAME = "arbiter"

#: Test hook: an extra span exporter added to every provider built while it is set.
INJECTED_EXPORTER: Any = None


def build_provider(exporter: str, *, extra: Any = None) -> TracerProvider | None:
    """A provider sending spans to ``exporter`` (and ``extra`` or the injected exporter).

    ``None`` when there is nowhere to send spans: callers then create no spans at all.
    """
    extra = extra if extra is not None else INJECTED_EXPORTER
    if exporter == "none" and extra is None:
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    provider = TracerProvider(
        resource=Resource.create({"service.name": SERVICE_NAME, "service.version": __version__}),
        shutdown_on_exit=False,  # shut down explicitly when the command ends
    )
    if exporter == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
    elif exporter == "otlp":
        provider.add_span_processor(BatchSpanProcessor(_otlp_exporter()))
    if extra is not None:
        provider.add_span_processor(SimpleSpanProcessor(cast("SpanExporter", _Borrowed(extra))))
    return provider


def _otlp_exporter() -> Any:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise MissingExtra("otel", "the OTLP span exporter "
                           "(observability.tracing.exporter = otlp)") from None
    return OTLPSpanExporter()


def close_provider(provider: TracerProvider | None) -> None:
    """Flush every span, then shut the provider down (exporters included, except borrowed)."""
    if provider is None:
        return
    provider.force_flush()
    provider.shutdown()


class _Borrowed:
    """Forwards to an exporter that someone else owns and shuts down."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> Any:
        return self._inner.export(spans)

    def shutdown(self) -> None:
        """The owner shuts it down, not each command."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self._inner.force_flush(timeout_millis))
