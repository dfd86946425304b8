"""Structured logs on stderr (SPEC §9), configured once per command run.

- JSON lines with ``--log-format json`` (``logging.format = "json"``) or when stderr is not a
  terminal; structlog's console renderer on a terminal. Always stderr: stdout holds results.
- Colour only on a terminal, and never with ``NO_COLOR`` (any non-empty value) or
  ``TERM=dumb`` (``colour``: result tables follow the same rule).
- Every event carries ``correlation_id`` and ``command``, and ``tenant`` once admission knows
  it (``bind``), through a context variable, so threads and nested calls need no plumbing.
- A redaction processor (``redact.py``) runs last before rendering, on every value.
- stdlib logging (alembic, tenacity's ``before_sleep_log``, anything else) goes through the
  same processors via structlog's ``ProcessorFormatter``.

structlog costs about 40 ms to import, so it is imported on the first event that passes the
level filter, not before: at the default level (``warning``) a quiet command never loads it.
Use ``get_logger()`` from this module (never ``structlog.get_logger()`` directly), so that the
configuration is in place before the first line is written.
"""

from __future__ import annotations

import logging as std
import os
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from arbiter_cli.observability.redact import Redactor, make_redactor, redact_value

LEVELS = {"debug": std.DEBUG, "info": std.INFO, "warning": std.WARNING, "error": std.ERROR}
FORMATS = ("auto", "console", "json")
QUIET_LOGGERS = ("sqlalchemy",)  # its INFO lines echo SQL with bound values: never ours

_CONTEXT: ContextVar[Mapping[str, Any] | None] = ContextVar("arbiter_log_context", default=None)
_WRITE = threading.Lock()


@dataclass
class _Config:
    level: int = std.WARNING
    json: bool = True
    colours: bool = False
    redact: Redactor = field(default=lambda text: text)
    structlog_ready: bool = False
    handler: std.Handler | None = None
    saved_levels: dict[str, int] = field(default_factory=dict)


_config = _Config()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def colour(stream: Any, environ: Mapping[str, str] | None = None) -> bool:
    """Whether to write colour to ``stream``: a terminal, without ``NO_COLOR`` (any non-empty
    value, https://no-color.org) and without ``TERM=dumb`` (or ``unknown``, as rich reads it)."""
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR", "") != "" or env.get("TERM", "").strip().lower() in ("dumb", "unknown"):
        return False
    return _isatty(stream)


def configure(level: str = "warning", fmt: str = "auto", secrets: Iterable[str | None] = (),
              environ: Mapping[str, str] | None = None) -> None:
    """Set the level, format and secrets of this run's logs; route stdlib logging here.

    ``environ`` (default: the process's) decides colour: see ``colour``.
    """
    reset()
    _config.level = LEVELS.get(level, std.WARNING)
    _config.json = fmt == "json" or (fmt != "console" and not _isatty(sys.stderr))
    _config.colours = colour(sys.stderr, environ)
    _config.redact = make_redactor(secrets)
    root = std.getLogger()
    _config.saved_levels = {"": root.level}
    handler = _StderrHandler(_config.level)
    root.addHandler(handler)
    root.setLevel(_config.level)
    for name in QUIET_LOGGERS:
        quiet = std.getLogger(name)
        _config.saved_levels[name] = quiet.level
        quiet.setLevel(max(std.WARNING, _config.level))
    _config.handler = handler
    if "structlog" in sys.modules:  # already paid for: configure now
        _ensure_structlog()


def reset() -> None:
    """Undo ``configure``: leave the process's logging as it was found (tests run many times)."""
    root = std.getLogger()
    if _config.handler is not None:
        root.removeHandler(_config.handler)
        _config.handler = None
    for name, level in _config.saved_levels.items():
        std.getLogger(name or None).setLevel(level)
    _config.saved_levels = {}
    _config.level, _config.json, _config.colours = std.WARNING, True, False  # as found
    _config.redact = _Config().redact
    if _config.structlog_ready:
        import structlog

        structlog.reset_defaults()
        _config.structlog_ready = False
    _CONTEXT.set(None)


def enabled(level: str) -> bool:
    return LEVELS[level] >= _config.level


