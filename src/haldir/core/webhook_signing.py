"""Standard Webhooks signatures (https://www.standardwebhooks.com): signing secrets and the
`webhook-signature` header. Pure: the caller brings the time and the randomness-free inputs."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"  # noqa: S105 (the prefix of every secret, not one)
SECRET_BYTES = 32


def new_secret() -> str:
    """A new signing secret: `whsec_` and the base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_…` secret; the message never repeats the secret."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook signing secret starts with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook signing secret is whsec_ and base64; this one is not base64") from None
    if len(key) < 24:  # Standard Webhooks: 24 to 64 bytes
        raise ValueError(f"a webhook signing key must be at least 24 bytes, got {len(key)}")
    return key


def sign(key: bytes, *, message_id: str, timestamp: int, body: bytes) -> str:
    """`v1,` and the base64 HMAC-SHA256, under `key`, of `{message_id}.{timestamp}.{body}`."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode("ascii")


def signature_header(keys: Sequence[bytes], *, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one signature per key (the current secret, and the previous one
    while its grace period lasts), space-separated; a receiver accepts the delivery if any verifies."""
    if not keys:
        raise ValueError("a delivery is signed with at least one key")
    return " ".join(sign(key, message_id=message_id, timestamp=timestamp, body=body) for key in keys)


def headers(keys: Sequence[bytes], *, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(keys, message_id=message_id, timestamp=timestamp, body=body),
    }
