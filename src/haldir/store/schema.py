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
    sa.CheckConstraint("spent >= 0 AND spent <= spend_limit", name="budget"),
    sa.Index(None, "tenant_id", "created_at", "session_id"),
    sa.Index(None, "tenant_id", "agent_id", "created_at"),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.tenant_id"), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("resource_id", sa.String(64), nullable=False),
    sa.Column("created_at", Micros(), nullable=False),
)
