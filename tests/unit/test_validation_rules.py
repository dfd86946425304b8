"""Field validators: each accepts what SPEC §2.1 allows and raises InvalidInput(field, rule)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from arbiter_cli.domain import validation as v
from arbiter_cli.errors import InvalidInput

LANGS = ("TypeScript", "JavaScript", "Python", "Rust", "Go", "Java", "C++", "C#")


def refusal(call: Any, *args: Any, **kwargs: Any) -> InvalidInput:
    """Call and return the InvalidInput it raises: exit code 2, its details naming field and rule."""
    with pytest.raises(InvalidInput) as caught:
        call(*args, **kwargs)
    error = caught.value
    assert error.exit_code == 2
    assert error.details == {"field": error.field, "rule": error.rule}
    return error


def refused(call: Any, *args: Any, **kwargs: Any) -> tuple[str, str]:
    """The (field, rule) of the InvalidInput that the call raises."""
    error = refusal(call, *args, **kwargs)
    return error.field, error.rule


# ---------------------------------------------------------------------------- fail / pattern


def test_fail_builds_an_invalid_input_prefixed_with_its_field():
    """fail() returns (not raises) an InvalidInput whose message starts with the field."""
    error = v.fail("agents.id", "pattern", "is bad")
    assert isinstance(error, InvalidInput)
    assert error.message == "agents.id: is bad"
    assert error.to_dict() == {"error": {
        "code": "invalid_input", "message": "agents.id: is bad", "exit_code": 2,
        "details": {"field": "agents.id", "rule": "pattern"}}}


@pytest.mark.parametrize("agent_id", ["a", "A", "0", "a.b:c-d_e", "Z" + "x" * 127])
def test_agent_id_pattern_accepts_valid_ids_unchanged(agent_id):
    """Valid agent ids, up to 128 characters, come back as given."""
    assert v.pattern(agent_id, v.AGENT_ID_RE, "id", "agent id") == agent_id


@pytest.mark.parametrize("agent_id", ["", ".a", "-a", "_a", ":a", "a b", "a/b", "\na", "a\nb",
                                      "é", "a" * 129])
def test_agent_id_pattern_rejects_invalid_ids(agent_id):
    """Empty, leading punctuation, spaces, slashes and 129 characters are rejected, not rewritten."""
    assert refused(v.pattern, agent_id, v.AGENT_ID_RE, "id", "agent id") == ("id", "pattern")


def test_agent_id_of_exactly_128_characters_is_accepted_and_129_rejected():
    """The id length limit is exactly 128."""
    assert v.pattern("a" * 128, v.AGENT_ID_RE, "id", "agent id") == "a" * 128
    assert refused(v.pattern, "a" * 129, v.AGENT_ID_RE, "id", "agent id") == ("id", "pattern")


@pytest.mark.parametrize(("regex", "value"), [(v.AGENT_ID_RE, "coder-1\n"), (v.SLUG_RE, "review\n"),
                                              (v.MODEL_FAMILY_RE, "claude\n"), (v.TASK_ID_RE, "t-1\n")],
                         ids=["agent_id", "slug", "model_family", "task_id"])
def test_patterns_reject_a_trailing_newline(regex, value):
    """Regression: '$' also matches before a final newline, so patterns must match in full."""
    assert refused(v.pattern, value, regex, "id", "id") == ("id", "pattern")


@pytest.mark.parametrize("value", [None, 5, ["a"], b"a"])
def test_pattern_rejects_non_strings_as_a_pattern_failure(value):
    """A value that is not a string never matches."""
    assert refused(v.pattern, value, v.AGENT_ID_RE, "x.id", "agent id") == ("x.id", "pattern")


def test_pattern_message_names_the_value_what_and_regex():
    """The message shows the offending value, what was expected and the regex."""
    error = refusal(v.pattern, "Bad", v.SLUG_RE, "task_types", "task type")
    assert (error.field, error.rule) == ("task_types", "pattern")
    assert error.message == (
        f"task_types: 'Bad' is not a valid task type ({v.SLUG_RE.pattern})"
    )


def test_long_values_are_shown_truncated_to_80_characters():
    """A repr over 80 characters is cut to 77 plus '...'; one of exactly 80 is shown whole."""
    whole = refusal(v.pattern, "X" * 78, v.SLUG_RE, "f", "slug")
    assert (whole.field, whole.rule) == ("f", "pattern")
    assert f"'{'X' * 78}' is not" in whole.message
    cut = refusal(v.pattern, "X" * 79, v.SLUG_RE, "f", "slug")
    assert (cut.field, cut.rule) == ("f", "pattern")
    assert f"'{'X' * 76}... is not" in cut.message


@pytest.mark.parametrize(("regex", "good", "bad"), [
    (v.SLUG_RE, ["code-review", "file_editing", "a", "0" + "a" * 63], ["Code", "-a", "a.b", "a" * 65]),
    (v.MODEL_FAMILY_RE, ["gpt-4.1", "claude", "a" * 64], ["Claude", ".a", "a b", "a" * 65]),
    (v.TASK_ID_RE, ["-a", "a", "x" * 128], ["", "a b", "x" * 129]),
])
def test_slug_model_family_and_task_id_patterns(regex, good, bad):
    """Each pattern has its own alphabet and a 64 (or 128) character limit."""
    for value in good:
        assert v.pattern(value, regex, "f", "thing") == value
    for value in bad:
        assert refused(v.pattern, value, regex, "f", "thing") == ("f", "pattern")


# ---------------------------------------------------------------------------- text


@pytest.mark.parametrize("value", ["a", "x" * 200, "Zoë the 🤖 reviewer", "  spaced  "])
def test_text_accepts_1_to_200_characters(value):
    """Names of 1 to 200 characters, Unicode included, are accepted as given."""
    assert v.text(value, "name") == value


@pytest.mark.parametrize("value", ["", "x" * 201])
def test_text_rejects_empty_and_201_characters(value):
    """Length is checked against [1, 200] inclusive."""
    error = refusal(v.text, value, "name")
    assert (error.field, error.rule) == ("name", "length")
    assert error.message == "name: must be 1 to 200 characters"


def test_text_honours_custom_length_bounds():
    """min_len and max_len are inclusive bounds."""
    assert v.text("abc", "f", min_len=3, max_len=3) == "abc"
    assert refused(v.text, "ab", "f", min_len=3, max_len=5) == ("f", "length")
    assert refused(v.text, "abcdef", "f", min_len=3, max_len=5) == ("f", "length")


@pytest.mark.parametrize("value", ["a\nb", "tab\there", "nul\x00", "del\x7f", "nel\x85", "\x1b[31m"])
def test_text_rejects_control_characters(value):
    """Newlines, tabs, NUL, DEL, C1 controls and escape sequences are rejected."""
    assert refused(v.text, value, "name") == ("name", "no_control_characters")


@pytest.mark.parametrize("value", [None, 5, ["a"]])
def test_text_rejects_non_strings(value):
    """Only strings are text."""
    assert refused(v.text, value, "name") == ("name", "type")


# ---------------------------------------------------------------------------- integer


@pytest.mark.parametrize(("value", "expected"), [(1, 1), (1000, 1000), (500, 500), ("42", 42),
                                                 (" 7 ", 7), ("0001", 1)])
def test_integer_accepts_ints_and_numeric_strings_within_range(value, expected):
    """Bounds are inclusive and numeric strings are converted to int."""
    result = v.integer(value, "capacity", low=1, high=1000)
    assert result == expected
    assert type(result) is int


def test_integer_accepts_negative_numeric_strings():
    """A leading minus sign is allowed in numeric strings."""
    assert v.integer("-3", "n", low=-5, high=5) == -3


@pytest.mark.parametrize("value", [0, 1001, "0", "1001", -1])
def test_integer_rejects_values_outside_the_range(value):
    """One below low and one above high are out of range."""
    assert refused(v.integer, value, "capacity", low=1, high=1000) == ("capacity", "range")


def test_integer_range_message_shows_bounds_and_value():
    """The range message says what is allowed and what was given."""
    error = refusal(v.integer, 1001, "capacity", low=1, high=1000)
    assert (error.field, error.rule) == ("capacity", "range")
    assert error.message == "capacity: must be from 1 to 1000 (got 1001)"


@pytest.mark.parametrize("value", [True, False, 5.0, "5.0", "1e3", "", "abc", "+5", None, [5]])
def test_integer_rejects_bools_floats_and_other_strings(value):
    """Booleans are not integers, and neither are floats or non-numeric strings."""
    assert refused(v.integer, value, "n", low=0, high=10) == ("n", "type")


def test_integer_strings_are_limited_to_19_digits():
    """A 19-digit string converts (int64 range); a 20-digit string is not a number here."""
    assert v.integer("9" * 19, "n", low=0, high=10**20) == 10**19 - 1
    assert refused(v.integer, "1" + "0" * 19, "n", low=0, high=10**20) == ("n", "type")


# ---------------------------------------------------------------------------- fraction / finite


@pytest.mark.parametrize(("value", "expected"), [(0, 0.0), (1, 1.0), (0.0, 0.0), (1.0, 1.0),
                                                 (0.5, 0.5), ("0.25", 0.25)])
def test_fraction_accepts_0_and_1_inclusive(value, expected):
    """Fractions live in [0, 1], both ends included, returned as float."""
    result = v.fraction(value, "quality")
    assert result == expected
    assert type(result) is float


@pytest.mark.parametrize("value", [-0.000001, 1.000001, -1, 2, "1.5"])
def test_fraction_rejects_values_outside_0_1(value):
    """Just below 0 or just above 1 is out of range."""
    assert refused(v.fraction, value, "quality") == ("quality", "range")


@pytest.mark.parametrize("value", [math.nan, math.inf, "nan", "NaN", "inf", "-Infinity"])
def test_fraction_rejects_nan_and_infinity(value):
    """NaN and infinity, as numbers or strings, fail the finite rule."""
    assert refused(v.fraction, value, "quality") == ("quality", "finite")


@pytest.mark.parametrize("value", [True, False, None, "abc", "", [0.5], {"a": 1}])
def test_finite_rejects_non_numbers(value):
    """Booleans, None, non-numeric strings and containers are not numbers."""
    error = refusal(v.finite, value, "latency_ms")
    assert (error.field, error.rule) == ("latency_ms", "type")
    assert error.message == "latency_ms: must be a number"


@pytest.mark.parametrize(("value", "expected"), [(5, 5.0), (2.5, 2.5), ("3.5", 3.5), (-1e300, -1e300)])
def test_finite_returns_a_float_without_a_lower_bound_by_default(value, expected):
    """Without ``low`` any finite number passes, converted to float."""
    result = v.finite(value, "x")
    assert result == expected
    assert type(result) is float


def test_finite_lower_bound_is_inclusive():
    """low=0 accepts 0 and rejects the smallest negative step."""
    assert v.finite(0, "latency_ms", low=0.0) == 0.0
    error = refusal(v.finite, -0.5, "latency_ms", low=0.0)
    assert (error.field, error.rule) == ("latency_ms", "range")
    assert error.message == "latency_ms: must be >= 0 (got -0.5)"


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_finite_rejects_nan_and_infinity_with_the_finite_rule(value):
    """Infinite and NaN values fail as 'finite', not as 'range'."""
    error = refusal(v.finite, value, "x", low=0.0)
    assert (error.field, error.rule) == ("x", "finite")
    assert error.message == "x: must be a finite number (NaN and infinity are rejected)"


def test_finite_rejects_an_integer_too_large_for_a_float():
    """Regression: a JSON integer with 400 digits is invalid input (exit 2), not an internal error."""
    error = refusal(v.finite, 10**400, "latency_ms", low=0.0)
    assert (error.field, error.rule) == ("latency_ms", "finite")
    assert error.message == "latency_ms: must be a finite number (too large)"


# ---------------------------------------------------------------------------- string_list


@pytest.mark.parametrize(("value", "expected"), [("a", ["a"]), (["a", "b"], ["a", "b"]),
                                                 (("a", "b"), ["a", "b"]), ([], [])])
def test_string_list_accepts_a_string_a_list_or_a_tuple(value, expected):
    """A single string becomes a one-item list; lists and tuples become lists."""
    assert v.string_list(value, "languages") == expected


def test_string_list_returns_a_new_list():
    """The caller's list is copied, not returned."""
    given = ["a"]
    result = v.string_list(given, "f")
    assert result == given
    assert result is not given


