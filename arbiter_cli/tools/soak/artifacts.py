"""The files a soak run leaves in its output folder: summary.json, samples.csv and rss.png."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from arbiter_cli.tools.soak.verdict import Fit

SUMMARY, SAMPLES, PLOT = "summary.json", "samples.csv", "rss.png"


def write_summary(folder: Path, summary: dict[str, Any]) -> Path:
    path = folder / SUMMARY
    tmp = folder / f".{SUMMARY}.tmp"
    tmp.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def plot_rss(folder: Path, times_s: Sequence[float], rss_bytes: Sequence[int], result: Fit, *,
             warmup_s: float, verdict: str, title: str) -> str | None:
    """RSS over time with the fitted line; a note (not an error) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        return "rss.png skipped: matplotlib is not installed (install arbiter[soak])"
    minutes = [t / 60 for t in times_s]
    rss = [r / 2**20 for r in rss_bytes]
    figure, axes = plt.subplots(figsize=(10, 5), dpi=100)
    try:
        axes.plot(minutes, rss, color="#1f77b4", linewidth=1.2, marker=".", markersize=3,
                  label="RSS")
        if warmup_s > 0:
            axes.axvspan(0, warmup_s / 60, color="#cccccc", alpha=0.4, label="warm-up")
        fitted = [t for t in times_s if t >= warmup_s]
        if len(fitted) >= 2:
            ends = (fitted[0], fitted[-1])
            axes.plot([t / 60 for t in ends],
                      [result.intercept_mib + result.slope_mib_per_h * t / 3600 for t in ends],
                      color="#d62728", linewidth=2, linestyle="--",
                      label=f"fit: {result.slope_mib_per_h:+.2f} MiB/h, r² {result.r2:.2f}")
        axes.set_xlabel("minutes since start")
        axes.set_ylabel("RSS (MiB)")
        axes.set_title(f"{title}: {verdict}")
        axes.grid(True, alpha=0.3)
        axes.legend(loc="best")
        figure.tight_layout()
        figure.savefig(folder / PLOT, format="png")
    finally:
        plt.close(figure)
    return None
