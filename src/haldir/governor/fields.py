"""What the services share: the default tenant, and the checks of free-text and tenant-id inputs."""

from __future__ import annotations

from haldir.core import ids
from haldir.errors import InvalidRequest

DEFAULT_TENANT = "default"


def text_field(value: str, *, field: str, max_length: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > max_length or not value.isprintable():
        raise InvalidRequest(f"{field} must be 1 to {max_length} printable characters")
    return value


def valid_tenant_id(tenant_id: str) -> str:
    if not ids.TENANT_ID.fullmatch(tenant_id):
        raise InvalidRequest(f"tenant id {tenant_id!r} must be 1 to 64 lowercase letters, digits, '_' or '-'")
    return tenant_id
