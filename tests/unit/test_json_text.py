"""The prebuilt JSON encoders write exactly what ``json.dumps`` writes: stored bytes (state,
changelogs) and fingerprints taken of them must not change with the speed-up."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from portal_pulse import json_text

# Text with what JSON escapes (quotes, backslashes, control and non-ASCII characters) mixed in.
texts = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"]) | st.sampled_from('"\\\x00\x1f\x7fé✓')
)
values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=20,
)


@given(values)
def test_compact_is_json_dumps_with_compact_separators(value: Any) -> None:
    assert json_text.compact(value) == json.dumps(value, separators=(",", ":"))
    assert json_text.compact_bytes(value) == json.dumps(value, separators=(",", ":")).encode()


@given(values)
def test_canonical_is_json_dumps_sorted_unescaped(value: Any) -> None:
    expected = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )
    assert json_text.canonical(value) == expected


@given(texts)
def test_string_is_json_dumps_of_the_text(text: str) -> None:
    assert json_text.string(text) == json.dumps(text)


def test_string_quotes_a_plain_identifier_without_the_encoder() -> None:
    assert json_text.string("P001-E0000475") == '"P001-E0000475"'
    assert json_text.string('a"b') == '"a\\"b"'
