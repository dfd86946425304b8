"""The verdict of a soak run (SPEC §11): a least-squares fit of RSS after the warm-up.

A leak needs all three: at least ``MIN_SAMPLES`` samples after the warm-up, a slope above the
allowed one, and a fit good enough (r² ≥ min_r2) that the growth is a trend, not noise. RSS over
the hard limit is ``aborted`` whatever the fit says.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MIN_SAMPLES = 30
PASS, LEAK, ABORTED = "pass", "leak", "aborted"


@dataclass(frozen=True)
class Fit:
    """``rss_mib ≈ intercept + slope × hours``; r² is 0 when RSS does not move at all."""

    slope_mib_per_h: float
    intercept_mib: float
    r2: float
    samples: int


def fit(times_s: Sequence[float], rss_bytes: Sequence[float]) -> Fit:
    """Ordinary least squares of RSS (MiB) against time (hours)."""
    n = len(times_s)
    if n != len(rss_bytes):
        raise ValueError("times and rss must have the same length")
    if n < 2:
        return Fit(0.0, rss_bytes[0] / 2**20 if n else 0.0, 0.0, n)
    xs = [t / 3600 for t in times_s]
    ys = [r / 2**20 for r in rss_bytes]
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    syy = sum((y - mean_y) ** 2 for y in ys)
    if sxx == 0:
        return Fit(0.0, mean_y, 0.0, n)
    slope = sxy / sxx
    r2 = 0.0 if syy == 0 else min(1.0, max(0.0, sxy * sxy / (sxx * syy)))
    return Fit(slope, mean_y - slope * mean_x, r2, n)


def after_warmup(times_s: Sequence[float], warmup_s: float) -> int:
    """The index of the first sample taken after the warm-up."""
    for i, t in enumerate(times_s):
        if t >= warmup_s:
            return i
    return len(times_s)


def decide(result: Fit, *, max_slope_mib_h: float, min_r2: float, aborted: bool) -> str:
    if aborted:
        return ABORTED
    if (result.samples >= MIN_SAMPLES and result.slope_mib_per_h > max_slope_mib_h
            and result.r2 >= min_r2):
        return LEAK
    return PASS


def explain(verdict: str, result: Fit, *, max_slope_mib_h: float, min_r2: float) -> str:
    """One line that says why, in the operator's units."""
    trend = (f"RSS slope {result.slope_mib_per_h:+.3f} MiB/h (r² {result.r2:.3f}) over "
             f"{result.samples} samples after the warm-up")
    if verdict == LEAK:
        return f"leak: {trend}; allowed {max_slope_mib_h:g} MiB/h with r² >= {min_r2:g}"
    if verdict == ABORTED:
        return f"aborted: RSS passed the hard limit (--max-rss); {trend}"
    if result.samples < MIN_SAMPLES:
        return f"pass: too few samples for a leak verdict ({result.samples} < {MIN_SAMPLES}); {trend}"
    return f"pass: {trend}"