@pytest.mark.parametrize("value", [None, 5, {"a": "b"}, ["a", 1], [None]])
def test_string_list_rejects_anything_else(value):
    """Non-lists and lists with non-strings fail the type rule."""
    error = refusal(v.string_list, value, "languages")
    assert (error.field, error.rule) == ("languages", "type")
    assert error.message == "languages: must be a list of strings"


# ---------------------------------------------------------------------------- choose


def test_choose_maps_values_to_their_canonical_spelling():
    """Matching ignores case; the allowed spelling is stored."""
    assert v.choose(["python", "RUST", "c#"], LANGS, "languages") == ("C#", "Python", "Rust")


def test_choose_deduplicates_case_insensitively():
    """The same value in several spellings is kept once."""
    assert v.choose(["Go", "go", "GO"], LANGS, "languages") == ("Go",)


def test_choose_returns_a_sorted_tuple():
    """The result is sorted by canonical spelling, whatever the input order."""
    assert v.choose(["TypeScript", "C++", "Java", "Go"], LANGS, "l") == ("C++", "Go", "Java", "TypeScript")


def test_choose_of_nothing_is_empty():
    """No values give an empty tuple."""
    assert v.choose([], LANGS, "languages") == ()


def test_choose_rejects_an_unknown_value_listing_the_allowed_ones():
    """The error names the bad value and every allowed value, sorted."""
    error = refusal(v.choose, ["Python", "Cobol"], LANGS, "[2].languages")
    assert (error.field, error.rule) == ("[2].languages", "allowed")
    assert error.message == ("[2].languages: unknown value 'Cobol' (allowed: C#, C++, Go, Java, "
                             "JavaScript, Python, Rust, TypeScript)")


