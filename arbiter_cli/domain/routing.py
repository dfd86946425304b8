"""Routing rules (SPEC §3): tasks, eligibility, arms, the five strategies, and decisions.

``choose`` is pure: it takes the capable candidates as numpy columns (``Pool``), the policy,
the strategy and a seeded ``numpy.random.Generator``, and returns the candidates in claim
order with every score component, so the same state, seed and strategy give the same choice.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from arbiter_cli.domain import validation as v
from arbiter_cli.domain.agents import RegistryPolicy, rfc3339
from arbiter_cli.errors import AtCapacity, NoCapableAgent

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

STRATEGIES = ("thompson", "ucb", "epsilon-greedy", "weighted", "thompson-stationary")
BANDITS = frozenset({"thompson", "ucb", "epsilon-greedy", "thompson-stationary"})
THOMPSONS = frozenset({"thompson", "thompson-stationary"})  # draw from posteriors
CAPABILITY_REASONS = ("task_type", "language", "specialization")
REASONS = (*CAPABILITY_REASONS, "status", "capacity")
PRIOR_WEIGHT = 2.0  # pseudo-outcomes taken from the agent's global performance
CHANGE_THRESHOLD = 5.0  # z-score at which an arm's recent outcomes count as a change
REEVALUATE = 3.0  # `weighted` re-tries an arm with less evidence than REEVALUATE·ln(1 + N)
CONFIDENCE_TOP = 10
EXAMPLES_PER_REASON = 3
SEED_LIMIT = 2**63 - 1


@dataclass(frozen=True)
class RoutingPolicy:
    strategy: str = "thompson"
    half_life: float = 200.0
    weights: Mapping[str, float] = field(default_factory=lambda: {
        "performance": 0.6, "load": 0.2, "fit": 0.1, "latency": 0.1})
    latency_ref_ms: float = 5000.0
    epsilon_initial: float = 0.2
    epsilon_min: float = 0.05
    epsilon_decay: float = 0.995
    record_candidates: int = 20
    max_claim_attempts: int = 5
    assignment_ttl_s: float = 7200.0

    @property
    def gamma(self) -> float:
        """Per-outcome decay of an arm's recent evidence: 2^(−1/half_life)."""
        return float(2.0 ** (-1.0 / self.half_life))

    def epsilon(self, outcomes: int) -> float:
        return max(self.epsilon_min, self.epsilon_initial * self.epsilon_decay ** outcomes)

    @functools.cached_property
    def config_hash(self) -> str:
        """SHA-256 of the settings that shape a decision, stored with it."""
        body = {"strategy": self.strategy, "half_life": self.half_life,
                "weights": dict(sorted(self.weights.items())),
                "latency_ref_ms": self.latency_ref_ms,
                "epsilon": [self.epsilon_initial, self.epsilon_min, self.epsilon_decay],
                "record_candidates": self.record_candidates,
                "max_claim_attempts": self.max_claim_attempts}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------------------- task input

TASK_FIELDS = frozenset({"task_id", "task_type", "languages", "specializations", "prefer",
                         "prefer_specializations", "priority", "metadata"})


@dataclass(frozen=True)
class Task:
    task_id: str
    task_type: str
    languages: tuple[str, ...] = ()
    specializations: tuple[str, ...] = ()
    prefer: tuple[str, ...] = ()
    priority: int = 5
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: Mapping[str, Any], policy: RegistryPolicy, new_task_id: str) -> Task:
        if raw.keys() <= PLAIN_TASK_FIELDS:  # the common shape: a task type and its languages
            task_type, languages = raw.get("task_type"), raw.get("languages")
            if (type(task_type) is str and task_type and (languages is None or (
                    type(languages) is list and len(languages) <= PLAIN_LANGUAGES
                    and all(type(x) is str for x in languages)))):
                found = _plain_task(task_type, tuple(languages or ()), tuple(policy.task_types),
                                    tuple(policy.languages))
                return cls(task_id=new_task_id, task_type=found[0], languages=found[1])
        unknown = sorted(k for k, value in raw.items() if k not in TASK_FIELDS and value is not None)
        if unknown:
            raise v.fail(unknown[0], "unknown_field", "is not a task field")
        if not raw.get("task_type"):
            raise v.fail("task_type", "required", "is required")
        task_id = raw.get("task_id")
        prefer = raw.get("prefer") or raw.get("prefer_specializations") or []
        return cls(
            task_id=new_task_id if task_id is None else v.pattern(task_id, v.TASK_ID_RE,
                                                                  "task_id", "task id"),
            task_type=v.choose([raw["task_type"]], policy.task_types, "task_type")[0],
            languages=v.choose(v.string_list(raw.get("languages") or [], "languages"),
                               policy.languages, "languages"),
            specializations=v.labels(v.string_list(raw.get("specializations") or [],
                                                   "specializations"), "specializations"),
            prefer=v.labels(v.string_list(prefer, "prefer_specializations"),
                            "prefer_specializations"),
            priority=5 if raw.get("priority") is None
            else v.integer(raw["priority"], "priority", low=1, high=10),
            metadata={} if raw.get("metadata") is None else v.metadata(raw["metadata"]),
        )

    def requirements(self) -> dict[str, Any]:
        return {"task_type": self.task_type, "languages": list(self.languages),
                "specializations": list(self.specializations),
                "prefer_specializations": list(self.prefer), "priority": self.priority}


