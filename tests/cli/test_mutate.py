"""``arbiter mutate`` (SPEC §12) through ``main()``, running the real mutmut on a tiny fixture
project (tests/fixtures/mutate_project: one module, four tests that kill all its mutants).

The mutmut runs are module-scoped fixtures, so the whole file costs three runs.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from arbiter_cli.adapters.mutation import (
    MutantData,
    Progress,
    parse_phase,
    parse_statuses,
    pyproject,
)
from arbiter_cli.tools.mutate import (
    CORE_SCOPE,
    ModuleCounts,
    overall_score,
    split_mutant,
    survivors_of,
    tally,
)
from tests.helpers import CliResult, cli

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "mutate_project"
SCOPE = "toyrules/*.py"
MODULE = "toyrules.limits"

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="the fixture runs need git")


def copy_fixture(target: Path, *, weaken: bool = False, break_baseline: bool = False) -> Path:
    shutil.copytree(FIXTURE, target, ignore=shutil.ignore_patterns("__pycache__"))
    test_file = target / "tests" / "unit" / "test_limits.py"
    source = test_file.read_text()
    if weaken:  # the deliberately weakened test: one assertion removed
        source = "".join(line for line in source.splitlines(keepends=True)
                         if "# WEAKEN" not in line)
    if break_baseline:
        source = source.replace("assert fee(0) == 1", "assert fee(0) == 2")
    test_file.write_text(source)
    return target


def git(project: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "-c",
         "commit.gpgsign=false", *args], cwd=project, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def mutate(project: Path, output: Path, *extra: str) -> CliResult:
    return cli("mutate", "--project", str(project), "--paths", SCOPE, "--output", str(output),
               "--max-children", "2", *extra)


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> tuple[CliResult, Path]:
    from arbiter_cli.observability import progress

    root = tmp_path_factory.mktemp("full")
    project = copy_fixture(root / "project")
    with pytest.MonkeyPatch.context() as patch:  # progress events at every poll, not every 10 s
        patch.setattr(progress, "LOG_EVERY_S", 0.0)
        return mutate(project, root / "out", "--json", "--threshold", "0.5"), root / "out"


@pytest.fixture(scope="module")
def weakened(tmp_path_factory: pytest.TempPathFactory) -> tuple[CliResult, Path]:
    """The weakened copy, committed to git and then its module touched, run with
    --changed-since HEAD, a threshold between the two scores and --show-survivors."""
    root = tmp_path_factory.mktemp("weak")
    project = copy_fixture(root / "project", weaken=True)
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "fixture")
    module = project / "toyrules" / "limits.py"
    module.write_text(module.read_text() + "\n# touched after the baseline commit\n")
    result = mutate(project, root / "out", "--threshold", "0.95", "--show-survivors",
                    "--changed-since", "HEAD")
    return result, root / "out"


def report(output: Path) -> dict[str, Any]:
    return json.loads((output / "mutation.json").read_text())  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------- the real runs


def test_full_fixture_scores_every_mutant_killed_and_passes(full: tuple[CliResult, Path]) -> None:
    """The fixture's tests kill all mutants: score 1.0, exit 0 at the threshold."""
    result, _ = full
    assert result.exit_code == 0, result
    document = result.json()
    assert document["score"] == 1.0 and document["passed"] is True
    counts = document["modules"][MODULE]
    assert counts["killed"] == counts["total"] >= 8
    assert counts["survived"] == counts["timeout"] == counts["suspicious"] == 0
    assert document["survivors"] == []
    assert document["meta"]["command"] == "mutate"


def test_mutation_json_has_the_fields_of_spec_12(full: tuple[CliResult, Path]) -> None:
    """mutation.json: score, threshold, modules with five counts each, survivors, duration_s."""
    result, output = full
    written = report(output)
    assert {"score", "threshold", "modules", "survivors", "duration_s"} <= set(written)
    assert written["threshold"] == 0.5
    for counts in written["modules"].values():
        assert {"killed", "survived", "timeout", "suspicious", "skipped"} <= set(counts)
    assert written["duration_s"] > 0
    assert written["scope"] == ["toyrules/__init__.py", "toyrules/limits.py"]
    stdout = result.json()
    stdout.pop("meta")
    assert stdout == written
    assert (output / "mutmut.log").stat().st_size > 0  # mutmut's output went to the log


