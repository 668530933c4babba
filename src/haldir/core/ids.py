"""Identifiers with readable prefixes (`ses_`, `hld_`, …) and random bodies."""

from __future__ import annotations

import re
import secrets
import string

_ALPHABET = string.ascii_letters + string.digits
TENANT_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")  # tenant ids: also part of checkpoint origins

SESSION = "ses"
PAYMENT = "pay"
POLICY = "pol"
API_KEY = "hld"
WEBHOOK = "whk"
WEBHOOK_DELIVERY = "whd"


def random_token(length: int) -> str:
    """A random base62 string of `length` characters (about 5.95 bits each), uniform: bytes of 248 and
    above are dropped (248 = 4 x 62), so each kept byte picks a character with equal chances. One read
    of the system's random source, not one per character."""
    chars: list[str] = []
    while len(chars) < length:
        chars.extend(_ALPHABET[byte % 62] for byte in secrets.token_bytes(length + 8) if byte < 248)
    return "".join(chars[:length])


def is_id(prefix: str, value: str) -> bool:
    """Whether `value` has the shape of an id with `prefix`; anything else cannot name a stored row."""
    body = value[len(prefix) + 1 :]
    return value.startswith(f"{prefix}_") and 0 < len(body) <= 64 and body.isascii() and body.isalnum()


def new_id(prefix: str) -> str:
    """A new identifier such as `ses_3kT9…`: 22 base62 characters, about 131 random bits."""
    return f"{prefix}_{random_token(22)}"
