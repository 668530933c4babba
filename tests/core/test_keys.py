"""API keys: key format and hashing, key scopes, and what a principal may do or grant."""

from __future__ import annotations

import hashlib
import re
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from haldir.core.keys import (
    ALL,
    KEY_SCOPES,
    RESOURCES,
    Principal,
    display_prefix,
    generate_key,
    hash_key,
    key_matches,
    key_scopes_grant,
    looks_like_key,
    parse_key_scopes,
)
from haldir.errors import InsufficientScope, InvalidRequest

BASE62 = string.ascii_letters + string.digits
RESOURCE_SCOPES = sorted(KEY_SCOPES - {ALL})

resource_scope_sets = st.frozensets(st.sampled_from(RESOURCE_SCOPES))
key_scope_sets = st.frozensets(st.sampled_from(sorted(KEY_SCOPES)))


def _principal(*scopes: str) -> Principal:
    return Principal(tenant_id="acme", key_prefix="hld_Ab3dEf9h", scopes=frozenset(scopes))


def test_generated_key_is_hld_and_48_base62_characters() -> None:
    key = generate_key()
    assert re.fullmatch(r"hld_[A-Za-z0-9]{48}", key.value)


def test_generated_key_prefix_is_its_first_12_characters() -> None:
    key = generate_key()
    assert key.prefix == key.value[:12]
    assert key.prefix == display_prefix(key.value)
    assert key.prefix.startswith("hld_")


def test_generated_key_hash_is_the_sha256_hex_of_its_value() -> None:
    key = generate_key()
    assert key.hash == hashlib.sha256(key.value.encode()).hexdigest()
    assert key.hash == hash_key(key.value)
    assert re.fullmatch(r"[0-9a-f]{64}", key.hash)


def test_generated_keys_are_distinct() -> None:
    values = {generate_key().value for _ in range(50)}
    assert len(values) == 50


def test_generated_key_looks_like_a_key_and_matches_its_hash() -> None:
    key = generate_key()
    assert looks_like_key(key.value)
    assert key_matches(key.value, key.hash)


def test_key_does_not_match_another_keys_hash() -> None:
    assert not key_matches(generate_key().value, generate_key().hash)


def test_key_does_not_match_a_garbage_stored_hash() -> None:
    key = generate_key()
    assert not key_matches(key.value, "")
    assert not key_matches(key.value, key.hash.upper())
    assert not key_matches(key.value, "é" * 64)


@given(data=st.data())
def test_any_single_character_change_to_a_key_fails_to_match(data: st.DataObject) -> None:
    key = generate_key()
    index = data.draw(st.integers(min_value=0, max_value=len(key.value) - 1), label="index")
    replacement = data.draw(st.characters().filter(lambda c: c != key.value[index]), label="replacement")
    changed = key.value[:index] + replacement + key.value[index + 1 :]
    assert not key_matches(changed, key.hash)


@given(other=st.text())
def test_any_other_text_fails_to_match_a_key(other: str) -> None:
    key = generate_key()
    assert not key_matches(other, key.hash)


@given(body=st.text(alphabet=BASE62, min_size=48, max_size=48))
def test_any_hld_and_48_base62_characters_looks_like_a_key(body: str) -> None:
    assert looks_like_key(f"hld_{body}")


@pytest.mark.parametrize(
    "value",
    [
        "",
        "hld_",
        "hld_" + "a" * 47,
        "hld_" + "a" * 49,
        "hlx_" + "a" * 48,
        "HLD_" + "a" * 48,
        "hld-" + "a" * 48,
        "hld_" + "a" * 47 + "_",
        "hld_" + "a" * 47 + "-",
        "hld_" + "a" * 47 + "é",
        "hld_" + "a" * 47 + "٥",
        "ses_" + "a" * 48,
        " hld_" + "a" * 47,
    ],
)
def test_text_not_shaped_like_a_key_does_not_look_like_one(value: str) -> None:
    assert not looks_like_key(value)


def test_key_scopes_accept_star_and_resource_read_or_write() -> None:
    assert parse_key_scopes(["*"]) == frozenset({"*"})
    assert parse_key_scopes(["sessions:read", "vault:write", "sessions:read"]) == frozenset(
        {"sessions:read", "vault:write"}
    )


