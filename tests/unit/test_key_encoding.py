"""The text form of a key (issue 19, claim 9): one field's value as it is; several fields' values, in the
order of their names, each with ``\\`` and ``|`` escaped by a ``\\``, joined by ``|``. Injective, and
:func:`cdc.envelope.parse_key_string` is its exact inverse. Generated keys with ``|``, ``\\``, empty
strings and any Unicode."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdc.envelope import key_string, parse_key_string, split_key_parts
from cdc.sinks.base import newest_per_key

# Text full of what the encoding must survive: separators, escapes, empty strings, any code point.
parts = st.one_of(st.text(alphabet=st.sampled_from(["|", "\\", "a", "b"]), max_size=6),
                  st.text(max_size=8), st.just(""), st.just("|"), st.just("\\"), st.just("\\|"))
tuples = st.integers(min_value=2, max_value=5).flatmap(lambda n: st.tuples(*[parts] * n))


def as_key(values: tuple) -> dict[str, str]:
    return {f"f{i}": v for i, v in enumerate(values)}  # f0 < f1 < ...: the names' order is the tuple's


@settings(max_examples=600, deadline=None)
@given(tuples)
def test_parse_is_the_exact_inverse_of_a_composite_key(values):
    text = key_string(as_key(values))
    assert split_key_parts(text, len(values)) == list(values)
    assert parse_key_string(text, list(as_key(values))) == as_key(values)


@settings(max_examples=600, deadline=None)
@given(tuples, tuples)
def test_distinct_composite_keys_have_distinct_texts(one, other):
    if len(one) == len(other) and one != other:
        assert key_string(as_key(one)) != key_string(as_key(other))
    # The bug's own shape: text moved across a boundary between two parts gives another key, another text.
    for i in range(len(one) - 1):
        if one[i]:
            moved = (*one[:i], one[i][:-1], one[i][-1] + one[i + 1], *one[i + 2:])
            assert key_string(as_key(moved)) != key_string(as_key(one)), (one, moved)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(), st.integers(), parts))
def test_a_single_field_key_stays_its_value_as_text(value):
    assert key_string({"id": value}) == str(value)
    assert parse_key_string(str(value), ["id"]) == {"id": str(value)}


def test_the_examples_of_the_issue_and_the_documented_form():
    assert key_string({"a": "a|b", "b": "c"}) == "a\\|b|c"
    assert key_string({"a": "a", "b": "b|c"}) == "a|b\\|c"
    assert key_string({"b": "x\\", "a": 7}) == "7|x\\\\"  # by field name, numbers as text
    assert key_string({"a": "", "b": ""}) == "|"
    assert key_string(None) == "" and key_string({}) == ""


def test_fields_are_taken_in_the_order_of_their_names():
    assert parse_key_string("1|x\\|y", ["zz", "aa"]) == {"aa": "1", "zz": "x|y"}


@pytest.mark.parametrize("text, count", [("a|b", 3), ("a|b|c", 2), ("a\\", 2), ("a\\x|b", 2), ("", 2)])
def test_text_that_no_key_gives_is_refused(text, count):
    with pytest.raises(ValueError):
        split_key_parts(text, count)


def test_a_batch_keeps_the_newest_event_of_each_of_two_keys_that_joined_unescaped_would_be_one(event_factory):
    first = event_factory("pair", {"a": "a|b", "b": "c"}, op="c")
    second = event_factory("pair", {"a": "a", "b": "b|c"}, op="c")
    assert first.key_str != second.key_str
    assert newest_per_key([first, second]) == [first, second]
