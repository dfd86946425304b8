"""Parsing of ``arbiter soak``'s options (pure: every bad value is an ``InvalidInput``, exit 2)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from arbiter_cli import units
from arbiter_cli.adapters.scratch import BACKENDS, check_database_url
from arbiter_cli.config import parse_duration
from arbiter_cli.errors import InvalidInput

#: Operations of the workload mix; heartbeat and remove are the fleet's churn.
OPS = ("register", "query", "route", "outcome", "heartbeat", "remove")
DEFAULT_MIX = "register=5,query=35,route=30,outcome=30,heartbeat=10,remove=5"
WORKLOADS = ("normal", "leaky")
MIB = 1 << 20
PER_HOUR = {"s": 3600.0, "m": 60.0, "min": 60.0, "h": 1.0, "d": 1 / 24}


def parse_size(text: str, field: str = "size") -> int:
    """``"512MiB"`` → 536870912, ``"512M"`` → 512000000: the one grammar of sizes
    (``arbiter_cli.units``), from 1B to 1024TiB."""
    try:
        value = units.parse_size(text)
    except ValueError as exc:
        raise InvalidInput(f"{field}: {exc}", field=field, rule="size") from None
    if value < 1:
        raise InvalidInput(f"{field}: {text!r} must be between 1B and 1024TiB, such as 512MiB",
                           field=field, rule="range")
    return value


def parse_slope(text: str, field: str = "max_slope") -> float:
    """``"1MiB/h"`` → 1.0 (MiB per hour); the time unit may be s, m, h or d."""
    size, slash, unit = str(text).strip().partition("/")
    per_hour = PER_HOUR.get(unit.strip().lower())
    if not slash or per_hour is None:
        raise InvalidInput(f"{field}: {text!r} is not a growth rate like 1MiB/h (a size per s, "
                           "m, h or d)", field=field, rule="rate")
    return parse_size(size, field) / MIB * per_hour


def parse_mix(text: str) -> dict[str, float]:
    """``"register=5,query=35"`` → relative weights; unknown operations are refused."""
    mix: dict[str, float] = {}
    for part in str(text).split(","):
        name, eq, weight = part.strip().partition("=")
        if name not in OPS or not eq or name in mix:
            raise InvalidInput(f"mix: {part.strip()!r} is not OP=WEIGHT with OP one of "
                               f"{', '.join(OPS)} (each once)", field="mix", rule="format")
        try:
            value = float(weight)
        except ValueError:
            value = -1.0
        if not math.isfinite(value) or value < 0:
            raise InvalidInput(f"mix: the weight of {name} must be a number >= 0", field="mix",
                               rule="range")
        mix[name] = value
    if sum(mix.values()) <= 0:
        raise InvalidInput("mix: at least one weight must be above 0", field="mix", rule="range")
    return mix


def parse_warmup(text: str, duration_s: float) -> float:
    """``"10%"`` of the run, or a duration such as ``"5m"``: the warm-up in seconds."""
    value = str(text).strip()
    if value.endswith("%"):
        try:
            percent = float(value[:-1])
        except ValueError:
            percent = -1.0
        if not 0 <= percent < 100:
            raise InvalidInput(f"warmup: {text!r} must be a percentage in [0, 100)",
                               field="warmup", rule="range")
        return duration_s * percent / 100
    seconds = duration(value, "warmup")
    if seconds >= duration_s:
        raise InvalidInput(f"warmup: {text!r} must be shorter than the run", field="warmup",
                           rule="range")
    return seconds


def duration(text: str, field: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise InvalidInput(f"{field}: {exc}", field=field, rule="duration") from None


def fraction(value: float, field: str) -> float:
    if not math.isfinite(value) or not 0 <= value <= 1:
        raise InvalidInput(f"{field}: must be in [0, 1]", field=field, rule="range")
    return value


@dataclass(frozen=True)
class SoakOptions:
    """A validated soak run: durations in seconds, sizes in bytes, slopes in MiB/h."""

    duration_s: float
    rate: float
    agents: int
    mix: dict[str, float]
    backend: str
    database_url: str | None
    memray: bool
    native: bool
    sample_interval_s: float
    warmup_s: float
    max_slope_mib_h: float
    min_r2: float
    max_rss_bytes: int
    output: Path
    keep: bool
    workload: str

    @property
    def soft_limit_bytes(self) -> int:
        return int(self.max_rss_bytes * 0.8)


def parse_options(
    *, duration: str, rate: float, agents: int, mix: str, backend: str,
    database_url: str | None, memray: bool, native: bool, sample_interval: str, warmup: str,
    max_slope: str, min_r2: float, max_rss: str, output: Path, keep: bool, workload: str,
) -> SoakOptions:
    """Every option checked before anything runs."""
    run_s = _duration_at_least(duration, "duration", 1)
    interval_s = _duration_at_least(sample_interval, "sample_interval", 1)
    if interval_s > run_s:
        raise InvalidInput("sample_interval: must not be longer than the run",
                           field="sample_interval", rule="range")
    if backend not in BACKENDS:
        raise InvalidInput(f"backend: must be one of {', '.join(BACKENDS)}", field="backend",
                           rule="allowed")
    check_database_url(backend, database_url)
    if workload not in WORKLOADS:
        raise InvalidInput(f"workload: must be one of {', '.join(WORKLOADS)}", field="workload",
                           rule="allowed")
    if not math.isfinite(rate) or rate < 0:
        raise InvalidInput("rate: operations per second, >= 0 (0: as fast as possible)",
                           field="rate", rule="range")
    if native and not memray:
        raise InvalidInput("native: --native needs --memray", field="native", rule="memray")
    return SoakOptions(
        duration_s=run_s, rate=rate, agents=agents, mix=parse_mix(mix), backend=backend,
        database_url=database_url, memray=memray, native=native, sample_interval_s=interval_s,
        warmup_s=parse_warmup(warmup, run_s), max_slope_mib_h=parse_slope(max_slope),
        min_r2=fraction(min_r2, "min_r2"), max_rss_bytes=parse_size(max_rss, "max_rss"),
        output=output, keep=keep, workload=workload,
    )


def _duration_at_least(text: str, field: str, low: float) -> float:
    seconds = duration(text, field)
    if seconds < low:
        raise InvalidInput(f"{field}: must be at least {low:g}s", field=field, rule="range")
    return seconds
