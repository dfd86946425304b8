"""`route simulate --plot`: cumulative regret and the best agent's share, a line per strategy."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from arbiter_cli.errors import MissingExtra


def plot_simulation(result: Mapping[str, Any], path: Path, title: str) -> Path:
    """Write a two-panel PNG; raises MissingExtra (exit 2) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingExtra("soak", "matplotlib") from None
    figure, (regret, share) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100)
    try:
        for strategy in result["strategies"]:
            name = strategy["strategy"]
            regret.plot(*zip(*strategy["regret_curve"], strict=True), label=name, linewidth=1.4)
            share.plot(*zip(*strategy["share_curve"], strict=True), label=name, linewidth=1.2)
        regret.set_xlabel("task")
        regret.set_ylabel("cumulative regret (mean over runs)")
        share.set_xlabel("task")
        share.set_ylabel("share routed to the best agent present")
        share.set_ylim(-0.02, 1.02)
        for axes in (regret, share):
            axes.grid(True, alpha=0.3)
            axes.legend(loc="best", fontsize="small")
        figure.suptitle(f"{title}: {result['runs']} run(s) from seed {result['seed']}")
        figure.tight_layout()
        figure.savefig(path, format="png")
    finally:
        plt.close(figure)
    return path
