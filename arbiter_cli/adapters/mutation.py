"""Side effects of ``arbiter mutate``: the isolated workspace, mutmut as a subprocess, and git.

mutmut 3 is only ever run as a subprocess inside a generated temporary project (it reads its
configuration from the current directory when imported, and its spinner floods a terminal), so
nothing of the caller's project state leaks into the run. Its output goes to a log file (where
its phase is read from); its progress is read from its own result files (``mutants/*.meta``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

UNIT_TESTS = "tests/unit"
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", ".pytest_cache",
                                  "mutants")
_PHASES = ("Generating mutants", "Running stats", "Running clean tests",
           "Running forced fail test", "Running mutation testing")
#: mutmut's exit codes (``mutmut.stats.status_by_exit_code``, mirrored: importing mutmut here
#: would read the caller's configuration) that make a mutant killed or a survivor; any other
#: code (timeout, suspicious, skipped, ...) is decided but neither.
_KILLED_CODES = frozenset({1, 3, 37})
_SURVIVED_CODES = frozenset({0, 5, 33})
_STATUS_LINE = re.compile(r"^\s*(\S+__mutmut_\d+): (.+?)\s*$")


@dataclass(frozen=True)
class Progress:
    """Where mutmut stands: its phase (from its log) and its mutants (from its own data)."""

    phase: str
    done: int | None = None
    total: int | None = None
    killed: int | None = None
    survived: int | None = None

    def describe(self) -> str:
        if self.done is None:
            return self.phase.lower()
        return (f"{self.done}/{self.total} mutants tested: {self.killed} killed, "
                f"{self.survived} survived")


def parse_phase(tail: str) -> str:
    """The latest phase named in the end of a mutmut log."""
    position, phase = max((tail.rfind(phase), phase) for phase in _PHASES)
    return phase if position >= 0 else "Starting mutmut"


class MutantData:
    """Counts read from mutmut's own results: ``mutants/**/*.meta``, one JSON file a source
    file whose ``exit_code_by_key`` holds every mutant, ``null`` until it is tested. mutmut
    rewrites a file after each result, so a file caught half-written keeps its last reading."""

    def __init__(self, workdir: Path) -> None:
        self.folder = workdir / "mutants"
        self._codes: dict[Path, dict[str, int | None]] = {}

    def read(self, phase: str) -> Progress:
        for path in self.folder.rglob("*.meta") if self.folder.is_dir() else ():
            try:
                codes = json.loads(path.read_text("utf-8"))["exit_code_by_key"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if isinstance(codes, dict):
                self._codes[path] = codes
        codes = [code for mutants in self._codes.values() for code in mutants.values()]
        if not codes:  # nothing generated yet (or files without mutants so far)
            return Progress(phase)
        done = [code for code in codes if code is not None]
        return Progress(phase, len(done), len(codes),
                        sum(code in _KILLED_CODES for code in done),
                        sum(code in _SURVIVED_CODES for code in done))


def parse_statuses(output: str) -> dict[str, str]:
    """``mutmut results --all true`` lines ``    <mutant>: <status>`` as a mapping."""
    statuses: dict[str, str] = {}
    for line in output.splitlines():
        match = _STATUS_LINE.match(line)
        if match:
            statuses[match.group(1)] = match.group(2)
    return statuses


def find_mutmut() -> Path | None:
    """The ``mutmut`` script of this interpreter's environment, or None without the extra."""
    import importlib.util

    if importlib.util.find_spec("mutmut") is None:
        return None
    beside = Path(sys.executable).parent / ("mutmut.exe" if sys.platform == "win32" else "mutmut")
    if beside.exists():
        return beside
    found = shutil.which("mutmut")
    return Path(found) if found else None


class MutmutRunner:
    """Runs mutmut in a workspace; the environment is the caller's minus arbiter's own."""

    def __init__(self, executable: Path, environ: Mapping[str, str],
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.executable = executable
        self.env = {k: v for k, v in environ.items()
                    if not k.startswith(("ARBITER_", "PYTEST_", "COVERAGE_"))}
        self.env["PYTHONHASHSEED"] = "0"
        self.env["PYTHONDONTWRITEBYTECODE"] = "1"
        self.sleep = sleep

    def run(self, workdir: Path, max_children: int, log: Path,
            on_progress: Callable[[Progress], None]) -> int:
        """``mutmut run --max-children N`` with output to ``log``; the exit code."""
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(self.executable), "run", "--max-children", str(max_children)],
                cwd=workdir, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            data = MutantData(workdir)
            try:
                while process.poll() is None:
                    on_progress(data.read(parse_phase(_tail(log))))
                    self.sleep(0.5)
            except BaseException:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                raise
        return process.returncode

    def statuses(self, workdir: Path) -> dict[str, str]:
        """Every mutant with mutmut's own status word (killed, survived, timeout, ...)."""
        return parse_statuses(self._call(workdir, "results", "--all", "true"))

    def stats(self, workdir: Path) -> dict[str, int]:
        """mutmut's totals (``export-cicd-stats``), kept in the report for cross-checking."""
        self._call(workdir, "export-cicd-stats")
        path = workdir / "mutants" / "mutmut-cicd-stats.json"
        if not path.exists():
            return {}
        return {k: int(v) for k, v in json.loads(path.read_text("utf-8")).items()}

    def show(self, workdir: Path, mutant: str) -> str:
        """The diff of one mutant against the original code."""
        shown = self._call(workdir, "show", mutant)
        return "\n".join(shown.splitlines()[1:]).strip()  # drop the "# name: status" line

    def _call(self, workdir: Path, *args: str) -> str:
        done = subprocess.run([str(self.executable), *args], cwd=workdir, env=self.env,
                              capture_output=True, check=False, stdin=subprocess.DEVNULL)
        return done.stdout.decode("utf-8", "replace")


