"""Idempotency claims: key validation and request fingerprints."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from haldir.core.idempotency import IdempotencyClaim, Outcome, claim
from haldir.errors import InvalidRequest

PRINTABLE_ASCII = "".join(chr(code) for code in range(0x21, 0x7F))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=12,
)
valid_keys = st.text(alphabet=PRINTABLE_ASCII, min_size=1, max_size=255)


def _reordered(value: Any) -> Any:
    """The same JSON value with every object's keys in reverse insertion order."""
    if isinstance(value, dict):
        return {key: _reordered(value[key]) for key in reversed(list(value))}
    if isinstance(value, list):
        return [_reordered(item) for item in value]
    return value


def _fingerprint(*, operation: str, payload: Any) -> str:
    made = claim("key-1", operation=operation, payload=payload)
    assert made is not None
    return made.fingerprint


def test_no_key_makes_no_claim() -> None:
    assert claim(None, operation="sessions.create", payload={"agent_id": "a"}) is None


def test_claim_keeps_the_key_and_a_sha256_hex_fingerprint() -> None:
    made = claim("req-2026-04-05", operation="sessions.create", payload={"agent_id": "a"})
    assert isinstance(made, IdempotencyClaim)
    assert made.key == "req-2026-04-05"
    assert re.fullmatch(r"[0-9a-f]{64}", made.fingerprint)


def test_same_payload_with_keys_in_another_order_has_the_same_fingerprint() -> None:
    first = {"agent_id": "a", "scopes": ["read"], "limits": {"ttl": 60, "spend": "5"}}
    second = {"limits": {"spend": "5", "ttl": 60}, "scopes": ["read"], "agent_id": "a"}
    assert _fingerprint(operation="op", payload=first) == _fingerprint(operation="op", payload=second)


def test_different_operation_has_a_different_fingerprint() -> None:
    payload = {"name": "ci"}
    assert _fingerprint(operation="keys.create", payload=payload) != _fingerprint(
        operation="sessions.create", payload=payload
    )


def test_different_payload_has_a_different_fingerprint() -> None:
    assert _fingerprint(operation="op", payload={"ttl": 60}) != _fingerprint(
        operation="op", payload={"ttl": 61}
    )


def test_list_order_is_part_of_the_fingerprint() -> None:
    assert _fingerprint(operation="op", payload=["a", "b"]) != _fingerprint(
        operation="op", payload=["b", "a"]
    )


def test_fingerprint_does_not_depend_on_the_key() -> None:
    first = claim("a", operation="op", payload=[1])
    second = claim("b", operation="op", payload=[1])
    assert first is not None
    assert second is not None
    assert first.fingerprint == second.fingerprint


@pytest.mark.parametrize(
    "key", ["a", "!~", "x" * 255, "3f2b8c1e-6f0a-4d2c-9b1a-0c9e8f7a6b5d", PRINTABLE_ASCII]
)
def test_printable_ascii_keys_of_1_to_255_characters_are_accepted(key: str) -> None:
    made = claim(key, operation="op", payload={})
    assert made is not None
    assert made.key == key


@pytest.mark.parametrize(
    "key", ["", " ", "two words", " lead", "trail ", "x" * 256, "clé", "ключ", "tab\there", "line\n", "\x7f"]
)
def test_invalid_keys_are_refused_as_invalid_requests(key: str) -> None:
    with pytest.raises(InvalidRequest, match="Idempotency-Key must be 1 to 255 printable ASCII characters"):
        claim(key, operation="op", payload={})


@given(key=valid_keys)
def test_any_printable_ascii_key_without_spaces_is_accepted(key: str) -> None:
    made = claim(key, operation="op", payload=None)
    assert made is not None
    assert made.key == key


@given(prefix=valid_keys, bad=st.characters().filter(lambda c: c not in PRINTABLE_ASCII), suffix=st.text())
def test_any_key_with_a_character_outside_printable_ascii_is_refused(
    prefix: str, bad: str, suffix: str
) -> None:
    with pytest.raises(InvalidRequest):
        claim(prefix[:100] + bad + suffix, operation="op", payload=None)


@given(payload=json_values)
def test_reordering_object_keys_never_changes_the_fingerprint(payload: Any) -> None:
    assert _fingerprint(operation="op", payload=payload) == _fingerprint(
        operation="op", payload=_reordered(payload)
    )


@given(payload=json_values, first=st.text(), second=st.text())
def test_different_operations_never_share_a_fingerprint(payload: Any, first: str, second: str) -> None:
    assume(first != second)
    assert _fingerprint(operation=first, payload=payload) != _fingerprint(operation=second, payload=payload)


@given(first=json_values, second=json_values)
def test_different_payloads_never_share_a_fingerprint(first: Any, second: Any) -> None:
    assume(first != second)
    assert _fingerprint(operation="op", payload=first) != _fingerprint(operation="op", payload=second)


def test_outcome_is_not_a_replay_unless_said_so() -> None:
    assert Outcome(1).replayed is False
    assert Outcome(1, replayed=True).replayed is True
