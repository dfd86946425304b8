"""The agents row's ``capabilities`` string (adapters/sql/capabilities.py): exact, reversible."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from arbiter_cli.adapters.sql.capabilities import LABEL, LANGUAGE, TASK_TYPE, decode, encode, needle

AWKWARD = ["py", "python", "a|b", "a=b", "%7C", "%", "|", "=", "x|sfoo", "foo=", "Ä", "é ö",
           "t", "l", "s", "%25", "%3D"]
values = st.lists(st.sampled_from(AWKWARD) | st.text(min_size=1, max_size=6), unique=True,
                  max_size=5)


@given(values, values, values)
def test_decode_returns_the_spellings_encode_was_given(task_types, languages, labels):
    decoded = decode(encode(task_types, languages, labels))
    assert (sorted(decoded[0]), sorted(decoded[1]), sorted(decoded[2])) == (
        sorted(task_types), sorted(languages), sorted(labels))


@given(values, values, values, st.sampled_from(AWKWARD) | st.text(min_size=1, max_size=6))
def test_a_needle_occurs_exactly_when_the_agent_has_the_value(task_types, languages, labels,
                                                                wanted):
    held = encode(task_types, languages, labels)
    assert (needle(TASK_TYPE, wanted) in held) == (wanted in task_types)
    assert (needle(LANGUAGE, wanted.lower()) in held) == (
        wanted.lower() in {lang.lower() for lang in languages})
    assert (needle(LABEL, wanted.lower()) in held) == (
        wanted.lower() in {label.lower() for label in labels})


def test_separators_and_prefixes_inside_values_never_match():
    held = encode(["code-review"], ["Python"], ["x|sfoo", "bar=sbaz"])
    assert needle(LABEL, "foo") not in held and needle(LABEL, "sbaz") not in held
    assert needle(LANGUAGE, "py") not in held and needle(LANGUAGE, "python") in held
    assert needle(TASK_TYPE, "code") not in held and needle(LABEL, "python") not in held
    assert encode([], [], []) == "|"
