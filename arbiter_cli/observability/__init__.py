"""Observability (SPEC §9): structured logs, Prometheus metrics, OpenTelemetry traces.

Every module here imports only the standard library at module level; structlog,
prometheus-client and the OpenTelemetry SDK are imported when a run actually needs them, so
``arbiter --help`` and a plain command at the default log level never pay for them.

- ``redact``: the one redaction rule for log lines and spans (secrets, tokens, DSN passwords);
- ``logging``: structlog on stderr (JSON or console), stdlib logging routed through it;
- ``metrics``: every metric's name, type, help and labels, defined once; per-run registries;
- ``fleet``: the collectors ``arbiter serve`` adds (fleet state from the database, resilience);
- ``tracing``: the tracer provider (none, console on stderr, OTLP) and the test hook;
- ``observed``: the services of an observed run: a span per call, and the routing metrics;
- ``instrument``: spans and metrics around database calls;
- ``runtime``: one command run's telemetry, set up and torn down by the CLI boundary.
"""
