"""Idempotency keys: one execution per (tenant, key); a different request under a used key is refused."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from haldir.errors import InvalidRequest

T = TypeVar("T")

_KEY = re.compile(r"[\x21-\x7e]{1,255}")


@dataclass(frozen=True)
class IdempotencyClaim:
    """A request's claim on an idempotency key: the operation runs only if the claim is new."""

    key: str
    fingerprint: str


def claim(key: str | None, *, operation: str, payload: Any) -> IdempotencyClaim | None:
    """A claim on `key` (None without a key); `fingerprint` covers the operation and its canonical payload."""
    if key is None:
        return None
    if not _KEY.fullmatch(key):
        raise InvalidRequest("Idempotency-Key must be 1 to 255 printable ASCII characters without spaces")
    body = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(f"{operation}\n{body}".encode()).hexdigest()
    return IdempotencyClaim(key=key, fingerprint=digest)


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """The result of an idempotent operation; `replayed` when an earlier request under the key made it."""

    value: T
    replayed: bool = False
