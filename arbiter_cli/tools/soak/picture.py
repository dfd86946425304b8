"""``rss.png`` (SPEC §11, §16): the soak run in one picture, drawn from ``samples.csv``.

Four panels over the same time axis: RSS with the fitted slope, the allowed slope (from the
start of the fit) and the ``--max-rss`` line (and its 80 % warning); operations per second;
P95 latency per operation; open file descriptors. The title carries the summary's verdict,
except when the fit had too few samples for one: then it says so, on the title and on the RSS
panel, instead of "pass".

matplotlib comes with the ``soak`` extra and is imported here only, on use.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from arbiter_cli.tools.soak.verdict import ABORTED, MIN_SAMPLES, PASS, Fit

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MIB = 2**20
MISSING = "rss.png skipped: matplotlib is not installed (install arbiter[soak])"


@dataclass(frozen=True)
class Limits:
    """What the run allowed: the slope (MiB/h), the warm-up (s) and the hard RSS limit."""

    max_slope_mib_h: float
    warmup_s: float
    max_rss_bytes: int


@dataclass
class Columns:
    """The columns of ``samples.csv`` the picture needs (time in minutes, RSS in MiB)."""

    minutes: list[float] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)
    ops_per_s: list[float] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)
    p95_ms: dict[str, list[tuple[float, float]]] = field(default_factory=dict)


def read_samples(path: Path) -> Columns:
    columns = Columns()
    with path.open(newline="", encoding="utf-8") as rows:
        for row in csv.DictReader(rows):
            minute = float(row["t_s"]) / 60
            columns.minutes.append(minute)
            columns.rss_mib.append(int(row["rss_bytes"]) / MIB)
            columns.ops_per_s.append(float(row["ops_per_s"]))
            columns.fds.append(int(row["fds"]))
            for pair in filter(None, row["p95_ms"].split(";")):
                op, _, ms = pair.partition("=")
                columns.p95_ms.setdefault(op, []).append((minute, float(ms)))
    return columns


def too_few(verdict: str, result: Fit) -> bool:
    """A pass only because the fit had too few samples to find a leak."""
    return verdict == PASS and result.samples < MIN_SAMPLES


def headline(verdict: str, result: Fit) -> str:
    """The verdict as the picture states it: never "pass" without enough samples."""
    if too_few(verdict, result):
        return f"no verdict: too few samples ({result.samples} < {MIN_SAMPLES})"
    if verdict == ABORTED:
        return "aborted: RSS passed --max-rss"
    return verdict


def figure(samples_csv: Path, result: Fit, limits: Limits, *, verdict: str,
           title: str) -> Figure:
    """The picture as a matplotlib figure (the caller saves and closes it)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    data = read_samples(samples_csv)
    fig, (rss, ops, latency, fds) = plt.subplots(
        4, 1, figsize=(10, 11), dpi=100, sharex=True,
        gridspec_kw={"height_ratios": [3, 1.2, 1.2, 1.2]})
    fig.suptitle(f"{title}: {headline(verdict, result)}")
    _rss(rss, data, result, limits, too_few=too_few(verdict, result))
    ops.plot(data.minutes, data.ops_per_s, color="#2ca02c", linewidth=1, label="ops/s")
    ops.set_ylabel("ops/s")
    for op, points in sorted(data.p95_ms.items()):
        latency.plot([m for m, _ in points], [ms for _, ms in points], linewidth=1, label=op)
    latency.set_ylabel("P95 latency (ms)")
    if data.p95_ms:
        latency.legend(loc="upper left", fontsize="small", ncols=min(6, len(data.p95_ms)))
    fds.plot(data.minutes, data.fds, color="#9467bd", linewidth=1, label="open fds")
    fds.set_ylabel("open fds")
    fds.set_xlabel("minutes since start")
    for axes in (rss, ops, latency, fds):
        axes.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def _rss(axes: Axes, data: Columns, result: Fit, limits: Limits, *, too_few: bool) -> None:
    axes.plot(data.minutes, data.rss_mib, color="#1f77b4", linewidth=1.2, marker=".",
              markersize=3, label="RSS")
    if limits.warmup_s > 0:
        axes.axvspan(0, limits.warmup_s / 60, color="#cccccc", alpha=0.4, label="warm-up")
    fitted = [m for m in data.minutes if m * 60 >= limits.warmup_s]
    if len(fitted) >= 2:
        ends = (fitted[0], fitted[-1])
        (at_start, _) = _line(result.intercept_mib, result.slope_mib_per_h, ends)
        axes.plot(ends, _line(result.intercept_mib, result.slope_mib_per_h, ends),
                  color="#d62728", linewidth=2, linestyle="--",
                  label=f"fitted slope {result.slope_mib_per_h:+.2f} MiB/h, r² {result.r2:.2f}")
        axes.plot(ends, [at_start + limits.max_slope_mib_h * (m - ends[0]) / 60 for m in ends],
                  color="#ff7f0e", linewidth=1.5, linestyle=":",
                  label=f"allowed slope {limits.max_slope_mib_h:+g} MiB/h")
    max_rss = limits.max_rss_bytes / MIB
    axes.axhline(max_rss, color="#d62728", linewidth=1.5,
                 label=f"--max-rss {max_rss:,.0f} MiB (the run stops)")
    axes.axhline(max_rss * 0.8, color="#ff7f0e", linewidth=1, linestyle="--",
                 label=f"warning at 80 %: {max_rss * 0.8:,.0f} MiB")
    if too_few:
        axes.text(0.5, 0.6, f"too few samples for a verdict ({result.samples} < {MIN_SAMPLES})",
                  transform=axes.transAxes, ha="center", va="center", fontsize="large",
                  color="#7f7f7f", bbox={"facecolor": "white", "alpha": 0.8,
                                         "edgecolor": "#7f7f7f"})
    axes.set_ylabel("RSS (MiB)")
    axes.legend(loc="best", fontsize="small", framealpha=0.9)


def _line(intercept_mib: float, slope_mib_h: float, minutes: Iterable[float]) -> list[float]:
    return [intercept_mib + slope_mib_h * m / 60 for m in minutes]


def draw(folder: Path, samples_csv: Path, result: Fit, limits: Limits, *, verdict: str,
         title: str, name: str = "rss.png") -> str | None:
    """Write the picture; a note (not an error) without matplotlib or without samples."""
    try:
        import matplotlib  # noqa: F401 - only whether the extra is there
    except ImportError:
        return MISSING
    if not samples_csv.is_file():
        return f"{name} skipped: no {samples_csv.name}"
    import matplotlib.pyplot as plt

    fig = figure(samples_csv, result, limits, verdict=verdict, title=title)
    try:
        fig.savefig(folder / name, format="png")
    finally:
        plt.close(fig)
    return None
