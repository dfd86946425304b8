"""Two small pieces the API server leans on: the per-process count of a tenant's pending
journal entries (``journal.PendingProbe``) and the one ``audit verify`` document
(``Verdict.document``), shared by the CLI and the API."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from arbiter_cli.domain.security import Verdict
from arbiter_cli.errors import CheckFailed
from arbiter_cli.resilience.journal import PendingProbe, open_journal

URL = "postgresql+psycopg2://arbiter@db.example:5432/arbiter"


def _append(data_dir: Path, tenant: str, n: int) -> None:
    journal = open_journal(data_dir, URL, max_entries=100)
    try:
        for i in range(n):
            journal.append(op_id=f"{tenant}-{i}", tenant=tenant, kind="route task",
                           principal={"tenant": tenant, "role": "admin", "token_id": None},
                           args={"task": {"task_type": "testing"}})
    finally:
        journal.close()


def test_the_probe_counts_what_other_connections_committed_per_tenant(tmp_path: Path) -> None:
    probe = PendingProbe(tmp_path, URL, max_entries=100)
    try:
        assert probe("t1") == 0  # opens the journal (made private), nothing waits yet
        _append(tmp_path, "t1", 2)
        _append(tmp_path, "t2", 1)
        assert (probe("t1"), probe("t2"), probe("t3")) == (2, 1, 0)
        probe.close()
        assert probe("t1") == 2  # reopened after close
    finally:
        probe.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a folder whatever its mode")
def test_a_probe_that_cannot_read_the_journal_says_none(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data_dir.chmod(0o500)
    probe = PendingProbe(data_dir, URL, max_entries=100)
    try:
        assert probe("t1") is None
    finally:
        probe.close()
        data_dir.chmod(0o700)


def test_a_probe_on_a_data_dir_that_is_a_file_says_none(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    probe = PendingProbe(not_a_folder, URL, max_entries=100)
    assert probe("t1") is None
    assert probe("t1") is None  # and again, without a journal kept from the first try
    probe.close()


def _verdict(ok: bool) -> Verdict:
    return Verdict(ok=ok, events=3 if ok else 1, head_seq=3 if ok else 1,
                   head_hash="ab" * 32, first_bad_seq=None if ok else 2,
                   reason=None if ok else "hash mismatch")


def test_a_chain_that_verifies_is_the_document_of_audit_verify() -> None:
    verdict = _verdict(ok=True)
    assert verdict.document(keyed=True) == {
        "ok": True, "events": 3, "head": f"3:{'ab' * 32}", "head_seq": 3,
        "head_hash": "ab" * 32, "keyed": True, "first_bad_seq": None, "reason": None}
    assert verdict.document(keyed=False)["keyed"] is False


def test_a_broken_chain_is_check_failed_carrying_the_document() -> None:
    with pytest.raises(CheckFailed) as caught:
        _verdict(ok=False).document(keyed=False)
    assert str(caught.value.message) == (
        f"audit chain broken at seq 2: hash mismatch (last good head 1:{'ab' * 32})")
    assert caught.value.details == {
        "ok": False, "events": 1, "head": f"1:{'ab' * 32}", "head_seq": 1,
        "head_hash": "ab" * 32, "keyed": False, "first_bad_seq": 2, "reason": "hash mismatch"}