def test_choose_rejects_non_string_values():
    """A non-string can never be an allowed value."""
    assert refused(v.choose, [3], LANGS, "languages") == ("languages", "allowed")


# ---------------------------------------------------------------------------- labels


def test_labels_keep_the_first_spelling_of_a_repeated_label():
    """Duplicates that differ only in case collapse to the first spelling seen."""
    assert v.labels(["GPU", "gpu", "Gpu"], "specializations") == ("GPU",)
    assert v.labels(["gpu", "GPU"], "specializations") == ("gpu",)


def test_labels_are_sorted_ignoring_case():
    """Labels are ordered case-insensitively."""
    assert v.labels(["beta", "Alpha", "gamma"], "s") == ("Alpha", "beta", "gamma")


def test_labels_accept_64_characters_and_reject_65():
    """A label is 1 to 64 characters."""
    assert v.labels(["x" * 64], "s") == ("x" * 64,)
    assert refused(v.labels, ["x" * 65], "s") == ("s", "length")
    assert refused(v.labels, [""], "s") == ("s", "length")


def test_labels_reject_control_characters_and_non_strings():
    """Labels are text: no control characters, strings only."""
    assert refused(v.labels, ["ok", "bad\n"], "s") == ("s", "no_control_characters")
    assert refused(v.labels, [7], "s") == ("s", "type")


