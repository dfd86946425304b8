"""Capability queries and the one scorer of SPEC §2.2, shared by every backend.

Backends narrow candidates by capability (task type, languages, specializations) and hand the
survivors to ``rank`` as columns; ``rank`` applies the numeric hard filters, scores, rounds to
6 decimals and orders by score descending, then by id ascending (the columns arrive in id
order, and every sort here is stable).

The formula is ``match_score``, written once over anything with ``*``, ``+``, ``-`` and ``/``:
numpy columns here, and SQL column expressions in the SQL adapter, which uses it only to pick
the top K in the database (the same IEEE double operations in the same order give the same
rounded scores); ``rank`` then scores and orders the rows it picked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from arbiter_cli.domain import validation as v
from arbiter_cli.domain.agents import STATUSES, Agent, RegistryPolicy

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

COMPONENTS = ("fit", "success", "quality", "load")
SCALE = 1e6  # scores are rounded to 6 decimals
SHIFT = 2.0**52  # 0 ≤ x < 2⁵²: (x + SHIFT) − SHIFT is x rounded to an integer, ties to even
STATUS_CODES = {name: code for code, name in enumerate(STATUSES)}


#: The fields of a capability query (``prefer_specializations`` is ``prefer``, as in a task).
QUERY_FIELDS = frozenset({"task_type", "languages", "specializations", "prefer",
                          "prefer_specializations", "max_utilization", "min_success_rate",
                          "status", "limit"})


@dataclass(frozen=True)
class Query:
    task_type: str
    languages: tuple[str, ...] = ()
    specializations: tuple[str, ...] = ()
    prefer: tuple[str, ...] = ()
    max_utilization: float = 1.0
    min_success_rate: float = 0.0
    status: str | None = None
    limit: int = 10

    @classmethod
    def parse(cls, raw: Mapping[str, Any], policy: RegistryPolicy) -> Query:
        unknown = sorted(k for k, value in raw.items()
                         if k not in QUERY_FIELDS and value is not None)
        if unknown:  # a misspelt filter must not be silently no filter (the API's bodies)
            raise v.fail(unknown[0], "unknown_field", "is not a query field")
        if not raw.get("task_type"):
            raise v.fail("task_type", "required", "is required")
        status = raw.get("status")
        if status is not None and status not in STATUSES:
            raise v.fail("status", "allowed", f"must be one of {', '.join(STATUSES)}")
        max_util = raw.get("max_utilization")
        min_success = raw.get("min_success_rate")
        return cls(
            task_type=v.choose([raw["task_type"]], policy.task_types, "task_type")[0],
            languages=v.choose(v.string_list(raw.get("languages") or [], "languages"),
                               policy.languages, "languages"),
            specializations=v.labels(v.string_list(raw.get("specializations") or [],
                                                   "specializations"), "specializations"),
            prefer=v.labels(v.string_list(raw.get("prefer") or raw.get("prefer_specializations")
                                          or [], "prefer_specializations"),
                            "prefer_specializations"),
            max_utilization=1.0 if max_util is None else v.fraction(max_util, "max_utilization"),
            min_success_rate=0.0 if min_success is None
            else v.fraction(min_success, "min_success_rate"),
            status=status,
            limit=10 if raw.get("limit") is None
            else v.integer(raw["limit"], "limit", low=0, high=1_000_000),
        )


@dataclass(frozen=True)
class Columns:
    """Numeric facts of capable candidates, one row per agent, rows in ascending id order."""

    success: npt.NDArray[np.float64]
    quality: npt.NDArray[np.float64]
    utilization: npt.NDArray[np.float64]
    status: npt.NDArray[np.int8]
    fit: npt.NDArray[np.float64] | None = None  # None: no preference asked, fit = 1.0

    @classmethod
    def from_agents(cls, agents: Sequence[Agent], prefer: tuple[str, ...] = ()) -> Columns:
        import numpy as np

        return cls(
            success=np.fromiter((a.performance.success_rate for a in agents), np.float64,
                                len(agents)),
            quality=np.fromiter((a.performance.average_quality for a in agents), np.float64,
                                len(agents)),
            utilization=np.fromiter((a.utilization for a in agents), np.float64, len(agents)),
            status=np.fromiter((STATUS_CODES[a.status] for a in agents), np.int8, len(agents)),
            fit=fit_column(agents, prefer),
        )


@dataclass(frozen=True)
class Ranking:
    """Row indices into the columns, best first, with their rounded scores and components."""

    rows: list[int]
    scores: list[float]
    components: list[dict[str, float]]
    matched: int


def fit_share(specializations: Sequence[str], prefer: tuple[str, ...]) -> float:
    """Share of the preferred labels the agent has; 1.0 when none are asked for."""
    if not prefer:
        return 1.0
    mine = {label.lower() for label in specializations}
    return sum(1 for label in prefer if label.lower() in mine) / len(prefer)


def fit_column(agents: Sequence[Agent], prefer: tuple[str, ...]) -> npt.NDArray[np.float64] | None:
    import numpy as np

    if not prefer:
        return None
    return np.fromiter((fit_share(a.specializations, prefer) for a in agents), np.float64,
                       len(agents))


def match_score(weights: Mapping[str, Any], success: Any, quality: Any, load: Any,
                fit: Any | None) -> Any:
    """The match score of SPEC §2.2, rounded to 6 decimals, in one fixed order of operations.

    The operands may be floats, numpy columns or SQL expressions, so the rule is written once
    for every backend; floating-point addition is not associative, so the order is part of
    the rule. The rounding is ``numpy.round(total, 6)``, that is ``rint(total · 10⁶) / 10⁶``,
    with ``rint`` written as adding and taking away 2⁵² (exact for the scores' range 0–1, in
    IEEE doubles rounding to nearest even), which every SQL engine can evaluate as well.
    """
    total = weights["success"] * success + weights["quality"] * quality + weights["load"] * load
    total = total + (weights["fit"] if fit is None else weights["fit"] * fit)
    return (total * SCALE + SHIFT - SHIFT) / SCALE


def rank(columns: Columns, query: Query, weights: Mapping[str, float]) -> Ranking:
    """Apply the numeric hard filters, score, and keep the top ``query.limit`` (0 = all)."""
    import numpy as np

    keep = (columns.utilization <= query.max_utilization) & (
        columns.success >= query.min_success_rate
    )
    if query.status is not None:
        keep &= columns.status == STATUS_CODES[query.status]
    if keep.all():
        rows = np.arange(keep.size)
        success, quality, utilization = columns.success, columns.quality, columns.utilization
        fit = columns.fit
    else:
        rows = np.flatnonzero(keep)
        success, quality = columns.success[rows], columns.quality[rows]
        utilization = columns.utilization[rows]
        fit = None if columns.fit is None else columns.fit[rows]
    load = 1.0 - np.minimum(utilization, 1.0)
    scores = match_score(weights, success, quality, load, fit)
    order = _top(scores, query.limit)
    return Ranking(
        rows=rows[order].tolist(),
        scores=scores[order].tolist(),
        components=[
            _components(weights, 1.0 if fit is None else float(fit[i]), float(success[i]),
                        float(quality[i]), float(load[i]))
            for i in order
        ],
        matched=int(rows.size),
    )


def _components(
    weights: Mapping[str, float], fit: float, success: float, quality: float, load: float
) -> dict[str, float]:
    """Each weighted part of a match score; they add up to it before rounding."""
    return {
        "fit": round(weights["fit"] * fit, 6),
        "success": round(weights["success"] * success, 6),
        "quality": round(weights["quality"] * quality, 6),
        "load": round(weights["load"] * load, 6),
    }


def _top(scores: npt.NDArray[np.float64], limit: int) -> npt.NDArray[np.intp]:
    """Indices of the best ``limit`` scores (0 = all), ties in index (= id) order.

    Scores are rounded to 6 decimals, so ``score·10⁶·n + (n − 1 − index)`` is a unique
    integer key with the same order; unique keys keep ``argpartition`` fast when many
    agents tie, as young fleets do.
    """
    import numpy as np

    n = scores.size
    keys = np.rint(scores * 1e6).astype(np.int64) * n + np.arange(n - 1, -1, -1, dtype=np.int64)
    if limit == 0 or limit >= n:
        return np.argsort(-keys)
    top = np.argpartition(keys, n - limit)[n - limit:]
    return top[np.argsort(-keys[top])]


def reasons(agent: Agent, query: Query) -> list[str]:
    """Human reasons for a match, in the order of SPEC §2.2's example."""
    found = [f"supports {query.task_type}"]
    found += [f"has {lang}" for lang in query.languages]
    found += [f"specializes in {label}" for label in query.specializations]
    preferred = [p for p in query.prefer if p.lower() in {s.lower() for s in agent.specializations}]
    found += [f"prefers {label}" for label in preferred]
    found.append(f"success {agent.performance.success_rate * 100:.1f}%")
    found.append(f"utilization {agent.utilization * 100:.0f}%")
    return found


def match_item(agent: Agent, score: float, components: dict[str, float], query: Query) -> dict[str, Any]:
    return {
        "agent": agent.to_dict(),
        "match_score": score,
        "components": components,
        "reasons": reasons(agent, query),
    }
