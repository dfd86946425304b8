"""Progress of long runs on stderr (SPEC §16), one helper for every command that takes a while.

- On a terminal: nothing for the first ``THRESHOLD_S`` (a quick run stays silent), then a rich
  bar (transient) with done/total, the percentage, the elapsed time and an ETA once known.
- Elsewhere (cron, CI, a redirect, ``--json``): no bar, but a log event
  (``<command>.progress``, through ``observability.logging.announce``, so at every level and as
  JSON off a terminal) at most every ``LOG_EVERY_S``, with ``done``, ``total``, ``eta_s``,
  ``elapsed_s`` and the phase.

The ETA is the rate since the phase last stood at zero: phases that do not count (mutmut's
baseline run, registering a fleet before the timed part) do not dilute it. The clock is
injected, so the threshold, the cadence and the ETA are tested without waiting.

A caller that hands progress down takes a ``Tracker`` (``NO_PROGRESS`` by default).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TextIO

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID

THRESHOLD_S = 2.0
LOG_EVERY_S = 10.0

Clock = Callable[[], float]
Log = Callable[..., None]


class Tracker(Protocol):
    """What a long run reports: work done (``advance``), or where it stands (``update``)."""

    def advance(self, n: float = 1) -> None: ...

    def update(self, done: float | None = None, *, total: float | None = None,
               phase: str | None = None, detail: str | None = None) -> None: ...


class _NoProgress:
    def advance(self, n: float = 1) -> None:
        return None

    def update(self, done: float | None = None, *, total: float | None = None,
               phase: str | None = None, detail: str | None = None) -> None:
        return None


NO_PROGRESS: Tracker = _NoProgress()


def eta_s(done: float, total: float | None, elapsed_s: float) -> float | None:
    """Seconds left at the rate so far; None until there is a rate and a total."""
    if total is None or done <= 0 or elapsed_s <= 0:
        return None
    return max(0.0, (total - done) * elapsed_s / done)


def clock_text(seconds: float | None) -> str:
    """``75.2`` → ``1:15``; ``3725`` → ``1:02:05``; None → ``?``."""
    if seconds is None:
        return "?"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def can_draw(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """A bar needs a terminal that moves its cursor: not ``TERM=dumb`` (nor ``unknown``)."""
    env = os.environ if environ is None else environ
    if env.get("TERM", "").strip().lower() in ("dumb", "unknown"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _announce(event: str, **values: Any) -> None:
    from arbiter_cli.observability.logging import announce

    announce(event, **values)


class Progress:
    """A context manager; see the module docstring. ``terminal`` draws the bar on ``stream``."""

    def __init__(self, event: str, phase: str, total: float | None = None, *,
                 terminal: bool, stream: TextIO | None = None, clock: Clock = time.monotonic,
                 threshold_s: float | None = None, log_every_s: float | None = None,
                 log: Log = _announce, unit: str = "") -> None:
        self.event, self.phase, self.total = event, phase, total
        self.terminal, self.stream, self.clock = terminal, stream, clock
        # read at each run, so a test may shorten them for a whole command
        self.threshold_s = THRESHOLD_S if threshold_s is None else threshold_s
        self.log_every_s = LOG_EVERY_S if log_every_s is None else log_every_s
        self.log, self.unit = log, unit
        self.done = 0.0
        self.detail = ""
        self.started = self.zero_at = self.logged_at = clock()
        self._bar: RichProgress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    @property
    def showing(self) -> bool:
        """Whether the bar is on the terminal now."""
        return self._bar is not None

    def advance(self, n: float = 1) -> None:
        self.update(self.done + n)

    def update(self, done: float | None = None, *, total: float | None = None,
               phase: str | None = None, detail: str | None = None) -> None:
        """Where the run stands; a new ``phase`` starts from zero (and its own total)."""
        now = self.clock()
        if phase is not None and phase != self.phase:
            self.phase, self.done, self.total, self.zero_at = phase, 0.0, None, now
            self.detail = ""
        if detail is not None:
            self.detail = detail
        if total is not None:
            self.total = total
        if done is not None:
            self.done = done
        if self.done <= 0:
            self.zero_at = now
        self._show(now)

    def eta_s(self) -> float | None:
        return eta_s(self.done, self.total, self.clock() - self.zero_at)

    def _show(self, now: float) -> None:
        elapsed = now - self.started
        if self.terminal:
            if self._bar is None and elapsed >= self.threshold_s:
                self._start_bar(now)
            if self._bar is not None and self._task is not None:
                self._bar.update(self._task, description=self._description(), completed=self.done,
                                 total=self.total, eta=self._eta_text(now), count=self._count())
        elif now - self.logged_at >= self.log_every_s:
            self.logged_at = now
            eta = eta_s(self.done, self.total, now - self.zero_at)
            values: dict[str, Any] = {
                "phase": self.phase, "detail": self.detail or None, "done": _number(self.done),
                "total": None if self.total is None else _number(self.total),
                "elapsed_s": round(elapsed, 1), "eta_s": None if eta is None else round(eta, 1)}
            if self.unit:
                values["unit"] = self.unit
            self.log(f"{self.event}.progress", **values)

    def _description(self) -> str:
        return f"{self.phase} ({self.detail})" if self.detail else self.phase

    def _count(self) -> str:
        total = "?" if self.total is None else str(_number(self.total))
        return f"{_number(self.done)}/{total}{f' {self.unit}' if self.unit else ''}"

    def _eta_text(self, now: float) -> str:
        left = eta_s(self.done, self.total, now - self.zero_at)
        return "eta ?" if left is None else f"eta {clock_text(left)}"

    def _start_bar(self, now: float) -> None:
        import sys

        from rich.console import Console
        from rich.progress import (
            BarColumn,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.progress import Progress as RichProgress

        from arbiter_cli.observability.logging import colour

        stream = self.stream or sys.stderr
        console = Console(file=stream, highlight=False,  # NO_COLOR: a bar without colour
                          color_system="auto" if colour(stream) else None)
        bar = RichProgress(TextColumn("{task.description}"), BarColumn(),
                           TextColumn("{task.fields[count]}"), TaskProgressColumn(),
                           TimeElapsedColumn(),
                           TextColumn("{task.fields[eta]}"), console=console, transient=True)
        self._task = bar.add_task(self._description(), total=self.total, completed=int(self.done),
                                  eta=self._eta_text(now), count=self._count())
        bar.start()
        self._bar = bar


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else round(value, 1)