PLAIN_TASK_FIELDS = frozenset({"task_type", "languages"})
#: Longer language lists take the general path: the kept spellings hold their key, and a
#: request's list is as long as its body allows (serve.max_body).
PLAIN_LANGUAGES = 16


@functools.lru_cache(maxsize=256)
def _plain_task(task_type: str, languages: tuple[str, ...], task_types: tuple[str, ...],
                allowed_languages: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """The canonical task type and languages of a task giving only these, as ``Task.parse``
    checks them (a refusal raises, and is not kept); kept per spelling and allowed values."""
    return (v.choose([task_type], task_types, "task_type")[0],
            v.choose(list(languages), allowed_languages, "languages"))


def parse_strategy(value: str | None, default: str) -> str:
    strategy = value or default
    if strategy not in STRATEGIES:
        raise v.fail("strategy", "allowed", f"must be one of {', '.join(STRATEGIES)}")
    return strategy


def parse_seed(value: Any) -> int:
    return v.integer(value, "seed", low=0, high=SEED_LIMIT)


# ---------------------------------------------------------------------------- arms


@dataclass(frozen=True)
class Arm:
    """Evidence of one (agent uid, task type).

    ``alpha``/``beta`` count the rewards since the arm's last detected change (what the
    strategies use); ``recent_*`` is the same evidence decayed with ``routing.half_life`` (the
    change detector's short memory); ``total_*`` is every reward, never forgotten
    (``thompson-stationary``); ``outcomes`` counts every outcome and ``changes`` the detected
    changes.
    """

    alpha: float = 0.0
    beta: float = 0.0
    outcomes: int = 0
    recent_alpha: float = 0.0
    recent_beta: float = 0.0
    total_alpha: float = 0.0
    total_beta: float = 0.0
    changes: int = 0


def reward(success: bool, quality: float) -> float:
    return quality if success else 0.0


def update_arm(arm: Arm, r: float, gamma: float, threshold: float = CHANGE_THRESHOLD) -> Arm:
    """Add reward r to every memory; when the recent mean departs from the mean since the last
    change by more than ``threshold`` standard errors, forget all but the total (a change)."""
    alpha, beta = arm.alpha + r, arm.beta + (1.0 - r)
    recent_alpha, recent_beta = gamma * arm.recent_alpha + r, gamma * arm.recent_beta + (1.0 - r)
    changed = shifted(alpha, beta, recent_alpha, recent_beta, threshold)
    if changed:
        alpha = beta = recent_alpha = recent_beta = 0.0
    return Arm(alpha=alpha, beta=beta, outcomes=arm.outcomes + 1,
               recent_alpha=recent_alpha, recent_beta=recent_beta,
               total_alpha=arm.total_alpha + r, total_beta=arm.total_beta + (1.0 - r),
               changes=arm.changes + int(changed))


def shifted(alpha: float, beta: float, recent_alpha: float, recent_beta: float,
            threshold: float) -> bool:
    """Two-sided z-test of the decayed mean against the mean since the last change.

    The decayed mean is a weighted mean of the same outcomes, so under no change the
    difference has variance p(1 − p)·(Σw²/W² − 1/n) ≤ p(1 − p)·(1/W − 1/n), with W the decayed
    weight and n the undecayed count; the bound is used, which errs towards no alarm.
    """
    n, weight = alpha + beta, recent_alpha + recent_beta
    if weight <= 0.0 or n <= weight:
        return False
    p = (alpha + 1.0) / (n + 2.0)
    variance = p * (1.0 - p) * (1.0 / weight - 1.0 / n)
    gap = recent_alpha / weight - alpha / n
    return variance > 0.0 and gap * gap > threshold * threshold * variance


def prior(mean_reward: float) -> tuple[float, float]:
    """Beta(1, 1) plus 2 pseudo-outcomes at the agent's global mean reward."""
    return 1.0 + PRIOR_WEIGHT * mean_reward, 1.0 + PRIOR_WEIGHT * (1.0 - mean_reward)


# ---------------------------------------------------------------------------- choosing


@dataclass
class Pool:
    """Capable agents for one task, in ascending id order, plus capability exclusions."""

    ids: list[str]
    uids: list[str]
    active: npt.NDArray[np.int64]
    capacity: npt.NDArray[np.int64]
    available: npt.NDArray[np.bool_]
    latency_ms: npt.NDArray[np.float64]
    mean_reward: npt.NDArray[np.float64]  # global average quality: the prior's centre
    fit: npt.NDArray[np.float64]
    arm_alpha: npt.NDArray[np.float64]
    arm_beta: npt.NDArray[np.float64]
    arm_outcomes: npt.NDArray[np.int64]
    excluded: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    #: Every reward ever seen (``thompson-stationary``); None reads as the arm evidence.
    arm_total_alpha: npt.NDArray[np.float64] | None = None
    arm_total_beta: npt.NDArray[np.float64] | None = None
    #: The store hands this same pool out again while nothing changes, its columns read-only:
    #: ``choose`` then keeps what it derives from them (``prepared``) instead of deriving it
    #: again on every decision.
    shared: bool = False
    prepared: dict[str, tuple[RoutingPolicy, Prepared]] = field(
        default_factory=dict, repr=False, compare=False)

    @property
    def size(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Choice:
    """Eligible candidates in claim order, with their scores and components.

    Only the first max(record_candidates, max_claim_attempts) candidates are kept.
    """

    order: list[int]  # pool rows, best first
    scores: dict[int, float]
    components: dict[int, dict[str, float]]
    explored: bool
    confidence: float | None
    excluded: dict[str, int]
    examples: dict[str, list[str]]

    def candidates(self, pool: Pool, limit: int) -> list[dict[str, Any]]:
        return [{"agent_id": pool.ids[row], "score": self.scores[row],
                 "components": self.components[row]} for row in self.order[:limit]]


def choose(pool: Pool, policy: RoutingPolicy, strategy: str, rng: np.random.Generator) -> Choice:
    """Eligibility, then the strategy's value, then the score; raises 8 or 9 when nobody fits.

    Vectorised over the eligible rows with as few numpy calls as give the same numbers: at 100
    agents a call's overhead, not its arithmetic, is most of a decision's CPU (docs/performance.md,
    route). What does not depend on the generator (eligibility, posteriors, the fixed parts of
    the scores, the greedy choice, the load and id bits of the ranking keys) is ``_prepare``d
    first, and kept with a ``shared`` pool; only the draw and what follows from it are per call.
    """
    import numpy as np

    kept = pool.prepared.get(strategy) if pool.shared else None
    if kept is not None and kept[0] is policy:
        fixed = kept[1]
    else:
        fixed = _prepare(pool, policy, strategy, keep=pool.shared)
        if pool.shared:
            pool.prepared[strategy] = (policy, fixed)
    m = fixed.matrix.copy() if pool.shared else fixed.matrix  # a kept one is never written
    outcomes = fixed.outcomes
    m[VALUE] = _value(strategy, m[MEAN], fixed.a, fixed.b, outcomes, rng)
    weight = policy.weights["performance"]
    np.multiply(weight, m[VALUE], out=m[PERFORMANCE])
    # score·10⁶ rounded to an integer: what round(6) computes before its division (the ranking
    # key takes it as it is); the greedy score's is prepared
    micro = m[PERFORMANCE] + m[LOAD]
    micro += m[FIT]
    micro += m[LATENCY]
    micro *= 1e6
    np.rint(micro, out=micro)
    np.divide(micro, 1e6, out=m[SCORE])
    ranked = _best(_score_keys(micro, fixed.tail), fixed.keep)
    if fixed.untried is None and strategy == "epsilon-greedy" and rng.random() < policy.epsilon(
            fixed.total_outcomes):
        pick = int(rng.integers(fixed.n))
        ranked = [pick] + [i for i in ranked if i != pick][: fixed.keep - 1]
    top = np.asarray(ranked)
    # SPEC §3.4 gives a confidence to thompson only (not to the stationary baseline); it takes
    # no draws, so thompson and thompson-stationary still share one random stream
    confidence = (_confidence(top[:CONFIDENCE_TOP], fixed.a, fixed.b, fixed.base, weight)
                  if strategy == "thompson" else None)
    rows = fixed.rows
    chosen_rows = ranked if rows is None else rows[top].tolist()
    # One gather and one rounding for the columns of the recorded candidates (the score is
    # rounded already: rounding it again changes nothing).
    value_, mean_, performance_, _, load_, fit_, latency_, score_ = m[:, top].round(6).tolist()
    components = {
        row: {"value": v_, "posterior_mean": m_, "performance": p, "load": ld, "fit": f,
              "latency": lt, "outcomes": c}
        for row, v_, m_, p, ld, f, lt, c in zip(chosen_rows, value_, mean_, performance_, load_,
                                                fit_, latency_, outcomes[top].tolist(),
                                                strict=True)
    }
    return Choice(
        order=chosen_rows,
        scores=dict(zip(chosen_rows, score_, strict=True)),
        components=components,
        explored=ranked[0] != fixed.greedy,
        confidence=confidence,
        excluded=dict(fixed.excluded),
        examples={k: list(v_) for k, v_ in fixed.examples.items()},
    )


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs ~1 µs a field
class Prepared:
    """What ``choose`` derives from a pool, a policy and a strategy before any draw (read-only
    arrays: a shared pool's are handed to every decision on it; never changed once made)."""

    rows: npt.NDArray[np.intp] | None  # the eligible pool rows; None: all of them
    n: int
    a: npt.NDArray[np.float64]  # the posteriors Beta(a, b)
    b: npt.NDArray[np.float64]
    outcomes: npt.NDArray[np.int64]
    total_outcomes: int
    #: choose's matrix with the posterior mean, the greedy score's performance part and the
    #: load, fit and latency parts filled in
    matrix: npt.NDArray[np.float64]
    base: npt.NDArray[np.float64]  # load + fit + latency (the confidence's fixed score parts)
    tail: npt.NDArray[np.int64]  # the ranking keys' load and id bits, with the ``first`` bit
    untried: npt.NDArray[np.bool_] | None
    greedy: int  # the position the greedy score ranks first
    keep: int
    excluded: dict[str, int]
    examples: dict[str, list[str]]


def _prepare(pool: Pool, policy: RoutingPolicy, strategy: str, *, keep: bool) -> Prepared:
    """Eligibility (raising 8 or 9 when nobody fits), the posteriors, the fixed parts of every
    score and the greedy choice: everything of a decision that no draw changes; read-only when
    it is kept for later decisions (``keep``)."""
    import numpy as np

    excluded = {reason: int(pool.excluded.get(reason, 0)) for reason in REASONS}
    examples = {k: list(v_) for k, v_ in pool.examples.items()}
    if pool.size == 0:
        raise NoCapableAgent("no capable agent for this task", excluded=_nonzero(excluded))
    free = pool.active < pool.capacity
    eligible = pool.available & free
    if eligible.all():  # nobody to exclude: the columns as they are, no gathers
        rows = None
        n = pool.size
        active, capacity = pool.active, pool.capacity
        outcomes = pool.arm_outcomes
    else:
        _exclude(excluded, examples, pool, ~pool.available, "status")
        _exclude(excluded, examples, pool, pool.available & ~free, "capacity")
        rows = np.flatnonzero(eligible)
        n = int(rows.size)
        if n == 0:
            raise AtCapacity("capable agents exist, but none is available with a free slot",
                             excluded=_nonzero(excluded))
        active, capacity = pool.active[rows], pool.capacity[rows]
        outcomes = pool.arm_outcomes[rows]
    a, b = _posterior(pool, rows, stationary=strategy == "thompson-stationary")
    m = np.zeros((COLUMNS, n))
    mean = np.divide(a, a + b, out=m[MEAN])
    utilization = active / capacity
    load, fit, latency = _fixed_parts(pool, rows, utilization, policy, m[LOAD:SCORE])
    np.multiply(policy.weights["performance"], mean, out=m[GREEDY])
    greedy_micro = m[GREEDY] + load
    greedy_micro += fit
    greedy_micro += latency
    greedy_micro *= 1e6
    np.rint(greedy_micro, out=greedy_micro)
    tail = _tail_keys(utilization, n if rows is None else rows)
    greedy = int(_score_keys(greedy_micro, tail).argmax())
    untried = _starved(pool, rows, strategy, outcomes)
    if untried is not None:  # untried (or, for weighted, under-evaluated) arms first
        tail |= _first_bit(untried)
    base = load + fit
    base += latency
    if keep:
        for column in (a, b, m, base, tail):
            column.flags.writeable = False
    return Prepared(
        rows=rows, n=n, a=a, b=b, outcomes=outcomes, total_outcomes=int(outcomes.sum()),
        matrix=m, base=base, tail=tail, untried=untried, greedy=greedy,
        keep=max(policy.record_candidates, policy.max_claim_attempts),
        excluded=_nonzero(excluded), examples={k: v_ for k, v_ in examples.items() if v_})


# The rows of choose's matrix: the value, the posterior mean, performance (weight · value),
# weight · mean (the greedy score's performance part), load, fit, latency, and the score.
VALUE, MEAN, PERFORMANCE, GREEDY, LOAD, FIT, LATENCY, SCORE, COLUMNS = range(9)
SCORE_CAP = (1 << 22) - 1  # score·10⁶ above this (a UCB index above 4.19) share the cap


def _posterior(pool: Pool, rows: npt.NDArray[np.intp] | None, *, stationary: bool
               ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Beta(a, b) per eligible row (every row when ``rows`` is None): the prior plus the
    evidence since the last change, or plus every reward ever seen for ``thompson-stationary``."""
    alpha, beta = pool.arm_alpha, pool.arm_beta
    if stationary and pool.arm_total_alpha is not None and pool.arm_total_beta is not None:
        alpha, beta = pool.arm_total_alpha, pool.arm_total_beta
    centre = pool.mean_reward
    if rows is not None:
        centre, alpha, beta = centre[rows], alpha[rows], beta[rows]
    return (1.0 + PRIOR_WEIGHT * centre + alpha,
            1.0 + PRIOR_WEIGHT * (1.0 - centre) + beta)


def _starved(pool: Pool, rows: npt.NDArray[np.intp] | None, strategy: str,
             outcomes: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_] | None:
    """The arms to try before all others, or None: untried ones under the bandits; under
    ``weighted``, those with less evidence since their last change than REEVALUATE·ln(1 + N)
    (N the eligible arms' outcomes), so a deterministic greedy choice still re-evaluates
    every agent, ever more rarely, and an early unlucky streak cannot bury one."""
    if strategy in BANDITS:
        untried = outcomes == 0
    else:
        evidence = pool.arm_alpha + pool.arm_beta
        if rows is not None:
            evidence = evidence[rows]
        untried = evidence < REEVALUATE * math.log1p(int(outcomes.sum()))
    return untried if untried.any() else None


def _nonzero(counts: Mapping[str, int]) -> dict[str, int]:
    return {reason: n for reason, n in counts.items() if n}


def _exclude(excluded: dict[str, int], examples: dict[str, list[str]], pool: Pool,
             mask: npt.NDArray[np.bool_], reason: str) -> None:
    import numpy as np

    hits = np.flatnonzero(mask)
    excluded[reason] += int(hits.size)
    examples.setdefault(reason, []).extend(pool.ids[i] for i in hits[:EXAMPLES_PER_REASON])
    examples[reason] = examples[reason][:EXAMPLES_PER_REASON]


def _fixed_parts(pool: Pool, rows: npt.NDArray[np.intp] | None,
                 utilization: npt.NDArray[np.float64], policy: RoutingPolicy,
                 out: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The weighted load, fit and latency parts of the eligible rows' scores, written to the
    three rows of ``out`` (returned)."""
    import numpy as np

    weights = policy.weights
    latency_ms, fit = pool.latency_ms, pool.fit
    if rows is not None:
        latency_ms, fit = latency_ms[rows], fit[rows]
    latency_score = 1.0 / (1.0 + latency_ms / policy.latency_ref_ms)
    np.multiply(weights["load"], 1.0 - np.minimum(utilization, 1.0), out=out[0])
    np.multiply(weights["fit"], fit, out=out[1])
    np.multiply(weights["latency"], latency_score, out=out[2])
    return out


def _value(strategy: str, mean: npt.NDArray[np.float64], a: npt.NDArray[np.float64],
           b: npt.NDArray[np.float64], outcomes: npt.NDArray[np.int64],
           rng: np.random.Generator) -> npt.NDArray[np.float64]:
    import numpy as np

    if strategy in THOMPSONS:
        return rng.beta(a, b)
    if strategy == "ucb":
        total = max(int(outcomes.sum()), 1)
        bonus = np.sqrt(2.0 * math.log(total) / np.maximum(outcomes, 1))
        return np.where(outcomes > 0, mean + bonus, mean)
    return mean


SORT_ALL_BELOW = 256  # up to this many rows a full argsort beats argpartition + argsort


def _tail_keys(utilization: npt.NDArray[np.float64], rows: npt.NDArray[np.intp] | int
               ) -> npt.NDArray[np.int64]:
    """The load and id bits of the ranking keys; ``rows`` an int n means 0…n−1.

    A ranking key packs into one unique int64: the ``first`` bit at 2⁶² (forced exploration),
    score·10⁶ capped below 2²² (``SCORE_CAP``), utilization floored to 10⁻⁶ of an eligible
    agent < 2²⁰ (lower first), and the row < 2²⁰ (rows are in id order; lower first), so a
    linear ``argpartition`` finds the best even when a cold fleet ties everywhere. Two
    utilizations of capacities ≤ 1000 differ by more than 10⁻⁶, so flooring never merges
    them; only UCB indexes above 4.19 share the cap, and then utilization and id decide.
    """
    import numpy as np

    ids = _id_bits(rows) if isinstance(rows, int) else (1 << 20) - 1 - rows.astype(np.int64)
    load_key = 999_999 - np.minimum(np.floor(utilization * 1e6), 999_999).astype(np.int64)
    load_key <<= 20
    load_key |= ids
    return load_key


def _score_keys(micro: npt.NDArray[np.float64], tail: npt.NDArray[np.int64]
                ) -> npt.NDArray[np.int64]:
    """Whole ranking keys but the ``first`` bit: score·10⁶ (rounded already, in ``micro``,
    one row or several) capped, above the load and id bits of ``tail``."""
    import numpy as np

    keys: npt.NDArray[np.int64] = np.minimum(micro, SCORE_CAP).astype(np.int64)
    keys <<= 40
    keys |= tail
    return keys


def _first_bit(first: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]:
    """The bit above all others of the ranking keys, for the rows to try first."""
    import numpy as np

    bits: npt.NDArray[np.int64] = first.astype(np.int64) << 62
    return bits


def _ranked(score: npt.NDArray[np.float64], utilization: npt.NDArray[np.float64],
            rows: npt.NDArray[np.intp], keep: int,
            first: npt.NDArray[np.bool_] | None = None) -> list[int]:
    """The best ``keep`` positions: ``first`` ones before all others (forced exploration),
    then by score descending, then lower utilization, then id (the keys ``choose`` ranks by,
    see ``_tail_keys``)."""
    import numpy as np

    keys = _score_keys(np.rint(score * 1e6), _tail_keys(utilization, rows))
    if first is not None:
        keys |= _first_bit(first)
    return _best(keys, keep)


@functools.lru_cache(maxsize=64)
def _id_bits(n: int) -> npt.NDArray[np.int64]:
    """The id bits of rows 0…n−1 (read-only; kept per pool size)."""
    import numpy as np

    bits: npt.NDArray[np.int64] = (1 << 20) - 1 - np.arange(n, dtype=np.int64)
    bits.flags.writeable = False
    return bits


def _best(keys: npt.NDArray[np.int64], keep: int) -> list[int]:
    """The positions of the ``keep`` largest keys (all unique), largest first."""
    import numpy as np

    size = keys.size
    if size <= SORT_ALL_BELOW or size <= keep:  # one sort of a few hundred beats partition + sort
        ranked: list[int] = keys.argsort()[::-1][:keep].tolist()
        return ranked
    top = np.argpartition(keys, size - keep)[size - keep:]
    ranked = top[np.argsort(-keys[top])].tolist()
    return ranked


def _confidence(top: npt.NDArray[np.intp], a: npt.NDArray[np.float64],
                b: npt.NDArray[np.float64], base: npt.NDArray[np.float64],
                weight: float) -> float:
    """The probability that the chosen candidate (``top[0]``) wins a posterior draw over the
    candidates ``top`` (SPEC §3.4: the top 10), computed by ``domain/confidence.py`` instead of
    sampled (§13.1). ``base`` holds each row's load + fit + latency."""
    from arbiter_cli.domain.confidence import win_probability

    return round(win_probability(a[top], b[top], base[top], weight), 4)


# ---------------------------------------------------------------------------- decisions

OPEN, SUCCEEDED, FAILED, EXPIRED = "open", "succeeded", "failed", "expired"


@dataclass(frozen=True)
class Outcome:
    success: bool
    quality: float
    latency_ms: float | None = None
    tokens: int | None = None
    error: str | None = None

    @classmethod
    def parse(cls, *, success: Any, quality: Any = None, latency_ms: Any = None,
              tokens: Any = None, error: Any = None) -> Outcome:
        if not isinstance(success, bool):
            raise v.fail("success", "required", "give --success or --failure")
        return cls(
            success=success,
            quality=(1.0 if success else 0.0) if quality is None else v.fraction(quality, "quality"),
            latency_ms=None if latency_ms is None else v.finite(latency_ms, "latency_ms", low=0.0),
            tokens=None if tokens is None else v.integer(tokens, "tokens", low=0, high=2**62),
            error=None if error is None else v.text(error, "error", max_len=2000),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"success": self.success, "quality": self.quality, "latency_ms": self.latency_ms,
                "tokens": self.tokens, "error": self.error}


@dataclass(frozen=True)
class Decision:
    decision_id: str | None
    tenant: str
    task_id: str
    task_type: str
    requirements: Mapping[str, Any]
    metadata: Mapping[str, Any]
    priority: int
    agent_id: str
    agent_uid: str
    strategy: str
    seed: int
    explored: bool
    confidence: float | None
    candidates: list[dict[str, Any]]
    excluded: Mapping[str, int]
    examples: Mapping[str, list[str]]
    config_hash: str
    latency_us: int
    created_at: datetime
    status: str = OPEN
    correlation_id: str | None = None
    closed_at: datetime | None = None
    outcome: Mapping[str, Any] | None = None
    over_capacity: bool = False
    #: A journaled claim replayed onto an agent that was no longer available (draining,
    #: offline, maintenance): applied, since the assignment was acknowledged, and flagged.
    agent_unavailable: bool = False

    def close(self, outcome: Outcome, now: datetime) -> Decision:
        status = SUCCEEDED if outcome.success else FAILED
        return replace(self, status=status, outcome=outcome.to_dict(), closed_at=now)

    def expire(self, now: datetime) -> Decision:
        return replace(self, status=EXPIRED, closed_at=now)

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision_id": self.decision_id, "task_id": self.task_id,
            "task_type": self.task_type, "requirements": dict(self.requirements),
            "agent_id": self.agent_id, "strategy": self.strategy, "seed": self.seed,
            "explored": self.explored, "confidence": self.confidence,
            "candidates": list(self.candidates), "excluded": dict(self.excluded),
            "excluded_examples": {k: list(x) for k, x in self.examples.items()},
            "config_hash": self.config_hash, "latency_us": self.latency_us,
            "created_at": rfc3339(self.created_at), "status": self.status,
            "priority": self.priority, "metadata": dict(self.metadata),
            "correlation_id": self.correlation_id,
            "closed_at": None if self.closed_at is None else rfc3339(self.closed_at),
            "outcome": None if self.outcome is None else dict(self.outcome),
            "over_capacity": self.over_capacity,
            "agent_unavailable": self.agent_unavailable,
        }