def test_every_resource_has_read_and_write_key_scopes() -> None:
    for resource in RESOURCES:
        assert parse_key_scopes([f"{resource}:read", f"{resource}:write"])


@pytest.mark.parametrize(
    "scope", ["sessions", "sessions:delete", "stripe:read", "*:read", "Sessions:read", "read", "", "**"]
)
def test_unknown_key_scopes_are_rejected_by_name(scope: str) -> None:
    with pytest.raises(InvalidRequest, match="unknown API key scopes") as caught:
        parse_key_scopes(["sessions:read", scope])
    assert repr(scope) in caught.value.message


def test_empty_key_scopes_are_rejected() -> None:
    with pytest.raises(InvalidRequest, match="at least one scope"):
        parse_key_scopes([])


@pytest.mark.parametrize("required", sorted(KEY_SCOPES))
def test_star_grants_every_key_scope(required: str) -> None:
    assert key_scopes_grant(frozenset({ALL}), required)


@pytest.mark.parametrize("resource", RESOURCES)
def test_write_grants_read_of_the_same_resource_but_read_does_not_grant_write(resource: str) -> None:
    assert key_scopes_grant(frozenset({f"{resource}:write"}), f"{resource}:read")
    assert not key_scopes_grant(frozenset({f"{resource}:read"}), f"{resource}:write")


def test_write_on_one_resource_grants_nothing_on_another() -> None:
    held = frozenset({"sessions:write"})
    assert not key_scopes_grant(held, "vault:read")
    assert not key_scopes_grant(held, "vault:write")


@given(held=resource_scope_sets)
def test_only_star_grants_star(held: frozenset[str]) -> None:
    assert not key_scopes_grant(held, ALL)


@given(held=key_scope_sets, more=key_scope_sets, required=st.sampled_from(sorted(KEY_SCOPES)))
def test_holding_more_key_scopes_never_grants_less(
    held: frozenset[str], more: frozenset[str], required: str
) -> None:
    if key_scopes_grant(held, required):
        assert key_scopes_grant(held | more, required)


def test_operator_holds_every_scope() -> None:
    operator = Principal.operator("acme")
    assert operator.key_prefix is None
    for scope in KEY_SCOPES:
        operator.require(scope)


def test_principal_with_the_scope_passes_require() -> None:
    _principal("sessions:write").require("sessions:read")


def test_require_names_required_and_granted_scopes_in_message_and_details() -> None:
    principal = _principal("vault:read", "sessions:read")
    with pytest.raises(InsufficientScope) as caught:
        principal.require("sessions:write")
    error = caught.value
    assert "'sessions:write'" in error.message
    assert "['sessions:read', 'vault:read']" in error.message
    assert error.details == {"required": "sessions:write", "granted": ["sessions:read", "vault:read"]}
    assert error.code == "insufficient_scope"
    assert error.http_status == 403


def test_key_without_star_cannot_grant_star() -> None:
    everything_but_star = _principal(*RESOURCE_SCOPES)
    assert not everything_but_star.can_grant(frozenset({ALL}))


def test_key_can_grant_read_of_what_it_has_write_on() -> None:
    assert _principal("sessions:write").can_grant(frozenset({"sessions:read", "sessions:write"}))


def test_key_cannot_grant_write_of_what_it_only_reads() -> None:
    assert not _principal("sessions:read").can_grant(frozenset({"sessions:write"}))


def test_key_cannot_grant_a_resource_it_lacks() -> None:
    assert not _principal("sessions:write").can_grant(frozenset({"sessions:read", "vault:read"}))


def test_star_key_can_grant_anything() -> None:
    assert _principal(ALL).can_grant(frozenset(KEY_SCOPES))


@given(own=resource_scope_sets, wanted=key_scope_sets)
def test_key_without_star_never_grants_star(own: frozenset[str], wanted: frozenset[str]) -> None:
    if ALL in wanted:
        assert not _principal(*own).can_grant(wanted)


@given(own=key_scope_sets, wanted=key_scope_sets)
def test_granted_key_can_never_do_more_than_its_creator(own: frozenset[str], wanted: frozenset[str]) -> None:
    if _principal(*own).can_grant(wanted):
        for scope in KEY_SCOPES:
            if key_scopes_grant(wanted, scope):
                assert key_scopes_grant(own, scope)
