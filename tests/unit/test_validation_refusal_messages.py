"""The refusals of the field validators at their edges: deep nesting, NUL characters and lone
surrogates, digit separators, labels that grow when lower-cased (first written to kill the
mutants of docs/mutation.md).

Each rejection is checked for its field, its rule and its exact message: the message is the one
line an operator reads, so a changed word is a changed contract.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

from arbiter_cli.domain import validation as v
from arbiter_cli.errors import InvalidInput


def rejection(call: Any, *args: Any, **kwargs: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        call(*args, **kwargs)
    return caught.value


def refused(call: Any, *args: Any, **kwargs: Any) -> tuple[str, str, str]:
    """The (field, rule, message) of the InvalidInput that the call raises."""
    error = rejection(call, *args, **kwargs)
    return error.field, error.rule, error.message


# ---------------------------------------------------------------------------- metadata


def test_metadata_text_nested_beyond_the_parser_s_depth_is_rejected_as_json():
    """json.loads gives up with RecursionError on very deep nesting: a clean 2, not a crash."""
    deep = "[" * (sys.getrecursionlimit() * 20)
    assert refused(v.metadata, deep, "agents[0].metadata") == (
        "agents[0].metadata", "json", "agents[0].metadata: is nested too deeply")


def test_a_metadata_object_nested_beyond_the_encoder_s_depth_is_rejected_as_json():
    """An already-parsed object too deep to encode fails the same way."""
    document: dict[str, Any] = {}
    inner = document
    for _ in range(sys.getrecursionlimit() * 2):
        inner["a"] = {}
        inner = inner["a"]
    assert refused(v.metadata, document, "meta") == ("meta", "json", "meta: is nested too deeply")


def test_metadata_with_an_integer_beyond_python_s_digit_limit_is_rejected_as_json():
    """Python refuses to parse integers of more than 4300 digits; the reason is kept."""
    error = rejection(v.metadata, '{"n": ' + "9" * 5000 + "}", "meta")
    assert (error.field, error.rule) == ("meta", "json")
    assert error.message.startswith("meta: is not acceptable JSON (")
    assert "digits" in error.message


@pytest.mark.parametrize("document", [
    {"note": "a\x00b"},
    {"a\x00": "key holds the NUL"},
    {"list": ["ok", "bad\x00"]},
    {"deep": {"deeper": [{"x": "\x00"}]}},
], ids=["value", "key", "list item", "nested"])
def test_metadata_rejects_a_nul_character_anywhere(document):
    """PostgreSQL's jsonb cannot store NUL, so every backend rejects it wherever it hides."""
    assert refused(v.metadata, document, "metadata") == (
        "metadata", "no_nul", "metadata: must not contain NUL characters or lone surrogates")


@pytest.mark.parametrize("surrogate", ["\ud800", "\udbff", "\udc00", "\udfff"],
                         ids=["first", "high-last", "low-first", "last"])
def test_metadata_rejects_lone_surrogates_across_the_whole_range(surrogate):
    """U+D800 to U+DFFF, both ends included, cannot be encoded as UTF-8."""
    error = rejection(v.metadata, {"k": f"x{surrogate}y"}, "metadata")
    assert error.rule == "no_nul"


@pytest.mark.parametrize("text", ["\ud7ff", "\ue000", "\U0001f600", "plain"])
def test_metadata_keeps_characters_next_to_the_surrogate_range(text):
    """The neighbours of the surrogate range and real astral characters are fine."""
    assert v.metadata({"k": text, text: [text]}) == {"k": text, text: [text]}


def test_a_metadata_value_that_is_not_text_is_never_mistaken_for_nul():
    assert v.metadata({"n": 0, "b": False, "none": None, "f": 0.0}) == {
        "n": 0, "b": False, "none": None, "f": 0.0}


# ---------------------------------------------------------------------------- text, numbers


@pytest.mark.parametrize("value", ["a\ud800", "\udfffb"])
def test_text_rejects_lone_surrogates(value):
    assert refused(v.text, value, "name") == (
        "name", "no_control_characters",
        "name: must not contain control characters or lone surrogates")


@pytest.mark.parametrize("value", ["1_000", "0.5_0", "_1"])
def test_finite_rejects_python_digit_separators_in_text(value):
    """float() accepts 1_000; a number given as text must not."""
    assert refused(v.finite, value, "latency_ms") == (
        "latency_ms", "type", "latency_ms: must be a number")


def test_finite_accepts_text_without_separators():
    assert v.finite("1000.5", "latency_ms") == 1000.5


# ---------------------------------------------------------------------------- labels


def test_a_65_character_label_fails_the_length_rule_of_text():
    """The 64-character limit is checked on the label as given first."""
    assert refused(v.labels, ["x" * 65], "specializations") == (
        "specializations", "length", "specializations: must be 1 to 64 characters")


def test_a_label_that_grows_past_64_when_lower_cased_is_rejected():
    """'İ' lower-cases to two characters: 64 given become 65 stored, which is too long."""
    label = "İ" + "a" * 63
    assert len(label) == 64 and len(label.lower()) == 65
    assert refused(v.labels, [label], "prefer_specializations") == (
        "prefer_specializations", "length",
        "prefer_specializations: must be 1 to 64 characters, also when lower-cased")


def test_a_label_of_64_characters_also_when_lower_cased_is_accepted():
    label = "İ" + "a" * 62
    assert len(label.lower()) == 64
    assert v.labels([label], "s") == (label,)


def test_labels_are_duplicates_exactly_when_their_lower_case_forms_match():
    """Matching compares lower-cased labels, so deduplication must use the same folding:
    'ß' and 'ss' stay two labels (their upper-case forms are equal, their lower-case not)."""
    assert v.labels(["ß", "ss", "SS"], "s") == ("ss", "ß")
