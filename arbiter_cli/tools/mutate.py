"""``arbiter mutate`` (SPEC §12): mutation testing of the core, gated on our own score.

The sequence: check the request, resolve the scope (optionally only the files changed since a
git revision), build an isolated workspace, run mutmut there, read every mutant's status, and
fold the statuses into a per-module tally. The score is killed / (killed + survived); timeouts,
suspicious and skipped mutants are reported apart and never counted as killed. A mutant that no
unit test executes ("no tests") survives: nothing would notice it.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from arbiter_cli.domain import validation as v
from arbiter_cli.errors import InvalidInput
from arbiter_cli.observability.progress import NO_PROGRESS, Tracker

#: The core of SPEC §12, as globs relative to the project root: the domain (validation,
#: agents and performance folding, query scoring, routing strategies, eligibility and arms,
#: security policy, roles, tokens, rate limiter and audit chain), the use-case services over
#: the ports (agents, routing, security: tested on the memory store), the breaker's transitions
#: and the journal (its entry states and what an entry carries). Globs matching nothing are
#: skipped.
CORE_SCOPE: tuple[str, ...] = (
    "arbiter_cli/domain/*.py",
    "arbiter_cli/services/agents.py",
    "arbiter_cli/services/routing.py",
    "arbiter_cli/services/security.py",
    "arbiter_cli/resilience/breaker.py",
    "arbiter_cli/resilience/journal.py",
    "arbiter_cli/resilience/records.py",
)
UNIT_TESTS = "tests/unit"
REPORT_NAME = "mutation.json"
LOG_NAME = "mutmut.log"
#: What mutmut prints when the unmutated tests fail (stats collection or the clean run).
BASELINE_FAILED = ("Failed to run clean test", "failed to collect stats")
BUCKETS = ("killed", "survived", "timeout", "suspicious", "skipped")
#: mutmut's status words → our buckets; "no tests" is a survivor (see the module docstring).
STATUS_BUCKET = {
    "killed": "killed", "caught by type check": "killed",
    "survived": "survived", "no tests": "survived",
    "timeout": "timeout", "suspicious": "suspicious", "skipped": "skipped",
    "segfault": "segfault", "not checked": "not_checked",
    "check was interrupted by user": "not_checked",
}


class Runner(Protocol):
    """What the service needs of mutmut (``adapters.mutation.MutmutRunner``)."""

    def run(self, workdir: Path, max_children: int, log: Path,
            on_progress: Callable[[Any], None]) -> int: ...

    def statuses(self, workdir: Path) -> dict[str, str]: ...

    def stats(self, workdir: Path) -> dict[str, int]: ...

    def show(self, workdir: Path, mutant: str) -> str: ...


@dataclass(frozen=True)
class MutationRequest:
    project: Path
    patterns: tuple[str, ...] = CORE_SCOPE
    threshold: float = 0.8
    max_children: int = 2
    output: Path = Path("artifacts/mutation")
    show_survivors: bool = False
    changed_since: str | None = None
    explicit_paths: bool = False  # --paths given: every pattern must match a file


@dataclass
class ModuleCounts:
    killed: int = 0
    survived: int = 0
    timeout: int = 0
    suspicious: int = 0
    skipped: int = 0
    no_tests: int = 0  # also counted in survived
    segfault: int = 0
    not_checked: int = 0

    @property
    def score(self) -> float | None:
        decided = self.killed + self.survived
        return None if decided == 0 else self.killed / decided

    @property
    def total(self) -> int:
        return (self.killed + self.survived + self.timeout + self.suspicious + self.skipped
                + self.segfault + self.not_checked)

    def add(self, status: str) -> None:
        bucket = STATUS_BUCKET.get(status, "suspicious")
        setattr(self, bucket, getattr(self, bucket) + 1)
        if status == "no tests":
            self.no_tests += 1

    def to_dict(self) -> dict[str, Any]:
        score = self.score
        return {**{name: getattr(self, name) for name in BUCKETS}, "no_tests": self.no_tests,
                "segfault": self.segfault, "not_checked": self.not_checked,
                "total": self.total, "score": None if score is None else round(score, 4)}


@dataclass(frozen=True)
class Survivor:
    name: str
    module: str
    function: str
    status: str
    diff: str | None = None

    def to_dict(self) -> dict[str, Any]:
        body = {"name": self.name, "module": self.module, "function": self.function,
                "status": self.status}
        return body if self.diff is None else {**body, "diff": self.diff}


@dataclass
class MutationReport:
    score: float
    threshold: float
    modules: dict[str, ModuleCounts]
    survivors: list[Survivor]
    duration_s: float
    scope: list[str]
    changed_since: str | None = None
    note: str | None = None
    mutmut: dict[str, int] = field(default_factory=dict)
    report_path: Path | None = None
    log_path: Path | None = None

    @property
    def passed(self) -> bool:
        return self.score >= self.threshold

    def totals(self) -> ModuleCounts:
        total = ModuleCounts()
        for counts in self.modules.values():
            for name in vars(total):
                setattr(total, name, getattr(total, name) + getattr(counts, name))
        return total

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": round(self.score, 4), "threshold": self.threshold, "passed": self.passed,
            "modules": {name: counts.to_dict() for name, counts in self.modules.items()},
            "survivors": [s.to_dict() for s in self.survivors],
            "duration_s": round(self.duration_s, 1),
            "totals": self.totals().to_dict(), "scope": self.scope,
            "changed_since": self.changed_since, "note": self.note, "mutmut": self.mutmut,
            "report": None if self.report_path is None else str(self.report_path),
            "log": None if self.log_path is None else str(self.log_path),
        }


# ---------------------------------------------------------------------------- pure parts


def module_of(path: str) -> str:
    """``arbiter_cli/domain/agents.py`` → ``arbiter_cli.domain.agents`` (a package's
    ``__init__.py`` is the package)."""
    parts = list(PurePosixPath(path).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def split_mutant(name: str) -> tuple[str, str]:
    """``pkg.mod.xǁClassǁmethod__mutmut_3`` → (``pkg.mod``, ``Class.method``)."""
    mangled = name.partition("__mutmut_")[0]
    module, _, function = mangled.rpartition(".")
    if function.startswith("xǁ"):
        return module, ".".join(part for part in function[2:].split("ǁ") if part)
    return module, function.removeprefix("x_")


def tally(statuses: Mapping[str, str], modules: Iterable[str]) -> dict[str, ModuleCounts]:
    """Per-module counts; every module of the scope appears, even with no mutant."""
    counts = {module: ModuleCounts() for module in modules}
    for name, status in statuses.items():
        module, _ = split_mutant(name)
        counts.setdefault(module, ModuleCounts()).add(status)
    return dict(sorted(counts.items()))


def survivors_of(statuses: Mapping[str, str]) -> list[Survivor]:
    found = []
    for name, status in sorted(statuses.items()):
        if STATUS_BUCKET.get(status) == "survived":
            module, function = split_mutant(name)
            found.append(Survivor(name, module, function, status))
    return found


def overall_score(modules: Mapping[str, ModuleCounts]) -> float:
    """killed / (killed + survived) over every module; 0.0 when nothing was decided."""
    killed = sum(c.killed for c in modules.values())
    decided = killed + sum(c.survived for c in modules.values())
    return 0.0 if decided == 0 else killed / decided


def resolve_scope(project: Path, patterns: Sequence[str], *, required: bool) -> list[str]:
    """Python files (relative POSIX paths) matched by ``patterns`` under ``project``."""
    files: set[str] = set()
    for pattern in patterns:
        pure = PurePosixPath(pattern)
        if pure.is_absolute() or ".." in pure.parts or not pattern.strip():
            raise InvalidInput(f"--paths {pattern!r}: give a glob relative to the project, "
                               "e.g. arbiter_cli/domain/*.py", field="paths", rule="relative")
        matched = [p for p in project.glob(pattern)
                   if p.suffix == ".py" and p.is_file() and "__pycache__" not in p.parts]
        if not matched and required:
            raise InvalidInput(f"--paths {pattern!r} matches no Python file under {project}",
                               field="paths", rule="exists")
        for path in matched:
            relative = path.relative_to(project).as_posix()
            if "/" not in relative:
                raise InvalidInput(f"--paths {pattern!r}: {relative} is not inside a package "
                                   "directory", field="paths", rule="package")
            files.add(relative)
    return sorted(files)


def check_request(request: MutationRequest) -> None:
    v.fraction(request.threshold, "threshold")
    v.integer(request.max_children, "max_children", low=1, high=256)
    tests = request.project / UNIT_TESTS
    if not tests.is_dir() or not any(tests.rglob("test_*.py")):
        raise InvalidInput(
            f"no unit tests at {tests}: `arbiter mutate` needs a source checkout with "
            "tests/unit (an installed copy has none); run it from a clone installed with "
            "pip install -e '.[test,mutate]', or pass --project", field="project", rule="tests")


# ---------------------------------------------------------------------------- the run


def run_mutation(
    request: MutationRequest,
    runner: Runner,
    *,
    changed_files: Callable[[Path, str], set[str]],
    build_workspace: Callable[[Path, Sequence[str], Sequence[str], Mapping[str, Any]], Path],
    pytest_options: Mapping[str, Any],
    log_reason: Callable[[Path], str],
    progress: Tracker = NO_PROGRESS,
    monotonic: Callable[[], float] = time.monotonic,
) -> MutationReport:
    """Run mutmut over the scope in a fresh workspace and write ``mutation.json``."""
    started = monotonic()
    check_request(request)
    scope = resolve_scope(request.project, request.patterns, required=request.explicit_paths)
    note = None
    if request.changed_since is not None:
        changed = changed_files(request.project, request.changed_since)
        scope = [path for path in scope if path in changed]
        if not scope:
            note = f"nothing to mutate: no module of the scope changed since {request.changed_since}"
    if not scope and note is None:
        note = "nothing to mutate: the scope holds no Python file"
    request.output.mkdir(parents=True, exist_ok=True)
    log = request.output / LOG_NAME
    report = MutationReport(1.0, request.threshold, {}, [], 0.0, scope,
                            request.changed_since, note, log_path=log)
    if scope:
        packages = sorted({path.split("/")[0] for path in scope})
        progress.update(phase="building the isolated workspace")
        workdir = build_workspace(request.project, packages, scope, pytest_options)
        try:
            _mutate(request, runner, workdir, report, log, log_reason, progress)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    report.duration_s = monotonic() - started
    report.report_path = request.output / REPORT_NAME
    report.report_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n", "utf-8")
    return report


def _mutate(request: MutationRequest, runner: Runner, workdir: Path, report: MutationReport,
            log: Path, log_reason: Callable[[Path], str], progress: Tracker) -> None:
    code = runner.run(workdir, request.max_children, log, partial(_mutmut_progress, progress))
    if code != 0:
        text = log.read_text("utf-8", "replace") if log.exists() else ""
        if any(marker in text for marker in BASELINE_FAILED):
            raise InvalidInput(
                f"the unit tests fail before any mutation (baseline run); fix them first: "
                f"{log_reason(log)} (full log: {log})", field="tests", rule="baseline")
        raise InvalidInput(f"mutmut exited {code} without a result: {log_reason(log)} "
                           f"(full log: {log})", field="tests", rule="mutmut")
    progress.update(phase="reading the results")
    statuses = runner.statuses(workdir)
    report.mutmut = runner.stats(workdir)
    report.modules = tally(statuses, (module_of(path) for path in report.scope))
    report.score = overall_score(report.modules)
    report.survivors = survivors_of(statuses)
    if not statuses:
        report.note = "mutmut found no mutant in the scope"
        report.score = 1.0
    elif report.totals().killed + report.totals().survived == 0:
        report.note = "no mutant was decided (all timed out, suspicious or skipped)"
    if request.show_survivors:
        progress.update(0, total=len(report.survivors), phase="diffs of the survivors")
        for i, survivor in enumerate(report.survivors):
            progress.update(i)
            report.survivors[i] = Survivor(survivor.name, survivor.module, survivor.function,
                                           survivor.status, runner.show(workdir, survivor.name))


def _mutmut_progress(progress: Tracker, stands: Any) -> None:
    """mutmut's phase and counts (``adapters.mutation.Progress``) as the run's progress."""
    if stands.phase == "Running mutation testing" and stands.done is not None:
        progress.update(stands.done, total=stands.total, phase="mutants tested",
                        detail=f"{stands.killed} killed, {stands.survived} survived")
    else:
        progress.update(stands.done or 0, total=stands.total, phase=stands.phase.lower())