def _tail(log: Path, size: int = 4096) -> str:
    try:
        with log.open("rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - size))
            return f.read().decode("utf-8", "ignore")
    except OSError:
        return ""


def log_reason(log: Path, lines: int = 6) -> str:
    """Why a mutmut run failed, as one line: pytest's FAILED/ERROR summary lines when there
    are some, else the last lines of the log (spinner frames removed), then mutmut's verdict."""
    text = _tail(log, 64 * 1024).replace("\r", "\n")
    kept = [line.strip() for line in text.splitlines()
            if line.strip() and not re.match(r"^\W*(Generating mutants|Running )", line.strip())]
    failures = [line for line in kept if line.startswith(("FAILED ", "ERROR "))]
    if not failures:
        return " | ".join(kept[-lines:])
    first_error = [line for line in kept if line.startswith("E ")][:1]
    return " | ".join(dict.fromkeys([*failures[:lines], *first_error, kept[-1]]))


# ---------------------------------------------------------------------------- workspace


def build_workspace(project: Path, packages: Sequence[str], mutate: Sequence[str],
                    pytest_options: Mapping[str, Any]) -> Path:
    """A temporary project: the packages, ``tests/unit`` and the Python files at the root of
    ``tests/`` (conftest and helpers), and a ``pyproject.toml`` holding the mutmut and pytest
    configuration."""
    workdir = Path(tempfile.mkdtemp(prefix="arbiter-mutate-"))
    try:
        for package in packages:
            shutil.copytree(project / package, workdir / package, ignore=_IGNORED)
        shutil.copytree(project / UNIT_TESTS, workdir / UNIT_TESTS, ignore=_IGNORED)
        for path in (project / "tests").iterdir():  # conftest.py and the helpers tests import
            if path.is_file() and path.suffix == ".py":
                shutil.copy2(path, workdir / "tests" / path.name)
        (workdir / "pyproject.toml").write_text(
            pyproject(sorted(packages), sorted(mutate), pytest_options), "utf-8")
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return workdir


def pyproject(packages: list[str], mutate: list[str], pytest_options: Mapping[str, Any]) -> str:
    mutmut = {
        "source_paths": [f"{p}/" for p in packages],
        "only_mutate": mutate,
        "pytest_add_cli_args_test_selection": [UNIT_TESTS],
        "pytest_add_cli_args": ["-p", "no:cacheprovider"],
        "use_git_change_detection": False,
    }
    options = {**pytest_options, "testpaths": [UNIT_TESTS], "pythonpath": ["."],
               "addopts": "-p no:cacheprovider"}
    return _table("tool.mutmut", mutmut) + "\n" + _table("tool.pytest.ini_options", options)


def _table(name: str, values: Mapping[str, Any]) -> str:
    lines = [f"[{name}]"]
    for key, value in values.items():
        lines.append(f"{json.dumps(key)} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    """TOML for the few value kinds a pytest or mutmut option holds (JSON strings are TOML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise ValueError(f"cannot write {type(value).__name__} in a generated pyproject.toml")


def pytest_options(project: Path) -> dict[str, Any]:
    """The project's own ``[tool.pytest.ini_options]`` (markers, warning filters), if any."""
    import tomllib

    path = project / "pyproject.toml"
    if not path.is_file():
        return {}
    document = tomllib.loads(path.read_text("utf-8"))
    options = document.get("tool", {}).get("pytest", {}).get("ini_options", {})
    return {k: v for k, v in options.items() if isinstance(v, str | bool | int | float | list)}


# ---------------------------------------------------------------------------- git


class GitError(Exception):
    """git is missing, the directory is no repository, or the revision is unknown."""


def changed_files(project: Path, revision: str) -> set[str]:
    """Files changed since ``revision`` (committed or not), plus new untracked files."""
    if shutil.which("git") is None:
        raise GitError("git is not installed")
    _git(project, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}",
         what=f"unknown revision {revision!r}")
    root = Path(_git(project, "rev-parse", "--show-toplevel", what="not a git repository"))
    changed = _git(project, "diff", "--name-only", revision, "--", what="git diff failed")
    untracked = _git(project, "ls-files", "--others", "--exclude-standard", "--full-name",
                     what="git ls-files failed")
    paths = {line for line in (changed + "\n" + untracked).splitlines() if line}
    prefix = project.resolve().relative_to(root.resolve()).as_posix()
    if prefix in ("", "."):
        return paths
    return {p[len(prefix) + 1:] for p in paths if p.startswith(prefix + "/")}


def _git(project: Path, *args: str, what: str) -> str:
    done = subprocess.run(["git", "-C", str(project), *args], capture_output=True, check=False,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise GitError(what + (f" ({detail[-1]})" if detail else ""))
    return done.stdout.decode("utf-8", "replace").strip()
