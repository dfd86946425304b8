"""What a soak run shows while it runs (SPEC §11, §16): how far it is and its ETA, in the
live view on a terminal and in each sample's log line elsewhere."""

from __future__ import annotations

import io
import json
from pathlib import Path

from arbiter_cli.tools.soak.display import LiveView, LogLines
from arbiter_cli.tools.soak.sampler import Sample
from tests.helpers import cli


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def sample(t_s: float) -> Sample:
    return Sample(t_s=t_s, time="2026-12-07T09:00:00.000Z", rss_bytes=100 * 2**20, fds=7,
                  threads=3, db_pool_checked_out=0, db_backends=-1, ops=10, errors=0,
                  ops_per_s=100.0, p95_ms={"query": 1.0})


def test_the_eta_is_the_rest_of_the_run() -> None:
    lines = LogLines(io.StringIO(), {}, duration_s=60.0)
    assert lines.eta_s(sample(15.0)) == 45.0
    assert LogLines(io.StringIO(), {}).eta_s(sample(15.0)) is None


def test_the_live_view_shows_a_bar_and_the_eta(clean_env: dict[str, str]) -> None:
    screen = Terminal()
    view = LiveView(screen, {}, title="soak normal on memory", duration_s=60.0)
    try:
        view.sample(sample(15.0), "pass", {"query": 10}, {})
    finally:
        view.close()
    drawn = screen.getvalue()
    assert "15/60 s, eta 0:45" in drawn and "progress" in drawn and "━" in drawn


def test_each_sample_line_off_a_terminal_says_how_far_the_run_is(
        clean_env: dict[str, str], tmp_path: Path) -> None:
    result = cli("soak", "--backend", "memory", "--duration", "3s", "--sample-interval", "1s",
                 "--no-memray", "--agents", "10", "--output", str(tmp_path / "out"), "--json")
    assert result.exit_code == 0, result
    samples = [json.loads(line) for line in result.stderr.splitlines()
               if '"soak.sample"' in line]
    assert len(samples) >= 3
    assert {s["total_s"] for s in samples} == {3.0}
    for line in samples:
        assert line["eta_s"] == round(max(0.0, 3.0 - line["done_s"]), 1)
    assert samples[0]["done_s"] == 0 and samples[0]["eta_s"] == 3.0  # the baseline
