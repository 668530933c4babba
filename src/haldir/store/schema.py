"""The one definition of the schema; Alembic migrations must match it (a test compares them)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)


def epoch_micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime."""
    if moment.tzinfo is None:
        raise ValueError("naive datetimes are not stored")
    delta = moment - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_epoch_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


class Micros(sa.TypeDecorator[datetime]):
    """An aware UTC datetime stored as integer microseconds since the epoch: exact and portable."""

    impl = sa.BigInteger
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> int | None:
        return None if value is None else epoch_micros(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return None if value is None else from_epoch_micros(int(value))


tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("created_at", Micros(), nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("prefix", sa.String(32), primary_key=True),
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.tenant_id"), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("scopes", sa.JSON(), nullable=False),
    sa.Column("created_at", Micros(), nullable=False),
    sa.Column("revoked_at", Micros(), nullable=True),
    sa.Index(None, "tenant_id", "created_at"),
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.tenant_id"), primary_key=True),
    sa.Column("session_id", sa.String(64), primary_key=True),
    sa.Column("agent_id", sa.String(200), nullable=False),
    sa.Column("scopes", sa.JSON(), nullable=False),
    sa.Column("spend_limit", sa.BigInteger(), nullable=False),
    sa.Column("spent", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("ttl", sa.Integer(), nullable=False),
    sa.Column("created_at", Micros(), nullable=False),
    sa.Column("expires_at", Micros(), nullable=False),
    sa.Column("revoked_at", Micros(), nullable=True),
    sa.CheckConstraint("spent >= 0", name="spent"),  # a logged cost may take spent past the limit
    sa.Index(None, "tenant_id", "created_at", "session_id"),
    sa.Index(None, "tenant_id", "agent_id", "created_at"),
    sa.Index(None, "tenant_id", "expires_at"),  # counting the sessions still in force
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.tenant_id"), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("resource_id", sa.String(255), nullable=False),
    sa.Column("created_at", Micros(), nullable=False),
    sa.Index(None, "created_at"),  # the retention sweep deletes the oldest first
)

# The ledger. `record` holds the canonical JSON bytes of an entry (RFC 8785) exactly as hashed; the
# filter columns beside it are copies of record fields, and verification checks that they still agree.
ledger_entries = sa.Table(
    "ledger_entries",
    metadata,
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.tenant_id"), primary_key=True),
    sa.Column("leaf_index", sa.BigInteger(), primary_key=True, autoincrement=False),
    sa.Column("entry_id", sa.String(64), nullable=False),
    sa.Column("record", sa.Text(), nullable=False),
    sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("prev_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("entry_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("session_id", sa.String(64), nullable=True),
    sa.Column("agent_id", sa.String(200), nullable=True),
    sa.Column("tool", sa.String(200), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("flagged", sa.Boolean(), nullable=False),
    sa.Column("cost", sa.BigInteger(), nullable=False),
    sa.Column("charged", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("created_at", Micros(), nullable=False),
    sa.UniqueConstraint("tenant_id", "entry_id"),
    sa.Index(None, "tenant_id", "session_id", "leaf_index"),
    sa.Index(None, "tenant_id", "agent_id", "leaf_index"),
    sa.Index(None, "tenant_id", "created_at"),
)

# Complete Merkle subtrees: node (level, idx) is the hash of leaves [idx * 2^level, (idx + 1) * 2^level).
# What the ledger recorded, counted per tenant, UTC day (days since the epoch) and agent ("" for entries
# without one): updated in the transaction that appends the entries, so usage reports read counters, not
# the log.
usage_days = sa.Table(
    "usage_days",
    metadata,
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.tenant_id"), primary_key=True),
    sa.Column("day", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("agent_id", sa.String(200), primary_key=True),
    sa.Column("actions", sa.BigInteger(), nullable=False),
    sa.Column("denied", sa.BigInteger(), nullable=False),
    sa.Column("errors", sa.BigInteger(), nullable=False),
    sa.Column("flagged", sa.BigInteger(), nullable=False),
    sa.Column("vault", sa.BigInteger(), nullable=False),
    sa.Column("charged", sa.BigInteger(), nullable=False),
)

merkle_nodes = sa.Table(
    "merkle_nodes",
    metadata,
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.tenant_id"), primary_key=True),
    sa.Column("level", sa.SmallInteger(), primary_key=True, autoincrement=False),
    sa.Column("idx", sa.BigInteger(), primary_key=True, autoincrement=False),
    sa.Column("hash", sa.LargeBinary(32), nullable=False),
)

# One row per tenant: the size of its log and the hash of its last entry. Appenders lock it.
ledger_heads = sa.Table(
    "ledger_heads",
    metadata,
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.tenant_id"), primary_key=True),
    sa.Column("size", sa.BigInteger(), nullable=False),
    sa.Column("head_hash", sa.LargeBinary(32), nullable=False),
)

checkpoints = sa.Table(
    "checkpoints",
    metadata,
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.tenant_id"), primary_key=True),
    sa.Column("tree_size", sa.BigInteger(), primary_key=True, autoincrement=False),
    sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("note", sa.Text(), nullable=False),
    sa.Column("signed_at", Micros(), nullable=False),
)

# The deployment's log key, recorded on first start so that a replica with another key refuses to sign.
log_keys = sa.Table(
    "log_keys",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),  # "*": one key for the whole deployment
    sa.Column("vkey", sa.Text(), nullable=False),
    sa.Column("created_at", Micros(), nullable=False),
)

# A tenant's anomaly rules; `params` holds the rule's parameters as the API shows them.
anomaly_rules = sa.Table(
    "anomaly_rules",
    metadata,
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.tenant_id"), primary_key=True),
    sa.Column("rule_id", sa.String(64), primary_key=True),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("params", sa.JSON(), nullable=False),
    sa.Column("created_at", Micros(), nullable=False),
)

# Per-tenant anomaly settings: the built-in burst detector's threshold, or none (off). No row: defaults.
anomaly_settings = sa.Table(
    "anomaly_settings",
    metadata,
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.tenant_id"), primary_key=True),
    sa.Column("burst_max_actions", sa.Integer(), nullable=True),  # NULL: the burst detector is off
    sa.Column("burst_window_seconds", sa.Integer(), nullable=False),
    sa.Column("updated_at", Micros(), nullable=False),
)

# Operator-set limits of a tenant; NULL: no limit of that kind. No row: unlimited.
tenant_quotas = sa.Table(
    "tenant_quotas",
    metadata,
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.tenant_id"), primary_key=True),
    sa.Column("actions_per_month", sa.BigInteger(), nullable=True),
    sa.Column("agents", sa.Integer(), nullable=True),
    sa.Column("requests_per_second", sa.Integer(), nullable=True),
    sa.Column("updated_at", Micros(), nullable=False),
)

# The requests-per-second window of each limited tenant: requests leased to processes in the current
# second (`used`), and the size of the last lease (`granted`, so a lease learns what it got).
tenant_rates = sa.Table(
    "tenant_rates",
    metadata,
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.tenant_id"), primary_key=True),
    sa.Column("window", sa.BigInteger(), nullable=False),  # whole seconds since the epoch
    sa.Column("used", sa.Integer(), nullable=False),
    sa.Column("granted", sa.Integer(), nullable=False),
)

# The outbox: events recorded in the transaction that caused them, delivered (to webhooks) afterwards.
events = sa.Table(
    "events",
    metadata,
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.tenant_id"), primary_key=True),
    sa.Column("event_id", sa.String(64), primary_key=True),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("payload", sa.JSON(), nullable=False),
    sa.Column("created_at", Micros(), nullable=False),
    sa.Column("delivered_at", Micros(), nullable=True),  # fanned out to the tenant's webhooks
    sa.Index(None, "tenant_id", "delivered_at"),
    sa.Index(None, "delivered_at", "created_at"),  # the delivery worker's scan for events not fanned out
)

# The Vault. Master keys (KEKs) are never stored: a row names a version by its key check value, so a
# server with a missing or different key is recognised before it touches a secret.
vault_master_keys = sa.Table(
    "vault_master_keys",
    metadata,
    sa.Column("version", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("check_value", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", Micros(), nullable=False),
)

# A tenant's data keys, each wrapped (AES-256-GCM) by one master key version.
vault_data_keys = sa.Table(
    "vault_data_keys",
    metadata,
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.tenant_id"), primary_key=True),
    sa.Column("version", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("master_version", sa.Integer(), nullable=False),
    sa.Column("wrapped", sa.LargeBinary(), nullable=False),
    sa.Column("created_at", Micros(), nullable=False),
    sa.Index(None, "master_version"),
)

# One row per secret name: what listings show without touching a ciphertext.
secrets = sa.Table(
    "secrets",
    metadata,
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.tenant_id"), primary_key=True),
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("latest_version", sa.Integer(), nullable=False),
    sa.Column("access_count", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("last_accessed_at", Micros(), nullable=True),
    sa.Column("created_at", Micros(), nullable=False),
    sa.Column("updated_at", Micros(), nullable=False),
)

# Every version of every secret, sealed under the tenant data key `data_key_version`; `value_digest` is
# the tenant-keyed HMAC of the value that ledger entries carry instead of the value.
secret_versions = sa.Table(
    "secret_versions",
    metadata,
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.tenant_id"), primary_key=True),
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("version", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("scope_required", sa.String(200), nullable=False),
    sa.Column("data_key_version", sa.Integer(), nullable=False),
    sa.Column("sealed", sa.LargeBinary(), nullable=False),
    sa.Column("value_digest", sa.String(64), nullable=False),
    sa.Column("created_at", Micros(), nullable=False),
)

# Payment authorizations. `amount` is reserved in the session's `spent` while authorized; `captured` is
# the final amount; `reported` is what audit entries matched to this authorization have claimed of it.
# An authorization neither captured nor voided within its TTL is `expired`, released like a void.
payments = sa.Table(
    "payments",
    metadata,
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.tenant_id"), primary_key=True),
    sa.Column("payment_id", sa.String(64), primary_key=True),
    sa.Column("session_id", sa.String(64), nullable=False),
    sa.Column("amount", sa.BigInteger(), nullable=False),
    sa.Column("captured", sa.BigInteger(), nullable=True),
    sa.Column("reported", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("description", sa.String(500), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", Micros(), nullable=False),
    sa.Column("updated_at", Micros(), nullable=False),
    sa.CheckConstraint("status IN ('authorized', 'captured', 'voided', 'expired')", name="status"),
    sa.CheckConstraint(
        "amount > 0 AND captured >= 0 AND captured <= amount AND reported >= 0 "
        "AND reported <= COALESCE(captured, amount)",
        name="amounts",
    ),
    sa.Index(None, "tenant_id", "session_id", "created_at", "payment_id"),
    sa.Index(None, "tenant_id", "created_at", "payment_id"),
    sa.Index(None, "status", "created_at"),  # the retention sweep finds lapsed authorizations
)

# The proxy. An upstream is an MCP server a tenant registered; header and env values may hold
# `{{secret:NAME}}` references, never resolved values.
proxy_upstreams = sa.Table(
    "proxy_upstreams",
    metadata,
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.tenant_id"), primary_key=True),
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("transport", sa.String(8), nullable=False),
    sa.Column("url", sa.Text(), nullable=True),
    sa.Column("headers", sa.JSON(), nullable=False),
    sa.Column("command", sa.Text(), nullable=True),
    sa.Column("args", sa.JSON(), nullable=False),
    sa.Column("env", sa.JSON(), nullable=False),
    sa.Column("created_at", Micros(), nullable=False),
    sa.Column("updated_at", Micros(), nullable=False),
    sa.CheckConstraint("transport IN ('http', 'stdio')", name="transport"),
)

# Tool pins: `definition` is the approved definition and `pinned_hash` its hash; `current_hash` is the
# hash of what the upstream serves now, and `pending_definition` that definition while the two differ.
proxy_tools = sa.Table(
    "proxy_tools",
    metadata,
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.tenant_id"), primary_key=True),
    sa.Column("upstream", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("definition", sa.JSON(), nullable=False),
    sa.Column("pinned_hash", sa.String(64), nullable=False),
    sa.Column("current_hash", sa.String(64), nullable=False),
    sa.Column("pending_definition", sa.JSON(), nullable=True),
    sa.Column("first_seen_at", Micros(), nullable=False),
    sa.Column("updated_at", Micros(), nullable=False),
    sa.Column("removed_at", Micros(), nullable=True),
)

proxy_policies = sa.Table(
    "proxy_policies",
    metadata,
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.tenant_id"), primary_key=True),
    sa.Column("policy_id", sa.String(64), primary_key=True),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("spec", sa.JSON(), nullable=False),
    sa.Column("created_at", Micros(), nullable=False),
    sa.Index(None, "tenant_id", "created_at"),
)

# One row per (rate_limit policy, subject): the current fixed window and the calls admitted in it. A new
# window overwrites the old one in the same upsert, so the table holds no history.
proxy_rate_counters = sa.Table(
    "proxy_rate_counters",
    metadata,
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.tenant_id"), primary_key=True),
    sa.Column("policy_id", sa.String(64), primary_key=True),
    sa.Column("subject", sa.String(200), primary_key=True),
    sa.Column("window_start", Micros(), nullable=False),
    sa.Column("count", sa.BigInteger(), nullable=False),
)

# One row per (spend_limit policy, subject): micro-units charged against the limit and not released.
proxy_spend_counters = sa.Table(
    "proxy_spend_counters",
    metadata,
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.tenant_id"), primary_key=True),
    sa.Column("policy_id", sa.String(64), primary_key=True),
    sa.Column("subject", sa.String(200), primary_key=True),
    sa.Column("spent", sa.BigInteger(), nullable=False),
    sa.CheckConstraint("spent >= 0", name="spent"),
)

# Governed calls admitted and not yet recorded as finished: the admission commits before the call is
# forwarded, its outcome after the answer. A row left behind (a crash between the two) is closed, after
# a grace period, by an "outcome unknown" ledger entry.
proxy_calls = sa.Table(
    "proxy_calls",
    metadata,
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.tenant_id"), primary_key=True),
    sa.Column("call_id", sa.String(64), primary_key=True),
    sa.Column("session_id", sa.String(64), nullable=False),
    sa.Column("agent_id", sa.String(200), nullable=False),
    sa.Column("tool", sa.String(200), nullable=False),
    sa.Column("cost", sa.BigInteger(), nullable=False),
    sa.Column("admitted_at", Micros(), nullable=False),
    # A local tool's call (`POST /v1/tools/{tool}/begin`) keeps what its finish needs; null for upstreams.
    sa.Column("details", sa.JSON(), nullable=True),
    # Set when the outcome is recorded (`outcome` ok, error or unknown); closed rows are purged later.
    sa.Column("closed_at", Micros(), nullable=True),
    sa.Column("outcome", sa.String(16), nullable=True),
    sa.Index(None, "closed_at", "admitted_at"),
)

# Approval rules: which spends and calls wait for a person. `threshold` (micro-units) for `spend_over`,
# `tool` (a name or glob) for `tool`; `agent_id` limits any rule to one agent (and names it for `agent`).
approval_rules = sa.Table(
    "approval_rules",
    metadata,
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.tenant_id"), primary_key=True),
    sa.Column("rule_id", sa.String(64), primary_key=True),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("threshold", sa.BigInteger(), nullable=True),
    sa.Column("tool", sa.String(200), nullable=True),
    sa.Column("agent_id", sa.String(200), nullable=True),
    sa.Column("description", sa.String(500), nullable=False),
    sa.Column("created_by", sa.String(64), nullable=True),
    sa.Column("created_at", Micros(), nullable=False),
    sa.Index(None, "tenant_id", "created_at"),
)

# Approval requests. `binding` is the SHA-256 of the exact request (kind, session, tool, arguments hash,
# amount): a retry of that request finds its approval by it. `expires_at` is when a pending request
# lapses, and once approved, by when it must be used.
approvals = sa.Table(
    "approvals",
    metadata,
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.tenant_id"), primary_key=True),
    sa.Column("approval_id", sa.String(64), primary_key=True),
    sa.Column("binding", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("session_id", sa.String(64), nullable=False),
    sa.Column("agent_id", sa.String(200), nullable=False),
    sa.Column("tool", sa.String(200), nullable=False),
    sa.Column("arguments_sha256", sa.String(64), nullable=True),
    sa.Column("amount", sa.BigInteger(), nullable=False),
    sa.Column("reason", sa.String(1000), nullable=False),
    sa.Column("rule_ids", sa.JSON(), nullable=False),
    sa.Column("requested_by", sa.String(64), nullable=True),
    sa.Column("requested_at", Micros(), nullable=False),
    sa.Column("expires_at", Micros(), nullable=False),
    sa.Column("decided_by", sa.String(64), nullable=True),
    sa.Column("decided_at", Micros(), nullable=True),
    sa.Column("note", sa.String(1000), nullable=True),
    sa.Column("consumed_at", Micros(), nullable=True),
    sa.CheckConstraint("status IN ('pending', 'approved', 'denied', 'expired', 'consumed')", name="status"),
    sa.Index(None, "tenant_id", "binding", "requested_at"),
    # At most one open request per exact request: racing first attempts share one approval.
    sa.Index(
        "uq_approvals_open_binding",
        "tenant_id",
        "binding",
        unique=True,
        sqlite_where=sa.text("status IN ('pending', 'approved')"),
        postgresql_where=sa.text("status IN ('pending', 'approved')"),
    ),
    sa.Index(None, "tenant_id", "status", "requested_at", "approval_id"),
    sa.Index(None, "status", "expires_at"),
)

# Webhooks: a tenant's subscriptions. The signing secret is sealed under the tenant's Vault data key (AAD
# binds tenant, webhook and `secret_version`); after a rotation the previous one signs too until
# `previous_expires_at`.
webhooks = sa.Table(
    "webhooks",
    metadata,
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.tenant_id"), primary_key=True),
    sa.Column("webhook_id", sa.String(64), primary_key=True),
    sa.Column("url", sa.Text(), nullable=False),
    sa.Column("description", sa.String(500), nullable=False),
    sa.Column("events", sa.JSON(), nullable=False),
    sa.Column("secret_sealed", sa.LargeBinary(), nullable=False),
    sa.Column("secret_version", sa.Integer(), nullable=False),
    sa.Column("data_key_version", sa.Integer(), nullable=False),
    sa.Column("previous_sealed", sa.LargeBinary(), nullable=True),
    sa.Column("previous_version", sa.Integer(), nullable=True),
    sa.Column("previous_data_key_version", sa.Integer(), nullable=True),
    sa.Column("previous_expires_at", Micros(), nullable=True),
    sa.Column("enabled", sa.Boolean(), nullable=False),
    sa.Column("disabled_reason", sa.Text(), nullable=True),
    sa.Column("failing_since", Micros(), nullable=True),
    sa.Column("created_at", Micros(), nullable=False),
    sa.Column("updated_at", Micros(), nullable=False),
    sa.Index(None, "tenant_id", "created_at"),
)

# One event on its way to one webhook (made once per pair: the unique constraint). A worker holds a
# delivery while `claimed_until` is ahead, and records its outcome only with its `lease` token.
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.tenant_id"), primary_key=True),
    sa.Column("delivery_id", sa.String(64), primary_key=True),
    sa.Column("webhook_id", sa.String(64), nullable=False),
    sa.Column("event_id", sa.String(64), nullable=False),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("body", sa.Text(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("retries", sa.Integer(), nullable=False),
    sa.Column("next_attempt_at", Micros(), nullable=True),
    sa.Column("claimed_until", Micros(), nullable=True),
    sa.Column("lease", sa.String(32), nullable=True),
    sa.Column("created_at", Micros(), nullable=False),
    sa.Column("updated_at", Micros(), nullable=False),
    sa.CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="status"),
    sa.UniqueConstraint("tenant_id", "webhook_id", "event_id"),
    sa.Index(None, "status", "next_attempt_at"),
    sa.Index(None, "tenant_id", "created_at", "delivery_id"),
)

# Every attempt of every delivery: the answer's status code (None: no answer), latency, the error.
webhook_attempts = sa.Table(
    "webhook_attempts",
    metadata,
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.tenant_id"), primary_key=True),
    sa.Column("delivery_id", sa.String(64), primary_key=True),
    sa.Column("number", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("attempted_at", Micros(), nullable=False),
    sa.Column("status_code", sa.Integer(), nullable=True),
    sa.Column("latency_ms", sa.Integer(), nullable=False),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("next_attempt_at", Micros(), nullable=True),
)