def test_a_weakened_test_lowers_the_score_and_fails_the_gate(
    full: tuple[CliResult, Path], weakened: tuple[CliResult, Path]
) -> None:
    """Removing one assertion lets mutants of can_vote survive: the score drops below the
    threshold, exit 1 with one error line, and the table still prints."""
    result, output = weakened
    assert result.exit_code == 1, result
    weak, strong = report(output), report(full[1])
    assert weak["score"] < strong["score"] == 1.0
    assert weak["score"] < 0.95 and weak["passed"] is False
    assert weak["modules"][MODULE]["survived"] >= 1
    assert {s["function"] for s in weak["survivors"]} == {"can_vote"}
    last = result.stderr.splitlines()[-1]  # progress and "wrote ..." lines come first
    assert last.startswith("error: mutation score ") and last.endswith("under the threshold 95.0%")
    assert "Mutation score per module of toyrules" in result.stdout
    # piped stdout: the per-module table is tab-separated rows (SPEC §16)
    assert "\nlimits\t" in result.stdout and "FAIL" in result.stdout


def test_show_survivors_prints_each_diff(weakened: tuple[CliResult, Path]) -> None:
    result, output = weakened
    for survivor in report(output)["survivors"]:
        assert survivor["name"] in result.stdout
        assert "return age >= 18" in survivor["diff"]  # the original line, in the diff
    assert "-    return age >= 18" in result.stdout


def test_changed_since_mutates_only_the_changed_modules(weakened: tuple[CliResult, Path]) -> None:
    """Only limits.py changed after the commit; __init__.py is out of the run."""
    _, output = weakened
    written = report(output)
    assert written["scope"] == ["toyrules/limits.py"]
    assert written["changed_since"] == "HEAD"
    assert list(written["modules"]) == [MODULE]


def test_a_failing_baseline_exits_2_with_the_failing_test(tmp_path: Path) -> None:
    project = copy_fixture(tmp_path / "project", break_baseline=True)
    result = mutate(project, tmp_path / "out")
    assert result.exit_code == 2, result
    assert "the unit tests fail before any mutation" in result.stderr
    assert "test_fee_is_at_least_one" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: ") and result.stdout == ""


# ---------------------------------------------------------------------------- no mutmut run


@pytest.mark.parametrize("threshold", ["1.01", "-0.1", "nan"])
def test_a_threshold_outside_0_1_exits_2(tmp_path: Path, threshold: str) -> None:
    result = mutate(FIXTURE, tmp_path, "--json", "--threshold", threshold)
    assert result.exit_code == 2, result
    assert result.error()["details"]["field"] == "threshold"
    assert not (tmp_path / "mutation.json").exists()


def test_a_checkout_without_unit_tests_exits_2(tmp_path: Path) -> None:
    """An installed copy has the package but no tests/unit: exit 2 saying why."""
    shutil.copytree(FIXTURE / "toyrules", tmp_path / "installed" / "toyrules")
    result = mutate(tmp_path / "installed", tmp_path / "out")
    assert result.exit_code == 2, result
    assert "no unit tests at" in result.stderr and "source checkout" in result.stderr


def test_paths_that_match_nothing_exit_2(tmp_path: Path) -> None:
    result = cli("--json", "mutate", "--project", str(FIXTURE), "--paths", "toyrules/nope*.py",
                 "--output", str(tmp_path))
    assert result.exit_code == 2, result
    assert result.error()["details"] == {"field": "paths", "rule": "exists"}


def test_nothing_changed_since_the_revision_scores_1_and_passes(tmp_path: Path) -> None:
    project = copy_fixture(tmp_path / "project")
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "fixture")
    result = mutate(project, tmp_path / "out", "--json", "--changed-since", "HEAD")
    assert result.exit_code == 0, result
    document = result.json()
    assert document["score"] == 1.0 and document["modules"] == {}
    assert document["note"].startswith("nothing to mutate")
    assert report(tmp_path / "out")["note"] == document["note"]