def bind(**values: Any) -> None:
    """Add keys to every later event of this context (thread, or the command's main flow)."""
    _CONTEXT.set({**(_CONTEXT.get() or {}), **values})


def context() -> dict[str, Any]:
    return dict(_CONTEXT.get() or {})


class Logger:
    """structlog's interface (``log.info("event", key=value)``), loaded on the first event."""

    def debug(self, event: str, **values: Any) -> None:
        self._emit(std.DEBUG, "debug", event, values)

    def info(self, event: str, **values: Any) -> None:
        self._emit(std.INFO, "info", event, values)

    def warning(self, event: str, **values: Any) -> None:
        self._emit(std.WARNING, "warning", event, values)

    def error(self, event: str, **values: Any) -> None:
        self._emit(std.ERROR, "error", event, values)

    def exception(self, event: str, **values: Any) -> None:
        self._emit(std.ERROR, "exception", event, values)

    @staticmethod
    def _emit(level: int, method: str, event: str, values: dict[str, Any]) -> None:
        if level < _config.level:
            return
        import structlog

        _ensure_structlog()
        getattr(structlog.get_logger(), method)(event, **values)


def get_logger() -> Logger:
    return Logger()


def announce(event: str, **values: Any) -> None:
    """An event shown at every level (e.g. ``serve``'s listening address), formatted as logs."""
    import structlog

    _ensure_structlog()
    logger = structlog.wrap_logger(
        _StderrLogger(), processors=_processors(), wrapper_class=structlog.make_filtering_bound_logger(
            std.DEBUG))
    logger.info(event, **values)


# ------------------------------------------------------------------------------- structlog


class _StderrLogger:
    """Writes each rendered line to the *current* ``sys.stderr`` (test runners swap it)."""

    def msg(self, message: str) -> None:
        with _WRITE:
            sys.stderr.write(message + "\n")
            sys.stderr.flush()

    log = debug = info = warn = warning = error = err = critical = exception = fatal = msg


def _stderr_logger_factory(*_args: Any) -> _StderrLogger:
    return _StderrLogger()


def _merge_context(_logger: Any, _method: str,
                   event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in (_CONTEXT.get() or {}).items():
        event.setdefault(key, value)
    return event


FIRST = ("timestamp", "level", "event", "correlation_id", "command", "tenant")


def _redact(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> dict[str, Any]:
    """Every value redacted; the keys a reader looks for first come first."""
    redact = _config.redact
    ordered = {key: event[key] for key in FIRST if key in event}
    ordered.update(event)
    return {key: redact_value(value, redact) for key, value in ordered.items()}


def _shared() -> list[Callable[..., Any]]:
    import structlog

    return [
        structlog.contextvars.merge_contextvars,
        _merge_context,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,  # a plain traceback, never locals
    ]


def _renderer() -> Callable[..., Any]:
    import structlog

    if _config.json:
        return structlog.processors.JSONRenderer(ensure_ascii=False, default=str)
    return structlog.dev.ConsoleRenderer(colors=_config.colours,
                                         exception_formatter=structlog.dev.plain_traceback)


def _processors() -> list[Callable[..., Any]]:
    return [*_shared(), _redact, _renderer()]


def _ensure_structlog() -> None:
    if _config.structlog_ready:
        return
    import structlog

    structlog.configure(
        processors=_processors(),
        wrapper_class=structlog.make_filtering_bound_logger(_config.level),
        logger_factory=_stderr_logger_factory,
        cache_logger_on_first_use=False,
    )
    _config.structlog_ready = True


class _StderrHandler(std.Handler):
    """The stdlib handler: records become structlog events (same processors, same stream)."""

    def __init__(self, level: int) -> None:
        super().__init__(level)
        self._formatter: std.Formatter | None = None

    def emit(self, record: std.LogRecord) -> None:
        try:
            if self._formatter is None:
                self._formatter = _stdlib_formatter()
            line = self._formatter.format(record)
            with _WRITE:
                sys.stderr.write(line + "\n")
                sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging must never break the command
            self.handleError(record)


def _stdlib_formatter() -> std.Formatter:
    import structlog

    _ensure_structlog()
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_shared(), structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _redact,
                    _renderer()],
    )
