"""rss.png (SPEC §11, §16), checked through matplotlib's objects rather than pixels: RSS with
the fitted slope, the allowed slope and --max-rss; ops/s, P95 latency and open fds panels; and
no "pass" on a run too short for a verdict."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from arbiter_cli.tools.soak.picture import Limits, draw, figure
from arbiter_cli.tools.soak.sampler import COLUMNS
from arbiter_cli.tools.soak.verdict import Fit, fit

pytest.importorskip("matplotlib")
LIMITS = Limits(max_slope_mib_h=1.0, warmup_s=1.0, max_rss_bytes=512 * 2**20)


def samples_csv(folder: Path, count: int, *, growth_bytes: int = 2**20) -> Path:
    path = folder / "samples.csv"
    with path.open("w", newline="", encoding="utf-8") as out:
        rows = csv.DictWriter(out, fieldnames=COLUMNS)
        rows.writeheader()
        for i in range(count):
            rows.writerow({"t_s": float(i), "time": "2026-12-07T09:00:00.000Z",
                           "rss_bytes": 100 * 2**20 + i * growth_bytes, "fds": 7 + i % 2,
                           "threads": 3, "db_pool_checked_out": 0, "db_backends": -1,
                           "ops": 100 * i, "errors": 0, "ops_per_s": 100.0 + i,
                           "p95_ms": f"query={1 + i / 10};route={2 + i / 10}"})
    return path


def fitted(path: Path) -> Fit:
    with path.open(newline="", encoding="utf-8") as rows:
        found = [(float(r["t_s"]), int(r["rss_bytes"])) for r in csv.DictReader(rows)]
    kept = [(t, rss) for t, rss in found if t >= LIMITS.warmup_s]
    return fit([t for t, _ in kept], [rss for _, rss in kept])


def labels(axes: Any) -> list[str]:
    return [line.get_label() for line in axes.get_lines()]


@pytest.fixture
def closing() -> Any:
    import matplotlib.pyplot as plt

    made: list[Any] = []
    yield made.append
    for fig in made:
        plt.close(fig)


def test_a_short_run_says_it_has_too_few_samples_and_never_pass(tmp_path: Path,
                                                                 closing: Any) -> None:
    path = samples_csv(tmp_path, 7)
    result = fitted(path)
    fig = figure(path, result, LIMITS, verdict="pass", title="soak normal on memory")
    closing(fig)
    title = fig.get_suptitle()
    assert "too few samples (6 < 30)" in title and "pass" not in title
    rss = fig.axes[0]
    assert any("too few samples for a verdict (6 < 30)" in t.get_text() for t in rss.texts)


def test_rss_is_drawn_with_the_fitted_and_allowed_slopes_and_the_max_rss_line(
        tmp_path: Path, closing: Any) -> None:
    path = samples_csv(tmp_path, 7)
    result = fitted(path)
    fig = figure(path, result, LIMITS, verdict="pass", title="soak")
    closing(fig)
    found = labels(fig.axes[0])
    assert "RSS" in found
    assert f"fitted slope {result.slope_mib_per_h:+.2f} MiB/h, r² 1.00" in found
    assert "allowed slope +1 MiB/h" in found
    assert "--max-rss 512 MiB (the run stops)" in found
    max_rss = next(line for line in fig.axes[0].get_lines()
                   if line.get_label().startswith("--max-rss"))
    assert list(max_rss.get_ydata()) == [512.0, 512.0]
    allowed = next(line for line in fig.axes[0].get_lines()
                   if line.get_label().startswith("allowed"))
    xs, ys = allowed.get_xdata(), allowed.get_ydata()
    assert (ys[1] - ys[0]) / ((xs[1] - xs[0]) / 60) == pytest.approx(1.0)  # MiB per hour


def test_ops_latency_and_fds_have_their_own_panels(tmp_path: Path, closing: Any) -> None:
    path = samples_csv(tmp_path, 7)
    fig = figure(path, fitted(path), LIMITS, verdict="pass", title="soak")
    closing(fig)
    ops, latency, fds = fig.axes[1:4]
    assert (ops.get_ylabel(), latency.get_ylabel(), fds.get_ylabel()) == (
        "ops/s", "P95 latency (ms)", "open fds")
    assert list(ops.get_lines()[0].get_ydata()) == [100.0 + i for i in range(7)]
    assert labels(latency) == ["query", "route"]
    assert list(fds.get_lines()[0].get_ydata()) == [7 + i % 2 for i in range(7)]


@pytest.mark.parametrize(("verdict", "shown"), [
    ("pass", "soak: pass"), ("leak", "soak: leak"),
    ("aborted", "soak: aborted: RSS passed --max-rss")])
def test_with_enough_samples_the_title_is_the_summary_s_verdict(
        tmp_path: Path, closing: Any, verdict: str, shown: str) -> None:
    path = samples_csv(tmp_path, 40)
    fig = figure(path, fitted(path), LIMITS, verdict=verdict, title="soak")
    closing(fig)
    assert fig.get_suptitle() == shown
    assert not any("too few" in t.get_text() for t in fig.axes[0].texts)


def test_draw_writes_the_png(tmp_path: Path) -> None:
    path = samples_csv(tmp_path, 7)
    assert draw(tmp_path, path, fitted(path), LIMITS, verdict="pass", title="soak") is None
    assert (tmp_path / "rss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_aborted_short_run_says_aborted_without_the_too_few_samples_note(
        tmp_path: Path, closing: Any) -> None:
    path = samples_csv(tmp_path, 3)
    fig = figure(path, fitted(path), LIMITS, verdict="aborted", title="soak")
    closing(fig)
    assert fig.get_suptitle() == "soak: aborted: RSS passed --max-rss"
    assert not fig.axes[0].texts
