"""The set checker on synthetic histories: each kind of anomaly is reported as itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.faults.history import History, check_set, load


class Tick:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def write(path: Path, steps: list[tuple[str, str, str]], process: str = "w1") -> None:
    """steps: (element, completion or '-', kind); '-' leaves the op without a completion."""
    with History(path, process, clock=Tick()) as history:
        for element, verdict, kind in steps:
            op = history.invoke(kind, element)
            if verdict != "-":
                history.complete(verdict, op, kind, element)


def check(tmp_path: Path, steps, final):  # type: ignore[no-untyped-def]
    path = tmp_path / "h.jsonl"
    write(path, steps)
    return check_set(load([path]), final)


def test_a_clean_history_is_valid(tmp_path: Path) -> None:
    report = check(tmp_path, [("a", "ok", "register"), ("b", "ok", "register"),
                              ("c", "fail", "register")], {"register": ["a", "b"]})
    assert report.valid
    assert report.kinds["register"].counts() == {
        "attempted": 3, "ok": 2, "fail": 1, "info": 0, "lost": 0, "duplicated": 0,
        "unexpected": 0, "failed_present": 0, "recovered": 0, "not_recovered": 0}


def test_an_acknowledged_write_missing_from_the_final_read_is_lost(tmp_path: Path) -> None:
    report = check(tmp_path, [("a", "ok", "register"), ("b", "ok", "register")],
                   {"register": ["a"]})
    assert not report.valid
    assert report.kinds["register"].lost == ["b"]
    assert "lost: ['b']" in report.summary()


def test_an_element_never_attempted_is_unexpected(tmp_path: Path) -> None:
    report = check(tmp_path, [("a", "ok", "register")], {"register": ["a", "ghost"]})
    assert not report.valid
    assert report.kinds["register"].unexpected == ["ghost"]


def test_an_element_read_twice_is_a_duplicate(tmp_path: Path) -> None:
    report = check(tmp_path, [("a", "ok", "route")], {"route": ["a", "a", "a"]})
    assert not report.valid
    assert report.kinds["route"].duplicates == {"a": 3}
    assert report.kinds["route"].lost == []


def test_a_definite_failure_that_took_effect_is_reported(tmp_path: Path) -> None:
    report = check(tmp_path, [("a", "fail", "route")], {"route": ["a"]})
    assert not report.valid
    assert report.kinds["route"].failed_present == ["a"]


def test_indeterminate_ops_are_recovered_or_not_and_never_invalid(tmp_path: Path) -> None:
    report = check(tmp_path, [("a", "info", "outcome"), ("b", "info", "outcome"),
                              ("c", "-", "outcome"), ("d", "-", "outcome")],
                   {"outcome": ["a", "c"]})
    assert report.valid
    kind = report.kinds["outcome"]
    assert kind.recovered == ["a", "c"]
    assert kind.not_recovered == ["b", "d"]
    assert kind.indeterminate == 4


def test_kinds_are_checked_separately(tmp_path: Path) -> None:
    report = check(tmp_path, [("x", "ok", "register"), ("x", "ok", "route")],
                   {"register": ["x"], "route": []})
    assert report.kinds["register"].valid
    assert report.kinds["route"].lost == ["x"]


def test_a_read_of_a_kind_nobody_wrote_is_unexpected(tmp_path: Path) -> None:
    report = check(tmp_path, [], {"outcome": ["z"]})
    assert report.kinds["outcome"].unexpected == ["z"]
    assert not report.valid


def test_histories_of_several_processes_are_merged(tmp_path: Path) -> None:
    write(tmp_path / "w1.jsonl", [("a", "ok", "register")], "w1")
    write(tmp_path / "w2.jsonl", [("b", "ok", "register")], "w2")
    events = load(sorted(tmp_path.glob("*.jsonl")))
    assert {e.process for e in events} == {"w1", "w2"}
    report = check_set(events, {"register": ["a"]})
    assert report.kinds["register"].lost == ["b"]


def test_a_completion_without_invoke_makes_the_history_malformed(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    with History(path, "w1") as history:
        history.ok("no-such-op", "register", "a")
    report = check_set(load([path]), {"register": ["a"]})
    assert not report.valid
    assert "without an invoke" in report.malformed[0]


def test_a_second_completion_is_malformed(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    with History(path, "w1") as history:
        op = history.invoke("register", "a")
        history.ok(op, "register", "a")
        history.fail(op, "register", "a")
    report = check_set(load([path]), {"register": ["a"]})
    assert report.malformed == [f"op {op} completed twice"]


def test_a_torn_last_line_is_skipped_but_a_torn_middle_line_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    write(path, [("a", "ok", "register")])
    with path.open("ab") as f:
        f.write(b'{"type": "invo')
    assert [e.type for e in load([path])] == ["invoke", "ok"]
    with path.open("ab") as f:
        f.write(b"\n" + json.dumps({"type": "invoke"}).encode() + b"\n")
    with pytest.raises(ValueError, match="not a JSON line"):
        load([path])


def test_unknown_completion_is_refused(tmp_path: Path) -> None:
    with History(tmp_path / "h.jsonl", "w1") as history, pytest.raises(ValueError):
        history.complete("maybe", "op", "register", "a")


def test_a_sigkilled_writer_leaves_its_last_op_indeterminate(tmp_path: Path) -> None:
    """What a killed worker leaves behind: the fsync'd invoke, never a completion."""
    path = tmp_path / "h.jsonl"
    code = textwrap.dedent(f"""
        import os, signal
        from tests.faults.history import History
        h = History({str(path)!r}, "w1")
        op = h.invoke("register", "a")
        h.ok(op, "register", "a")
        h.invoke("register", "b")
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == -signal.SIGKILL
    report = check_set(load([path]), {"register": ["a"]})
    assert report.valid
    assert report.kinds["register"].not_recovered == ["b"]
