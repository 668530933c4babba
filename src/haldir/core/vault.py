"""Envelope encryption for the Vault: master keys (KEKs) wrap per-tenant data keys, data keys seal secrets.

Pure primitives over AES-256-GCM, HKDF-SHA256 and HMAC-SHA256; no storage, environment or clock.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_SIZE = 32
NONCE_SIZE = 12
_TAG_SIZE = 16

_KEK_CHECK = b"haldir/kek-check/v1"
_DATA_KEY_PURPOSE = "haldir/data-key/v1"
_SEALED_VALUE_PURPOSE = "haldir/secret/v1"
_SEAL_INFO = b"haldir/secret-seal/v1"
_HMAC_INFO = b"haldir/secret-hmac/v1"

_KEYRING_SEPARATORS = re.compile(r"[\s,]+")


class SealError(ValueError):
    """A ciphertext or wrapped key does not open: wrong key, or moved, or changed."""


@dataclass(frozen=True, repr=False)
class MasterKey:
    """The key-encryption key (KEK). Its repr names it by check value only, never by material."""

    material: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.material, bytes):
            raise ValueError(f"a master key must be {KEY_SIZE} bytes; got {type(self.material).__name__}")
        if len(self.material) != KEY_SIZE:
            raise ValueError(f"a master key must be {KEY_SIZE} bytes; got {len(self.material)}")

    @property
    def check_value(self) -> str:
        """Key check value: names the key in logs and errors without revealing it."""
        return hmac.new(self.material, _KEK_CHECK, hashlib.sha256).digest()[:16].hex()

    def encode(self) -> str:
        return base64.b64encode(self.material).decode("ascii")

    def __repr__(self) -> str:
        return f"MasterKey(check={self.check_value[:8]}…)"


def generate_master_key() -> MasterKey:
    return MasterKey(secrets.token_bytes(KEY_SIZE))


def parse_master_key(text: str) -> MasterKey:
    """Standard or URL-safe base64, padded or not; the message never echoes the input, which is a secret."""
    body = text.strip().rstrip("=")
    if ("-" in body or "_" in body) and ("+" in body or "/" in body):
        raise ValueError(f"a master key must be base64 of {KEY_SIZE} bytes; it mixes two base64 alphabets")
    body = body.replace("-", "+").replace("_", "/")
    try:
        material = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"a master key must be base64 of {KEY_SIZE} bytes; it is not base64") from None
    if len(material) != KEY_SIZE:
        raise ValueError(
            f"a master key must be base64 of {KEY_SIZE} bytes; it decoded to {len(material)} bytes"
        )
    return MasterKey(material)


def parse_keyring(text: str) -> tuple[MasterKey, ...]:
    """Keys separated by commas or whitespace, newest first; the first one wraps, all of them unwrap."""
    entries = [entry for entry in _KEYRING_SEPARATORS.split(text) if entry]
    if not entries:
        raise ValueError("a keyring needs at least one master key; got none")
    keys: list[MasterKey] = []
    for position, entry in enumerate(entries, start=1):
        try:
            key = parse_master_key(entry)
        except ValueError as error:
            raise ValueError(f"keyring entry {position}: {error}") from None
        for earlier, other in enumerate(keys, start=1):
            if hmac.compare_digest(other.material, key.material):
                raise ValueError(
                    f"keyring entries {earlier} and {position} are the same key (check {key.check_value}); "
                    "list each key once"
                )
        keys.append(key)
    return tuple(keys)


def new_data_key() -> bytes:
    return secrets.token_bytes(KEY_SIZE)


def _aad(*parts: str | int) -> bytes:
    # A JSON list is unambiguous where concatenation is not: ("a,b", "c") and ("a", "b,c") differ.
    # ensure_ascii escapes every non-ASCII character (lone surrogates too), so any str encodes.
    return json.dumps(list(parts), separators=(",", ":")).encode("ascii")


def _seal(aead: AESGCM, plaintext: bytes, aad: bytes) -> bytes:
    nonce = secrets.token_bytes(NONCE_SIZE)
    return nonce + aead.encrypt(nonce, plaintext, aad)


def _open(aead: AESGCM, blob: bytes, aad: bytes, *, what: str) -> bytes:
    if len(blob) < NONCE_SIZE + _TAG_SIZE:
        raise SealError(f"{what} is {len(blob)} bytes, shorter than nonce and tag ({NONCE_SIZE + _TAG_SIZE})")
    try:
        return aead.decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], aad)
    except InvalidTag:
        raise SealError(f"{what} does not open: wrong key, or moved, or changed") from None


def wrap_data_key(
    kek: MasterKey, data_key: bytes, *, tenant_id: str, version: int, kek_version: int
) -> bytes:
    """Encrypt a tenant's data key under the KEK; the blob opens only for the same tenant and versions."""
    if len(data_key) != KEY_SIZE:
        raise ValueError(f"a data key must be {KEY_SIZE} bytes; got {len(data_key)}")
    return _seal(AESGCM(kek.material), data_key, _aad(_DATA_KEY_PURPOSE, tenant_id, version, kek_version))


def unwrap_data_key(kek: MasterKey, blob: bytes, *, tenant_id: str, version: int, kek_version: int) -> bytes:
    what = f"data key v{version} of tenant {tenant_id!r} under KEK v{kek_version} (check {kek.check_value})"
    aad = _aad(_DATA_KEY_PURPOSE, tenant_id, version, kek_version)
    data_key = _open(AESGCM(kek.material), blob, aad, what=what)
    if len(data_key) != KEY_SIZE:
        raise SealError(f"{what} unwrapped to {len(data_key)} bytes; expected {KEY_SIZE}")
    return data_key


def _derive(material: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=None, info=info).derive(material)


class DataKey:
    """An unwrapped per-tenant data key; seals and opens secret values and digests them."""

    __slots__ = ("_mac_key", "_sealer", "_tenant_id", "_version")

    def __init__(self, material: bytes, *, tenant_id: str, version: int) -> None:
        if not isinstance(material, bytes) or len(material) != KEY_SIZE:
            got = len(material) if isinstance(material, bytes) else type(material).__name__
            raise ValueError(f"a data key must be {KEY_SIZE} bytes; got {got}")
        # Separate subkeys: the digest key never touches AES-GCM, so a digest reveals nothing about sealing.
        self._sealer = AESGCM(_derive(material, _SEAL_INFO))
        self._mac_key = _derive(material, _HMAC_INFO)
        self._tenant_id = tenant_id
        self._version = version

    @property
    def tenant_id(self) -> str:
        return self._tenant_id

    @property
    def version(self) -> int:
        return self._version

    def _aad(self, name: str, secret_version: int) -> bytes:
        return _aad(_SEALED_VALUE_PURPOSE, self._tenant_id, name, secret_version, self._version)

    def seal(self, plaintext: bytes, *, name: str, secret_version: int) -> bytes:
        return _seal(self._sealer, plaintext, self._aad(name, secret_version))

    def open(self, blob: bytes, *, name: str, secret_version: int) -> bytes:
        what = f"secret {name!r} v{secret_version} of tenant {self._tenant_id!r} (data key v{self._version})"
        return _open(self._sealer, blob, self._aad(name, secret_version), what=what)

    def digest(self, value: bytes) -> str:
        """Keyed digest: equal values compare equal within a tenant's data key, and nowhere else."""
        return hmac.new(self._mac_key, value, hashlib.sha256).hexdigest()

    def __repr__(self) -> str:
        return f"DataKey(tenant_id={self._tenant_id!r}, version={self._version})"