# ---------------------------------------------------------------------------- metadata


def test_metadata_accepts_a_dict_and_returns_a_copy():
    """A dict comes back equal but as a new object."""
    given = {"team": "infra", "tier": 2}
    result = v.metadata(given)
    assert result == given
    assert result is not given


def test_metadata_parses_a_json_object_string():
    """A JSON string holding an object is parsed."""
    assert v.metadata('{"a": [1, 2], "b": null}') == {"a": [1, 2], "b": None}


def test_metadata_rejects_invalid_json():
    """Text that is not JSON fails the json rule, with the decoder's reason."""
    error = refusal(v.metadata, "{not json")
    assert (error.field, error.rule) == ("metadata", "json")
    assert error.message.startswith("metadata: is not valid JSON (")


@pytest.mark.parametrize("value", ["[1, 2]", '"text"', "3", "null", [1], 3, None])
def test_metadata_must_be_an_object(value):
    """Arrays, strings, numbers and null are not objects."""
    error = refusal(v.metadata, value, "[1].metadata")
    assert (error.field, error.rule) == ("[1].metadata", "object")
    assert error.message == "[1].metadata: must be a JSON object"


@pytest.mark.parametrize("value", ['{"a": NaN}', '{"a": Infinity}', {"a": math.inf}, {"a": [math.nan]}])
def test_metadata_rejects_nan_and_infinity(value):
    """NaN and infinity are not JSON and fail the finite rule."""
    assert refused(v.metadata, value) == ("metadata", "finite")


def _metadata_of_size(size: int) -> dict[str, Any]:
    """An object whose compact JSON encoding is exactly ``size`` bytes."""
    document = {"a": "", "b": 1}
    base = len(json.dumps(document, separators=(",", ":")).encode())
    document["a"] = "x" * (size - base)
    assert len(json.dumps(document, separators=(",", ":")).encode()) == size
    return document


def test_metadata_of_exactly_16_kib_is_accepted():
    """16384 bytes of compact JSON is the largest accepted object."""
    document = _metadata_of_size(16 * 1024)
    assert v.metadata(document) == document
    assert v.metadata(json.dumps(document)) == document


def test_metadata_of_16_kib_plus_one_byte_is_rejected():
    """16385 bytes is over the limit."""
    error = refusal(v.metadata, _metadata_of_size(16 * 1024 + 1))
    assert (error.field, error.rule) == ("metadata", "size")
    assert error.message == "metadata: must be at most 16384 bytes of JSON"


@pytest.mark.parametrize(("call", "args", "message"), [
    (v.text, (5, "name"), "name: must be a string"),
    (v.text, ("a\nb", "name"), "name: must not contain control characters or lone surrogates"),
    (v.integer, ("x", "n"), "n: must be an integer"),
    (v.fraction, (1.5, "quality"), "quality: must be in [0, 1] (got 1.5)"),
    (v.metadata, ({"a": math.nan},), "metadata: must not contain NaN or infinity"),
])
def test_error_messages_say_what_is_expected(call, args, message):
    """Each rule's message tells the operator what a valid value looks like."""
    kwargs = {"low": 0, "high": 10} if call is v.integer else {}
    with pytest.raises(InvalidInput) as caught:
        call(*args, **kwargs)
    assert caught.value.message == message
