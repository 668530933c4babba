"""The facts of a compliance evidence pack's sections 1-7, as the governor reads them from the store, the
pure derivations behind some of them, and their one JSON form (money as decimal strings, times in UTC)."""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Final

from haldir.core.keys import ALL, ApiKey
from haldir.core.ledger import timestamp_text

SECRET_CIPHER: Final = "AES-256-GCM"  # noqa: S105 (an algorithm name, not a password)
KEY_WRAPPING: Final = "AES-256-GCM envelope: versioned master keys wrap per-tenant data keys"
AAD_BINDS: Final = "tenant, secret name, secret version, data key version"
VALUE_DIGEST: Final = "HMAC-SHA256 (the ledger records it instead of the value)"
INTEGRITY_CHECKS: Final = "hash chain, Merkle root, latest signed checkpoint"


_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]*)\.[0-9]+")
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")


# Refusals the budget made: the texts of `core.sessions.spend_refusal` and of spend-limit policies.
_BUDGET_REFUSAL = re.compile(r"USD of budget left, less than|^Spend limit of ")


# The facts of sections 1-7, as the governor reads them from the store.


@dataclass(frozen=True)
class Identity:
    tenant_id: str
    tenant_created_at: datetime | None
    log_origin: str
    period_since: datetime
    period_until: datetime
    generated_at: datetime
    generator: str


@dataclass(frozen=True)
class KeyFact:
    prefix: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class AccessControl:
    keys_total: int
    keys_active: int
    keys_revoked: int
    keys_active_with_all_scopes: int
    keys_created_in_period: int
    keys_revoked_in_period: int
    keys: tuple[KeyFact, ...]


@dataclass(frozen=True)
class MasterKeyFact:
    version: int
    check_value: str
    created_at: datetime


@dataclass(frozen=True)
class DataKeyFact:
    version: int
    master_version: int
    created_at: datetime


@dataclass(frozen=True)
class Encryption:
    secret_cipher: str
    aad_binds: str
    key_wrapping: str
    value_digest: str
    current_master_key_version: int | None
    current_data_key_version: int | None
    last_master_key_rotation_at: datetime | None
    last_data_key_rotation_at: datetime | None
    secrets: int
    secret_versions: int
    secret_versions_on_older_data_keys: int
    master_keys: tuple[MasterKeyFact, ...]
    data_keys: tuple[DataKeyFact, ...]


@dataclass(frozen=True)
class AuditTrail:
    entries_in_period: int
    first_leaf_in_period: int | None
    last_leaf_in_period: int | None
    flagged_in_period: int
    denied_in_period: int
    entries_total: int
    checkpoint_root_hash: str
    checkpoint_signed_at: datetime
    integrity_checks: str
    integrity_verified: bool
    integrity_verified_entries: int
    integrity_problem: str | None
    checkpoint: str


@dataclass(frozen=True)
class SpendGovernance:
    currency: str
    sessions_created_in_period: int
    sessions_with_spend_cap: int
    spend_caps_usd: Decimal
    spent_by_capped_sessions_usd: Decimal
    charged_in_period_usd: Decimal
    payments_authorized: int
    payments_authorized_usd: Decimal
    payments_captured: int
    payments_captured_usd: Decimal
    payments_voided: int
    payments_voided_usd: Decimal
    payments_expired: int
    payments_expired_usd: Decimal  # what they kept: costs reported against them before they expired
    budget_refusals_in_period: int


@dataclass(frozen=True)
class RuleFact:
    rule_id: str
    type: str
    threshold_usd: Decimal | None
    tool: str | None
    agent_id: str | None
    created_at: datetime


@dataclass(frozen=True)
class HumanApprovals:
    requested_in_period: int
    pending: int
    approved_unused: int
    consumed: int
    denied: int
    expired: int
    rules: tuple[RuleFact, ...]


@dataclass(frozen=True)
class WebhookFact:
    webhook_id: str
    endpoint: str
    events: tuple[str, ...]
    enabled: bool
    created_at: datetime


@dataclass(frozen=True)
class OutboundAlerting:
    webhooks_total: int
    webhooks_enabled: int
    deliveries_in_period: int
    delivered: int
    failed: int
    pending: int
    attempts_in_period: int
    delivery_success_percent: Decimal | None
    webhooks: tuple[WebhookFact, ...]


@dataclass(frozen=True)
class Evidence:
    """Sections 1-7, in order."""

    identity: Identity
    access_control: AccessControl
    encryption: Encryption
    audit_trail: AuditTrail
    spend_governance: SpendGovernance
    human_approvals: HumanApprovals
    outbound_alerting: OutboundAlerting


# What the store counts for a pack (`haldir.store.ports.EvidenceStore`), money in micro-units.


@dataclass(frozen=True)
class LedgerPeriod:
    """The tenant's entries created in the period among its first `below` leaves (a checkpoint's size)."""

    entries: int
    first_leaf: int | None
    last_leaf: int | None
    flagged: int
    denied: int
    charged_micros: int
    budget_refusals: int


