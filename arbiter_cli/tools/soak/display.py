"""What a soak run shows while it runs, on stderr (stdout holds only the result).

On a TTY: a rich live table with a progress bar and the ETA, redrawn at each sample. Otherwise
(cron, CI, a redirect): one structured log line per sample and per event, with no ANSI codes,
through the project's logging (``observability.logging``: JSON lines when stderr is not a
terminal, secrets redacted). The per-sample lines are announced, so they appear at every
``--log-level``: they are the run's heartbeat for cron, and carry ``done_s``, ``total_s`` and
``eta_s`` (the progress of SPEC §16). The soft and hard limits are a warning and an error.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, TextIO

from arbiter_cli.observability import logging as log
from arbiter_cli.observability.progress import clock_text
from arbiter_cli.tools.soak.sampler import Sample

if TYPE_CHECKING:
    from rich.live import Live
    from rich.table import Table


class LogLines:
    """Structured log lines, the run's correlation id in each; each sample's line also says
    how far the run is (``done_s`` of ``total_s``) and its ``eta_s``."""

    def __init__(self, stream: TextIO, context: dict[str, Any], *,
                 duration_s: float | None = None) -> None:
        self.stream = stream
        self.context = context
        self.duration_s = duration_s

    def eta_s(self, sample: Sample) -> float | None:
        """Seconds left until the end of the run: a soak run lasts --duration (or stops early
        at --max-rss or a signal), so its ETA is known from the start."""
        return None if self.duration_s is None else max(0.0, self.duration_s - sample.t_s)

    def event(self, level: str, event: str, **fields: Any) -> None:
        values = {**self.context, **fields}
        if level == "info":
            log.announce(event, **values)
        else:
            getattr(log.get_logger(), level)(event, **values)

    def sample(self, sample: Sample, status: str, ops: dict[str, int],
               errors: dict[str, int]) -> None:
        self.event("info", "soak.sample", t_s=sample.t_s, rss_bytes=sample.rss_bytes,
                   rss_mib=round(sample.rss_bytes / 2**20, 2), fds=sample.fds,
                   threads=sample.threads, db_pool_checked_out=sample.db_pool_checked_out,
                   db_backends=sample.db_backends, ops=sample.ops, ops_per_s=sample.ops_per_s,
                   errors=sample.errors, errors_by_kind=errors, ops_by_kind=ops,
                   p95_ms=sample.p95_ms, status=status, done_s=sample.t_s,
                   total_s=self.duration_s, eta_s=_rounded(self.eta_s(sample)))

    def close(self) -> None:
        return None


class LiveView(LogLines):
    """A rich live table on the terminal; events are printed above it."""

    def __init__(self, stream: TextIO, context: dict[str, Any], *, title: str,
                 duration_s: float) -> None:
        from rich.console import Console
        from rich.live import Live

        super().__init__(stream, context, duration_s=duration_s)
        self.console = Console(file=stream, highlight=False)
        self.title = title
        self.live: Live = Live(console=self.console, auto_refresh=False, transient=False)
        self.live.start()

    def event(self, level: str, event: str, **fields: Any) -> None:
        if event == "soak.sample":
            return
        style = {"warning": "yellow", "error": "bold red"}.get(level, "dim")
        details = " ".join(f"{k}={v}" for k, v in fields.items())
        self.console.print(f"[{style}]{level}[/] {event} {details}", markup=True)

    def sample(self, sample: Sample, status: str, ops: dict[str, int],
               errors: dict[str, int]) -> None:
        self.live.update(self._table(sample, status, ops, errors), refresh=True)

    def _table(self, sample: Sample, status: str, ops: dict[str, int],
               errors: dict[str, int]) -> Table:
        from rich.table import Table

        colour = {"pass": "green", "warn": "yellow", "abort": "bold red"}[status]
        from rich.progress_bar import ProgressBar

        table = Table(title=f"{self.title}  {sample.t_s:,.0f}/{self.duration_s:,.0f} s, eta "
                      f"{clock_text(self.eta_s(sample))}", title_justify="left",
                      show_header=True, header_style="bold")
        table.add_column("measure")
        table.add_column("value", justify="right")
        table.add_row("progress", ProgressBar(total=self.duration_s, completed=sample.t_s,
                                              width=30))
        table.add_row("RSS", f"[{colour}]{sample.rss_bytes / 2**20:,.1f} MiB[/]")
        table.add_row("open fds / threads", f"{sample.fds} / {sample.threads}")
        backends = "" if sample.db_backends < 0 else f" ({sample.db_backends} backends)"
        table.add_row("db connections", f"{sample.db_pool_checked_out} checked out{backends}")
        table.add_row("ops (ops/s)", f"{sample.ops:,} ({sample.ops_per_s:,.0f})")
        table.add_row("errors", f"{sample.errors:,}" + (f" {errors}" if errors else ""))
        for op, count in sorted(ops.items()):
            p95 = sample.p95_ms.get(op)
            table.add_row(f"  {op}", f"{count:,}" + ("" if p95 is None else f"  p95 {p95} ms"))
        return table

    def close(self) -> None:
        self.live.stop()


def monitor(context: dict[str, Any], *, title: str, duration_s: float,
            stream: TextIO | None = None) -> LogLines:
    out = stream or sys.stderr
    if out.isatty():
        return LiveView(out, context, title=title, duration_s=duration_s)
    return LogLines(out, context, duration_s=duration_s)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
