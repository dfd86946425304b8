"""The API's body-field checks (api/server.typed): the field and rule a wrong value gets."""

from __future__ import annotations

import pytest

from arbiter_cli.api.server import typed
from arbiter_cli.errors import InvalidInput


def refusal(*args: object, **kwargs: object) -> tuple[str, str, str]:
    with pytest.raises(InvalidInput) as caught:
        typed(*args, **kwargs)  # type: ignore[arg-type]
    return caught.value.details["field"], caught.value.details["rule"], caught.value.message


def test_a_value_of_its_kind_is_itself_and_an_absent_optional_one_is_none() -> None:
    assert typed("x", "reason", str) == "x"
    assert typed(False, "success", bool, required="give success") is False
    assert typed(None, "reason", str) is None


def test_an_optional_field_of_another_type_is_rule_type() -> None:
    assert refusal(3, "task_id", str)[:2] == ("task_id", "type")
    assert refusal("yes", "success", bool)[:2] == ("success", "type")
    assert "true or false" in refusal(1, "success", bool)[2]


def test_a_required_field_missing_or_of_another_type_is_rule_required() -> None:
    assert refusal(None, "status", str, required="give the new status")[:2] == ("status",
                                                                                "required")
    field, rule, message = refusal(1, "role", str, required="give role")
    assert (field, rule) == ("role", "required") and "give role" in message
