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


def random_token(length: int) -> str:
    """A random base62 string of `length` characters (about 5.95 bits each)."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def is_id(prefix: str, value: str) -> bool:
    """Whether `value` has the shape of an id with `prefix`; anything else cannot name a stored row."""
    body = value[len(prefix) + 1 :]
    return value.startswith(f"{prefix}_") and 0 < len(body) <= 64 and body.isascii() and body.isalnum()


def new_id(prefix: str) -> str:
    """A new identifier such as `ses_3kT9…`: 22 base62 characters, about 131 random bits."""
    return f"{prefix}_{random_token(22)}"