@dataclass(frozen=True)
class SessionTotals:
    """Sessions created in the period: all, those with a spend cap, their caps and spend."""

    created: int
    capped: int
    caps_micros: int
    spent_micros: int


@dataclass(frozen=True)
class PaymentTotals:
    """Payments authorized in the period, by where they stand now: count and money (for captured ones,
    the captured amount; for the others, the authorized amount)."""

    counts: Mapping[str, int]
    micros: Mapping[str, int]


@dataclass(frozen=True)
class DeliveryTotals:
    """Webhook deliveries made in the period by status, and delivery attempts in the period."""

    statuses: Mapping[str, int]
    attempts: int


@dataclass(frozen=True)
class VaultKeys:
    """The deployment's master key versions, the tenant's data key versions, and its secrets."""

    master_keys: tuple[MasterKeyFact, ...]
    data_keys: tuple[DataKeyFact, ...]
    secrets: int
    secret_versions_by_data_key: Mapping[int, int]


# Pure derivations from what the store holds.


def access_control(keys: Sequence[ApiKey], *, since: datetime, until: datetime) -> AccessControl:
    """Section 2 from the tenant's API keys (never their values)."""
    active = [key for key in keys if key.revoked_at is None]
    return AccessControl(
        keys_total=len(keys),
        keys_active=len(active),
        keys_revoked=len(keys) - len(active),
        keys_active_with_all_scopes=sum(ALL in key.scopes for key in active),
        keys_created_in_period=sum(since <= key.created_at < until for key in keys),
        keys_revoked_in_period=sum(
            key.revoked_at is not None and since <= key.revoked_at < until for key in keys
        ),
        keys=tuple(
            KeyFact(key.prefix, key.name, tuple(sorted(key.scopes)), key.created_at, key.revoked_at)
            for key in keys
        ),
    )


def is_budget_refusal(reason: object) -> bool:
    """Whether a denied entry's `refused` reason is a budget or spend-limit refusal."""
    return isinstance(reason, str) and _BUDGET_REFUSAL.search(reason) is not None


def success_percent(delivered: int, failed: int) -> Decimal | None:
    """Delivered out of finished deliveries, in percent with two decimals; None when none finished."""
    finished = delivered + failed
    if finished == 0:
        return None
    return (Decimal(100 * delivered) / finished).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)


# The JSON form of the facts, and back, strictly.


def encode(value: Any) -> Any:
    """The JSON value of a fact: money as decimal strings, times as `timestamp_text`, dataclasses in
    field order."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return timestamp_text(value)
    if isinstance(value, tuple):
        return [encode(item) for item in value]
    if is_dataclass(value) and not isinstance(value, type):
        return {field.name: encode(getattr(value, field.name)) for field in fields(value)}
    raise TypeError(f"not an evidence fact: {type(value).__name__}")


class FactError(ValueError):
    """A JSON value that is not the one form of a fact; `path` says where (`keys[2].scopes`)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason


def decode(kind: Any, value: Any, path: str = "") -> Any:
    """The fact of type `kind` that `value` is the JSON of; `FactError` naming the path otherwise."""
    if typing.get_origin(kind) in (types.UnionType, typing.Union):
        options = [option for option in typing.get_args(kind) if option is not type(None)]
        return None if value is None else decode(options[0], value, path)
    if kind is bool or kind is int or kind is str:
        if type(value) is not kind:
            raise FactError(path, f"expected {kind.__name__}, found {shown(value)}")
        return value
    if kind is Decimal:
        if not isinstance(value, str) or not _DECIMAL.fullmatch(value):
            raise FactError(path, f"expected an amount as a decimal string, found {shown(value)}")
        return Decimal(value)
    if kind is datetime:
        if not isinstance(value, str) or not _TIMESTAMP.fullmatch(value):
            raise FactError(
                path, f"expected a UTC time such as 2026-01-01T00:00:00.000000Z, found {shown(value)}"
            )
        return datetime.fromisoformat(value[:-1]).replace(tzinfo=UTC)
    if typing.get_origin(kind) is tuple:
        if not isinstance(value, list):
            raise FactError(path, f"expected a list, found {shown(value)}")
        item_kind = typing.get_args(kind)[0]
        return tuple(decode(item_kind, item, f"{path}[{index}]") for index, item in enumerate(value))
    if isinstance(kind, type) and is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        names = [field.name for field in fields(kind)]
        if not isinstance(value, dict) or set(value) != set(names):
            raise FactError(path, f"expected an object with the fields {names}")
        return kind(
            **{name: decode(hints[name], value[name], f"{path}.{name}" if path else name) for name in names}
        )
    raise TypeError(f"no JSON form for {kind!r}")


def shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if value is not None else "null"
    return text if len(text) <= 60 else text[:57] + "..."
