"""The JSON input rule (berrys_portal.json_input) against a reference, over generated documents.

The rule takes shortcuts (depth read from the text before decoding, strings walked
only when a suspect escape appears); these properties check the shortcuts never
change the answer.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from berrys_portal.errors import InvalidInput
from berrys_portal.json_input import _too_deep, json_loads_checked

# Any code point, lone surrogates and NUL included.
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=8)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | ANY_TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(ANY_TEXT, children, max_size=3),
    max_leaves=30,
)


def depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


def has_bad_string(value) -> bool:
    def bad(text: str) -> bool:
        return any(ch == "\x00" or 0xD800 <= ord(ch) <= 0xDFFF for ch in text)

    if isinstance(value, str):
        return bad(value)
    if isinstance(value, dict):
        return any(bad(k) or has_bad_string(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_bad_string(v) for v in value)
    return False


@settings(max_examples=300, deadline=None)
@given(value=JSON_VALUES, limit=st.integers(min_value=0, max_value=6), ascii_only=st.booleans())
def test_the_text_depth_check_agrees_with_the_decoded_depth(value, limit, ascii_only):
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert _too_deep(text, limit) == (depth(value) > limit)


@pytest.mark.parametrize("spacing", [None, 2])
@settings(max_examples=300, deadline=None)
@given(value=JSON_VALUES)
def test_a_document_is_refused_exactly_when_it_holds_nul_or_a_lone_surrogate(value, spacing):
    text = json.dumps(value, indent=spacing)  # ensure_ascii: bad characters arrive as \u escapes
    if has_bad_string(value):
        with pytest.raises(InvalidInput):
            json_loads_checked(text)
    else:
        assert json_loads_checked(text) == value


def test_the_refusal_names_the_place():
    with pytest.raises(InvalidInput) as caught:
        json_loads_checked('{"a": [1, {"b\\u0000c": 2}]}')
    assert list(caught.value.errors) == ["a[1].b\\u0000c"]
    with pytest.raises(InvalidInput) as caught:
        json_loads_checked('"\\ud800"')
    assert list(caught.value.errors) == ["body"]


def test_strings_that_look_like_brackets_do_not_count_as_depth():
    assert not _too_deep(json.dumps({"a": "[[[[[[[[[[" * 10, "b": "\\\"[[[["}), 2)
    assert _too_deep('[[["]]]"]]]', 2)


@pytest.mark.parametrize(("text", "refused"), [
    (r'"\ud83d\ude00"', False),  # a pair
    (r'"\\ud83d"', False),  # an escaped backslash, then letters
    (r'"\\u0000"', False),
    (r'"\\ud83d\udc00"', True),  # looks like a pair, but the first half is not an escape
    (r'"\ud83d\\ude00"', True),
    (r'"\ud83d\ud83d\ude00"', True),  # two highs, one low
    (r'"\ud83d"', True),
    (r'"\uDC00"', True),
    (r'"a\u0000b"', True),
    (r'{"\u0000": 1}', True),
])
def test_escape_sequences_are_read_as_the_decoder_reads_them(text, refused):
    if refused:
        with pytest.raises(InvalidInput):
            json_loads_checked(text)
    else:
        assert json_loads_checked(text) == json.loads(text)


def test_peer_text_is_scrubbed_for_storage_and_answers_are_checked_fast():
    from berrys_portal.json_input import json_value_storable_check, text_scrub

    assert text_scrub("a\x00b\ud800c\U0001f600") == "a\ufffdb\ufffdc\U0001f600"
    json_value_storable_check({"ok": ["\U0001f600", "a\\u0000"], "n": 1})  # a pair; a literal backslash-u
    with pytest.raises(InvalidInput) as caught:
        json_value_storable_check({"items": [{"id": "x\x00"}]})
    assert list(caught.value.errors) == ["items[0].id"]


def test_non_finite_numbers_are_refused_where_they_would_be_stored():
    from berrys_portal.json_input import json_value_storable_check

    with pytest.raises(InvalidInput) as caught:
        json_value_storable_check({"a": [1.5, float("inf")]})
    assert list(caught.value.errors) == ["a[1]"]
    with pytest.raises(InvalidInput):
        json_value_storable_check(json.loads('{"x": 1e400}'))
    json_value_storable_check({"a": 1e300, "b": -0.0})
