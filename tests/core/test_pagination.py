"""Pagination cursors: opaque, URL-safe, and refused with InvalidRequest when they are garbage."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from haldir.core.pagination import Position, decode_cursor, encode_cursor
from haldir.errors import InvalidRequest

positions = st.builds(
    Position,
    sort_key=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    id=st.text(),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=10,
)


def _cursor_of(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decodes_or_is_refused(cursor: str) -> None:
    try:
        outcome: Position | InvalidRequest | None = decode_cursor(cursor)
    except InvalidRequest as error:
        outcome = error
    assert outcome is None or isinstance(outcome, Position | InvalidRequest)


def test_no_position_encodes_to_no_cursor() -> None:
    assert encode_cursor(None) is None


def test_missing_or_empty_cursor_decodes_to_the_first_page() -> None:
    assert decode_cursor(None) is None
    assert decode_cursor("") is None


def test_cursor_decodes_back_to_its_position() -> None:
    position = Position(sort_key=1_775_415_600_000_000, id="ses_3kT9")
    assert decode_cursor(encode_cursor(position)) == position


@given(position=positions)
def test_any_position_round_trips_through_its_cursor(position: Position) -> None:
    assert decode_cursor(encode_cursor(position)) == position


@given(position=positions)
def test_cursor_is_url_safe_text_without_padding(position: Position) -> None:
    cursor = encode_cursor(position)
    assert cursor is not None
    assert re.fullmatch(r"[A-Za-z0-9_-]+", cursor)


@pytest.mark.parametrize(
    "cursor",
    [
        "!!!!",
        "a",
        "abcde",
        "é",
        "ses_3kT9",
        _cursor_of(b"\xff\xfe\x00garbage"),
        _cursor_of(b"not json"),
        _cursor_of(b"null"),
        _cursor_of(b"42"),
        _cursor_of(b'"ab"'),
        _cursor_of(b"{}"),
        _cursor_of(b'{"a":1,"b":2}'),
        _cursor_of(b"[]"),
        _cursor_of(b"[1]"),
        _cursor_of(b'[1,"x",3]'),
        _cursor_of(b'["1","x"]'),
        _cursor_of(b'[1.5,"x"]'),
        _cursor_of(b"[1,2]"),
        _cursor_of(b'[NaN,"x"]'),
        _cursor_of(b"[" + b"9" * 5000 + b',"x"]'),
    ],
)
def test_garbage_cursor_is_refused_as_an_invalid_request(cursor: str) -> None:
    with pytest.raises(InvalidRequest, match="malformed cursor"):
        decode_cursor(cursor)


def test_deeply_nested_cursor_is_refused_as_an_invalid_request() -> None:
    with pytest.raises(InvalidRequest):
        decode_cursor(_cursor_of(b"[" * 100_000))


def test_cursor_with_a_boolean_timestamp_is_refused() -> None:
    with pytest.raises(InvalidRequest):
        decode_cursor(_cursor_of(b'[true,"x"]'))


@given(cursor=st.text())
def test_any_text_decodes_to_a_position_or_is_refused(cursor: str) -> None:
    _decodes_or_is_refused(cursor)


@given(raw=st.binary())
def test_any_base64_bytes_decode_to_a_position_or_are_refused(raw: bytes) -> None:
    _decodes_or_is_refused(_cursor_of(raw))


@given(value=json_values)
def test_any_base64_json_decodes_to_a_position_or_is_refused(value: Any) -> None:
    _decodes_or_is_refused(_cursor_of(json.dumps(value).encode()))
