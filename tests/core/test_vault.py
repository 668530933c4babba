"""Vault envelope encryption: master keys, wrapped data keys, sealed secrets and their digests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from haldir.core.vault import (
    KEY_SIZE,
    NONCE_SIZE,
    DataKey,
    MasterKey,
    SealError,
    generate_master_key,
    new_data_key,
    parse_keyring,
    parse_master_key,
    unwrap_data_key,
    wrap_data_key,
)

FIXED = bytes(range(32))
keys = st.binary(min_size=KEY_SIZE, max_size=KEY_SIZE)
versions = st.integers(min_value=1, max_value=2**31)
names = st.text()


def _data_key(material: bytes = FIXED, *, tenant_id: str = "acme", version: int = 1) -> DataKey:
    return DataKey(material, tenant_id=tenant_id, version=version)


def _flip(blob: bytes, index: int, bit: int) -> bytes:
    changed = bytearray(blob)
    changed[index] ^= 1 << bit
    return bytes(changed)


def _forms_of(material: bytes) -> tuple[str, str]:
    return base64.b64encode(material).decode(), material.hex()


@given(plaintext=st.binary(), name=names, secret_version=versions, material=keys)
def test_a_sealed_value_opens_to_the_same_bytes(
    plaintext: bytes, name: str, secret_version: int, material: bytes
) -> None:
    key = _data_key(material)
    blob = key.seal(plaintext, name=name, secret_version=secret_version)
    assert key.open(blob, name=name, secret_version=secret_version) == plaintext


@given(plaintext=st.binary())
def test_sealing_the_same_value_twice_gives_different_blobs(plaintext: bytes) -> None:
    key = _data_key()
    first = key.seal(plaintext, name="db", secret_version=1)
    second = key.seal(plaintext, name="db", secret_version=1)
    assert first != second
    assert first[:NONCE_SIZE] != second[:NONCE_SIZE]


def test_a_sealed_blob_does_not_contain_the_plaintext() -> None:
    plaintext = b"correct horse battery staple"
    blob = _data_key().seal(plaintext, name="db", secret_version=1)
    assert plaintext not in blob
    assert len(blob) == NONCE_SIZE + len(plaintext) + 16


@given(plaintext=st.binary(max_size=64), data=st.data())
def test_flipping_any_bit_of_a_sealed_blob_makes_it_fail_to_open(
    plaintext: bytes, data: st.DataObject
) -> None:
    key = _data_key()
    blob = key.seal(plaintext, name="db", secret_version=1)
    index = data.draw(st.integers(min_value=0, max_value=len(blob) - 1), label="index")
    bit = data.draw(st.integers(min_value=0, max_value=7), label="bit")
    with pytest.raises(SealError):
        key.open(_flip(blob, index, bit), name="db", secret_version=1)


@given(plaintext=st.binary(max_size=64), data=st.data())
def test_a_truncated_sealed_blob_fails_to_open(plaintext: bytes, data: st.DataObject) -> None:
    key = _data_key()
    blob = key.seal(plaintext, name="db", secret_version=1)
    length = data.draw(st.integers(min_value=0, max_value=len(blob) - 1), label="length")
    with pytest.raises(SealError):
        key.open(blob[:length], name="db", secret_version=1)


def test_a_sealed_blob_with_bytes_appended_fails_to_open() -> None:
    key = _data_key()
    blob = key.seal(b"value", name="db", secret_version=1)
    with pytest.raises(SealError):
        key.open(blob + b"\x00", name="db", secret_version=1)


def test_a_secret_moved_to_another_name_fails_to_open() -> None:
    key = _data_key()
    blob = key.seal(b"value", name="db", secret_version=1)
    with pytest.raises(SealError):
        key.open(blob, name="db2", secret_version=1)


def test_a_secret_moved_to_another_secret_version_fails_to_open() -> None:
    key = _data_key()
    blob = key.seal(b"value", name="db", secret_version=1)
    with pytest.raises(SealError):
        key.open(blob, name="db", secret_version=2)


def test_a_secret_moved_to_another_tenant_with_the_same_key_material_fails_to_open() -> None:
    blob = _data_key(tenant_id="acme").seal(b"value", name="db", secret_version=1)
    with pytest.raises(SealError):
        _data_key(tenant_id="globex").open(blob, name="db", secret_version=1)


def test_a_secret_opened_as_another_data_key_version_fails_to_open() -> None:
    blob = _data_key(version=1).seal(b"value", name="db", secret_version=1)
    with pytest.raises(SealError):
        _data_key(version=2).open(blob, name="db", secret_version=1)


def test_a_secret_opened_under_other_key_material_fails_to_open() -> None:
    blob = _data_key(FIXED).seal(b"value", name="db", secret_version=1)
    with pytest.raises(SealError):
        _data_key(new_data_key()).open(blob, name="db", secret_version=1)


def test_names_and_tenants_cannot_be_shifted_across_the_aad_boundary() -> None:
    blob = _data_key(tenant_id="a,b").seal(b"value", name="c", secret_version=1)
    with pytest.raises(SealError):
        _data_key(tenant_id="a").open(blob, name="b,c", secret_version=1)


def test_the_open_error_names_the_secret_but_not_the_key() -> None:
    key = _data_key()
    with pytest.raises(SealError) as raised:
        key.open(key.seal(b"value", name="db", secret_version=1), name="db", secret_version=2)
    message = str(raised.value)
    assert "'db'" in message
    assert all(form not in message for form in _forms_of(FIXED))


@pytest.mark.parametrize("length", [0, 16, 31, 33, 64])
def test_a_data_key_of_the_wrong_length_is_rejected(length: int) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        DataKey(bytes(length), tenant_id="acme", version=1)


def test_a_data_key_exposes_its_tenant_and_version_read_only() -> None:
    key = _data_key(tenant_id="acme", version=3)
    assert (key.tenant_id, key.version) == ("acme", 3)
    with pytest.raises(AttributeError):
        key.tenant_id = "globex"  # type: ignore[misc]


def test_a_data_key_repr_does_not_show_its_material() -> None:
    text = repr(_data_key(FIXED))
    assert "acme" in text
    assert all(form not in text for form in _forms_of(FIXED))
    assert str(FIXED) not in text


def test_new_data_keys_are_32_distinct_random_bytes() -> None:
    made = {new_data_key() for _ in range(50)}
    assert len(made) == 50
    assert all(len(key) == KEY_SIZE for key in made)


@given(value=st.binary())
def test_a_digest_is_stable_for_the_same_key_and_value(value: bytes) -> None:
    assert _data_key().digest(value) == _data_key().digest(value)


@given(first=st.binary(), second=st.binary())
def test_different_values_have_different_digests(first: bytes, second: bytes) -> None:
    key = _data_key()
    assert (key.digest(first) == key.digest(second)) == (first == second)


def test_the_same_value_digests_differently_under_another_tenants_key() -> None:
    acme = _data_key(FIXED, tenant_id="acme")
    globex = _data_key(new_data_key(), tenant_id="globex")
    assert acme.digest(b"hunter2") != globex.digest(b"hunter2")


def test_a_digest_is_64_hex_characters_and_not_a_plain_hash() -> None:
    digest = _data_key().digest(b"hunter2")
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert digest != hashlib.sha256(b"hunter2").hexdigest()
    assert digest != hmac.new(FIXED, b"hunter2", hashlib.sha256).hexdigest()


@given(data_key=keys, tenant_id=names, version=versions, kek_version=versions)
def test_a_wrapped_data_key_unwraps_to_the_same_bytes(
    data_key: bytes, tenant_id: str, version: int, kek_version: int
) -> None:
    kek = MasterKey(FIXED)
    blob = wrap_data_key(kek, data_key, tenant_id=tenant_id, version=version, kek_version=kek_version)
    assert data_key not in blob
    assert (
        unwrap_data_key(kek, blob, tenant_id=tenant_id, version=version, kek_version=kek_version) == data_key
    )


def test_wrapping_the_same_data_key_twice_gives_different_blobs() -> None:
    kek, data_key = MasterKey(FIXED), new_data_key()
    first = wrap_data_key(kek, data_key, tenant_id="acme", version=1, kek_version=1)
    second = wrap_data_key(kek, data_key, tenant_id="acme", version=1, kek_version=1)
    assert first != second


@pytest.mark.parametrize(
    ("kek", "tenant_id", "version", "kek_version"),
    [
        pytest.param(MasterKey(bytes(32)), "acme", 1, 1, id="another-kek"),
        pytest.param(MasterKey(FIXED), "globex", 1, 1, id="another-tenant"),
        pytest.param(MasterKey(FIXED), "acme", 2, 1, id="another-version"),
        pytest.param(MasterKey(FIXED), "acme", 1, 2, id="another-kek-version"),
    ],
)
def test_a_wrapped_data_key_does_not_unwrap_in_another_context(
    kek: MasterKey, tenant_id: str, version: int, kek_version: int
) -> None:
    blob = wrap_data_key(MasterKey(FIXED), new_data_key(), tenant_id="acme", version=1, kek_version=1)
    with pytest.raises(SealError):
        unwrap_data_key(kek, blob, tenant_id=tenant_id, version=version, kek_version=kek_version)


@given(data=st.data())
def test_flipping_any_bit_of_a_wrapped_data_key_makes_it_fail_to_unwrap(data: st.DataObject) -> None:
    kek = MasterKey(FIXED)
    blob = wrap_data_key(kek, new_data_key(), tenant_id="acme", version=1, kek_version=1)
    index = data.draw(st.integers(min_value=0, max_value=len(blob) - 1), label="index")
    bit = data.draw(st.integers(min_value=0, max_value=7), label="bit")
    with pytest.raises(SealError):
        unwrap_data_key(kek, _flip(blob, index, bit), tenant_id="acme", version=1, kek_version=1)


@given(data=st.data())
def test_a_truncated_wrapped_data_key_fails_to_unwrap(data: st.DataObject) -> None:
    kek = MasterKey(FIXED)
    blob = wrap_data_key(kek, new_data_key(), tenant_id="acme", version=1, kek_version=1)
    length = data.draw(st.integers(min_value=0, max_value=len(blob) - 1), label="length")
    with pytest.raises(SealError):
        unwrap_data_key(kek, blob[:length], tenant_id="acme", version=1, kek_version=1)


def test_a_wrapped_blob_holding_a_key_of_the_wrong_length_fails_to_unwrap() -> None:
    # Forge a validly authenticated blob around 16 bytes, as a buggy or hostile writer could.
    nonce = bytes(NONCE_SIZE)
    aad = b'["haldir/data-key/v1","acme",1,1]'
    blob = nonce + AESGCM(FIXED).encrypt(nonce, bytes(16), aad)
    with pytest.raises(SealError, match="16 bytes"):
        unwrap_data_key(MasterKey(FIXED), blob, tenant_id="acme", version=1, kek_version=1)


def test_the_unwrap_error_does_not_show_key_material() -> None:
    data_key = new_data_key()
    blob = wrap_data_key(MasterKey(FIXED), data_key, tenant_id="acme", version=1, kek_version=1)
    with pytest.raises(SealError) as raised:
        unwrap_data_key(MasterKey(FIXED), blob, tenant_id="acme", version=1, kek_version=2)
    message = str(raised.value)
    assert all(form not in message for form in (*_forms_of(FIXED), *_forms_of(data_key)))


@pytest.mark.parametrize("length", [0, 16, 33])
def test_wrapping_a_data_key_of_the_wrong_length_is_rejected(length: int) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        wrap_data_key(MasterKey(FIXED), bytes(length), tenant_id="acme", version=1, kek_version=1)


def test_a_data_key_unwrapped_from_a_blob_opens_what_the_original_sealed() -> None:
    kek, material = generate_master_key(), new_data_key()
    blob = wrap_data_key(kek, material, tenant_id="acme", version=4, kek_version=2)
    sealed = DataKey(material, tenant_id="acme", version=4).seal(b"s3cr3t", name="db", secret_version=1)
    unwrapped = unwrap_data_key(kek, blob, tenant_id="acme", version=4, kek_version=2)
    assert (
        DataKey(unwrapped, tenant_id="acme", version=4).open(sealed, name="db", secret_version=1) == b"s3cr3t"
    )


def test_the_check_value_matches_an_independent_hmac_of_a_fixed_key() -> None:
    expected = hmac.new(FIXED, b"haldir/kek-check/v1", hashlib.sha256).hexdigest()[:32]
    assert MasterKey(FIXED).check_value == expected
    assert len(expected) == 32


def test_the_check_value_is_stable_and_differs_per_key() -> None:
    assert MasterKey(FIXED).check_value == MasterKey(bytes(FIXED)).check_value
    assert MasterKey(FIXED).check_value != MasterKey(bytes(32)).check_value
    assert generate_master_key().check_value != generate_master_key().check_value


@pytest.mark.parametrize("length", [0, 16, 31, 33])
def test_a_master_key_of_the_wrong_length_is_rejected(length: int) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        MasterKey(bytes(length))


@given(material=keys)
def test_a_master_key_repr_and_str_never_show_its_material(material: bytes) -> None:
    key = MasterKey(material)
    for text in (repr(key), str(key), f"{key}", repr([key])):
        assert all(form not in text for form in _forms_of(material))
        assert str(material) not in text
        assert key.check_value[:8] in text


@given(material=keys)
def test_an_encoded_master_key_parses_back_to_the_same_key(material: bytes) -> None:
    key = MasterKey(material)
    assert key.encode() == base64.b64encode(material).decode()
    assert parse_master_key(key.encode()) == key


@given(material=keys)
def test_a_master_key_parses_from_urlsafe_unpadded_and_padded_forms(material: bytes) -> None:
    urlsafe = base64.urlsafe_b64encode(material).decode()
    forms = [urlsafe, urlsafe.rstrip("="), base64.b64encode(material).decode().rstrip("=")]
    assert all(parse_master_key(form).material == material for form in forms)


def test_a_master_key_parses_with_surrounding_whitespace() -> None:
    assert parse_master_key(f"  \n{MasterKey(FIXED).encode()}\t\n ").material == FIXED


@pytest.mark.parametrize("length", [0, 1, 16, 31, 33, 48])
def test_a_master_key_of_the_wrong_decoded_length_is_rejected_with_the_length(length: int) -> None:
    text = base64.b64encode(bytes(range(length))).decode()
    with pytest.raises(ValueError, match=f"must be base64 of 32 bytes; it decoded to {length} bytes"):
        parse_master_key(text)


@pytest.mark.parametrize(
    "text",
    [
        "not base64 at all!",
        "AAAA AAAA",
        "ÄÖÜ" * 12,
        base64.b64encode(FIXED).decode()[:-2] + "*=",
        "A" * 41,  # one character more than a multiple of 4 cannot be base64, padded or not
    ],
)
def test_text_that_is_not_base64_is_rejected_without_echoing_it(text: str) -> None:
    with pytest.raises(ValueError, match="must be base64 of 32 bytes") as raised:
        parse_master_key(text)
    assert text.strip() not in str(raised.value)


def test_a_master_key_mixing_both_base64_alphabets_is_rejected() -> None:
    with pytest.raises(ValueError, match="must be base64 of 32 bytes"):
        parse_master_key("+" * 20 + "-" * 23)


def test_a_wrong_length_key_error_does_not_contain_the_input() -> None:
    text = base64.b64encode(b"secret-key-material-16").decode()
    with pytest.raises(ValueError, match="must be base64") as raised:
        parse_master_key(text)
    assert text not in str(raised.value)
    assert text.rstrip("=") not in str(raised.value)


def test_a_keyring_keeps_its_order_across_commas_spaces_and_newlines() -> None:
    first, second, third = MasterKey(FIXED), MasterKey(bytes(32)), generate_master_key()
    text = f" {first.encode()},{second.encode()}\n , \n{third.encode()}\n"
    assert parse_keyring(text) == (first, second, third)


def test_a_keyring_of_one_key_is_that_key() -> None:
    assert parse_keyring(MasterKey(FIXED).encode()) == (MasterKey(FIXED),)


@pytest.mark.parametrize("text", ["", "   ", " , ,\n"])
def test_an_empty_keyring_is_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="at least one"):
        parse_keyring(text)


def test_a_keyring_listing_the_same_key_twice_is_rejected() -> None:
    key = MasterKey(FIXED)
    urlsafe = base64.urlsafe_b64encode(FIXED).decode().rstrip("=")
    with pytest.raises(ValueError, match="entries 1 and 3 are the same key") as raised:
        parse_keyring(f"{key.encode()},{generate_master_key().encode()},{urlsafe}")
    assert all(form not in str(raised.value) for form in (*_forms_of(FIXED), urlsafe))


def test_a_keyring_with_a_bad_entry_names_its_position_without_echoing_it() -> None:
    bad = base64.b64encode(bytes(16)).decode()
    with pytest.raises(ValueError, match=r"entry 2: .*must be base64 of 32 bytes") as raised:
        parse_keyring(f"{MasterKey(FIXED).encode()} {bad}")
    assert bad not in str(raised.value)