def test_an_unknown_revision_exits_2(tmp_path: Path) -> None:
    project = copy_fixture(tmp_path / "project")
    git(project, "init", "-q")
    result = mutate(project, tmp_path / "out", "--changed-since", "no-such-rev")
    assert result.exit_code == 2, result
    assert "--changed-since: unknown revision 'no-such-rev'" in result.stderr


def test_without_the_mutate_extra_it_exits_2_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from arbiter_cli.adapters import mutation

    monkeypatch.setattr(mutation, "find_mutmut", lambda: None)
    result = mutate(FIXTURE, tmp_path)
    assert result.exit_code == 2, result
    assert "install arbiter[mutate]" in result.stderr


def test_mutate_needs_no_token(tmp_path: Path) -> None:
    """A CI job has no token: mutate is in the no-token list, so it reaches its own checks."""
    result = mutate(FIXTURE, tmp_path, "--threshold", "2")
    assert result.exit_code == 2 and "threshold" in result.stderr


# ---------------------------------------------------------------------------- the score


def test_timeouts_and_suspicious_never_count_as_killed() -> None:
    statuses = {
        "pkg.mod.x_f__mutmut_1": "killed",
        "pkg.mod.x_f__mutmut_2": "survived",
        "pkg.mod.x_f__mutmut_3": "timeout",
        "pkg.mod.x_f__mutmut_4": "suspicious",
        "pkg.mod.x_f__mutmut_5": "skipped",
        "pkg.mod.x_f__mutmut_6": "segfault",
    }
    counts = tally(statuses, ["pkg.mod"])["pkg.mod"]
    assert (counts.killed, counts.survived, counts.timeout, counts.suspicious,
            counts.skipped, counts.segfault) == (1, 1, 1, 1, 1, 1)
    assert counts.score == 0.5
    assert overall_score({"pkg.mod": counts}) == 0.5


def test_a_mutant_no_test_runs_is_a_survivor() -> None:
    counts = tally({"pkg.mod.x_f__mutmut_1": "killed", "pkg.mod.x_g__mutmut_1": "no tests"},
                   ["pkg.mod"])["pkg.mod"]
    assert (counts.killed, counts.survived, counts.no_tests) == (1, 1, 1)
    assert [s.status for s in survivors_of({"pkg.mod.x_g__mutmut_1": "no tests"})] == ["no tests"]


def test_the_overall_score_weighs_modules_by_their_mutants() -> None:
    big = ModuleCounts(killed=90, survived=10)
    small = ModuleCounts(killed=0, survived=10)
    assert overall_score({"a": big, "b": small}) == pytest.approx(90 / 110)
    assert overall_score({}) == 0.0
    assert ModuleCounts(timeout=3).score is None


def test_every_scope_module_is_listed_even_without_mutants() -> None:
    modules = tally({"p.b.x_f__mutmut_1": "killed"}, ["p.a", "p.b"])
    assert list(modules) == ["p.a", "p.b"] and modules["p.a"].total == 0


def test_mutant_names_split_into_module_and_function() -> None:
    assert split_mutant("arbiter_cli.domain.agents.x_fold__mutmut_12") == (
        "arbiter_cli.domain.agents", "fold")
    assert split_mutant("arbiter_cli.domain.security.xǁTokenRecordǁto_dict__mutmut_3") == (
        "arbiter_cli.domain.security", "TokenRecord.to_dict")


def test_the_core_scope_is_the_domain_the_use_case_services_and_the_pure_resilience() -> None:
    assert {"arbiter_cli/domain/*.py", "arbiter_cli/services/agents.py",
            "arbiter_cli/services/routing.py", "arbiter_cli/services/security.py",
            "arbiter_cli/resilience/breaker.py"} <= set(CORE_SCOPE)
    assert all(p.startswith("arbiter_cli/") and p.endswith(".py") for p in CORE_SCOPE)


# ---------------------------------------------------------------------------- mutmut's output


