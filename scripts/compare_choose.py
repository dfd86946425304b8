#!/usr/bin/env python3
"""Does this tree's ``routing.choose`` decide exactly as another git revision's does?

    .venv/bin/python scripts/compare_choose.py [REF] [CASES]     # default: main, 1500

Loads ``domain/routing.py`` and ``domain/confidence.py`` of REF (``git show``) as separate
modules and runs both on CASES random pools (1 to 1 000 agents, exclusions, ties, cold and
tried arms, random policies) under every strategy with the same seed, comparing order, scores,
components, ``explored``, ``confidence``, exclusions, the recorded candidates and the
generator's next number. Exit 1 on any difference. For rewrites of ``choose`` for speed.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from arbiter_cli.domain import routing as new
from arbiter_cli.errors import AtCapacity, NoCapableAgent


def load(ref: str) -> ModuleType:
    """REF's routing module, its confidence import pointed at REF's confidence module."""
    root = Path(__file__).resolve().parent.parent
    folder = Path(tempfile.mkdtemp(prefix="compare-choose-"))
    for name in ("routing", "confidence"):
        text = subprocess.run(["git", "-C", str(root), "show", f"{ref}:arbiter_cli/domain/{name}.py"],
                              check=True, capture_output=True, text=True).stdout
        text = text.replace("from arbiter_cli.domain.confidence import", "from ref_confidence import")
        (folder / f"ref_{name}.py").write_text(text)
    sys.path.insert(0, str(folder))
    return importlib.import_module("ref_routing")


def make(r: np.random.Generator, n: int, kind: int, Pool: Any) -> Any:
    ids = [f"a{i:04d}" for i in range(n)]
    cap = r.integers(1, 12, n) if kind % 3 else np.full(n, 1000)
    active = np.minimum(r.integers(0, 13, n), cap) if kind % 2 else np.zeros(n, np.int64)
    if kind % 5 == 0:
        active = r.integers(0, 13, n)
    avail = r.random(n) < (0.8 if kind % 4 else 1.0)
    if kind % 7 == 0:
        outcomes, alpha, beta = np.zeros(n, np.int64), np.zeros(n), np.zeros(n)
    else:
        outcomes = r.integers(0 if kind % 2 else 1, 400, n)
        alpha = r.uniform(0, 30, n) * (r.random(n) < 0.9)
        beta = r.uniform(0, 30, n)
        if kind % 11 == 0:
            alpha, beta = np.round(alpha), np.round(beta)
    mean = r.uniform(0, 1, n) if kind % 6 else np.full(n, 0.75)
    lat = r.uniform(0, 20000, n) if kind % 6 else np.full(n, 5000.0)
    fit = r.uniform(0, 1, n) if kind % 3 == 0 else np.ones(n)
    excluded = {"task_type": int(r.integers(0, 3))} if kind % 4 == 1 else {}
    examples = {"task_type": ["x1", "x2"][: excluded.get("task_type", 0)]} if excluded else {}
    kw = {}
    if kind % 2:
        kw = dict(arm_total_alpha=alpha + r.uniform(0, 50, n), arm_total_beta=beta + r.uniform(0, 50, n))
    return Pool(ids=ids, uids=[f"u{i}" for i in range(n)], active=active.astype(np.int64),
                capacity=cap.astype(np.int64), available=avail, latency_ms=lat, mean_reward=mean,
                fit=fit, arm_alpha=alpha, arm_beta=beta, arm_outcomes=outcomes.astype(np.int64),
                excluded=dict(excluded), examples={k: list(v) for k, v in examples.items()}, **kw)

def run(mod: Any, pool: Any, policy: Any, strategy: str, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    try:
        c = mod.choose(pool, policy, strategy, rng)
    except (AtCapacity, NoCapableAgent) as e:
        return ("err", type(e).__name__, str(e), getattr(e, "details", None))
    tail = rng.random()  # the stream after the choice must match too
    return (c.order, c.scores, c.components, c.explored, c.confidence, c.excluded, c.examples,
            c.candidates(pool, policy.record_candidates), tail)

def main(old: ModuleType, cases: int) -> int:
    r = np.random.default_rng(2026)
    bad = 0
    for case in range(cases):
        n = int(r.choice([1, 2, 3, 5, 10, 19, 20, 21, 50, 100, 100, 100, 300, 1000]))
        kind = int(r.integers(0, 1000))
        strategy = new.STRATEGIES[case % 5]
        if case % 3 == 0:
            w = r.dirichlet(np.ones(4))
            if case % 9 == 0:
                w = np.array([0.0, 0.5, 0.25, 0.25])
            weights = dict(zip(("performance", "load", "fit", "latency"), w.tolist(), strict=True))
            pol = dict(weights=weights, record_candidates=int(r.integers(1, 30)),
                       max_claim_attempts=int(r.integers(1, 8)), latency_ref_ms=float(r.uniform(100, 9000)))
        else:
            pol = {}
        seed = int(r.integers(0, 2**63 - 1))
        po = make(np.random.default_rng(case), n, kind, old.Pool)
        pn = make(np.random.default_rng(case), n, kind, new.Pool)
        a = run(old, po, old.RoutingPolicy(**pol), strategy, seed)
        b = run(new, pn, new.RoutingPolicy(**pol), strategy, seed)
        if repr(a) != repr(b):
            bad += 1
            if bad <= 5:
                print("MISMATCH case", case, n, kind, strategy, pol)
                print(" old", repr(a)[:600])
                print(" new", repr(b)[:600])
    print(f"{cases} cases, {bad} mismatches")
    return bad

if __name__ == "__main__":
    sys.exit(1 if main(load(sys.argv[1] if len(sys.argv) > 1 else "main"),
                       int(sys.argv[2]) if len(sys.argv) > 2 else 1500) else 0)
