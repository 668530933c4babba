"""Secrets as the Vault stores them: names, sealed versions and the wrapped data keys that open them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from haldir.errors import InvalidRequest

VAULT_TOOL = "vault"
SECRET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def secret_name(name: str) -> str:
    """`name` if it can name a secret (it appears in URL paths and `{{secret:NAME}}` references)."""
    if not isinstance(name, str) or not SECRET_NAME.fullmatch(name):
        raise InvalidRequest(
            "a secret name is 1 to 128 letters, digits, '_', '.' or '-', starting with a letter or digit",
            field="name",
        )
    return name


@dataclass(frozen=True, repr=False)
class WrappedDataKey:
    tenant_id: str
    version: int
    master_version: int
    wrapped: bytes
    created_at: datetime

    def __repr__(self) -> str:
        return f"WrappedDataKey({self.tenant_id!r}, v{self.version}, master v{self.master_version})"


@dataclass(frozen=True, repr=False)
class SecretVersion:
    """One sealed version of a secret; `value_digest` is the tenant-keyed HMAC of its value."""

    tenant_id: str
    name: str
    version: int
    scope_required: str
    data_key_version: int
    sealed: bytes
    value_digest: str
    created_at: datetime

    def __repr__(self) -> str:
        return f"SecretVersion({self.tenant_id!r}, {self.name!r}, v{self.version})"


@dataclass(frozen=True)
class SecretInfo:
    """What anyone with `vault:read` may see of a secret: never its value."""

    name: str
    latest_version: int
    versions: int
    scope_required: str
    access_count: int
    last_accessed_at: datetime | None
    created_at: datetime
    updated_at: datetime