def test_progress_counts_mutants_from_mutmut_s_own_result_files(tmp_path: Path) -> None:
    """mutants/**/*.meta: every mutant of a file, its exit code once tested (1 killed,
    0 survived, 33 no tests: a survivor, 36 timeout: neither)."""
    folder = tmp_path / "mutants" / "pkg"
    folder.mkdir(parents=True)
    meta = {"exit_code_by_key": {"pkg.a.x_f__mutmut_1": 1, "pkg.a.x_f__mutmut_2": 0,
                                 "pkg.a.x_f__mutmut_3": None},
            "durations_by_key": {}, "estimated_durations_by_key": {}}
    (folder / "a.py.meta").write_text(json.dumps(meta))
    (folder / "b.py.meta").write_text(json.dumps(
        {"exit_code_by_key": {"pkg.b.x_g__mutmut_1": 33, "pkg.b.x_g__mutmut_2": 36}}))
    data = MutantData(tmp_path)
    assert data.read("Running mutation testing") == Progress(
        "Running mutation testing", done=4, total=5, killed=1, survived=2)
    (folder / "b.py.meta").write_text('{"exit_code_by_key": {"pkg.b')  # caught mid-write
    assert data.read("Running mutation testing").total == 5  # its last reading stays


def test_before_mutmut_writes_its_results_only_the_phase_is_known(tmp_path: Path) -> None:
    assert MutantData(tmp_path).read("Starting mutmut") == Progress("Starting mutmut")
    (tmp_path / "mutants").mkdir()
    (tmp_path / "mutants" / "__init__.py.meta").write_text('{"exit_code_by_key": {}}')
    assert MutantData(tmp_path).read("Generating mutants") == Progress("Generating mutants")
    assert parse_phase("⠋ Generating mutants\n⠋ Running clean tests") == "Running clean tests"
    assert parse_phase("") == "Starting mutmut"


def test_a_mutate_run_logs_its_progress_off_a_terminal(full: tuple[CliResult, Path]) -> None:
    """SPEC §16: done/total of mutants (from mutmut's data) in log events; here at every poll."""
    result, _ = full
    events = [json.loads(line) for line in result.stderr.splitlines()
              if '"mutate.progress"' in line]
    assert events, result.stderr
    totals = {e["total"] for e in events if e["total"] is not None}
    assert totals == {result.json()["modules"][MODULE]["total"]}, events
    assert all(e["done"] <= e["total"] for e in events if e["total"] is not None)


def test_statuses_are_parsed_from_mutmut_results() -> None:
    output = ("    arbiter_cli.domain.a.x_f__mutmut_1: killed\n"
              "    arbiter_cli.domain.a.xǁCǁm__mutmut_2: no tests\n"
              "noise line\n")
    assert parse_statuses(output) == {"arbiter_cli.domain.a.x_f__mutmut_1": "killed",
                                      "arbiter_cli.domain.a.xǁCǁm__mutmut_2": "no tests"}


def test_the_generated_configuration_is_valid_toml_with_the_project_s_pytest_options() -> None:
    import tomllib

    document = tomllib.loads(pyproject(
        ["toyrules"], ["toyrules/limits.py"],
        {"filterwarnings": ["error", 'ignore:a "quoted" message'], "xfail_strict": True}))
    assert document["tool"]["mutmut"]["source_paths"] == ["toyrules/"]
    assert document["tool"]["mutmut"]["only_mutate"] == ["toyrules/limits.py"]
    options = document["tool"]["pytest"]["ini_options"]
    assert options["filterwarnings"] == ["error", 'ignore:a "quoted" message']
    assert options["testpaths"] == ["tests/unit"] and options["xfail_strict"] is True


# ---------------------------------------------------------------------------- CI wiring


def test_ci_gates_the_changed_core_modules_and_nightly_runs_the_whole_core():
    run = (ROOT / ".ci" / "run").read_text()
    assert ('arbiter mutate --changed-since "$(cat .ci/mutation-baseline)" --threshold 0.8'
            in run)
    assert run.index("arbiter mutate") > run.index(".venv/bin/pytest")
    baseline = (ROOT / ".ci" / "mutation-baseline").read_text()
    assert re.fullmatch(r"[0-9a-f]{40}\n", baseline)
    if (ROOT / ".git").exists():  # the recorded commit must exist for git diff to work
        git(ROOT, "cat-file", "-e", baseline.strip() + "^{commit}")
    nightly = (ROOT / ".github" / "workflows" / "nightly.yml").read_text()
    assert "arbiter mutate --threshold 0.8" in nightly
