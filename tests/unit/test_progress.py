"""The progress helper (SPEC §16): silent under 2 s, a bar with an ETA on a terminal, log
events at most every 10 s elsewhere."""

from __future__ import annotations

import io
from typing import Any

from arbiter_cli.observability.progress import NO_PROGRESS, Progress, clock_text, eta_s
from tests.helpers import Ticks


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, event: str, **values: Any) -> None:
        self.seen.append((event, values))


def _logging(clock: Ticks, total: float | None = 100) -> tuple[Progress, Events]:
    events = Events()
    return Progress("demo", "simulating", total, terminal=False, clock=clock, log=events), events


def test_the_eta_is_the_rest_of_the_work_at_the_rate_so_far() -> None:
    assert eta_s(25, 100, 10.0) == 30.0
    assert eta_s(100, 100, 10.0) == 0.0


def test_there_is_no_eta_before_any_work_or_without_a_total() -> None:
    assert eta_s(0, 100, 10.0) is None
    assert eta_s(5, None, 10.0) is None
    assert eta_s(5, 100, 0.0) is None


def test_clock_text_reads_like_a_clock() -> None:
    assert clock_text(75.2) == "1:15"
    assert clock_text(3725) == "1:02:05"
    assert clock_text(None) == "?"


def test_a_run_under_two_seconds_shows_nothing_on_a_terminal() -> None:
    clock, screen = Ticks(0.0), Terminal()
    with Progress("demo", "simulating", 10, terminal=True, stream=screen, clock=clock) as bar:
        for _ in range(10):
            clock.now += 0.19
            bar.advance()
            assert not bar.showing
    assert screen.getvalue() == ""


def test_a_longer_run_draws_a_bar_with_its_eta_on_the_terminal() -> None:
    clock, screen = Ticks(0.0), Terminal()
    with Progress("demo", "simulating", 10, terminal=True, stream=screen, clock=clock) as bar:
        clock.now = 1.0
        bar.advance()
        assert not bar.showing
        clock.now = 2.0
        bar.advance()
        assert bar.showing
        assert bar.eta_s() == 8.0  # 2 done in 2 s, 8 to go
        assert bar._bar is not None
        bar._bar.refresh()
    assert not bar.showing
    drawn = screen.getvalue()
    assert "simulating" in drawn and "2/10" in drawn and "eta 0:08" in drawn


def test_off_a_terminal_nothing_is_logged_in_the_first_ten_seconds() -> None:
    clock = Ticks(0.0)
    bar, events = _logging(clock)
    for _ in range(9):
        clock.now += 1
        bar.advance()
    assert events.seen == []


def test_off_a_terminal_events_come_at_most_every_ten_seconds_with_done_total_and_eta() -> None:
    clock = Ticks(0.0)
    bar, events = _logging(clock)
    for _ in range(35):
        clock.now += 1
        bar.advance()
    assert [values["done"] for _, values in events.seen] == [10, 20, 30]
    event, values = events.seen[0]
    assert event == "demo.progress"
    assert values == {"phase": "simulating", "detail": None, "done": 10, "total": 100,
                      "elapsed_s": 10.0, "eta_s": 90.0}


def test_the_eta_counts_from_the_last_moment_the_phase_stood_at_zero() -> None:
    clock = Ticks(0.0)
    bar, _ = _logging(clock)
    clock.now = 60.0
    bar.update(0)  # a minute of baseline work that does not count
    clock.now = 70.0
    bar.update(50)
    assert bar.eta_s() == 10.0


def test_a_new_phase_starts_again_from_zero() -> None:
    clock = Ticks(0.0)
    bar, events = _logging(clock)
    clock.now = 5.0
    bar.update(50)
    clock.now = 12.0
    bar.update(1, total=4, phase="query loop", detail="5 s")
    assert bar.done == 1 and bar.total == 4
    assert events.seen[-1][1]["phase"] == "query loop"
    assert events.seen[-1][1]["detail"] == "5 s"
    assert events.seen[-1][1]["eta_s"] is None  # no time spent in this phase yet


def test_no_progress_accepts_every_call() -> None:
    NO_PROGRESS.advance(3)
    NO_PROGRESS.update(1, total=2, phase="x")


def test_a_new_phase_forgets_the_total_and_detail_of_the_last_one() -> None:
    clock = Ticks(0.0)
    bar, _ = _logging(clock)
    bar.update(5, total=10, detail="3 killed")
    bar.update(phase="reading the results")
    assert (bar.done, bar.total, bar.detail) == (0, None, "")


def test_the_count_reads_whole_steps_or_seconds_with_its_unit() -> None:
    clock = Ticks(0.0)
    bar = Progress("soak", "running", 1_000_000, terminal=False, clock=clock, log=Events())
    bar.update(312)
    assert bar._count() == "312/1000000"
    seconds = Progress("bench", "query loop", 5.0, terminal=False, clock=clock, log=Events(),
                       unit="s")
    seconds.update(1.25)
    assert seconds._count() == "1.2/5 s"


def test_a_bar_needs_a_terminal_that_is_not_dumb() -> None:
    from arbiter_cli.observability.progress import can_draw

    assert can_draw(Terminal(), {"TERM": "xterm-256color"})
    assert not can_draw(Terminal(), {"TERM": "dumb"})
    assert not can_draw(io.StringIO(), {"TERM": "xterm"})


def test_no_color_draws_the_bar_without_colour(monkeypatch: Any) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    clock, screen = Ticks(0.0), Terminal()
    with Progress("demo", "simulating", 10, terminal=True, stream=screen, clock=clock) as bar:
        clock.now = 3.0
        bar.advance()
        assert bar._bar is not None
        bar._bar.refresh()
    assert "simulating" in screen.getvalue() and "\x1b[3" not in screen.getvalue()
