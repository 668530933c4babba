"""Rows to domain values and back, for the tables more than one store module reads."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from haldir.core.keys import ApiKey
from haldir.core.payments import Payment
from haldir.core.scopes import Scope
from haldir.core.sessions import Session


def key_row(key: ApiKey, key_hash: str) -> dict[str, Any]:
    return {
        "prefix": key.prefix,
        "tenant_id": key.tenant_id,
        "key_hash": key_hash,
        "name": key.name,
        "scopes": sorted(key.scopes),
        "created_at": key.created_at,
        "revoked_at": key.revoked_at,
    }


def key_from_row(row: sa.Row[Any]) -> ApiKey:
    return ApiKey(
        tenant_id=row.tenant_id,
        prefix=row.prefix,
        name=row.name,
        scopes=frozenset(row.scopes),
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def session_row(session: Session) -> dict[str, Any]:
    return {
        "tenant_id": session.tenant_id,
        "session_id": session.session_id,
        "agent_id": session.agent_id,
        "scopes": [str(scope) for scope in session.scopes],
        "spend_limit": session.spend_limit_micros,
        "spent": session.spent_micros,
        "ttl": session.ttl,
        "created_at": session.created_at,
        "expires_at": session.expires_at,
        "revoked_at": session.revoked_at,
    }


def session_from_row(row: sa.Row[Any]) -> Session:
    return Session(
        tenant_id=row.tenant_id,
        session_id=row.session_id,
        agent_id=row.agent_id,
        scopes=tuple(Scope.from_text(text) for text in row.scopes),
        spend_limit_micros=row.spend_limit,
        spent_micros=row.spent,
        ttl=row.ttl,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def payment_row(payment: Payment) -> dict[str, Any]:
    return {
        "tenant_id": payment.tenant_id,
        "payment_id": payment.payment_id,
        "session_id": payment.session_id,
        "amount": payment.amount_micros,
        "captured": payment.captured_micros,
        "reported": payment.reported_micros,
        "currency": payment.currency,
        "description": payment.description,
        "status": payment.status,
        "created_at": payment.created_at,
        "updated_at": payment.updated_at,
    }


def payment_from_row(row: sa.Row[Any]) -> Payment:
    return Payment(
        tenant_id=row.tenant_id,
        payment_id=row.payment_id,
        session_id=row.session_id,
        amount_micros=int(row.amount),
        captured_micros=None if row.captured is None else int(row.captured),
        reported_micros=int(row.reported),
        currency=row.currency,
        description=row.description,
        status=row.status,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
