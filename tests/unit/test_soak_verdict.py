"""Soak run rules: option parsing, the least-squares verdict, latency percentiles, the state file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from arbiter_cli.errors import InvalidInput
from arbiter_cli.tools.soak import options as opts
from arbiter_cli.tools.soak import state as soak_state
from arbiter_cli.tools.soak.latency import Histogram
from arbiter_cli.tools.soak.verdict import (
    ABORTED,
    LEAK,
    MIN_SAMPLES,
    PASS,
    after_warmup,
    decide,
    explain,
    fit,
)

MIB = 2**20


# ---------------------------------------------------------------------------- sizes and slopes

@pytest.mark.parametrize(("text", "expected"), [
    ("512MiB", 512 * MIB), ("1B", 1), ("2KiB", 2048), ("1.5GiB", 3 * 2**29), ("64 mib", 64 * MIB),
    ("512M", 512 * 10**6), ("512MB", 512 * 10**6), ("1TiB", 2**40), ("1024TiB", 2**50),
    ("512", 512),
])
def test_sizes_are_read_in_the_one_size_grammar(text: str, expected: int) -> None:
    """IEC units are binary, SI units (and K/M/G/T alone) decimal, a plain number is bytes."""
    assert opts.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "MiB", "-1MiB", "0B", "1e3MiB", "12XB", "1025TiB",
                                  "2000000TiB", "nanGiB", "1.5B"])
def test_a_bad_size_is_refused_with_its_field(text: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        opts.parse_size(text, "max_rss")
    assert caught.value.field == "max_rss"
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(("text", "mib_per_hour"), [
    ("1MiB/h", 1.0), ("512KiB/h", 0.5), ("1MiB/m", 60.0), ("1MiB/min", 60.0),
    ("1MiB/s", 3600.0), ("24MiB/d", 1.0),
])
def test_slopes_are_converted_to_mib_per_hour(text: str, mib_per_hour: float) -> None:
    assert opts.parse_slope(text) == pytest.approx(mib_per_hour)


@pytest.mark.parametrize("text", ["1MiB", "1MiB/week", "/h", "1XB/h"])
def test_a_bad_slope_is_refused(text: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        opts.parse_slope(text)
    assert caught.value.field == "max_slope"


# ---------------------------------------------------------------------------- mix and warm-up

def test_the_default_mix_has_every_operation() -> None:
    mix = opts.parse_mix(opts.DEFAULT_MIX)
    assert set(mix) == set(opts.OPS)
    assert mix["query"] == 35 and mix["remove"] == 5


@pytest.mark.parametrize("text", ["register", "fly=3", "query=-1", "query=x", "query=1,query=2",
                                  "query=0,route=0", "query=inf"])
def test_a_bad_mix_is_refused(text: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        opts.parse_mix(text)
    assert caught.value.field == "mix"


def test_warmup_is_a_share_or_a_duration() -> None:
    assert opts.parse_warmup("10%", 600) == 60
    assert opts.parse_warmup("0%", 600) == 0
    assert opts.parse_warmup("2m", 600) == 120


@pytest.mark.parametrize("text", ["100%", "-5%", "x%", "10m", "abc"])
def test_a_warmup_as_long_as_the_run_is_refused(text: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        opts.parse_warmup(text, 600)
    assert caught.value.field == "warmup"


def _options(**changes: object) -> opts.SoakOptions:
    values: dict[str, object] = dict(
        duration="10m", rate=100.0, agents=100, mix=opts.DEFAULT_MIX, backend="sqlite",
        database_url=None, memray=True, native=False, sample_interval="5s", warmup="10%",
        max_slope="1MiB/h", min_r2=0.8, max_rss="512MiB", output=Path("out"), keep=False,
        workload="normal")
    values.update(changes)
    return opts.parse_options(**values)  # type: ignore[arg-type]


def test_options_are_converted_to_seconds_bytes_and_mib_per_hour() -> None:
    parsed = _options()
    assert (parsed.duration_s, parsed.sample_interval_s, parsed.warmup_s) == (600, 5, 60)
    assert parsed.max_rss_bytes == 512 * MIB
    assert parsed.soft_limit_bytes == int(512 * MIB * 0.8)
    assert parsed.max_slope_mib_h == 1.0


@pytest.mark.parametrize(("changes", "field"), [
    ({"duration": "0s"}, "duration"), ({"duration": "10 minutes"}, "duration"),
    ({"sample_interval": "20m"}, "sample_interval"), ({"backend": "oracle"}, "backend"),
    ({"workload": "greedy"}, "workload"), ({"rate": -1.0}, "rate"),
    ({"rate": float("nan")}, "rate"), ({"min_r2": 1.5}, "min_r2"),
    ({"memray": False, "native": True}, "native"), ({"max_rss": "lots"}, "max_rss"),
])
def test_each_bad_option_names_its_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        _options(**changes)
    assert caught.value.field == field


# ---------------------------------------------------------------------------- the fit

def test_the_fit_finds_a_straight_line_exactly() -> None:
    times = [i * 60.0 for i in range(40)]  # one sample a minute
    rss = [100 * MIB + i * MIB for i in range(40)]  # +1 MiB a minute
    result = fit(times, rss)
    assert result.slope_mib_per_h == pytest.approx(60.0)
    assert result.intercept_mib == pytest.approx(100.0)
    assert result.r2 == pytest.approx(1.0)
    assert result.samples == 40


def test_noise_around_a_flat_line_has_a_small_slope_and_a_poor_fit() -> None:
    times = [float(i) for i in range(100)]
    rss = [100 * MIB + (MIB if i % 2 else -MIB) for i in range(100)]
    result = fit(times, rss)
    assert abs(result.slope_mib_per_h) < 200  # 0.02 MiB/s at most for alternating noise
    assert result.r2 < 0.01


def test_a_flat_line_and_tiny_inputs_do_not_divide_by_zero() -> None:
    assert fit([0.0, 1.0, 2.0], [5 * MIB] * 3).r2 == 0.0
    assert fit([0.0, 1.0, 2.0], [5 * MIB] * 3).slope_mib_per_h == 0.0
    assert fit([], []).samples == 0
    assert fit([3.0], [MIB]).intercept_mib == 1.0
    assert fit([1.0, 1.0], [MIB, 2 * MIB]).slope_mib_per_h == 0.0
    with pytest.raises(ValueError):
        fit([1.0], [])


def test_a_falling_line_is_a_negative_slope() -> None:
    result = fit([0.0, 3600.0, 7200.0], [10 * MIB, 8 * MIB, 6 * MIB])
    assert result.slope_mib_per_h == pytest.approx(-2.0)
    assert result.r2 == pytest.approx(1.0)


def test_the_warm_up_is_left_out_by_time() -> None:
    assert after_warmup([0.0, 1.0, 2.0, 3.0], 2.0) == 2
    assert after_warmup([0.0, 1.0], 0.0) == 0
    assert after_warmup([0.0, 1.0], 5.0) == 2


# ---------------------------------------------------------------------------- the verdict

def _line(samples: int, slope_mib_h: float, noise: float = 0.0) -> tuple[list[float], list[float]]:
    times = [i * 10.0 for i in range(samples)]
    rss = [100 * MIB + slope_mib_h * MIB * t / 3600 + (noise * MIB if i % 2 else 0)
           for i, t in enumerate(times)]
    return times, rss


def test_steady_growth_over_enough_samples_is_a_leak() -> None:
    result = fit(*_line(MIN_SAMPLES, 5.0))
    assert decide(result, max_slope_mib_h=1.0, min_r2=0.8, aborted=False) == LEAK
    assert explain(LEAK, result, max_slope_mib_h=1.0, min_r2=0.8).startswith("leak: RSS slope +5")


def test_growth_over_too_few_samples_is_no_verdict_of_leak() -> None:
    result = fit(*_line(MIN_SAMPLES - 1, 5.0))
    assert decide(result, max_slope_mib_h=1.0, min_r2=0.8, aborted=False) == PASS
    assert "too few samples" in explain(PASS, result, max_slope_mib_h=1.0, min_r2=0.8)


def test_growth_under_the_allowed_slope_passes() -> None:
    result = fit(*_line(100, 0.9))
    assert decide(result, max_slope_mib_h=1.0, min_r2=0.8, aborted=False) == PASS
    exactly = fit(*_line(100, 1.0))
    assert decide(exactly, max_slope_mib_h=exactly.slope_mib_per_h, min_r2=0.8,
                  aborted=False) == PASS


def test_a_noisy_slope_with_a_poor_fit_passes() -> None:
    result = fit(*_line(100, 2.0, noise=5.0))
    assert result.r2 < 0.8
    assert decide(result, max_slope_mib_h=1.0, min_r2=0.8, aborted=False) == PASS
    assert decide(result, max_slope_mib_h=1.0, min_r2=result.r2, aborted=False) == LEAK


def test_the_hard_limit_wins_over_the_fit() -> None:
    result = fit(*_line(100, 0.0))
    assert decide(result, max_slope_mib_h=1.0, min_r2=0.8, aborted=True) == ABORTED
    assert explain(ABORTED, result, max_slope_mib_h=1.0, min_r2=0.8).startswith("aborted")


# ---------------------------------------------------------------------------- latency

def test_percentiles_are_within_one_bucket_of_the_truth() -> None:
    histogram = Histogram()
    for ms in range(1, 1001):
        histogram.add(ms * 1_000_000)
    assert histogram.count == 1000
    assert histogram.percentile(50) == pytest.approx(500e6, rel=0.05)
    assert histogram.percentile(95) == pytest.approx(950e6, rel=0.05)
    assert histogram.percentile(100) <= 1000e6
    summary = histogram.summary_ms()
    assert summary["max"] == 1000.0 and summary["mean"] == pytest.approx(500.5)


def test_an_empty_histogram_and_merging() -> None:
    empty = Histogram()
    assert empty.percentile(99) == 0.0 and empty.summary_ms()["count"] == 0
    one, two = Histogram(), Histogram()
    one.add(0)
    two.add(2**60)  # beyond the last bucket: counted there, max kept exactly
    one.merge(two)
    assert one.count == 2 and one.max_ns == 2**60
    assert one.percentile(50) == pytest.approx(1.0, abs=0.1)


# ---------------------------------------------------------------------------- state file

def _state(pid: int, status: str = "pass") -> dict[str, object]:
    return {"pid": pid, "started_at": "2026-11-29T12:00:00.000Z",
            "updated_at": "2026-11-29T12:00:05.000Z", "rss_bytes": 90 * MIB,
            "max_rss_bytes": 512 * MIB, "soft_limit_bytes": 409 * MIB, "status": status,
            "extra": "dropped"}


def test_the_state_file_has_exactly_the_contract_fields(tmp_path: Path) -> None:
    path = soak_state.write_state(tmp_path, _state(os.getpid(), "warn"))
    assert path == tmp_path / "soak" / f"{os.getpid()}.json"
    written = json.loads(path.read_text())
    assert tuple(written) == soak_state.FIELDS
    assert written["status"] == "warn"
    assert not list((tmp_path / "soak").glob(".*.tmp"))
    assert soak_state.live_states(tmp_path) == [written]
    soak_state.remove_state(tmp_path, os.getpid())
    soak_state.remove_state(tmp_path, os.getpid())  # twice is fine
    assert soak_state.live_states(tmp_path) == []


def test_states_of_dead_runs_are_removed_and_foreign_files_ignored(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = int(done.stdout)
    soak_state.write_state(tmp_path, _state(dead))
    soak_state.write_state(tmp_path, _state(os.getpid()))
    folder = tmp_path / "soak"
    (folder / "notes.json").write_text("not json")
    (folder / "123.json").write_text(json.dumps({"pid": os.getpid()}))  # name and pid differ
    states = soak_state.live_states(tmp_path)
    assert [s["pid"] for s in states] == [os.getpid()]
    assert not (folder / f"{dead}.json").exists()
    assert (folder / "notes.json").exists()


def test_no_soak_folder_means_no_live_run(tmp_path: Path) -> None:
    assert soak_state.live_states(tmp_path / "missing") == []
    assert not soak_state.pid_alive(0)


# ---------------------------------------------------------------------------- the soft limit

def test_the_soft_limit_warns_once_and_health_sees_warn(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import io

    from arbiter_cli.tools.soak.display import LogLines
    from arbiter_cli.tools.soak.runner import Run
    from arbiter_cli.tools.soak.sampler import Sample

    stream = io.StringIO()
    run = Run(_options(max_rss="100MiB"), tmp_path, LogLines(stream, {"command": "soak"}))

    def sample(rss_mib: int, status: str) -> None:
        run.on_sample(Sample(t_s=1.0, time="2026-11-29T12:00:01.000Z", rss_bytes=rss_mib * MIB,
                             fds=10, threads=3, db_pool_checked_out=1, db_backends=-1, ops=5,
                             errors=0, ops_per_s=5.0, p95_ms={"query": 1.5}), status)

    sample(50, "pass")
    assert soak_state.live_states(tmp_path)[0]["status"] == "pass"
    sample(85, "warn")
    sample(86, "warn")
    state = soak_state.live_states(tmp_path)[0]
    assert state["status"] == "warn" and state["rss_bytes"] == 86 * MIB
    assert state["soft_limit_bytes"] == 80 * MIB and state["max_rss_bytes"] == 100 * MIB
    events = [json.loads(line)["event"] for line in capsys.readouterr().err.splitlines()]
    assert events.count("soak.soft_limit") == 1 and events.count("soak.sample") == 3
    sample(101, "abort")
    sample(102, "abort")
    events = [json.loads(line)["event"] for line in capsys.readouterr().err.splitlines()]
    assert events.count("soak.hard_limit") == 1 and run.stopped_by == "max-rss"


def test_a_failing_sampler_stops_the_run_and_its_error_surfaces(tmp_path: Path) -> None:
    from arbiter_cli.tools.soak.sampler import Connections, Sampler
    from arbiter_cli.tools.soak.workload import Counters

    calls: list[str] = []

    def listener(_sample: object, status: str) -> None:
        calls.append(status)
        if len(calls) == 2:
            raise OSError("disk full")

    sampler = Sampler(Counters(), Connections(None), interval_s=0.01, soft_limit=2**40,
                      hard_limit=2**41, listener=listener, csv_path=tmp_path / "samples.csv")
    sampler.start()
    assert sampler.stop.wait(10)  # the thread stopped the run
    with pytest.raises(OSError, match="disk full"):
        sampler.finish()
    assert len(sampler.series) == 2
    assert (tmp_path / "samples.csv").read_text().startswith("t_s,time,rss_bytes")
