"""The journal's listing and conflict queries, and journal records of decisions: entries past
the first page, the agent ids that conflicted registrations leave behind, and plain JSON from
read-only decision fields (first written to kill the mutants of docs/mutation.md)."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

from arbiter_cli.domain.routing import Decision
from arbiter_cli.resilience.journal import Journal
from arbiter_cli.resilience.records import decision_from, decision_record

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z


class Ticker:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------------------- journal


def test_the_journal_lists_entries_beyond_the_first_hundred_and_twenty_four(tmp_path: Path):
    """Without ``before``, the listing starts above every possible seq, not at a small one."""
    journal = Journal(tmp_path / "journal.db", clock=Ticker())
    try:
        for n in range(130):
            journal.append(op_id=f"op-{n}", tenant="default", kind="agents.heartbeat",
                           principal={"tenant": "default", "role": "admin", "token_id": None},
                           args={"agent_id": f"a{n}"})
        listed = journal.entries(limit=0)
        assert len(listed) == 130
        assert listed[0].op_id == "op-129"
    finally:
        journal.close()


def register(journal: Journal, n: int, tenant: str, ids: object,
             kind: str = "agents.register") -> int:
    return journal.append(op_id=f"op-{n}", tenant=tenant, kind=kind,
                          principal={"tenant": tenant, "role": "admin", "token_id": None},
                          args={"raws": ids})


def test_conflicting_registrations_name_the_agent_ids_later_ops_must_not_touch(tmp_path: Path):
    """Only conflicted registrations of this tenant, earlier than the given seq, count; an
    entry without documents, or one another version wrote differently, is passed over."""
    journal = Journal(tmp_path / "journal.db", clock=Ticker())
    with sqlite3.connect(tmp_path / "journal.db") as other:  # a corrupt entry comes first
        other.execute("INSERT INTO entries (op_id, tenant, kind, principal, args, created_at, "
                      "state) VALUES ('op-0', 'acme', 'agents.register', '{}', '[1, 2]', 0, "
                      "'conflict')")
    other.close()
    try:
        conflicted = [
            journal.append(op_id="op-00", tenant="acme", kind="agents.register",
                           principal={}, args={}),                       # no documents at all
            register(journal, 1, "acme", [{"id": "a1"}, {"id": "a2"}, {"no": "id"}, "a9"]),
            register(journal, 2, "other", [{"id": "b1"}]),                # another tenant
            register(journal, 3, "acme", [{"id": "u1"}], "agents.update"),  # not a register
            register(journal, 4, "acme", "not a list of documents"),
        ]
        register(journal, 5, "acme", [{"id": "p1"}])                      # pending, no conflict
        before = register(journal, 6, "acme", [{"id": "x1"}])
        late = register(journal, 7, "acme", [{"id": "l1"}])                # after before_seq
        for seq in [*conflicted, before, late]:
            journal.conflict(seq, "exists")
        assert journal.conflicting_agent_ids("acme", before) == {"a1", "a2"}
        assert journal.conflicting_agent_ids("acme", late + 1) == {"a1", "a2", "x1", "l1"}
        assert journal.conflicting_agent_ids("other", late + 1) == {"b1"}
        assert journal.conflicting_agent_ids("nobody", late + 1) == set()
    finally:
        journal.close()


# ---------------------------------------------------------------------------- records


def test_a_decision_with_read_only_fields_becomes_plain_json():
    """Decision fields are Mappings and sequences; a backend may hand over read-only ones.
    The journal record must still be plain JSON that decodes back to an equal decision."""
    at = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)
    decision = Decision(
        decision_id="d-1", tenant="default", task_id="T-1", task_type="testing",
        requirements=MappingProxyType({"task_type": "testing"}),
        metadata=MappingProxyType({"team": "infra"}), priority=5, agent_id="a1",
        agent_uid="u1", strategy="thompson", seed=7, explored=False, confidence=0.5,
        candidates=[], excluded=MappingProxyType({"capacity": 1}),
        examples=MappingProxyType({"capacity": ("a2", "a3")}), config_hash="h",
        latency_us=10, created_at=at, outcome=MappingProxyType({"success": True}))
    record = json.loads(json.dumps(decision_record(decision)))
    assert record["requirements"] == {"task_type": "testing"}
    assert record["metadata"] == {"team": "infra"}
    assert record["excluded"] == {"capacity": 1}
    assert record["outcome"] == {"success": True}
    assert record["examples"] == {"capacity": ["a2", "a3"]}
    back = decision_from(record)
    assert (back.task_id, back.created_at, dict(back.excluded)) == ("T-1", at, {"capacity": 1})
