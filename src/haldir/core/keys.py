"""API keys and the principal they authenticate: key format, hashing, key scopes."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from haldir.core.ids import API_KEY, random_token
from haldir.errors import InsufficientScope, InvalidRequest

RESOURCES = ("sessions", "vault", "audit", "payments", "proxy", "approvals", "webhooks", "admin")
ALL = "*"
KEY_SCOPES = frozenset({ALL} | {f"{r}:{level}" for r in RESOURCES for level in ("read", "write")})

_PREFIX_CHARS = 8
_SECRET_CHARS = 40


@dataclass(frozen=True)
class NewKey:
    """A freshly generated key: `value` is shown once and never stored."""

    value: str
    prefix: str
    hash: str


def generate_key() -> NewKey:
    """A new `hld_<48 base62 chars>` key (about 285 random bits); its first 8 body characters name it."""
    body = random_token(_PREFIX_CHARS + _SECRET_CHARS)
    value = f"{API_KEY}_{body}"
    return NewKey(value=value, prefix=display_prefix(value), hash=hash_key(value))


def display_prefix(value: str) -> str:
    """The short public name of a key, e.g. `hld_Ab3dEf9h`."""
    return value[: len(API_KEY) + 1 + _PREFIX_CHARS]


def hash_key(value: str) -> str:
    # surrogatepass: any Python string hashes (and then fails to match) instead of raising.
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def key_matches(value: str, stored_hash: str) -> bool:
    """Constant-time comparison of a presented key against a stored hash."""
    return hmac.compare_digest(hash_key(value).encode(), stored_hash.encode())


def looks_like_key(value: str) -> bool:
    return (
        len(value) == len(API_KEY) + 1 + _PREFIX_CHARS + _SECRET_CHARS
        and value.startswith(f"{API_KEY}_")
        and value[len(API_KEY) + 1 :].isalnum()
        and value.isascii()
    )


def parse_key_scopes(texts: Iterable[str]) -> frozenset[str]:
    """Validate API key scopes: `*` or `<resource>:read|write`."""
    scopes = frozenset(texts)
    unknown = sorted(scopes - KEY_SCOPES)
    if unknown:
        raise InvalidRequest(
            f"unknown API key scopes {unknown}; use '*' or '<resource>:read|write' with resource one of "
            f"{list(RESOURCES)}"
        )
    if not scopes:
        raise InvalidRequest("an API key needs at least one scope")
    return scopes


def key_scopes_grant(held: frozenset[str], required: str) -> bool:
    """`*` grants all; `x:write` grants `x:read`."""
    if ALL in held or required in held:
        return True
    resource, _, level = required.partition(":")
    return level == "read" and f"{resource}:write" in held


@dataclass(frozen=True)
class ApiKey:
    """A stored API key (never its value)."""

    tenant_id: str
    prefix: str
    name: str
    scopes: frozenset[str]
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant and the scopes of the API key used (or the operator)."""

    tenant_id: str
    key_prefix: str | None
    scopes: frozenset[str]

    @classmethod
    def operator(cls, tenant_id: str) -> Principal:
        """The local operator acting directly on the store (CLI), with every scope in one tenant."""
        return cls(tenant_id=tenant_id, key_prefix=None, scopes=frozenset({ALL}))

    def holds(self, scope: str) -> bool:
        return key_scopes_grant(self.scopes, scope)

    def require(self, scope: str) -> None:
        if not key_scopes_grant(self.scopes, scope):
            raise InsufficientScope(
                f"this API key lacks scope {scope!r}; it has {sorted(self.scopes)}",
                required=scope,
                granted=sorted(self.scopes),
            )

    def can_grant(self, scopes: frozenset[str]) -> bool:
        """Whether every scope in `scopes` is within this principal's own."""
        if ALL in self.scopes:
            return True
        return all(scope != ALL and key_scopes_grant(self.scopes, scope) for scope in scopes)
