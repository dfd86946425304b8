"""A Jepsen-style history and set checker (RELIABILITY.md §2.2; jepsen's set workload).

The harness (never the system under test) appends one JSON line per event to a history file:
``invoke`` before an operation starts, then ``ok`` (acknowledged), ``fail`` (definitely not
done) or ``info`` (outcome unknown). Each line is flushed and fsync'd before the operation goes
on, so a SIGKILLed worker leaves at worst an ``invoke`` without a completion, which the checker
treats as ``info``; a torn last line is ignored.

After the faults heal, a final read straight from the database gives, per kind of operation,
the multiset of elements present. The checker then reports:

- ``lost``: acknowledged (``ok``) but absent;
- ``unexpected``: present but never attempted;
- ``duplicates``: present more than once;
- ``failed_present``: reported as failed (a definite no) but present;
- ``recovered`` / ``not_recovered``: indeterminate ops that did / did not take effect.

A history is valid when lost, unexpected, duplicates and failed_present are all empty.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EVENT_TYPES = ("invoke", "ok", "fail", "info")
COMPLETIONS = ("ok", "fail", "info")


@dataclass(frozen=True)
class Event:
    type: str
    op: str
    kind: str
    element: str
    process: str
    time: float
    extra: dict[str, Any] = field(default_factory=dict)


class History:
    """An append-only JSONL history for one process; every line is fsync'd."""

    def __init__(self, path: Path | str, process: str, *, clock: Any = time.time) -> None:
        self.path = Path(path)
        self.process = process
        self._clock = clock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def invoke(self, kind: str, element: str, **extra: Any) -> str:
        """Record that ``kind`` of ``element`` starts; returns the op id for its completion."""
        op = uuid.uuid4().hex
        self._append("invoke", op, kind, element, extra)
        return op

    def ok(self, op: str, kind: str, element: str, **extra: Any) -> None:
        self._append("ok", op, kind, element, extra)

    def fail(self, op: str, kind: str, element: str, **extra: Any) -> None:
        self._append("fail", op, kind, element, extra)

    def info(self, op: str, kind: str, element: str, **extra: Any) -> None:
        self._append("info", op, kind, element, extra)

    def complete(self, verdict: str, op: str, kind: str, element: str, **extra: Any) -> None:
        if verdict not in COMPLETIONS:
            raise ValueError(f"unknown completion {verdict!r}")
        self._append(verdict, op, kind, element, extra)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _append(self, type_: str, op: str, kind: str, element: str,
                extra: Mapping[str, Any]) -> None:
        line = {"type": type_, "op": op, "kind": kind, "element": element,
                "process": self.process, "time": self._clock(), **extra}
        data = (json.dumps(line, sort_keys=True) + "\n").encode()
        written = os.write(self._fd, data)  # O_APPEND: one write, never interleaved
        if written != len(data):  # pragma: no cover - a full disk
            raise OSError(f"short write to {self.path}")
        os.fsync(self._fd)


def load(paths: Iterable[Path | str]) -> list[Event]:
    """Every event of the given history files, in time order; torn last lines are skipped."""
    events: list[Event] = []
    for path in paths:
        lines = Path(path).read_bytes().split(b"\n")
        for number, raw in enumerate(lines):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except ValueError:
                if number == len(lines) - 1:
                    continue  # a line torn by SIGKILL: only ever the last one
                raise ValueError(f"{path}:{number + 1}: not a JSON line") from None
            base = {k: record.pop(k) for k in ("type", "op", "kind", "element", "process",
                                               "time")}
            if base["type"] not in EVENT_TYPES:
                raise ValueError(f"{path}:{number + 1}: unknown event type {base['type']!r}")
            events.append(Event(**base, extra=record))
    events.sort(key=lambda e: e.time)
    return events


