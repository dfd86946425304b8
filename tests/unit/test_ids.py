"""UUIDv7 ids (arbiter_cli/ids.py): the text is the canonical UUID form, version 7, variant 10."""

from __future__ import annotations

import uuid

import pytest

from arbiter_cli import ids
from arbiter_cli.ids import uuid7


@pytest.fixture(autouse=True)
def fresh_sequence(monkeypatch):
    """Each test starts the process's sequence afresh: ids minted before (by other tests, or
    by this one in an earlier run of the same process, as mutmut's stats pass does) would
    carry their millisecond and counter into these ones."""
    monkeypatch.setattr(ids, "_last", [-1, 0])


def test_the_text_is_the_canonical_uuid_form_of_version_7():
    for now_ms in (0, 1, 1_700_000_000_000, (1 << 48) - 1):
        text = uuid7(now_ms)
        parsed = uuid.UUID(text)
        assert str(parsed) == text  # lower-case hex, hyphens at 8-4-4-4-12
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        assert parsed.int >> 80 >= now_ms & ((1 << 48) - 1)


def test_ids_of_one_process_increase():
    ids = [uuid7(1_700_000_000_000) for _ in range(3000)]  # past the 12-bit counter
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 36 and i[14] == "7" for i in ids)
