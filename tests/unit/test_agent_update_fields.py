"""The fields of ``agents update``: the first unknown field is named, options left unset are no
change (first written to kill the mutants of docs/mutation.md)."""

from __future__ import annotations

import pytest

from arbiter_cli.config import DEFAULT_LANGUAGES, DEFAULT_TASK_TYPES
from arbiter_cli.domain.agents import Patch, RegistryPolicy
from arbiter_cli.errors import InvalidInput

POLICY = RegistryPolicy(task_types=tuple(DEFAULT_TASK_TYPES), languages=tuple(DEFAULT_LANGUAGES))


def test_agents_update_names_the_first_unknown_field():
    with pytest.raises(InvalidInput) as caught:
        Patch.parse({"zeta": 1, "bogus": 2, "name": "x"}, POLICY)
    error = caught.value
    assert (error.field, error.rule) == ("bogus", "unknown_field")
    assert error.message == "bogus: is not a field agents update changes"


def test_agents_update_ignores_unknown_options_left_unset():
    """The CLI passes every option; one left at None is no change, known or not."""
    assert Patch.parse({"bogus": None, "name": "New"}, POLICY) == Patch(name="New")