@dataclass
class KindReport:
    """The checker's verdict for one kind of operation."""

    kind: str
    attempted: int = 0
    ok: int = 0
    failed: int = 0
    indeterminate: int = 0
    lost: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    duplicates: dict[str, int] = field(default_factory=dict)
    failed_present: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    not_recovered: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not (self.lost or self.unexpected or self.duplicates or self.failed_present)

    def counts(self) -> dict[str, int]:
        return {"attempted": self.attempted, "ok": self.ok, "fail": self.failed,
                "info": self.indeterminate, "lost": len(self.lost),
                "duplicated": len(self.duplicates), "unexpected": len(self.unexpected),
                "failed_present": len(self.failed_present),
                "recovered": len(self.recovered), "not_recovered": len(self.not_recovered)}


@dataclass
class SetReport:
    kinds: dict[str, KindReport]
    malformed: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.malformed and all(k.valid for k in self.kinds.values())

    def totals(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for report in self.kinds.values():
            total.update(report.counts())
        return dict(total)

    def summary(self) -> str:
        lines = [f"{'kind':<16}" + "".join(f"{k:>15}" for k in _COLUMNS)]
        for kind, report in sorted(self.kinds.items()):
            counts = report.counts()
            lines.append(f"{kind:<16}" + "".join(f"{counts[k]:>15}" for k in _COLUMNS))
        totals = self.totals()
        lines.append(f"{'total':<16}" + "".join(f"{totals.get(k, 0):>15}" for k in _COLUMNS))
        for problem in self.malformed:
            lines.append(f"malformed: {problem}")
        for kind, report in sorted(self.kinds.items()):
            for name in ("lost", "unexpected", "failed_present"):
                items = getattr(report, name)
                if items:
                    lines.append(f"{kind} {name}: {sorted(items)[:20]}")
            if report.duplicates:
                lines.append(f"{kind} duplicates: {dict(list(report.duplicates.items())[:20])}")
        return "\n".join(lines)


_COLUMNS = ("attempted", "ok", "fail", "info", "lost", "duplicated", "unexpected",
            "failed_present", "recovered", "not_recovered")


def check_set(events: Iterable[Event], final: Mapping[str, Iterable[str]]) -> SetReport:
    """Compare what the history says happened with a final read (kind → elements present)."""
    by_op: dict[str, Event] = {}
    outcome: dict[str, str] = {}  # op → ok | fail | info
    malformed: list[str] = []
    for event in events:
        if event.type == "invoke":
            if event.op in by_op:
                malformed.append(f"op {event.op} invoked twice")
            by_op[event.op] = event
            continue
        invoked = by_op.get(event.op)
        if invoked is None:
            malformed.append(f"{event.type} of op {event.op} without an invoke")
            continue
        if (invoked.kind, invoked.element) != (event.kind, event.element):
            malformed.append(f"op {event.op} completed as a different kind or element")
        if event.op in outcome:
            malformed.append(f"op {event.op} completed twice")
            continue
        outcome[event.op] = event.type
    status: dict[str, dict[str, str]] = {}  # kind → element → strongest verdict
    strength = {"ok": 3, "info": 2, "fail": 1}
    for op, invoked in by_op.items():
        verdict = outcome.get(op, "info")  # never completed: indeterminate
        per_kind = status.setdefault(invoked.kind, {})
        previous = per_kind.get(invoked.element)
        if previous is None or strength[verdict] > strength[previous]:
            per_kind[invoked.element] = verdict
    kinds: dict[str, KindReport] = {}
    for kind in sorted(set(status) | set(final)):
        kinds[kind] = _check_kind(kind, status.get(kind, {}), Counter(final.get(kind, ())))
    return SetReport(kinds, malformed)


def _check_kind(kind: str, verdicts: Mapping[str, str], present: Counter[str]) -> KindReport:
    report = KindReport(kind, attempted=len(verdicts))
    for element, verdict in sorted(verdicts.items()):
        there = present[element] > 0
        if verdict == "ok":
            report.ok += 1
            if not there:
                report.lost.append(element)
        elif verdict == "fail":
            report.failed += 1
            if there:
                report.failed_present.append(element)
        else:
            report.indeterminate += 1
            (report.recovered if there else report.not_recovered).append(element)
    report.unexpected = sorted(e for e in present if e not in verdicts)
    report.duplicates = {e: n for e, n in sorted(present.items()) if n > 1}
    return report
