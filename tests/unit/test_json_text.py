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


# A flat record's values: mostly the plain kinds written directly, some that are not.
flat_values = st.one_of(
    st.none(), st.booleans(), st.integers(), texts, st.from_regex(r"[a-z0-9-]{0,12}", fullmatch=True),
    st.floats(), st.lists(st.integers(), max_size=2),
)  # fmt: skip


@given(
    st.tuples(texts | st.from_regex(r"[a-z.]{1,20}", fullmatch=True), st.integers(), texts),
    st.dictionaries(texts | st.from_regex(r"[a-z_]{1,12}", fullmatch=True), flat_values),
)
def test_canonical_record_is_canonical_of_the_list(head: tuple[Any, ...], fields: Any) -> None:
    """The fingerprint's text: any difference would make every remembered event conflict."""
    assert json_text.canonical_record(head, fields) == json_text.canonical([*head, fields])


def test_canonical_record_of_an_event() -> None:
    text = json_text.canonical_record(("message.sent", 5, "ab"), {"z": None, "a": "x", "m": 1})
    assert text == '["message.sent",5,"ab",{"a":"x","m":1,"z":null}]'


@given(values)
def test_loads_reads_what_json_loads_reads(value: Any) -> None:
    data = json_text.compact_bytes(value)
    # Compared as text: a NaN read back is not equal to itself.
    assert json_text.compact(json_text.loads(data)) == json_text.compact(json.loads(data))
